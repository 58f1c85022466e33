import HTTPTypes
import Logging
import TokiTunnel

/// The hub's worker endpoint: `TunnelServer` with admission deciding who may connect, and a
/// `WorkerSessionHandler` running each connection's control protocol.
struct WorkerTunnel: Sendable {
    let admission: any WorkerAdmission
    let registry: WorkerRegistry
    let presence: PresenceRecorder
    let deadlines: DeadlineSweeper
    let configuration: HubConfiguration
    let logger: Logger

    func server() -> TunnelServer<WorkerPrincipal> {
        var server = TunnelServer<WorkerPrincipal>(logger: logger, authenticate: { [admission] token in
            guard let token else { return nil }
            return await admission.authenticate(token: token)
        }, onSession: { connection in await self.serve(connection) })
        server.limits = configuration.tunnelLimits
        server.allowLZ4 = configuration.allowLZ4
        server.allowSmux2 = configuration.allowSmux2
        server.pingInterval = configuration.pingInterval
        return server
    }

    func serve(_ connection: TunnelConnection<WorkerPrincipal>) async {
        let remote = connection.headers[HTTPField.Name("X-Forwarded-For")!] ?? "direct"
        let handler = WorkerSessionHandler(session: connection.session, link: WorkerLink(activity: connection.activity, ping: connection.ping),
                                           principal: connection.identity, remote: remote, admission: admission, presence: presence,
                                           registry: registry, deadlines: deadlines, configuration: configuration, logger: logger)
        await handler.run()
    }
}
