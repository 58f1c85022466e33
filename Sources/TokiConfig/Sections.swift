// The settings of each mode: one declaration each. `toki hub|relay-only|worker` parse their flags
// from these, read their section of the file against them, and `toki config example` prints them.

import Foundation
import TokiProtocol

/// The settings of one mode (`[hub]`, `[relay]`, `[worker]`).
public protocol SettingsGroup: Sendable {
    /// The section name in the file, and the `TOKI_<SECTION>_` prefix of derived variables.
    static var section: String { get }
    /// What the example file says about the section.
    static var summary: String { get }
    init()
    /// Problems of a sub-table of the section (`[worker.models.NAME]`); by default every
    /// sub-table is unknown.
    static func tableProblems(_ name: String, _ table: TOMLTable) -> [(line: Int, message: String)]
    /// The commented sub-table(s) appended to the example.
    static var exampleTables: String { get }
}

extension SettingsGroup {
    /// The settings in declaration order (the group's stored properties).
    public var all: [any AnySetting] {
        Mirror(reflecting: self).children.compactMap { $0.value as? any AnySetting }
    }

    public static func tableProblems(_ name: String, _ table: TOMLTable) -> [(line: Int, message: String)] {
        [(table.line, "unknown table [\(section).\(name)]")]
    }

    public static var exampleTables: String { "" }
}

/// The modes, by section name.
public enum ConfigMode: String, CaseIterable, Sendable {
    case hub, relay, worker

    public var group: any SettingsGroup {
        switch self {
        case .hub: HubSettings()
        case .relay: RelaySettings()
        case .worker: WorkerSettings()
        }
    }
}

private let logLevelHelp = "Log level: trace, debug, info, notice, warning, error, critical."

// Settings the hub and the relay share, declared once.

/// What the node serves: HTTPS/WSS with these files, else plain HTTP.
private let served = (
    certificate: Setting<String>("tls_cert", example: "/etc/toki/tls.pem", valueName: "path",
        help: "Serve HTTPS and WSS with this PEM certificate chain (with tls_key); SIGHUP reloads both files for new connections. Without it: plain HTTP, for a TLS proxy in front (contrib/nginx/).", check: Check.nonEmpty),
    key: Setting<String>("tls_key", example: "/etc/toki/tls.key", valueName: "path",
        help: "The PEM private key of tls_cert.", check: Check.nonEmpty)
)

/// How the parent's certificate is verified.
private let parent = (
    caFile: Setting<String>("ca_file", example: "/etc/toki/parent-ca.pem", valueName: "path",
        help: "PEM file of CA certificates that verify the parent's certificate (hub: with upstream; default: the system roots).", check: Check.nonEmpty),
    insecureSkipVerify: Setting<Bool>("insecure_skip_verify", default: false, help: insecureHelp("parent"))
)

/// The node in a chain, and its logs.
private let chain = (
    nodeID: Setting<String>("node_id", example: "eu-1", valueName: "id",
        help: "This node's id in chains (default: host name and a random suffix).", check: nodeIDCheck),
    logLevel: Setting<String>("log_level", default: "info", valueName: "level", help: logLevelHelp, check: Check.oneOf(Check.logLevels))
)
/// How a node logs and shows itself to its supervisor and to Prometheus (hub, relay and worker).
private let ops = (
    logFormat: Setting<String>("log_format", default: "text", valueName: "format", environment: .named("TOKI_LOG_FORMAT"),
        help: "Log line format: text, logfmt or json. Logs go to stderr.", check: Check.oneOf(Check.logFormats)),
    metrics: Setting<Bool>("metrics", default: false,
        help: "Also serve GET /metrics on the main port, unauthenticated (restrict it at the reverse proxy).")
)
/// The parent a node dials (hub: with upstream; relay: always), and the token it dials with.
private func upstreamSetting(example: String, _ help: String) -> Setting<String> {
    Setting<String>("upstream", example: example, valueName: "url", help: help, check: Check.nonEmpty)
}
private func parentTokenSetting(_ help: String) -> Setting<String> {
    Setting<String>("token", example: "sk-…", valueName: "token", environment: .named("TOKI_TOKEN"), help: help, check: Check.nonEmpty)
}
/// Where the node serves (HOST:PORT).
private func listenSetting(default address: String, _ help: String) -> Setting<String> {
    Setting<String>("listen", default: address, valueName: "host:port", help: help, check: Check.hostPort)
}
private func metricsListenSetting(example: String) -> Setting<String> {
    Setting<String>("metrics_listen", example: example, valueName: "host:port",
        help: "Serve GET /metrics (Prometheus text), /healthz and /readyz on their own port (HOST:PORT; port 0 picks one). Unauthenticated: keep it on loopback or a private network.", check: Check.hostPort)
}
private func drainSetting(_ help: String) -> Setting<Int> {
    Setting<Int>("drain_seconds", default: 30, valueName: "seconds", help: help, check: Check.nonNegative)
}
private func insecureHelp(_ parent: String) -> String {
    "Do not verify the \(parent)'s TLS certificate at all (anyone on the path can then read the traffic and take the token); logged as a warning at start. Prefer ca_file."
}

// MARK: [hub]

public struct HubSettings: SettingsGroup {
    public static let section = "hub"
    public static let summary = "toki hub: the OpenAI API for users and the tunnel endpoint for workers, on one port."
    public init() {}

    public let listen = listenSetting(default: "127.0.0.1:8080", "Address to listen on (HOST:PORT). Use 0.0.0.0:8080 to accept workers from other machines.")
    public let tlsCert = served.certificate
    public let tlsKey = served.key
    public let dataDir = Setting<String>("data_dir", example: "/var/lib/toki", valueName: "path",
        help: "Directory for the SQLite database, created if missing (default: $STATE_DIRECTORY under systemd, else ./toki-data).", check: Check.nonEmpty)
    public let maxBodyMib = Setting<Int>("max_body_mib", default: 32, valueName: "n",
        help: "Largest request body accepted, in MiB (413 above; at most \(tunnelMaxBodyMib), the largest body the tunnel carries).", check: Check.range(1...tunnelMaxBodyMib))
    public let responseTimeout = Setting<Int>("response_timeout", default: 300, valueName: "seconds",
        help: "Seconds a worker may take to start answering (504 after).", check: Check.positive)
    public let heartbeatTimeout = Setting<Int>("heartbeat_timeout", default: 45, valueName: "seconds",
        help: "Seconds without a control message before a registered worker is dropped (Tokilake: 45).", check: Check.positive)
    public let pingInterval = Setting<Int>("ping_interval", default: 15, valueName: "seconds",
        help: "Seconds a worker link may be silent before the hub pings it; a link still silent one period later is dropped.", check: Check.positive)
    public let slowClientTimeout = Setting<Int>("slow_client_timeout", default: 10, valueName: "seconds",
        help: "Seconds a client may accept no bytes of its response before the request is cancelled (a slow but steady reader is never cut).", check: Check.positive)
    public let responseBufferMib = Setting<Int>("response_buffer_mib", default: 4, valueName: "n",
        help: "MiB of response the hub holds for one client beyond what its socket took (on links to original v1 workers a client over it is cut off).", check: Check.positive)
    public let streamIdleTimeout = Setting<Int>("stream_idle_timeout", default: 300, valueName: "seconds",
        help: "Seconds a worker may stay silent after the response head before the response fails (worker_timeout).", check: Check.positive)
    public let sseKeepalive = Setting<Int>("sse_keepalive", default: 15, valueName: "seconds",
        help: "Seconds between SSE keep-alive comments while a stream is idle.", check: Check.positive)
    public let headerTimeout = Setting<Int>("header_timeout", default: 10, valueName: "seconds",
        help: "Seconds for a request's line and headers to arrive (408 and close after).", check: Check.positive)
    public let idleTimeout = Setting<Int>("idle_timeout", default: 75, valueName: "seconds",
        help: "Seconds a kept-alive connection may wait for its next request.", check: Check.positive)
    public let bodyTimeout = Setting<Int>("body_timeout", default: 30, valueName: "seconds",
        help: "Seconds without request-body bytes while the body is being read (408 and close after).", check: Check.positive)
    public let maxConnections = Setting<Int>("max_connections", example: 10000, valueName: "n",
        help: "Most open connections, API clients and workers together (default: the open-file limit minus 256).", check: Check.positive)
    public let usageRetentionDays = Setting<Int>("usage_retention_days", example: 90, valueName: "days",
        help: "Delete usage rows older than this many days (default: keep them). Charges stay in the ledger.", check: Check.positive)
    public let tokenRpm = Setting<Int>("token_rpm", example: 600, valueName: "n",
        help: "Requests per minute each API token may make (a token's own limit replaces it; default: unlimited).", check: Check.positive)
    public let tokenTpm = Setting<Int>("token_tpm", example: 200000, valueName: "n",
        help: "Tokens (prompt and completion) per minute each API token may use.", check: Check.positive)
    public let tokenMaxConcurrent = Setting<Int>("token_max_concurrent", example: 16, valueName: "n",
        help: "Requests each API token may have in flight at once.", check: Check.positive)
    public let userRpm = Setting<Int>("user_rpm", example: 1200, valueName: "n",
        help: "Requests per minute each user may make, all their tokens together.", check: Check.positive)
    public let userTpm = Setting<Int>("user_tpm", example: 400000, valueName: "n",
        help: "Tokens per minute each user may use, all their tokens together.", check: Check.positive)
    public let userMaxConcurrent = Setting<Int>("user_max_concurrent", example: 32, valueName: "n",
        help: "Requests each user may have in flight at once.", check: Check.positive)
    public let noLz4 = Setting<Bool>("no_lz4", default: false,
        help: "Refuse LZ4 compression even when a worker offers it.")
    public let noSmux2 = Setting<Bool>("no_smux2", default: false,
        help: "Keep toki workers on smux v1 even when they offer v2 (per-stream windows).")
    public let upstream = upstreamSetting(example: "https://root-hub.example.com",
        "Also lend this hub's workers to a parent hub (its base URL); they appear there under the account of token.")
    public let token = parentTokenSetting("With upstream: a token valid on the parent.")
    public let caFile = parent.caFile
    public let insecureSkipVerify = parent.insecureSkipVerify
    public let nodeId = chain.nodeID
    public let logLevel = chain.logLevel
    public let logFormat = ops.logFormat
    public let drainSeconds = drainSetting("On SIGTERM, seconds in-flight requests may take to finish (new ones get 503 meanwhile).")
    public let metricsListen = metricsListenSetting(example: "127.0.0.1:9464")
    public let metrics = ops.metrics
}

/// Every toki worker accepts a request line carrying this much body; a larger one would fail there.
private let tunnelMaxBodyMib = TunnelProtocol.maxRequestBodyBytes >> 20

let nodeIDCheck: @Sendable (String) -> String? = {
    $0.isEmpty || $0.utf8.count > 128 || $0.contains(",") ? "must be 1 to 128 bytes, without commas" : nil
}

// MARK: [relay]

public struct RelaySettings: SettingsGroup {
    public static let section = "relay"
    public static let summary = "toki relay-only: accepts workers (and child relays) and carries them to a parent hub over one tunnel."
    public init() {}

    public let upstream = upstreamSetting(example: "https://hub.example.com",
        "The parent's base URL: the root hub or another relay (http://host:port, https://…). Required.")
    public let token = parentTokenSetting("A token valid on the root hub: the relay's own link is owned by its user. Required.")
    public let caFile = parent.caFile
    public let insecureSkipVerify = parent.insecureSkipVerify
    public let listen = listenSetting(default: "127.0.0.1:8081", "Address workers connect to (HOST:PORT).")
    public let tlsCert = served.certificate
    public let tlsKey = served.key
    public let nodeId = chain.nodeID
    public let noLz4 = Setting<Bool>("no_lz4", default: false,
        help: "Do not offer LZ4 on the upstream link.")
    public let logLevel = chain.logLevel
    public let logFormat = ops.logFormat
    public let drainSeconds = drainSetting("On SIGTERM, seconds requests in flight through the relay may take to finish before its tunnels close.")
    public let metricsListen = metricsListenSetting(example: "127.0.0.1:9465")
    public let metrics = ops.metrics
}

// MARK: [worker]

public struct WorkerSettings: SettingsGroup {
    public static let section = "worker"
    public static let summary = """
        toki worker: serves the models of local inference backends through a hub. The keys mirror \
        tokiame.json (hub is gateway_url, heartbeat_seconds is heartbeat_interval_seconds); a \
        tokiame.json (tokiame_config, $TOKIAME_CONFIG, else ~/.tokilake/tokiame.json) is still \
        read, below this file.
        """
    public init() {}

    public let hub = Setting<String>("hub", example: "wss://hub.example.com", valueName: "url", environment: .tokiame("TOKIAME_GATEWAY_URL"),
        help: "Hub URL (ws://, wss://, http:// or https://). Without a path, /api/tokilake/connect is used; a URL with a path is used verbatim.", check: Check.nonEmpty)
    public let token = Setting<String>("token", example: "sk-…", valueName: "token", environment: .tokiame("TOKIAME_TOKEN"),
        help: "API token of the hub account that owns this worker (sent as Authorization: Bearer).", check: Check.nonEmpty)
    public let backend = Setting<[String]>("backend", example: ["http://127.0.0.1:11434"], valueName: "url",
        help: "Base URL of a local OpenAI-compatible or Ollama backend whose models are discovered. Repeatable (an array in the file, comma-separated in the environment).")
    public let namespace = Setting<String>("namespace", example: "gpu-box-1", valueName: "name", environment: .tokiame("TOKIAME_NAMESPACE"),
        help: "Namespace this worker registers under (default: the host name). It belongs to the first account that registers it.", check: Check.nonEmpty)
    public let group = Setting<String>("group", example: "default", valueName: "group", environment: .tokiame("TOKIAME_GROUP"),
        help: "Group(s) the worker serves, comma-separated (default: the account's primary group).")
    public let nodeName = Setting<String>("node_name", example: "gpu-box-1", valueName: "name", environment: .tokiame("TOKIAME_NODE_NAME"),
        help: "Display name of this node on the hub (default: the namespace).")
    public let tokiameConfig = Setting<String>("tokiame_config", example: "/etc/toki/tokiame.json", valueName: "path", environment: .tokiame("TOKIAME_CONFIG"),
        help: "A tokiame.json to read below this file and the environment (default: ~/.tokilake/tokiame.json if present). `--config FILE` not ending in .toml means this.", check: Check.nonEmpty)
    public let backendType = Setting<String>("backend_type", example: "openai", valueName: "type", environment: .tokiame("TOKIAME_BACKEND_TYPE"),
        help: "Backend type of discovered models: openai, ollama, sglang, vllm (default: openai).")
    public let lz4 = Setting<Bool>("lz4", default: false,
        help: "Offer LZ4 compression of the tunnel (used if the hub supports it; helps on slow uplinks).")
    public let caFile = Setting<String>("ca_file", example: "/etc/toki/hub-ca.pem", valueName: "path",
        help: "PEM file of CA certificates to trust for a wss:// hub (default: the system roots).", check: Check.nonEmpty)
    public let insecureSkipVerify = Setting<Bool>("insecure_skip_verify", default: false,
        help: insecureHelp("hub") + " Also tokiame.json's insecure_skip_verify.")
    public let heartbeatSeconds = Setting<Int>("heartbeat_seconds", example: 15, valueName: "n", environment: .tokiame("TOKIAME_HEARTBEAT_INTERVAL_SECONDS"),
        help: "Seconds between heartbeats, 1-44 (default: 15, or heartbeat_interval_seconds).", check: Check.range(1...44))
    public let maxConcurrent = Setting<Int>("max_concurrent", default: 1024, valueName: "n",
        help: "Requests served at once; more are refused with an error at once.", check: Check.positive)
    public let discoverySeconds = Setting<Int>("discovery_seconds", default: 30, valueName: "n",
        help: "Seconds between model re-discoveries of the backend URLs.", check: Check.positive)
    public let drainSeconds = drainSetting("On SIGTERM, seconds in-flight requests may take to finish.")
    public let logLevel = Setting<String>("log_level", example: "info", valueName: "level", environment: .tokiame("TOKIAME_LOG_LEVEL"),
        help: "Log level: trace, debug, info, notice, warning, error, critical (default: $TOKIAME_LOG_LEVEL, $LOG_LEVEL, else info).", check: Check.oneOf(Check.logLevels))
    public let logFormat = ops.logFormat
    public let metricsListen = Setting<String>("metrics_listen", example: "127.0.0.1:9466", valueName: "host:port",
        help: "Serve GET /metrics (Prometheus text), /healthz and /readyz on this local port (HOST:PORT; port 0 picks one). Unauthenticated: keep it on loopback.", check: Check.hostPort)
    public let reconnectDelayMs = Setting<Int>("reconnect_delay_ms", example: 5000, valueName: "n", hidden: true,
        help: "First reconnect delay in milliseconds (for tests; default: reconnect_delay_seconds of tokiame.json, else 5 s).", check: Check.nonNegative)

    /// `[worker.models."NAME"]`: tokiame.json's model_targets entries.
    public static func tableProblems(_ name: String, _ table: TOMLTable) -> [(line: Int, message: String)] {
        guard name == "models" else { return [(table.line, "unknown table [worker.\(name)]")] }
        var problems: [(Int, String)] = []
        for key in table.order {
            if let entry = table.values[key] {
                problems.append((entry.line, "[worker.models] holds one table per model: write [worker.models.\(key)] with url = …"))
            } else if let model = table.tables[key] {
                do { _ = try WorkerModel(name: key, table: model) } catch { problems.append(contentsOf: error.problems) }
            }
        }
        return problems
    }

    public static let exampleTables = """

        # A model served from a fixed backend URL (tokiame.json's model_targets). Models named
        # here are used as they are; `backend` adds the discovered models these do not name.
        # [worker.models."llama3:8b"]
        # url = "http://127.0.0.1:11434"
        # mapped_name = "llama3:8b-instruct-q4"   # the name the backend knows (default: the key)
        # backend_type = "ollama"                  # openai, ollama, sglang, vllm (default: backend_type)
        # api_keys = ["key-1", "key-2"]            # rotated per request
        # api_key_header = "Authorization"         # default: Authorization
        # api_key_prefix = "Bearer "               # default: "Bearer " for Authorization
        #
        # [worker.models."llama3:8b".headers]      # extra headers sent to the backend
        # X-Tenant = "lab"

        """
}

/// One `[worker.models."NAME"]` table.
public struct WorkerModel: Sendable, Equatable {
    public var name: String
    public var url: String
    public var mappedName: String = ""
    public var backendType: String = ""
    public var headers: [String: String] = [:]
    public var apiKeys: [String] = []
    public var apiKeyHeader: String = ""
    public var apiKeyPrefix: String = ""

    public struct Problems: Error {
        public var problems: [(line: Int, message: String)]
    }

    static let stringKeys = ["url", "mapped_name", "backend_type", "api_key_header", "api_key_prefix"]

    public init(name: String, table: TOMLTable) throws(Problems) {
        self.name = name
        self.url = ""
        var problems: [(line: Int, message: String)] = []
        let shown = "[worker.models.\(Self.displayName(name))]"
        for key in table.order {
            if let entry = table.values[key] {
                if Self.stringKeys.contains(key) {
                    guard case .string(let s) = entry.value else {
                        problems.append((entry.line, "key '\(key)' in \(shown): expected a string, got \(entry.value.typeName)"))
                        continue
                    }
                    switch key {
                    case "url": url = s
                    case "mapped_name": mappedName = s
                    case "backend_type": backendType = s
                    case "api_key_header": apiKeyHeader = s
                    default: apiKeyPrefix = s
                    }
                } else if key == "api_keys" {
                    guard let keys = [String](toml: entry.value) else {
                        problems.append((entry.line, "key 'api_keys' in \(shown): expected an array of strings, got \(entry.value.typeName)"))
                        continue
                    }
                    apiKeys = keys
                } else {
                    problems.append((entry.line, "unknown key '\(key)' in \(shown) (known: \((Self.stringKeys + ["api_keys"]).joined(separator: ", ")), [headers])"))
                }
            } else if let sub = table.tables[key] {
                guard key == "headers" else {
                    problems.append((sub.line, "unknown table [worker.models.\(Self.displayName(name)).\(key)]"))
                    continue
                }
                for header in sub.order {
                    if let entry = sub.values[header] {
                        guard case .string(let v) = entry.value else {
                            problems.append((entry.line, "header '\(header)' in \(shown): expected a string, got \(entry.value.typeName)"))
                            continue
                        }
                        headers[header] = v
                    } else if let nested = sub.tables[header] {
                        problems.append((nested.line, "unknown table in the headers of \(shown)"))
                    }
                }
            }
        }
        if url.trimmingCharacters(in: .whitespaces).isEmpty {
            problems.append((table.line, "\(shown) needs url = \"http://…\""))
        }
        if !problems.isEmpty { throw Problems(problems: problems) }
    }

    static func displayName(_ name: String) -> String {
        name.utf8.allSatisfy({ ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2D }) && !name.isEmpty
            ? name : String.quoted(name)
    }
}
