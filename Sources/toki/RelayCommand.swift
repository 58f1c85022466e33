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
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-only",
        abstract: "Accept workers (and child relays) and carry them to a parent hub over one compressed tunnel.",
        discussion: """
            Workers connect to a relay exactly as to a hub (same path, same tokens); the root hub \
            checks their tokens and namespaces and routes to them through the relay. No public API, \
            no user database. Chains may be several relays deep (at most 4 hops).

            """ + ConfigText.precedence(RelaySettings())
    )

    @OptionGroup var config: ConfigFileOption

    /// Every setting's flag (the values are read by TokiConfig, with the environment and the file).
    @OptionGroup(title: "Settings") var settings: RelaySettingFlags

    func validate() throws { _ = try launch() }

    /// What `run` needs, from flags, environment and file (checked).
    struct Launch {
        var configuration: RelayConfiguration
        var address: HostPort
        var insecure: Bool
        var logLevel: Logger.Level
        var logFormat: String
        var metrics: MetricsOptions
    }

    func launch() throws -> Launch {
        let settings = try ResolvedSettings<RelaySettings>.load(arguments: self.settings.arguments, configPath: config.path)
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
        let address = HostPort(parsing: settings[s.listen])!
        var configuration = RelayConfiguration(upstream: upstream, token: token)
        if let nodeId = settings.value(s.nodeId) { configuration.nodeID = nodeId }
        configuration.offerLZ4 = !settings[s.noLz4]
        configuration.drainTimeout = .seconds(settings[s.drainSeconds])
        configuration.endpoint.host = address.host
        configuration.endpoint.port = address.port
        configuration.endpoint.tls = try serverCertificate(certificate: settings.value(s.tlsCert), key: settings.value(s.tlsKey))
        let insecure = settings[s.insecureSkipVerify]
        configuration.tls = try parentTLS(caFile: settings.value(s.caFile), insecure: insecure)
        let metrics = MetricsOptions(listen: settings.value(s.metricsListen).flatMap(HostPort.init(parsing:)), onMainPort: settings[s.metrics])
        return Launch(configuration: configuration, address: address, insecure: insecure,
                      logLevel: Logger.Level(rawValue: settings[s.logLevel].lowercased()) ?? .info,
                      logFormat: settings[s.logFormat], metrics: metrics)
    }

    func run() async throws {
        let launch = try launch()
        var configuration = launch.configuration
        let address = launch.address
        let logger = makeLogger(label: "toki.relay", level: launch.logLevel, format: launch.logFormat)
        let systemd = SystemdLifecycle.fromProcess(logger: logger)
        warnIfInsecure(launch.insecure, parent: "parent", logger: logger)
        let metrics = launch.metrics.backend()
        if let metrics {
            (configuration.endpoint.metrics, configuration.endpoint.metricsExposition) =
                (HubMetrics(factory: metrics.factory), launch.metrics.onMainPort ? metrics.exposition : nil)
        }
        let descriptors = FileDescriptorLimit.raiseToHard()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
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
        let listener = launch.metrics.listener(metrics, logger: logger, render: relay.exportMetrics, readiness: relay.readiness)
        try await runNode([relay] + (listener.map { [$0 as any Service] } ?? []) + (reloader.map { [$0] } ?? []), systemd: systemd, status: {
            let upstream = relay.upstreamStatus
            return "upstream \(upstream.connected ? "connected" : "reconnecting"), \(relay.registry.workers.count) workers, \(relay.inFlight) in flight"
        }, logger: logger)
    }
}
