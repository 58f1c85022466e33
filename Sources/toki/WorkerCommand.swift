import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TokiOps
import TokiWorker

/// `toki worker`: the edge daemon next to a GPU.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve the models of local inference backends through a hub (dials out; listens on nothing).",
        discussion: """
            Minimal set-up: toki worker --hub wss://hub.example.com --token sk-... --backend http://127.0.0.1:11434 \
            — the models are discovered from each --backend (/v1/models, or Ollama's /api/tags) every \
            --discovery-seconds and synced to the hub when they change.

            The original Tokiame configuration works too: --config tokiame.json, else $TOKIAME_CONFIG, \
            else ~/.tokilake/tokiame.json; the TOKIAME_* environment variables override the file and the \
            flags override both. Configured model_targets are used as they are (per-model URLs, mapped \
            names, headers, rotated API keys); --backend adds discovered models the map does not name.

            SIGTERM/SIGINT: stop taking requests, finish the ones in flight (up to --drain-seconds), exit 0.
            """
    )

    @Option(name: .long, help: ArgumentHelp("Hub URL (ws://, wss://, http:// or https://). Without a path, /api/tokilake/connect is used; a URL with a path is used verbatim.", valueName: "url"))
    var hub: String?

    @Option(name: .long, help: ArgumentHelp("API token of the hub account that owns this worker (sent as Authorization: Bearer).", valueName: "token"))
    var token: String?

    @Option(name: .long, help: ArgumentHelp("Base URL of a local OpenAI-compatible or Ollama backend whose models are discovered. Repeatable.", valueName: "url"))
    var backend: [String] = []

    @Option(name: .long, help: ArgumentHelp("Namespace this worker registers under (default: the host name). It belongs to the first account that registers it.", valueName: "name"))
    var namespace: String?

    @Option(name: .long, help: ArgumentHelp("Group(s) the worker serves, comma-separated (default: the account's primary group).", valueName: "group"))
    var group: String?

    @Option(name: .long, help: ArgumentHelp("Display name of this node on the hub (default: the namespace).", valueName: "name"))
    var nodeName: String?

    @Option(name: [.customLong("config"), .customShort("c")], help: ArgumentHelp("tokiame.json configuration file (default: $TOKIAME_CONFIG, else ~/.tokilake/tokiame.json if present).", valueName: "path"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Backend type of discovered models: openai, ollama, sglang, vllm (default: openai).", valueName: "type"))
    var backendType: String?

    @Flag(name: .long, help: "Offer LZ4 compression of the tunnel (used if the hub supports it; helps on slow uplinks).")
    var lz4 = false

    @Option(name: .long, help: ArgumentHelp("PEM file of CA certificates to trust for a wss:// hub (default: the system roots).", valueName: "path"))
    var caFile: String?

    @Option(name: .long, help: ArgumentHelp("Seconds between heartbeats, 1-44 (default: 15, or heartbeat_interval_seconds).", valueName: "n"))
    var heartbeatSeconds: Int?

    @Option(name: .long, help: ArgumentHelp("Requests served at once; more are refused with an error at once.", valueName: "n"))
    var maxConcurrent: Int = 256

    @Option(name: .long, help: ArgumentHelp("Seconds between model re-discoveries of the --backend URLs.", valueName: "n"))
    var discoverySeconds: Int = 30

    @Option(name: .long, help: ArgumentHelp("On shutdown, seconds in-flight requests may take to finish.", valueName: "n"))
    var drainSeconds: Int = 30

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical (default: $TOKIAME_LOG_LEVEL, $LOG_LEVEL, else info).", valueName: "level"))
    var logLevel: String?

    @OptionGroup var logging: LoggingOptions

    /// First reconnect delay in milliseconds (tests); default reconnect_delay_seconds or 5 s.
    @Option(name: .long, help: .hidden)
    var reconnectDelayMs: Int?

    func validate() throws {
        if let heartbeatSeconds, !(1..<45).contains(heartbeatSeconds) {
            throw ValidationError("--heartbeat-seconds must be between 1 and 44 (the hub drops a worker silent for 45 s)")
        }
        if maxConcurrent < 1 { throw ValidationError("--max-concurrent must be at least 1") }
        if discoverySeconds < 1 { throw ValidationError("--discovery-seconds must be at least 1") }
        if drainSeconds < 0 { throw ValidationError("--drain-seconds must not be negative") }
        if let logLevel, Logger.Level(rawValue: logLevel.lowercased()) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        if let reconnectDelayMs, reconnectDelayMs < 0 { throw ValidationError("--reconnect-delay-ms must not be negative") }
    }

    @OptionGroup var metricsOptions: WorkerMetricsOptions

    /// Builds the worker options from file, environment and flags (flags win).
    func makeOptions(environment: [String: String]) throws -> WorkerOptions {
        let fm = FileManager.default
        var cfg = TokiameConfig()
        let path = TokiameConfig.resolveConfigPath(explicitPath: config, environment: environment,
                                                   homeDirectory: fm.homeDirectoryForCurrentUser.path,
                                                   fileExists: { fm.fileExists(atPath: $0) })
        do {
            if let path {
                guard let data = fm.contents(atPath: path) else {
                    throw ValidationError("cannot read the config file \(path)")
                }
                cfg = try TokiameConfig.decode(json: data)
            }
            try cfg.applyEnvironment(environment)
        } catch let error as TokiameConfigError {
            throw ValidationError(error.message)
        }
        if let hub { cfg.gatewayURL = hub }
        if let token { cfg.token = token }
        if let namespace { cfg.namespace = namespace }
        if let group { cfg.group = group }
        if let nodeName { cfg.nodeName = nodeName }
        if let backendType { cfg.backendType = backendType }
        if let heartbeatSeconds { cfg.heartbeatIntervalSeconds = heartbeatSeconds }
        if cfg.namespace.trimmingCharacters(in: .whitespaces).isEmpty { cfg.namespace = ProcessInfo.processInfo.hostName }
        if cfg.gatewayURL.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("no hub: pass --hub URL (or gateway_url in tokiame.json, or TOKIAME_GATEWAY_URL)")
        }
        if cfg.token.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("no token: pass --token (or token in tokiame.json, or TOKIAME_TOKEN)")
        }
        cfg.gatewayURL = WorkerOptions.hubURL(cfg.gatewayURL)
        cfg.normalize()
        if cfg.modelTargets.isEmpty, backend.isEmpty {
            throw ValidationError("no models: pass --backend URL (models are discovered) or configure model_targets in tokiame.json")
        }
        var options = WorkerOptions(config: cfg)
        options.discoveryBackends = backend.map { $0.trimmingCharacters(in: .whitespaces) }
        options.discoveryInterval = .seconds(discoverySeconds)
        options.offerLZ4 = lz4
        options.maxConcurrentRequests = maxConcurrent
        options.drainTimeout = .seconds(drainSeconds)
        if let reconnectDelayMs { options.reconnectDelay = .milliseconds(reconnectDelayMs) }
        if let caFile {
            guard fm.isReadableFile(atPath: caFile) else { throw ValidationError("--ca-file \(caFile) is not readable") }
            options.caFile = caFile
        }
        do { try options.validate() } catch let error as TokiameConfigError { throw ValidationError(error.message) }
        return options
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let levelName = logLevel ?? environment[TokiameConfig.Env.logLevel] ?? environment["LOG_LEVEL"] ?? "info"
        let logger = logging.makeLogger(label: "toki.worker", level: Logger.Level(rawValue: levelName.lowercased()) ?? .info)
        let systemd = SystemdLifecycle.fromProcess(logger: logger)

        var options = try makeOptions(environment: environment)
        for warning in options.config.warnings { logger.warning("\(warning)") }
        let listen = try metricsOptions.metricsListen.map(HostPort.init)
        let metrics = listen.map { _ in PrometheusBackend.bootstrap() }
        if let metrics { options.metrics = WorkerMetrics(factory: metrics.factory) }
        // Ready once the hub has accepted the registration (sent again after reconnects: harmless).
        let worker = WorkerService(options: options, logger: logger, onRegistered: { systemd.ready(status: "registered") })
        var listener: MetricsListener?
        if let listen, let metrics {
            listener = MetricsListener(address: listen, exposition: metrics.exposition, render: { worker.refreshMetrics(); return $0.render() },
                                       readiness: worker.readiness, logger: logger)
        }
        try await runNode([worker] + (listener.map { [$0 as any Service] } ?? []), systemd: systemd, status: {
            let status = worker.status
            return status.registered ? "registered, \(status.models.count) models, \(status.inFlight) in flight"
                : "connecting" + (status.lastError.map { ": " + $0 } ?? "")
        }, logger: logger)
    }
}
