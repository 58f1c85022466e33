import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TokiHub
import TokiOps
import TokiRelay
import TokiTunnel

/// `toki relay-only`: a regional hop between workers and a hub (docs/relay.md).
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-only",
        abstract: "Accept workers (and child relays) and carry them to a parent hub over one compressed tunnel.",
        discussion: """
            Workers connect to a relay exactly as to a hub (same path, same tokens); the root hub \
            checks their tokens and namespaces and routes to them through the relay. No public API, \
            no user database. Chains may be several relays deep (at most 4 hops).
            """
    )

    @Option(name: .long, help: "The parent's base URL: the root hub or another relay (http://host:port, https://…).")
    var upstream: String

    /// A token valid on the root hub: the relay's own link is owned by its user.
    @OptionGroup var token: TokenOption

    @Option(name: .long, help: "Address workers connect to (HOST:PORT).")
    var listen = "127.0.0.1:8081"

    @OptionGroup var node: NodeIDOption
    @OptionGroup var metricsOptions: MetricsOptions

    @Flag(name: .long, help: "Do not offer LZ4 on the upstream link.")
    var noLz4 = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @OptionGroup var logging: LoggingOptions

    @Option(name: .long, help: "On SIGTERM, seconds requests in flight through the relay may take to finish before its tunnels close.")
    var drainSeconds = 30

    func validate() throws {
        _ = try HostPort(listen)
        if drainSeconds < 0 { throw ValidationError("--drain-seconds must not be negative") }
        _ = try token.required(for: "a token valid on the root hub")
        do { _ = try TunnelDialOptions.normalize(TunnelDialOptions.hubURL(upstream)) } catch {
            throw ValidationError("--upstream: \(error)")
        }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "toki.relay", level: logLevel)
        let systemd = SystemdLifecycle.fromProcess(logger: logger)
        let address = try HostPort(listen)
        var configuration = RelayConfiguration(upstream: upstream, token: token.resolved)
        if let nodeId = node.nodeId { configuration.nodeID = nodeId }
        configuration.offerLZ4 = !noLz4
        configuration.drainTimeout = .seconds(drainSeconds)
        configuration.endpoint.host = address.host
        configuration.endpoint.port = address.port
        let metrics = metricsOptions.backend()
        if let metrics { (configuration.endpoint.metrics, configuration.endpoint.metricsExposition) = (HubMetrics(factory: metrics.factory), metricsOptions.metrics ? metrics.exposition : nil) }
        let descriptors = FileDescriptorLimit.raiseToHard()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
        let (nodeID, upstreamURL) = (configuration.nodeID, configuration.upstream)
        let relay = RelayService(configuration: configuration, logger: logger) { port in
            logger.notice("toki relay listening", metadata: [
                "workers": "ws://\(address.host):\(port)/api/tokilake/connect", "upstream": "\(upstreamURL)", "node": "\(nodeID)",
            ])
            FileHandle.standardOutput.write(Data("LISTEN \(address.host):\(port)\n".utf8))
            // The upstream link is dialled by then (it starts first); it need not be up yet.
            systemd.ready(status: "listening on port \(port)")
        }
        let listener = try metricsOptions.listener(metrics, logger: logger, render: relay.exportMetrics, readiness: relay.readiness)
        try await runNode([relay] + (listener.map { [$0 as any Service] } ?? []), systemd: systemd, status: {
            let upstream = relay.upstreamStatus
            return "upstream \(upstream.connected ? "connected" : "reconnecting"), \(relay.registry.workers.count) workers, \(relay.inFlight) in flight"
        }, logger: logger)
    }
}
