import ArgumentParser
import Foundation
import Logging
import TokiConfig
import TokiHub
import TokiOps

/// The settings `toki hub` and `toki relay-only` both have (TokiConfig declares them once).
protocol NodeSettings: SettingsGroup {
    var listen: Setting<String> { get }
    var tlsCert: Setting<String> { get }
    var tlsKey: Setting<String> { get }
    var nodeId: Setting<String> { get }
    var logLevel: Setting<String> { get }
    var logFormat: Setting<String> { get }
    var drainSeconds: Setting<Int> { get }
    var metricsListen: Setting<String> { get }
    var metrics: Setting<Bool> { get }
}

extension HubSettings: NodeSettings {}
extension RelaySettings: NodeSettings {}

/// The arguments of `toki hub` and `toki relay-only`: `--config` and every setting's flag.
struct NodeOptions<Flags: SettingFlags, Launch>: ParsableArguments where Flags.Group: NodeSettings {
    @OptionGroup var config: ConfigFileOption

    /// Every setting's flag (the values are read by TokiConfig, with the environment and the file).
    @OptionGroup(title: "Settings") var settings: Flags

    /// What the command made of them in `validate`, for `run` (not an argument).
    var launched: Launch?
    enum CodingKeys: CodingKey { case config, settings }

    /// The setting flags, the environment and `--config`'s section, checked.
    func resolvedSettings() throws -> ResolvedSettings<Flags.Group> {
        try ResolvedSettings.load(arguments: settings.arguments, configPath: config.path)
    }
}

/// `toki hub` and `toki relay-only`: a node that serves workers on an address.
protocol NodeCommand: AsyncParsableCommand {
    associatedtype Flags: SettingFlags where Flags.Group: NodeSettings
    /// What `run` needs, from the settings (checked).
    associatedtype Launch
    var options: NodeOptions<Flags, Launch> { get set }
    func launch() throws -> Launch
}

extension NodeCommand {
    /// The settings are resolved once, here: a problem is a usage error of this command, before
    /// anything starts.
    mutating func validate() throws { options.launched = try launch() }

    /// What `validate` made for `run`.
    func launched() throws -> Launch { try options.launched ?? launch() }
}

/// What hub and relay-only take alike from their settings, and how both start.
struct NodeLaunch {
    var address: HostPort
    /// The parent's certificate is not verified (set by the command: the hub has a parent only with upstream).
    var insecure = false
    /// Where and how the node serves: host, port and certificate set, the rest default.
    var endpoint = HubConfiguration()
    var nodeID: String?
    var drainTimeout: Duration
    var logLevel: Logger.Level
    var logFormat: String
    var metrics: MetricsOptions

    init<G: NodeSettings>(_ settings: ResolvedSettings<G>) throws {
        let s = settings.group
        address = HostPort(parsing: settings[s.listen])!
        endpoint.host = address.host
        endpoint.port = address.port
        endpoint.tls = try serverCertificate(certificate: settings.value(s.tlsCert), key: settings.value(s.tlsKey))
        nodeID = settings.value(s.nodeId)
        drainTimeout = .seconds(settings[s.drainSeconds])
        logLevel = Logger.Level(rawValue: settings[s.logLevel].lowercased()) ?? .info
        logFormat = settings[s.logFormat]
        metrics = MetricsOptions(listen: settings.value(s.metricsListen).flatMap(HostPort.init(parsing:)), onMainPort: settings[s.metrics])
    }

    /// The logger, systemd's lifecycle and the metrics backend (when asked for; `endpoint` counts
    /// into it, and shows it on the main port with `metrics`); warns of an unverified parent, and
    /// raises the open-file limit (every connection is a descriptor: use all the process may
    /// have, as the Go hub does).
    func start(label: String, endpoint: inout HubConfiguration)
        -> (logger: Logger, systemd: SystemdLifecycle, metrics: PrometheusBackend?) {
        let logger = makeLogger(label: label, level: logLevel, format: logFormat)
        let systemd = SystemdLifecycle.fromProcess(logger: logger)
        warnIfInsecure(insecure, parent: "parent", logger: logger)
        let metrics = self.metrics.backend()
        if let metrics {
            (endpoint.metrics, endpoint.metricsExposition) = (HubMetrics(factory: metrics.factory), self.metrics.onMainPort ? metrics.exposition : nil)
        }
        let descriptors = FileDescriptorLimit.raiseToHard()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
        return (logger, systemd, metrics)
    }
}
