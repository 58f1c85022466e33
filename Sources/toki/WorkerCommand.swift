import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TokiConfig
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

            The original Tokiame configuration works too: --config tokiame.json (any name not ending in \
            .toml), else $TOKIAME_CONFIG, else ~/.tokilake/tokiame.json. Precedence: flags, then the \
            environment (TOKIAME_* and TOKI_WORKER_*), then --config FILE.toml's [worker] section, then \
            tokiame.json. Configured models ([worker.models.NAME], model_targets) are used as they are \
            (per-model URLs, mapped names, headers, rotated API keys); --backend adds discovered models \
            the map does not name.

            SIGTERM/SIGINT: stop taking requests, finish the ones in flight (up to --drain-seconds), exit 0.

            """ + ConfigText.precedence(WorkerSettings())
    )

    /// A `.toml` file is toki's configuration ([worker]); any other file is a tokiame.json, as before.
    @OptionGroup var config: ConfigFileOption

    /// Every setting's flag (the values are read by TokiConfig, with the environment and the file).
    @OptionGroup(title: "Settings") var settings: WorkerSettingFlags

    func validate() throws { _ = try resolvedSettings(environment: ProcessInfo.processInfo.environment) }

    /// `--config`: the TOML file, or (any other name) the tokiame.json.
    var configFiles: (toml: String?, tokiame: String?) {
        guard let path = config.path else { return (nil, nil) }
        return path.lowercased().hasSuffix(".toml") ? (path, nil) : (nil, path)
    }

    func resolvedSettings(environment: [String: String]) throws -> ResolvedSettings<WorkerSettings> {
        do {
            let file = try configFiles.toml.map { path throws(ConfigError) in try ConfigFile.load(path: path).section(for: WorkerSettings()) }
            return try ResolvedSettings(arguments: settings.arguments, environment: environment, file: file)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// Builds the worker options: flags, then the environment, then the TOML file, then
    /// tokiame.json (read exactly as before, with its TOKIAME_* variables).
    func makeOptions(environment: [String: String]) throws -> WorkerOptions {
        let fm = FileManager.default
        let settings = try resolvedSettings(environment: environment)
        let s = settings.group
        var cfg = TokiameConfig()
        // tokiame.json: --config x.json or --tokiame-config, else $TOKIAME_CONFIG, else the file's
        // tokiame_config, else ~/.tokilake/tokiame.json if present.
        let explicit = configFiles.tokiame ?? settings.flag(s.tokiameConfig)
            ?? (environment[TokiameConfig.Env.config]?.trimmingCharacters(in: .whitespaces).isEmpty == false ? nil : settings.fromFile(s.tokiameConfig))
        let path = TokiameConfig.resolveConfigPath(explicitPath: explicit, environment: environment,
                                                   homeDirectory: fm.homeDirectoryForCurrentUser.path,
                                                   fileExists: { fm.fileExists(atPath: $0) })
        let strings: [(Setting<String>, WritableKeyPath<TokiameConfig, String>)] = [
            (s.hub, \.gatewayURL), (s.token, \.token), (s.namespace, \.namespace), (s.group, \.group),
            (s.nodeName, \.nodeName), (s.backendType, \.backendType),
        ]
        do {
            if let path {
                guard let data = fm.contents(atPath: path) else {
                    throw ValidationError("cannot read the config file \(path)")
                }
                cfg = try TokiameConfig.decode(json: data)
            }
            // The TOML file sits above tokiame.json and below the environment.
            for (setting, field) in strings { if let v = settings.fromFile(setting) { cfg[keyPath: field] = v } }
            if let n = settings.fromFile(s.heartbeatSeconds) { cfg.heartbeatIntervalSeconds = n }
            let models = settings.file?.workerModels ?? []
            if !models.isEmpty {
                // Like $TOKIAME_MODEL_TARGETS, the file's models replace tokiame.json's map.
                cfg.modelTargets = Dictionary(models.map {
                    ($0.name, ModelTargetConfig(url: $0.url, mappedName: $0.mappedName, backendType: $0.backendType, headers: $0.headers,
                                                apiKeys: $0.apiKeys, apiKeyHeader: $0.apiKeyHeader, apiKeyPrefix: $0.apiKeyPrefix))
                }, uniquingKeysWith: { first, _ in first })
            }
            try cfg.applyEnvironment(environment)
        } catch let error as TokiameConfigError {
            throw ValidationError(error.message)
        }
        for (setting, field) in strings { if let v = settings.flag(setting) { cfg[keyPath: field] = v } }
        if let n = settings.flag(s.heartbeatSeconds) { cfg.heartbeatIntervalSeconds = n }
        // Flag, environment or the TOML file; else tokiame.json's own key.
        if let insecure = settings.flag(s.insecureSkipVerify) ?? settings.fromEnvironment(s.insecureSkipVerify) ?? settings.fromFile(s.insecureSkipVerify) {
            cfg.insecureSkipVerify = insecure
        }
        if cfg.namespace.trimmingCharacters(in: .whitespaces).isEmpty { cfg.namespace = ProcessInfo.processInfo.hostName }
        if cfg.gatewayURL.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("no hub: pass --hub URL (or hub in the [worker] file, gateway_url in tokiame.json, or TOKIAME_GATEWAY_URL)")
        }
        if cfg.token.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("no token: pass --token (or token in the [worker] file or tokiame.json, or TOKIAME_TOKEN)")
        }
        cfg.gatewayURL = WorkerOptions.hubURL(cfg.gatewayURL)
        cfg.normalize()
        let backends = (settings.value(s.backend) ?? []).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if cfg.modelTargets.isEmpty, backends.isEmpty {
            throw ValidationError("no models: pass --backend URL (models are discovered) or configure [worker.models.NAME] or model_targets in tokiame.json")
        }
        var options = WorkerOptions(config: cfg)
        options.discoveryBackends = backends
        options.discoveryInterval = .seconds(settings[s.discoverySeconds])
        options.offerLZ4 = settings[s.lz4]
        options.maxConcurrentRequests = settings[s.maxConcurrent]
        options.drainTimeout = .seconds(settings[s.drainSeconds])
        if let reconnectDelayMs = settings.value(s.reconnectDelayMs) { options.reconnectDelay = .milliseconds(reconnectDelayMs) }
        if let caFile = settings.value(s.caFile) {
            guard fm.isReadableFile(atPath: caFile) else { throw ValidationError("\(settings.source(s.caFile)) \(caFile) is not readable") }
            options.caFile = caFile
        }
        do { try options.validate() } catch let error as TokiameConfigError { throw ValidationError(error.message) }
        return options
    }

    /// --log-level, else $TOKIAME_LOG_LEVEL or $LOG_LEVEL (an unknown name there means info, as
    /// before), else the file's, else info.
    func logLevel(_ settings: ResolvedSettings<WorkerSettings>, environment: [String: String]) -> Logger.Level {
        let name = settings.flag(settings.group.logLevel) ?? environment[TokiameConfig.Env.logLevel] ?? environment["LOG_LEVEL"]
            ?? settings.fromFile(settings.group.logLevel) ?? "info"
        return Logger.Level(rawValue: name.lowercased()) ?? .info
    }

    func run() async throws {
        let environment = ProcessInfo.processInfo.environment
        let settings = try resolvedSettings(environment: environment)
        let logger = makeLogger(label: "toki.worker", level: logLevel(settings, environment: environment), format: settings[settings.group.logFormat])
        let systemd = SystemdLifecycle.fromProcess(logger: logger)

        var options = try makeOptions(environment: environment)
        for warning in options.config.warnings { logger.warning("\(warning)") }
        let listen = settings.value(settings.group.metricsListen).flatMap(HostPort.init(parsing:))
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
