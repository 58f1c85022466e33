import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import TokiStore
import TokiTunnel

/// `toki hub` as a `Service`: the OpenAI API for users and the tunnel endpoint for workers, on
/// one port. Run it in a `ServiceGroup` (the `toki hub` command does, with SIGTERM/SIGINT as
/// graceful-shutdown signals).
///
/// On graceful shutdown new API requests get 503 while in-flight ones finish (up to
/// `drainTimeout`); worker tunnels stay up until then; then the server stops and usage and
/// presence are written one last time.
public final class HubService: Service, Sendable {
    public let configuration: HubConfiguration
    let store: any HubStorage
    let tokens: TokenCache
    let usage: ChargeRecorder
    /// Prices, balances and pre-checks.
    let billing: Billing
    let presence: PresenceRecorder
    /// The worker side: registry, admission, deadlines, relay links.
    let tunnel: WorkerTunnel
    /// Where this hub stands in a chain (a hub with `--upstream` lends its workers to a parent).
    let chain: HubChain
    let draining = Locked(false)
    let limiter = RateLimiter()
    let forwarder: RequestForwarder
    let onRunning: @Sendable (Int) async -> Void

    /// - Parameters:
    ///   - admission: who may connect workers, and as what; by default the store's users and namespaces.
    ///   - onRunning: called with the bound port once the server listens.
    ///   - chain: for a hub that exports its workers to a parent: its registry, its path and
    ///     upstream status, and who else hears of its workers (the exporter).
    public init(configuration: HubConfiguration, store: any HubStorage, admission: (any WorkerAdmission)? = nil, logger: Logger,
                chain: HubChain? = nil, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.configuration = configuration
        let chain = chain ?? HubChain(nodeID: configuration.nodeID)
        self.chain = chain
        self.store = store
        self.onRunning = onRunning
        let tokens = TokenCache(store: store, ttl: configuration.tokenCacheTTL)
        self.tokens = tokens
        let billing = Billing(ledger: store, logger: logger)
        self.billing = billing
        self.usage = ChargeRecorder(ledger: store, billing: billing, logger: logger)
        let presence = PresenceRecorder(store: store, logger: logger)
        self.presence = presence
        tunnel = WorkerTunnel(node: chain.node, admission: admission ?? StoreWorkerAdmission(tokens: tokens, directory: store),
                              presence: chain.observer.map { PresenceTee(first: presence, second: $0) } ?? presence,
                              registry: chain.registry, deadlines: DeadlineSweeper(), configuration: configuration, logger: logger,
                              relayLinks: RelayLinks())
        let (registry, deadlines) = (tunnel.registry, tunnel.deadlines)
        let streamer = ResponseStreamer(usage: usage, billing: billing, deadlines: deadlines, configuration: configuration)
        self.forwarder = RequestForwarder(registry: registry, directory: store, streamer: streamer, configuration: configuration)
    }

    /// Invite-code redeem attempts allowed per source address and minute (guessing codes is slow).
    static let redeemAttemptsPerMinute = 10

    public var registry: WorkerRegistry { tunnel.registry }
    var logger: Logger { tunnel.logger }
    var deadlines: DeadlineSweeper { tunnel.deadlines }

    /// The HTTP router: health, the OpenAI API, admin, and the tunnel paths' refusal (a worker
    /// whose upgrade was refused). Usable in-process with HummingbirdTesting.
    public func makeRouter() -> Router<HubRequestContext> {
        let router = Router(context: HubRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { _, _ -> Response in
            let (ready, why) = await self.readiness()
            return Response(status: ready ? .ok : .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: why + "\n")))
        }
        if let exposition = configuration.metricsExposition {
            router.get("/metrics") { _, _ in exposition.response(self.exportMetrics(exposition)) }
        }
        router.addRoutes(OpenAIRoutes(registry: registry, forwarder: forwarder, tokens: tokens, draining: draining,
                                      maxBodyBytes: configuration.maxBodyBytes, limiter: limiter, tokenRateLimit: configuration.tokenRateLimit,
                                      userRateLimit: configuration.userRateLimit, metrics: configuration.metrics).collection())
        router.addRoutes(AdminRoutes(registry: registry, issuer: store, tokens: tokens, deadlines: deadlines, topology: { [tunnel, chain] in
            Topology.build(node: chain.node.id, role: "hub", upstream: chain.upstream(), workers: tunnel.registry.workers,
                           relays: tunnel.relayLinks.all)
        }).collection())
        let redeems = AddressLimiter(limit: Self.redeemAttemptsPerMinute)
        router.addRoutes(PrivateGroupRoutes(store: store, tokens: tokens, onAccessChanged: { [tokens] user in tokens.invalidate(userID: user) },
                                            allowRedeem: { redeems.allow($0) }).collection())
        router.addRoutes(AccountRoutes(store: store, tokens: tokens, onPricesChanged: { [billing] in billing.pricesChanged() },
                                       onTokenRevoked: { [tokens, tunnel] id in
                                           tokens.invalidateAll()
                                           tunnel.revoke(tokenID: id)  // and down every relay link
                                       },
                                       onBalanceChanged: { [billing] user in billing.balanceChanged(userID: user) }).collection())
        router.addRoutes(TunnelServer<WorkerPrincipal>.refusalRoutes(context: HubRequestContext.self))
        return router
    }

    /// Ready to serve: not draining, and the store answers a query.
    public func readiness() async -> (ready: Bool, reason: String) {
        if draining.value { return (false, "draining") }
        do {
            try await store.checkReachable()
        } catch {
            return (false, "store unreachable: \(error)")
        }
        return (true, "ready")
    }

    /// The metrics text, with the gauges read off the registry first.
    public func exportMetrics(_ exposition: MetricsExposition) -> ByteBuffer {
        configuration.metrics.refresh(registry: registry, relays: tunnel.relayLinks.all.count, upstream: chain.upstream().map {
            UpstreamStatus(connected: $0.state == "connected", reconnects: $0.reconnects)
        })
        return exposition.render()
    }

    public func run() async throws {
        _ = try? await store.markAllOffline()
        await billing.loadPrices()  // no request is served before the prices are known
        let app = Application(
            router: makeRouter(),
            server: .guardedHTTP1Tunnel(tunnel.server(), limits: configuration.httpLimits, tls: configuration.tls, logger: logger,
                                        beforeTrim: { [store] in store.releaseMemory() }),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { [onRunning] channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        // Graceful shutdown goes from last to first: drain, then the server, then the
        // recorders' last writes; the deadlines (timers of requests and sessions) last.
        let parts = ServiceGroup(configuration: .init(services: [
            .init(service: deadlines), .init(service: StoreCheckpointer(store: store, logger: logger)), .init(service: usage), .init(service: presence), .init(service: billing), .init(service: app),
            .init(service: Drain(hub: self)),
        ] + (configuration.usageRetention.map { [.init(service: UsageRetention(store: store, keep: $0, logger: logger))] } ?? []),
        logger: logger))
        try await parts.run()
    }

    /// A hub's place in a chain. A root hub: its own registry, a path of itself, no upstream.
    public struct HubChain: Sendable {
        public let registry: WorkerRegistry
        public let node: RelayNodeIdentity
        public let upstream: @Sendable () -> Topology.Upstream?
        public let observer: (any WorkerPresenceSink)?

        public init(registry: WorkerRegistry, node: RelayNodeIdentity, upstream: @escaping @Sendable () -> Topology.Upstream?,
                    observer: (any WorkerPresenceSink)?) {
            self.registry = registry
            self.node = node
            self.upstream = upstream
            self.observer = observer
        }

        init(nodeID: String) {
            self.init(registry: WorkerRegistry(), node: .root(id: nodeID), upstream: { nil }, observer: nil)
        }
    }

    /// Waits for graceful shutdown, then refuses new API requests and gives those in flight up
    /// to `drainTimeout` to finish.
    struct Drain: Service {
        let hub: HubService

        func run() async throws {
            try await gracefulShutdown()
            hub.logger.notice("shutting down: draining in-flight requests")
            hub.draining.withLock { $0 = true }
            let deadline = ContinuousClock.now + hub.configuration.drainTimeout
            while ContinuousClock.now < deadline, hub.registry.workers.contains(where: { $0.inFlight > 0 }) {
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
