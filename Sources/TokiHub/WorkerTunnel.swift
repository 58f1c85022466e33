import HTTPTypes
import NIOCore
import TokiStore
import Hummingbird
import Logging
import ServiceLifecycle
import TokiProtocol
import TokiTunnel

/// The tunnel endpoint of a hub or a relay: `TunnelServer` with admission deciding who may
/// connect; each connection runs a `WorkerSessionHandler` (a worker) or, when the peer asked
/// for the relay role at the upgrade, a `RelayLinkHandler` (a child relay). What admission and
/// presence mean is the node's business: the hub's store, or a relay's parent.
public struct WorkerTunnel: Sendable {
    let node: RelayNodeIdentity
    let admission: any WorkerAdmission
    let presence: any WorkerPresenceSink
    let registry: WorkerRegistry
    let deadlines: DeadlineSweeper
    let configuration: HubConfiguration
    let logger: Logger
    let relayLinks: RelayLinks

    init(node: RelayNodeIdentity, admission: any WorkerAdmission, presence: any WorkerPresenceSink, registry: WorkerRegistry,
         deadlines: DeadlineSweeper, configuration: HubConfiguration, logger: Logger, relayLinks: RelayLinks) {
        self.relayLinks = relayLinks
        self.node = node
        self.admission = admission
        self.presence = presence
        self.registry = registry
        self.deadlines = deadlines
        self.configuration = configuration
        self.logger = logger
    }

    func server() -> TunnelServer<WorkerPrincipal> {
        let admission = self.admission
        var server = TunnelServer<WorkerPrincipal>(logger: logger, check: { token in
            guard let token else { return .refused }
            switch await admission.check(token: token) {
            case .valid(let principal): return .accepted(principal)
            case .invalid: return .refused
            case .unavailable(let why): return .unavailable(code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: why)
            }
        }, onSession: { connection in await self.serve(connection) })
        server.limits = configuration.tunnelLimits
        server.allowLZ4 = configuration.allowLZ4
        server.allowSmux2 = configuration.allowSmux2
        server.relayNodeID = node.id
        server.traffic = configuration.metrics.traffic
        return server
    }

    /// Token `tokenID` (of the root's store) was revoked: its cached verdicts go, every worker
    /// admitted with it leaves this node's registry at once (a direct one is disconnected; one
    /// behind a relay is dropped here, and its relay, told below, drops it there), every child
    /// relay hears of it, and a child relay linked with that token is cut off.
    public func revoke(tokenID: Int64) {
        admission.revoked(tokenID: tokenID)
        var dropped = 0
        for worker in registry.workers where worker.principal.tokenID == tokenID {
            dropped += 1
            if worker.via.isEmpty {
                worker.disconnect()
            } else {
                // Closing its route would close the whole relay link: only this worker goes.
                worker.markClosed()
                if registry.release(worker) { presence.departed(worker) }
            }
        }
        let links = relayLinks.all
        for link in links {
            link.control?.send(RelayMessage.revoke(tokenID: Int(tokenID)))
            if link.tokenID == tokenID { link.session?.close() }
        }
        logger.notice("token revoked: its workers dropped, relays told", metadata: [
            "token_id": "\(tokenID)", "workers": "\(dropped)", "relays": "\(links.count)"])
    }

    func serve(_ connection: TunnelConnection<WorkerPrincipal>) async {
        let remote = connection.headers[HTTPField.Name("X-Forwarded-For")!] ?? "direct"
        let (session, logger) = (connection.session, self.logger)
        if let childID = connection.relayNodeID {
            // Relay links carry smux keepalives (TunnelServer): a dead one ends by itself.
            let handler = RelayLinkHandler(connection: connection, childID: childID, tunnel: self)
            await handler.run(on: connection.eventLoop)
            return
        }
        let watch = LinkWatch.start(activity: connection.activity, interval: configuration.pingInterval, deadlines: deadlines,
                                    ping: connection.ping, close: {
                                        logger.info("tunnel link silent past a ping; closing", metadata: ["remote": "\(remote)"])
                                        session.close()
                                    })
        defer { watch.stop() }
        let handler = WorkerSessionHandler(connection: connection, remote: remote, tunnel: self)
        await handler.run(on: connection.eventLoop)
    }
}

/// The control side of one tunnel link (a worker's session, a child relay's link), served on
/// the link's event loop: a message is read, handled and answered in the loop tick that
/// received it, with no thread switch (at 10,000 workers that hop was a third of the hub's
/// idle CPU).
protocol LinkHandler: Sendable {
    func serve(isolation: isolated EventLoopIsolation) async
}

extension LinkHandler {
    func run(on eventLoop: any EventLoop) async {
        await serve(isolation: EventLoopIsolation(eventLoop))
    }
}

/// A control-protocol refusal: sent to the peer as an `error` line with this code.
struct ControlRefusal: Error {
    var code: String
    var message: String
}

/// A node's worker-facing half on its own port: the tunnel endpoint (workers and child relays)
/// with `/healthz`, the node's deadlines, nothing else. `toki relay-only` runs one beside its
/// upstream link; the hub serves the same endpoint next to the OpenAI API instead.
public struct WorkerEndpointService: Service {
    let tunnel: WorkerTunnel
    let onRunning: @Sendable (Int) async -> Void
    let adminToken: String?
    let upstream: @Sendable () -> Topology.Upstream?
    let upstreamStatus: @Sendable () -> UpstreamStatus?

    /// - Parameters:
    ///   - adminToken: the bearer token `GET /admin/topology` asks for (nil: no such route).
    ///   - upstream: this node's upstream link, as the topology shows it.
    public init(configuration: HubConfiguration, node: RelayNodeIdentity, admission: any WorkerAdmission, presence: any WorkerPresenceSink,
                registry: WorkerRegistry, logger: Logger, adminToken: String? = nil,
                upstream: @escaping @Sendable () -> Topology.Upstream? = { nil },
                upstreamStatus: @escaping @Sendable () -> UpstreamStatus? = { nil },
                onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        tunnel = WorkerTunnel(node: node, admission: admission, presence: presence, registry: registry, deadlines: DeadlineSweeper(),
                              configuration: configuration, logger: logger, relayLinks: RelayLinks())
        self.adminToken = adminToken
        self.upstream = upstream
        self.upstreamStatus = upstreamStatus
        self.onRunning = onRunning
    }

    /// Ready: the upstream link (if this node has one) is connected.
    public func readiness() -> (ready: Bool, reason: String) {
        guard let status = upstreamStatus() else { return (true, "ready") }
        return status.connected ? (true, "ready") : (false, "upstream not connected")
    }

    /// The metrics text, with the gauges read off the registry and the upstream link first.
    public func exportMetrics(_ exposition: MetricsExposition) -> ByteBuffer {
        tunnel.configuration.metrics.refresh(registry: tunnel.registry, relays: tunnel.relayLinks.all.count, upstream: upstreamStatus())
        return exposition.render()
    }

    /// The root revoked token `tokenID` (`WorkerTunnel.revoke`).
    public func revoke(tokenID: Int64) { tunnel.revoke(tokenID: tokenID) }

    /// What this node sees of its chain.
    public func topology(role: String) -> Topology {
        Topology.build(node: tunnel.node.id, role: role, upstream: upstream(), workers: tunnel.registry.workers, relays: tunnel.relayLinks.all)
    }

    public func run() async throws {
        let (configuration, logger) = (tunnel.configuration, tunnel.logger)
        let router = Router(context: BasicRequestContext.self)
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ -> Response in
            let (ready, why) = self.readiness()
            return Response(status: ready ? .ok : .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: why + "\n")))
        }
        if let exposition = configuration.metricsExposition {
            router.get("/metrics") { _, _ in exposition.response(self.exportMetrics(exposition)) }
        }
        router.addRoutes(TunnelServer<WorkerPrincipal>.refusalRoutes(context: BasicRequestContext.self))
        if let adminToken {
            router.get("/admin/topology") { request, _ -> Response in
                let presented = TunnelEndpoint.presentedToken(headers: request.headers, query: nil) ?? ""
                guard TokenCrypto.constantTimeEquals(presented, adminToken) else { throw OpenAIError.invalidToken }
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: try self.topology(role: "relay").encoded())))
            }
        }
        let app = Application(
            router: router,
            server: .guardedHTTP1Tunnel(tunnel.server(), limits: configuration.httpLimits, tls: configuration.tls, logger: logger),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { [onRunning] channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        let parts = ServiceGroup(configuration: .init(services: [.init(service: tunnel.deadlines), .init(service: app)], logger: logger))
        try await parts.run()
    }
}
