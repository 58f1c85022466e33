// Generated from TokiConfig's settings (Sources/TokiConfig/Sections.swift): do not edit.
// Regenerate: TOKI_REGENERATE=1 swift test --filter TokiConfigTests (a test keeps it equal).

import ArgumentParser
import TokiConfig

/// The [hub] settings as ArgumentParser sees them (help and completion).
struct HubSettingFlags: SettingFlags {
    typealias Group = HubSettings
    @Option(name: .customLong("listen"), parsing: .unconditional, help: .setting(HubSettings(), "listen")) var listen: String?
    @Option(name: .customLong("tls-cert"), parsing: .unconditional, help: .setting(HubSettings(), "tls_cert"), completion: .file()) var tlsCert: String?
    @Option(name: .customLong("tls-key"), parsing: .unconditional, help: .setting(HubSettings(), "tls_key"), completion: .file()) var tlsKey: String?
    @Option(name: .customLong("data-dir"), parsing: .unconditional, help: .setting(HubSettings(), "data_dir"), completion: .directory) var dataDir: String?
    @Option(name: .customLong("max-body-mib"), parsing: .unconditional, help: .setting(HubSettings(), "max_body_mib")) var maxBodyMib: String?
    @Option(name: .customLong("response-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "response_timeout")) var responseTimeout: String?
    @Option(name: .customLong("heartbeat-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "heartbeat_timeout")) var heartbeatTimeout: String?
    @Option(name: .customLong("ping-interval"), parsing: .unconditional, help: .setting(HubSettings(), "ping_interval")) var pingInterval: String?
    @Option(name: .customLong("slow-client-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "slow_client_timeout")) var slowClientTimeout: String?
    @Option(name: .customLong("response-buffer-mib"), parsing: .unconditional, help: .setting(HubSettings(), "response_buffer_mib")) var responseBufferMib: String?
    @Option(name: .customLong("stream-idle-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "stream_idle_timeout")) var streamIdleTimeout: String?
    @Option(name: .customLong("sse-keepalive"), parsing: .unconditional, help: .setting(HubSettings(), "sse_keepalive")) var sseKeepalive: String?
    @Option(name: .customLong("header-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "header_timeout")) var headerTimeout: String?
    @Option(name: .customLong("idle-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "idle_timeout")) var idleTimeout: String?
    @Option(name: .customLong("body-timeout"), parsing: .unconditional, help: .setting(HubSettings(), "body_timeout")) var bodyTimeout: String?
    @Option(name: .customLong("max-connections"), parsing: .unconditional, help: .setting(HubSettings(), "max_connections")) var maxConnections: String?
    @Option(name: .customLong("usage-retention-days"), parsing: .unconditional, help: .setting(HubSettings(), "usage_retention_days")) var usageRetentionDays: String?
    @Option(name: .customLong("token-rpm"), parsing: .unconditional, help: .setting(HubSettings(), "token_rpm")) var tokenRpm: String?
    @Option(name: .customLong("token-tpm"), parsing: .unconditional, help: .setting(HubSettings(), "token_tpm")) var tokenTpm: String?
    @Option(name: .customLong("token-max-concurrent"), parsing: .unconditional, help: .setting(HubSettings(), "token_max_concurrent")) var tokenMaxConcurrent: String?
    @Option(name: .customLong("user-rpm"), parsing: .unconditional, help: .setting(HubSettings(), "user_rpm")) var userRpm: String?
    @Option(name: .customLong("user-tpm"), parsing: .unconditional, help: .setting(HubSettings(), "user_tpm")) var userTpm: String?
    @Option(name: .customLong("user-max-concurrent"), parsing: .unconditional, help: .setting(HubSettings(), "user_max_concurrent")) var userMaxConcurrent: String?
    @Flag(name: .customLong("no-lz4"), help: .setting(HubSettings(), "no_lz4")) var noLz4 = false
    @Flag(name: .customLong("no-smux2"), help: .setting(HubSettings(), "no_smux2")) var noSmux2 = false
    @Option(name: .customLong("upstream"), parsing: .unconditional, help: .setting(HubSettings(), "upstream")) var upstream: String?
    @Option(name: .customLong("token"), parsing: .unconditional, help: .setting(HubSettings(), "token")) var token: String?
    @Option(name: .customLong("ca-file"), parsing: .unconditional, help: .setting(HubSettings(), "ca_file"), completion: .file()) var caFile: String?
    @Flag(name: .customLong("insecure-skip-verify"), help: .setting(HubSettings(), "insecure_skip_verify")) var insecureSkipVerify = false
    @Option(name: .customLong("node-id"), parsing: .unconditional, help: .setting(HubSettings(), "node_id")) var nodeId: String?
    @Option(name: .customLong("log-level"), parsing: .unconditional, help: .setting(HubSettings(), "log_level")) var logLevel: String?
    @Option(name: .customLong("log-format"), parsing: .unconditional, help: .setting(HubSettings(), "log_format")) var logFormat: String?
    @Option(name: .customLong("drain-seconds"), parsing: .unconditional, help: .setting(HubSettings(), "drain_seconds")) var drainSeconds: String?
    @Option(name: .customLong("metrics-listen"), parsing: .unconditional, help: .setting(HubSettings(), "metrics_listen")) var metricsListen: String?
    @Flag(name: .customLong("metrics"), help: .setting(HubSettings(), "metrics")) var metrics = false
}

/// The [relay] settings as ArgumentParser sees them (help and completion).
struct RelaySettingFlags: SettingFlags {
    typealias Group = RelaySettings
    @Option(name: .customLong("upstream"), parsing: .unconditional, help: .setting(RelaySettings(), "upstream")) var upstream: String?
    @Option(name: .customLong("token"), parsing: .unconditional, help: .setting(RelaySettings(), "token")) var token: String?
    @Option(name: .customLong("ca-file"), parsing: .unconditional, help: .setting(RelaySettings(), "ca_file"), completion: .file()) var caFile: String?
    @Flag(name: .customLong("insecure-skip-verify"), help: .setting(RelaySettings(), "insecure_skip_verify")) var insecureSkipVerify = false
    @Option(name: .customLong("listen"), parsing: .unconditional, help: .setting(RelaySettings(), "listen")) var listen: String?
    @Option(name: .customLong("tls-cert"), parsing: .unconditional, help: .setting(RelaySettings(), "tls_cert"), completion: .file()) var tlsCert: String?
    @Option(name: .customLong("tls-key"), parsing: .unconditional, help: .setting(RelaySettings(), "tls_key"), completion: .file()) var tlsKey: String?
    @Option(name: .customLong("node-id"), parsing: .unconditional, help: .setting(RelaySettings(), "node_id")) var nodeId: String?
    @Flag(name: .customLong("no-lz4"), help: .setting(RelaySettings(), "no_lz4")) var noLz4 = false
    @Option(name: .customLong("log-level"), parsing: .unconditional, help: .setting(RelaySettings(), "log_level")) var logLevel: String?
    @Option(name: .customLong("log-format"), parsing: .unconditional, help: .setting(RelaySettings(), "log_format")) var logFormat: String?
    @Option(name: .customLong("drain-seconds"), parsing: .unconditional, help: .setting(RelaySettings(), "drain_seconds")) var drainSeconds: String?
    @Option(name: .customLong("metrics-listen"), parsing: .unconditional, help: .setting(RelaySettings(), "metrics_listen")) var metricsListen: String?
    @Flag(name: .customLong("metrics"), help: .setting(RelaySettings(), "metrics")) var metrics = false
}

/// The [worker] settings as ArgumentParser sees them (help and completion).
struct WorkerSettingFlags: SettingFlags {
    typealias Group = WorkerSettings
    @Option(name: .customLong("hub"), parsing: .unconditional, help: .setting(WorkerSettings(), "hub")) var hub: String?
    @Option(name: .customLong("token"), parsing: .unconditional, help: .setting(WorkerSettings(), "token")) var token: String?
    @Option(name: .customLong("backend"), parsing: .unconditionalSingleValue, help: .setting(WorkerSettings(), "backend")) var backend: [String] = []
    @Option(name: .customLong("namespace"), parsing: .unconditional, help: .setting(WorkerSettings(), "namespace")) var namespace: String?
    @Option(name: .customLong("group"), parsing: .unconditional, help: .setting(WorkerSettings(), "group")) var group: String?
    @Option(name: .customLong("node-name"), parsing: .unconditional, help: .setting(WorkerSettings(), "node_name")) var nodeName: String?
    @Option(name: .customLong("tokiame-config"), parsing: .unconditional, help: .setting(WorkerSettings(), "tokiame_config"), completion: .file()) var tokiameConfig: String?
    @Option(name: .customLong("backend-type"), parsing: .unconditional, help: .setting(WorkerSettings(), "backend_type")) var backendType: String?
    @Flag(name: .customLong("lz4"), help: .setting(WorkerSettings(), "lz4")) var lz4 = false
    @Option(name: .customLong("ca-file"), parsing: .unconditional, help: .setting(WorkerSettings(), "ca_file"), completion: .file()) var caFile: String?
    @Flag(name: .customLong("insecure-skip-verify"), help: .setting(WorkerSettings(), "insecure_skip_verify")) var insecureSkipVerify = false
    @Option(name: .customLong("heartbeat-seconds"), parsing: .unconditional, help: .setting(WorkerSettings(), "heartbeat_seconds")) var heartbeatSeconds: String?
    @Option(name: .customLong("max-concurrent"), parsing: .unconditional, help: .setting(WorkerSettings(), "max_concurrent")) var maxConcurrent: String?
    @Option(name: .customLong("discovery-seconds"), parsing: .unconditional, help: .setting(WorkerSettings(), "discovery_seconds")) var discoverySeconds: String?
    @Option(name: .customLong("drain-seconds"), parsing: .unconditional, help: .setting(WorkerSettings(), "drain_seconds")) var drainSeconds: String?
    @Option(name: .customLong("log-level"), parsing: .unconditional, help: .setting(WorkerSettings(), "log_level")) var logLevel: String?
    @Option(name: .customLong("log-format"), parsing: .unconditional, help: .setting(WorkerSettings(), "log_format")) var logFormat: String?
    @Option(name: .customLong("metrics-listen"), parsing: .unconditional, help: .setting(WorkerSettings(), "metrics_listen")) var metricsListen: String?
    @Option(name: .customLong("reconnect-delay-ms"), parsing: .unconditional, help: .setting(WorkerSettings(), "reconnect_delay_ms")) var reconnectDelayMs: String?
}
