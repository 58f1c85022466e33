import Foundation
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import TokiHub
import TokiProtocol
import TokiTunnel

/// What `toki relay-only` is told.
public struct RelayConfiguration: Sendable {
    /// The parent's base URL (`http://host:port`, `https://…`, or a full tunnel URL).
    public var upstream: String
    /// A token valid on the root: the relay's own link is owned by its user.
    public var token: String
    /// This node's id in the chain (loop detection, `via` lists).
    public var nodeID = HubConfiguration.makeNodeID()
    /// LZ4 on the upstream link (toki parents agree; on by default).
    public var offerLZ4 = true
    public var tls: TLSConfiguration?
    /// The worker side: listen address, deadlines and limits, as a hub's.
    public var endpoint = HubConfiguration()
    /// On graceful shutdown, how long requests in flight through the relay may take to finish
    /// before the workers' tunnels and the upstream link are closed.
    public var drainTimeout: Duration = .seconds(30)

    public init(upstream: String, token: String) {
        self.upstream = upstream
        self.token = token
    }
}

/// `toki relay-only` as a `Service`: a tunnel endpoint for workers and child relays (no API,
/// no users) and one upstream link that carries them all to the parent. Transparent: workers
/// connect to it as to a hub, with the same paths and tokens, and the root decides everything.
public final class RelayService: Service, Sendable {
    public let configuration: RelayConfiguration
    public let registry = WorkerRegistry()
    let upstream: UpstreamLink
    let announcer: UpstreamAnnouncer
    let endpoint: WorkerEndpointService
    let logger: Logger

    public init(configuration: RelayConfiguration, logger: Logger, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) {
        self.configuration = configuration
        self.logger = logger
        var options = UpstreamLink.Options(url: configuration.upstream, token: configuration.token, nodeID: configuration.nodeID)
        options.offerLZ4 = configuration.offerLZ4
        options.tls = configuration.tls
        let upstream = UpstreamLink(options: options, registry: registry, logger: logger)
        self.upstream = upstream
        let announcer = UpstreamAnnouncer(upstream: upstream, exportToken: nil)
        self.announcer = announcer
        let nodeID = configuration.nodeID
        endpoint = WorkerEndpointService(
            configuration: configuration.endpoint,
            node: RelayNodeIdentity(id: nodeID, path: { upstream.path }),
            admission: UpstreamAdmission(upstream: upstream, cache: VerdictCache()),
            presence: announcer,
            registry: registry, logger: logger, adminToken: configuration.token,
            upstream: { upstream.topology },
            upstreamStatus: { upstream.status.withLock { UpstreamStatus(connected: $0.connected, reconnects: $0.reconnects) } },
            onRunning: onRunning)
        upstream.onRevoke.withLock { [endpoint] in $0 = { tokenID in endpoint.revoke(tokenID: tokenID) } }
    }

    /// Ready: the upstream link is connected (a relay without it cannot admit workers).
    public func readiness() -> (ready: Bool, reason: String) { endpoint.readiness() }

    /// `GET /metrics`'s answer, for a metrics listener of the caller's.
    public func exportMetrics(_ exposition: MetricsExposition) -> ByteBuffer { endpoint.exportMetrics(exposition) }

    /// Whether the upstream link is up, how often it reconnected, and why it last went down.
    public var upstreamStatus: (connected: Bool, reconnects: Int, lastError: String?) {
        upstream.status.withLock { ($0.connected, $0.reconnects, $0.lastError) }
    }

    public func run() async throws {
        let group = ServiceGroup(configuration: .init(services: [
            .init(service: UpstreamRunner(link: upstream, announcer: announcer)), .init(service: endpoint),
            .init(service: Drain(link: upstream, timeout: configuration.drainTimeout, logger: logger)),
        ], logger: logger))
        try await group.run()
    }

    /// Requests in flight through the relay right now.
    public var inFlight: Int { upstream.activeSplices.load(ordering: .relaxed) }

    /// Graceful shutdown goes last to first: this waits (up to `timeout`) for the spliced
    /// streams to end before the endpoint closes the workers' tunnels and the upstream link goes.
    struct Drain: Service {
        let link: UpstreamLink
        let timeout: Duration
        let logger: Logger

        func run() async throws {
            do { try await gracefulShutdown() } catch { return }
            let deadline = ContinuousClock.now + timeout
            logger.notice("shutting down: draining in-flight requests", metadata: ["in_flight": "\(link.activeSplices.load(ordering: .relaxed))"])
            while ContinuousClock.now < deadline, link.activeSplices.load(ordering: .relaxed) > 0 {
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// The upstream link and the announcements that go over it.
    struct UpstreamRunner: Service {
        let link: UpstreamLink
        let announcer: UpstreamAnnouncer
        func run() async throws {
            await cancelWhenGracefulShutdown {
                await withDiscardingTaskGroup { group in
                    group.addTask { await link.run() }
                    group.addTask { await announcer.run() }
                }
            }
        }
    }
}

/// `toki hub --upstream`: a full hub that also lends its workers to a parent. Upstream they
/// appear under the account whose token this hub uses; its own users keep using it locally.
/// Give `chain` to the `HubService`, run this beside it.
public final class UpstreamExporter: Service, Sendable {
    let link: UpstreamLink
    let announcer: UpstreamAnnouncer
    public let chain: HubService.HubChain

    /// `tls`: how the parent's certificate is verified (nil: the system roots).
    public init(upstream: String, token: String, nodeID: String, offerLZ4: Bool = true, tls: TLSConfiguration? = nil, logger: Logger) {
        let registry = WorkerRegistry()
        var options = UpstreamLink.Options(url: upstream, token: token, nodeID: nodeID)
        options.offerLZ4 = offerLZ4
        options.tls = tls
        options.exportToken = token
        let link = UpstreamLink(options: options, registry: registry, logger: logger)
        let announcer = UpstreamAnnouncer(upstream: link, exportToken: token)
        self.link = link
        self.announcer = announcer
        chain = HubService.HubChain(registry: registry, node: RelayNodeIdentity(id: nodeID, path: { link.path }),
                                    upstream: { link.topology }, observer: announcer)
    }

    public func run() async throws {
        try await RelayService.UpstreamRunner(link: link, announcer: announcer).run()
    }
}
