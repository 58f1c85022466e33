import HTTPTypes
import Logging
import TokiTunnel

/// The hub's worker endpoint: `TunnelServer` with admission deciding who may connect, and a
/// `WorkerSessionHandler` running each connection's control protocol.
struct WorkerTunnel: Sendable {
    let hub: HubService

    func server() -> TunnelServer<WorkerPrincipal> {
        let (admission, configuration) = (hub.admission, hub.configuration)
        var server = TunnelServer<WorkerPrincipal>(logger: hub.logger, authenticate: { token in
            guard let token else { return nil }
            return await admission.authenticate(token: token)
        }, onSession: { connection in await self.serve(connection) })
        server.limits = configuration.tunnelLimits
        server.allowLZ4 = configuration.allowLZ4
        server.allowSmux2 = configuration.allowSmux2
        return server
    }

    func serve(_ connection: TunnelConnection<WorkerPrincipal>) async {
        let remote = connection.headers[HTTPField.Name("X-Forwarded-For")!] ?? "direct"
        let (session, logger) = (connection.session, hub.logger)
        let watch = LinkWatch.start(activity: connection.activity, interval: hub.configuration.pingInterval, deadlines: hub.deadlines,
                                    ping: connection.ping, close: {
                                        logger.info("tunnel link silent past a ping; closing", metadata: ["remote": "\(remote)"])
                                        session.close()
                                    })
        defer { watch.stop() }
        let handler = WorkerSessionHandler(session: connection.session, link: WorkerLink(activity: connection.activity, ping: connection.ping),
                                           principal: connection.identity, remote: remote, admission: hub.admission, presence: hub.presence,
                                           registry: hub.registry, deadlines: hub.deadlines, configuration: hub.configuration, logger: hub.logger)
        await handler.run(on: connection.eventLoop)
    }
}
