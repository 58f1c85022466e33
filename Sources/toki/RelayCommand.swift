import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TokiConfig
import TokiHub
import TokiOps
import TokiRelay
import TokiTunnel

/// `toki relay-only`: a regional hop between workers and a hub (docs/relay.md).
struct RelayCommand: NodeCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-only",
        abstract: "Accept workers (and child relays) and carry them to a parent hub over one compressed tunnel.",
        discussion: """
            Workers connect to a relay exactly as to a hub (same path, same tokens); the root hub \
            checks their tokens and namespaces and routes to them through the relay. No public API, \
            no user database. Chains may be several relays deep (at most 4 hops).

            """ + ConfigText.precedence(RelaySettings())
    )

    @OptionGroup var options: NodeOptions<RelaySettingFlags, Launch>

    /// What `run` needs, from flags, environment and file (checked).
    struct Launch {
        var configuration: RelayConfiguration
        var node: NodeLaunch
    }

    func launch() throws -> Launch {
        let settings = try options.resolvedSettings()
        let s = settings.group
        guard let upstream = settings.value(s.upstream) else {
            throw ValidationError("no parent: give it with --upstream URL, $TOKI_RELAY_UPSTREAM or upstream in the file")
        }
        do { _ = try TunnelDialOptions.normalize(TunnelDialOptions.hubURL(upstream)) } catch {
            throw ValidationError("\(settings.source(s.upstream)): \(error)")
        }
        let token = (settings.value(s.token) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else {
            throw ValidationError("a token valid on the root hub: give it with --token, $TOKI_TOKEN or token in the file")
        }
        var node = try NodeLaunch(settings)
        var configuration = RelayConfiguration(upstream: upstream, token: token)
        if let nodeID = node.nodeID { configuration.nodeID = nodeID }
        configuration.offerLZ4 = !settings[s.noLz4]
        configuration.drainTimeout = node.drainTimeout
        configuration.endpoint = node.endpoint
        node.insecure = settings[s.insecureSkipVerify]
        configuration.tls = try parentTLS(caFile: settings.value(s.caFile), insecure: node.insecure)
        return Launch(configuration: configuration, node: node)
    }

    func run() async throws {
        let launch = try launched()
        var configuration = launch.configuration
        let address = launch.node.address
        let (logger, systemd, metrics) = launch.node.start(label: "toki.relay", endpoint: &configuration.endpoint)
        let (nodeID, upstreamURL) = (configuration.nodeID, configuration.upstream)
        let ws = configuration.endpoint.tls == nil ? "ws" : "wss"
        let relay = RelayService(configuration: configuration, logger: logger) { port in
            logger.notice("toki relay listening", metadata: [
                "workers": "\(ws)://\(address.host):\(port)/api/tokilake/connect", "upstream": "\(upstreamURL)", "node": "\(nodeID)",
            ])
            FileHandle.standardOutput.write(Data("LISTEN \(address.host):\(port)\n".utf8))
            // The upstream link is dialled by then (it starts first); it need not be up yet.
            systemd.ready(status: "listening on port \(port)")
        }
        let reloader = configuration.endpoint.tls.map { CertificateReloader(certificate: $0, logger: logger) as any Service }
        let listener = launch.node.metrics.listener(metrics, logger: logger, render: relay.exportMetrics, readiness: relay.readiness)
        try await runNode([relay] + (listener.map { [$0 as any Service] } ?? []) + (reloader.map { [$0] } ?? []), systemd: systemd, status: {
            let upstream = relay.upstreamStatus
            return "upstream \(upstream.connected ? "connected" : "reconnecting"), \(relay.registry.workers.count) workers, \(relay.inFlight) in flight"
        }, logger: logger)
    }
}
