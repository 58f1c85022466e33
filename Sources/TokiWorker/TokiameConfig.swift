// Worker configuration compatible with the original tokiame.json and TOKIAME_* variables
// (spec §7.1, §7.2, §2.3, §2.4). Pure: environment and file reads are parameters.

import Foundation
import TokiProtocol
import TokiTunnel

/// One `model_targets` entry. Keys are the public model names.
public struct ModelTargetConfig: Codable, Sendable, Equatable {
    public var url: String
    public var mappedName: String
    public var backendType: String
    public var headers: [String: String]
    public var apiKeys: [String]
    public var apiKeyHeader: String
    public var apiKeyPrefix: String

    public init(url: String, mappedName: String = "", backendType: String = "", headers: [String: String] = [:],
                apiKeys: [String] = [], apiKeyHeader: String = "", apiKeyPrefix: String = "") {
        self.url = url
        self.mappedName = mappedName
        self.backendType = backendType
        self.headers = headers
        self.apiKeys = apiKeys
        self.apiKeyHeader = apiKeyHeader
        self.apiKeyPrefix = apiKeyPrefix
    }

    enum CodingKeys: String, CodingKey {
        case url, headers
        case mappedName = "mapped_name"
        case backendType = "backend_type"
        case apiKeys = "api_keys"
        case apiKeyHeader = "api_key_header"
        case apiKeyPrefix = "api_key_prefix"
    }

    public init(from decoder: any Decoder) throws {
        self.init(url: "")
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.decode(.url, into: &url)
        try c.decode(.mappedName, into: &mappedName)
        try c.decode(.backendType, into: &backendType)
        try c.decode(.headers, into: &headers)
        try c.decode(.apiKeys, into: &apiKeys)
        try c.decode(.apiKeyHeader, into: &apiKeyHeader)
        try c.decode(.apiKeyPrefix, into: &apiKeyPrefix)
    }

    /// Go `normalizeModelTargetConfig`: trims fields, drops empty headers/keys. The prefix is
    /// kept verbatim (it usually ends with a space).
    public func normalized() -> ModelTargetConfig {
        var t = self
        t.url = url.trimmed
        t.mappedName = mappedName.trimmed
        t.backendType = backendType.trimmed
        t.apiKeyHeader = apiKeyHeader.trimmed
        var h: [String: String] = [:]
        for (k, v) in headers {
            let k = k.trimmed, v = v.trimmed
            if !k.isEmpty, !v.isEmpty { h[k] = v }
        }
        t.headers = h
        t.apiKeys = apiKeys.map(\.trimmed).filter { !$0.isEmpty }
        return t
    }
}

extension KeyedDecodingContainer {
    /// Go's decoding: a missing or null key leaves the field at its zero value (the default
    /// the type declares once).
    func decode<T: Decodable>(_ key: Key, into field: inout T) throws {
        if let value = try decodeIfPresent(T.self, forKey: key) { field = value }
    }
}

public enum TransportMode: String, Sendable, Equatable {
    case auto, quic, websocket
}

public struct TokiameConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct TokiameConfig: Codable, Sendable, Equatable {
    public var gatewayURL: String = ""
    public var token: String = ""
    public var namespace: String = ""
    public var nodeName: String = ""
    public var group: String = ""
    public var backendType: String = ""
    public var transportMode: String = ""
    public var quicEndpoint: String = ""
    public var modelTargets: [String: ModelTargetConfig] = [:]
    public var heartbeatIntervalSeconds: Int = 0
    public var reconnectDelaySeconds: Int = 0
    public var insecureSkipVerify: Bool = false
    /// Keys of the file toki does not know (top level, and `model_targets.<name>.<key>`): they
    /// are ignored, and `warnings` names them.
    public var unknownKeys: [String] = []

    public init() {}

    /// Any key, to list the keys a JSON object has.
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    enum CodingKeys: String, CodingKey {
        case token, namespace, group
        case gatewayURL = "gateway_url"
        case nodeName = "node_name"
        case backendType = "backend_type"
        case transportMode = "transport_mode"
        case quicEndpoint = "quic_endpoint"
        case modelTargets = "model_targets"
        case heartbeatIntervalSeconds = "heartbeat_interval_seconds"
        case reconnectDelaySeconds = "reconnect_delay_seconds"
        case insecureSkipVerify = "insecure_skip_verify"
    }

    public init(from decoder: any Decoder) throws {
        self.init()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try c.decode(.gatewayURL, into: &gatewayURL)
        try c.decode(.token, into: &token)
        try c.decode(.namespace, into: &namespace)
        try c.decode(.nodeName, into: &nodeName)
        try c.decode(.group, into: &group)
        try c.decode(.backendType, into: &backendType)
        try c.decode(.transportMode, into: &transportMode)
        try c.decode(.quicEndpoint, into: &quicEndpoint)
        try c.decode(.modelTargets, into: &modelTargets)
        try c.decode(.heartbeatIntervalSeconds, into: &heartbeatIntervalSeconds)
        try c.decode(.reconnectDelaySeconds, into: &reconnectDelaySeconds)
        try c.decode(.insecureSkipVerify, into: &insecureSkipVerify)
        let all = try decoder.container(keyedBy: AnyKey.self)
        unknownKeys = all.allKeys.map(\.stringValue).filter { CodingKeys(stringValue: $0) == nil }
        if modelTargets.isEmpty == false, let targets = try? c.nestedContainer(keyedBy: AnyKey.self, forKey: .modelTargets) {
            for name in targets.allKeys {
                guard let entry = try? targets.nestedContainer(keyedBy: AnyKey.self, forKey: name) else { continue }
                for key in entry.allKeys where ModelTargetConfig.CodingKeys(stringValue: key.stringValue) == nil {
                    unknownKeys.append("model_targets.\(name.stringValue).\(key.stringValue)")
                }
            }
        }
        unknownKeys.sort()
    }

    /// Logged at start whenever verification is off.
    public static let insecureSkipVerifyWarning = "insecure_skip_verify is set: the hub's TLS certificate is NOT verified; anyone on the path can read and change the traffic and take the token. Trust a private CA with --ca-file instead"

    // MARK: Environment variable names

    public enum Env {
        public static let config = "TOKIAME_CONFIG"
        public static let gatewayURL = "TOKIAME_GATEWAY_URL"
        public static let token = "TOKIAME_TOKEN"
        public static let namespace = "TOKIAME_NAMESPACE"
        public static let nodeName = "TOKIAME_NODE_NAME"
        public static let group = "TOKIAME_GROUP"
        public static let backendType = "TOKIAME_BACKEND_TYPE"
        public static let transportMode = "TOKIAME_TRANSPORT_MODE"
        public static let quicEndpoint = "TOKIAME_QUIC_ENDPOINT"
        public static let modelTargets = "TOKIAME_MODEL_TARGETS"
        public static let heartbeatIntervalSeconds = "TOKIAME_HEARTBEAT_INTERVAL_SECONDS"
        public static let reconnectDelaySeconds = "TOKIAME_RECONNECT_DELAY_SECONDS"
        public static let logLevel = "TOKIAME_LOG_LEVEL"
    }

    // MARK: Loading

    /// Config file lookup: explicit path (`--config`/`-c`), then `TOKIAME_CONFIG`, then
    /// `<home>/.tokilake/tokiame.json` if it exists, else nil (no file).
    public static func resolveConfigPath(explicitPath: String?, environment: [String: String],
                                         homeDirectory: String?,
                                         fileExists: (String) -> Bool) -> String? {
        if let p = explicitPath?.trimmed, !p.isEmpty { return p }
        if let p = environment[Env.config]?.trimmed, !p.isEmpty { return p }
        if let home = homeDirectory?.trimmed, !home.isEmpty {
            let p = (home.hasSuffix("/") ? home : home + "/") + ".tokilake/tokiame.json"
            if fileExists(p) { return p }
        }
        return nil
    }

    /// Decodes a tokiame.json document (unknown keys are ignored and listed in `unknownKeys`).
    public static func decode(json: Data) throws -> TokiameConfig {
        do {
            return try JSONDecoder().decode(TokiameConfig.self, from: json)
        } catch {
            throw TokiameConfigError("decode config file: \(error)")
        }
    }

    /// Applies the `TOKIAME_*` overrides: every non-empty (after trimming) variable wins over the
    /// file; numeric ones only if they are positive integers; `TOKIAME_MODEL_TARGETS` (a JSON
    /// object) replaces the whole map.
    public mutating func applyEnvironment(_ env: [String: String]) throws {
        func str(_ name: String, _ target: inout String) {
            if let v = env[name]?.trimmed, !v.isEmpty { target = v }
        }
        str(Env.gatewayURL, &gatewayURL)
        str(Env.token, &token)
        str(Env.namespace, &namespace)
        str(Env.nodeName, &nodeName)
        str(Env.group, &group)
        str(Env.backendType, &backendType)
        str(Env.transportMode, &transportMode)
        str(Env.quicEndpoint, &quicEndpoint)
        if let raw = env[Env.modelTargets]?.trimmed, !raw.isEmpty {
            do {
                modelTargets = try JSONDecoder().decode([String: ModelTargetConfig].self, from: Data(raw.utf8))
            } catch {
                throw TokiameConfigError("parse \(Env.modelTargets): \(error)")
            }
        }
        if let n = Self.positiveInt(env[Env.heartbeatIntervalSeconds]) { heartbeatIntervalSeconds = n }
        if let n = Self.positiveInt(env[Env.reconnectDelaySeconds]) { reconnectDelaySeconds = n }
    }

    static func positiveInt(_ raw: String?) -> Int? {
        guard let v = raw?.trimmed, !v.isEmpty, let n = Int(v), n > 0 else { return nil }
        return n
    }

    /// Trims, applies defaults (heartbeat 15 s, reconnect 5 s, transport `auto`), normalises
    /// the backend types and the model targets (entries with an empty name or url are dropped).
    public mutating func normalize() {
        gatewayURL = gatewayURL.trimmed
        token = token.trimmed
        namespace = namespace.trimmed
        nodeName = nodeName.trimmed
        group = group.trimmed
        backendType = Self.normalizeBackendType(backendType)
        transportMode = transportMode.trimmed.lowercased()
        if transportMode.isEmpty { transportMode = TransportMode.auto.rawValue }
        quicEndpoint = quicEndpoint.trimmed
        var targets: [String: ModelTargetConfig] = [:]
        for (name, target) in modelTargets {
            let name = name.trimmed
            let t = target.normalized()
            if name.isEmpty || t.url.isEmpty { continue }
            targets[name] = t
        }
        modelTargets = targets
        if heartbeatIntervalSeconds <= 0 { heartbeatIntervalSeconds = TunnelProtocol.defaultHeartbeatIntervalSeconds }
        if reconnectDelaySeconds <= 0 { reconnectDelaySeconds = TunnelProtocol.defaultReconnectDelaySeconds }
    }

    /// Checks the required keys. Call after `normalize()`.
    public func validate() throws {
        if gatewayURL.isEmpty { throw TokiameConfigError("gateway_url is required (\(Env.gatewayURL))") }
        _ = try webSocketURL()
        if token.isEmpty { throw TokiameConfigError("token is required (\(Env.token))") }
        if namespace.isEmpty { throw TokiameConfigError("namespace is required (\(Env.namespace))") }
        guard let mode = TransportMode(rawValue: transportMode) else {
            throw TokiameConfigError(
                "transport_mode must be auto, quic or websocket (\(Env.transportMode)), got \"\(transportMode)\"")
        }
        if mode == .quic { _ = try resolveQUICEndpoint() }
        if modelTargets.isEmpty {
            throw TokiameConfigError(
                "model_targets needs at least one entry with a non-empty name and url (\(Env.modelTargets))")
        }
    }

    /// Non-fatal remarks, to log at start: a heartbeat interval the hub will not tolerate, and
    /// every setting toki accepts but does not act on (QUIC, unknown keys), and
    /// `insecure_skip_verify`, which it does act on.
    public var warnings: [String] {
        var w: [String] = []
        if transportMode.trimmed.lowercased() == TransportMode.quic.rawValue {
            w.append("transport_mode=quic is not supported: toki dials the hub over WebSocket (\(Env.transportMode))")
        }
        if !quicEndpoint.trimmed.isEmpty {
            w.append("quic_endpoint is ignored: toki dials the hub over WebSocket (\(Env.quicEndpoint))")
        }
        if insecureSkipVerify {
            w.append(Self.insecureSkipVerifyWarning)
        }
        for key in unknownKeys {
            w.append("\(key) is not a tokiame.json key toki knows; ignored")
        }
        if heartbeatIntervalSeconds >= TunnelProtocol.heartbeatTimeoutSeconds {
            w.append("heartbeat_interval_seconds=\(heartbeatIntervalSeconds) is >= \(TunnelProtocol.heartbeatTimeoutSeconds): the hub will drop the session")
        }
        return w
    }

    /// Full load: resolve the path, read and decode the file (if any), apply the environment,
    /// normalise, validate. `readFile` returns nil if the file does not exist.
    public static func load(explicitPath: String? = nil, environment: [String: String],
                            homeDirectory: String?, fileExists: (String) -> Bool,
                            readFile: (String) throws -> Data?) throws -> (config: TokiameConfig, path: String?) {
        var config = TokiameConfig()
        let path = resolveConfigPath(explicitPath: explicitPath, environment: environment,
                                     homeDirectory: homeDirectory, fileExists: fileExists)
        if let path {
            let data: Data?
            do { data = try readFile(path) } catch {
                throw TokiameConfigError("read config file \(path): \(error)")
            }
            guard let data else { throw TokiameConfigError("config file \(path) not found") }
            config = try decode(json: data)
        }
        try config.applyEnvironment(environment)
        config.normalize()
        try config.validate()
        return (config, path)
    }

    // MARK: Derived values

    /// `""`→`openai`; `openai`, `sglang` kept; `vllm`, `vllm-omni`, `vllm_omni` → `vllm_omni`;
    /// anything else lower-cased.
    public static func normalizeBackendType(_ raw: String) -> String {
        let t = raw.trimmed.lowercased()
        switch t {
        case "": return "openai"
        case "vllm", "vllm-omni", "vllm_omni": return "vllm_omni"
        default: return t
        }
    }

    /// The target's backend type, falling back to the global one, normalised.
    public func effectiveBackendType(for target: ModelTargetConfig) -> String {
        let t = target.backendType.trimmed
        return Self.normalizeBackendType(t.isEmpty ? backendType : t)
    }

    /// What is advertised to the hub: the single effective type shared by all targets, or `mixed`.
    public var controlPlaneBackendType: String {
        let types = Set(modelTargets.values.map { effectiveBackendType(for: $0) })
        if types.isEmpty { return Self.normalizeBackendType(backendType) }
        return types.count == 1 ? types.first! : "mixed"
    }

    /// Sorted public model names.
    public var modelNames: [String] { modelTargets.keys.sorted() }

    /// The WebSocket URL to dial: http→ws, https→wss, ws/wss kept; any other scheme is an error.
    public func webSocketURL() throws -> String {
        let raw = gatewayURL.trimmed
        guard let sep = raw.range(of: "://") else {
            throw TokiameConfigError("unsupported \(Env.gatewayURL) scheme: \(raw)")
        }
        let scheme = raw[..<sep.lowerBound].lowercased()
        let rest = raw[sep.upperBound...]
        let newScheme: String
        switch scheme {
        case "ws", "wss": newScheme = scheme
        case "http": newScheme = "ws"
        case "https": newScheme = "wss"
        default: throw TokiameConfigError("unsupported \(Env.gatewayURL) scheme: \(scheme)")
        }
        guard URLComponents(string: raw)?.host?.isEmpty == false else {
            throw TokiameConfigError("\(Env.gatewayURL) host is required: \(raw)")
        }
        return newScheme + "://" + rest
    }

    /// Whether `auto` mode should try QUIC first: a QUIC endpoint is set or the gateway is secure.
    public var prefersQUIC: Bool {
        switch TransportMode(rawValue: transportMode) ?? .auto {
        case .websocket: return false
        case .quic: return true
        case .auto:
            if !quicEndpoint.trimmed.isEmpty { return true }
            let scheme = URLComponents(string: gatewayURL.trimmed)?.scheme?.lowercased()
            return scheme == "wss" || scheme == "https"
        }
    }

    /// `host:port` for QUIC: `quic_endpoint` (URL form accepted), else the gateway host and
    /// port (default 443) when the gateway is wss/https.
    public func resolveQUICEndpoint() throws -> String {
        let raw = quicEndpoint.trimmed
        if !raw.isEmpty {
            if raw.contains("://"), let c = URLComponents(string: raw), let host = c.host, !host.isEmpty,
               let port = c.port {
                return Self.joinHostPort(host, String(port))
            }
            return raw
        }
        guard let c = URLComponents(string: gatewayURL.trimmed) else {
            throw TokiameConfigError("parse \(Env.gatewayURL): \(gatewayURL)")
        }
        let scheme = c.scheme?.lowercased() ?? ""
        guard scheme == "wss" || scheme == "https" else {
            throw TokiameConfigError("QUIC requires a secure \(Env.gatewayURL) or \(Env.quicEndpoint)")
        }
        guard let host = c.host, !host.isEmpty else { throw TokiameConfigError("\(Env.gatewayURL) host is required") }
        return Self.joinHostPort(host, String(c.port ?? 443))
    }

    static func joinHostPort(_ host: String, _ port: String) -> String {
        let h = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        return h.contains(":") ? "[\(h)]:\(port)" : "\(h):\(port)"
    }

    /// The `hardware_info` object (spec §7.3 keys). Target URLs are reduced to scheme://host[:port]
    /// so credentials or paths embedded in them do not leak to the hub.
    public func hardwareInfo(hostname: String, numCPU: Int, goos: String = "linux",
                             goarch: String = TokiameConfig.currentArch) -> [String: JSONValue] {
        var summaries: [String: JSONValue] = [:]
        for (name, t) in modelTargets {
            summaries[name] = .object([
                "url": .string(Self.sanitizeURL(t.url)),
                "mapped_name": .string(t.mappedName),
                "backend_type": .string(effectiveBackendType(for: t)),
                "has_api_keys": .bool(!t.apiKeys.isEmpty),
                "header_count": .int(Int64(t.headers.count)),
            ])
        }
        var info: [String: JSONValue] = [
            "hostname": .string(hostname),
            "goos": .string(goos),
            "goarch": .string(goarch),
            "num_cpu": .int(Int64(numCPU)),
            "default_backend_type": .string(Self.normalizeBackendType(backendType)),
            "control_plane_backend": .string(controlPlaneBackendType),
        ]
        if !summaries.isEmpty { info["model_target_summaries"] = .object(summaries) }
        return info
    }

    public static var currentArch: String {
        #if arch(x86_64)
        return "amd64"
        #elseif arch(arm64)
        return "arm64"
        #else
        return "unknown"
        #endif
    }

    static func sanitizeURL(_ raw: String) -> String {
        guard var c = URLComponents(string: raw.trimmed), c.host != nil else { return "" }
        c.user = nil
        c.password = nil
        c.query = nil
        c.fragment = nil
        c.path = ""
        return c.string ?? ""
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
