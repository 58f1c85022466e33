// Control-stream vocabulary of the Tokilake/Tokiame tunnel (spec §4).
//
// Every type here is Codable with exactly the JSON field names of the Go originals; optional
// fields are omitted when nil (Go `omitempty`) and unknown fields are ignored on decode.
// For the wire, prefer `writeLine(into:)`: it writes compact JSON in Go's field order (map keys
// sorted, as Go does) straight into a ByteBuffer, followed by "\n".

import Foundation
import NIOCore

// MARK: - Protocol constants (one place)

/// Every constant of the tunnel protocol: message types, ack messages, error codes, limits.
public enum TunnelProtocol {
    /// `ControlMessage.type` values (spec §4.2).
    public enum MessageType {
        public static let auth: ControlMessageType = "auth"
        public static let register: ControlMessageType = "register"
        public static let heartbeat: ControlMessageType = "heartbeat"
        public static let modelsSync: ControlMessageType = "models_sync"
        public static let cancelRequest: ControlMessageType = "cancel_request"
        public static let ack: ControlMessageType = "ack"
        public static let error: ControlMessageType = "error"
    }

    /// `ack.message` values (spec §4.4/§4.5).
    public enum AckMessage {
        public static let authOK = "auth_ok"
        public static let registerOK = "register_ok"
        public static let modelsSyncOK = "models_sync_ok"
        public static let heartbeatOK = "heartbeat_ok"
        public static let cancelOK = "cancel_ok"
        public static let cancelNoop = "cancel_noop"
    }

    /// Hub → worker `error.code` values (spec §4.5). All are fatal for the session.
    public enum HubErrorCode {
        public static let authAlreadyCompleted = "auth_already_completed"
        public static let authPayloadMissing = "auth_payload_missing"
        public static let authFailed = "auth_failed"
        public static let notAuthenticated = "not_authenticated"
        public static let registerAlreadyCompleted = "register_already_completed"
        public static let registerPayloadMissing = "register_payload_missing"
        public static let registerFailed = "register_failed"
        public static let notRegistered = "not_registered"
        public static let heartbeatPayloadMissing = "heartbeat_payload_missing"
        public static let heartbeatFailed = "heartbeat_failed"
        public static let modelsPayloadMissing = "models_payload_missing"
        public static let modelsSyncFailed = "models_sync_failed"
        public static let unsupportedMessageType = "unsupported_message_type"
        /// Specific codes older Go hubs sent (and a toki hub SHOULD send, spec §4.5/§9.1).
        public static let namespaceNotOwned = "namespace_not_owned"
        public static let groupNotAuthorized = "group_not_authorized"
    }

    /// Worker → hub `TunnelResponse.error.code` values (spec §5.7).
    public enum WorkerErrorCode {
        public static let targetNotFound = "target_not_found"
        public static let invalidTargetURL = "invalid_target_url"
        public static let rewriteRequestFailed = "rewrite_request_failed"
        public static let localRequestFailed = "local_request_failed"
        public static let adaptResponseFailed = "adapt_response_failed"
        public static let readLocalResponseFailed = "read_local_response_failed"
        /// What the hub substitutes when an error frame carries no code (spec §5.3).
        public static let tokiameStreamError = "tokiame_stream_error"
    }

    /// `cancel_request.reason` the Go hub sends.
    public static let cancelReasonClientDisconnected = "client_disconnected"
    /// Request-id prefixes the Go worker uses (`<namespace>:<prefix>:<uuid>`); note `models`.
    public enum RequestIDPrefix {
        public static let auth = "auth"
        public static let register = "register"
        public static let modelsSync = "models"
        public static let heartbeat = "heartbeat"
        public static let cancel = "cancel"
        public static let relay = "relay"
    }

    /// Worker waits this long for each ack during the handshake (`controlAckTimeout`).
    public static let controlAckTimeoutSeconds = 15
    /// Hub read deadline before registration completes (`registerTimeout`).
    public static let registerTimeoutSeconds = 30
    /// Hub read deadline once registered (`heartbeatTimeout`).
    public static let heartbeatTimeoutSeconds = 45
    /// Default worker heartbeat interval.
    public static let defaultHeartbeatIntervalSeconds = 15
    /// Default worker reconnect delay.
    public static let defaultReconnectDelaySeconds = 5
    /// Maximum raw bytes per `body_chunk` frame the Go worker emits (`tunnelChunkSize`).
    public static let tunnelChunkSize = 32 * 1024
    /// Line-length caps (spec §5.5 recommends capping; Go has none).
    public static let maxControlLineLength = 1 << 20
    /// The largest request body any toki hub forwards (its `--max-body-mib` cannot exceed it).
    /// The request line carries it base64-encoded, so the worker's line limit is derived from it:
    /// whatever a hub accepts, a toki worker accepts too.
    public static let maxRequestBodyBytes = 64 << 20
    /// Hub → worker request line: the base64 body plus headers and the other fields.
    public static let maxRequestLineLength = (maxRequestBodyBytes + 2) / 3 * 4 + (1 << 20)
    /// Worker → hub response lines: a body chunk is one backend read (Go: at most 32 KiB raw),
    /// so a few MiB is generous; it bounds what a hostile worker makes the hub buffer per stream.
    public static let maxResponseLineLength = 4 << 20
    /// WebSocket subprotocol / QUIC ALPN.
    public static let subprotocol = "tokilake.v1"

    /// `"<namespace>:<prefix>:<uuid v4 lowercase>"` as the Go worker builds control request ids.
    public static func makeRequestID(namespace: String, prefix: String, uuid: UUID = UUID()) -> String {
        "\(namespace):\(prefix):\(uuid.uuidString.lowercased())"
    }

    /// `"<namespace>:cancel:<UnixNano>"` as the Go hub builds cancel ids.
    public static func makeCancelRequestID(namespace: String, date: Date = Date()) -> String {
        let nanos = Int64((date.timeIntervalSince1970 * 1_000_000_000).rounded())
        return "\(namespace):cancel:\(nanos)"
    }

    /// `"<namespace>:relay:<uuid>"`, or `"tokiame:relay:<uuid>"` when the namespace is empty.
    public static func makeRelayRequestID(namespace: String, uuid: UUID = UUID()) -> String {
        let ns = namespace.isEmpty ? "tokiame" : namespace
        return "\(ns):relay:\(uuid.uuidString.lowercased())"
    }
}

/// The `type` of a control message. Open set: unknown types decode fine (the hub must answer
/// `unsupported_message_type: <t>`). Pattern-match with `case TunnelProtocol.MessageType.ack:`
/// or with the static members below (`case .ack:`).
public struct ControlMessageType: RawRepresentable, Hashable, Sendable, Codable,
    ExpressibleByStringLiteral, CustomStringConvertible
{
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    public static let auth = TunnelProtocol.MessageType.auth
    public static let register = TunnelProtocol.MessageType.register
    public static let heartbeat = TunnelProtocol.MessageType.heartbeat
    public static let modelsSync = TunnelProtocol.MessageType.modelsSync
    public static let cancelRequest = TunnelProtocol.MessageType.cancelRequest
    public static let ack = TunnelProtocol.MessageType.ack
    public static let error = TunnelProtocol.MessageType.error
}

// MARK: - JSONValue

/// Any JSON value (used for `hardware_info`). Integers that fit in Int64 stay exact.
public enum JSONValue: Sendable, Equatable, Hashable, Codable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else if let o = try? c.decode([String: JSONValue].self) {
            self = .object(o)
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses any JSON text (top level may be any value).
    public init(jsonBytes: some Collection<UInt8>) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: Data(jsonBytes))
    }

    /// Compact JSON, object keys sorted (Go's `map[string]any` order).
    public var jsonString: String {
        var buffer = ByteBuffer()
        JSONOut.writeValue(self, into: &buffer)
        return String(buffer: buffer)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(nilLiteral: ()) { self = .null }
}

// MARK: - Payloads

/// `auth` payload (QUIC only). `token` may carry `sk-` and/or `Bearer `.
public struct AuthPayload: Codable, Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }
    enum CodingKeys: String, CodingKey { case token }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        token = try c.decodeIfPresent(String.self, forKey: .token) ?? ""
    }
}

/// `register` payload.
public struct RegisterPayload: Codable, Sendable, Equatable {
    public var namespace: String
    public var nodeName: String?
    public var group: String?
    public var models: [String]?
    public var hardwareInfo: [String: JSONValue]?
    public var backendType: String?

    public init(namespace: String, nodeName: String? = nil, group: String? = nil, models: [String]? = nil,
                hardwareInfo: [String: JSONValue]? = nil, backendType: String? = nil) {
        self.namespace = namespace
        self.nodeName = nodeName
        self.group = group
        self.models = models
        self.hardwareInfo = hardwareInfo
        self.backendType = backendType
    }

    enum CodingKeys: String, CodingKey {
        case namespace, group, models
        case nodeName = "node_name"
        case hardwareInfo = "hardware_info"
        case backendType = "backend_type"
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? ""
        nodeName = try c.decodeIfPresent(String.self, forKey: .nodeName)
        group = try c.decodeIfPresent(String.self, forKey: .group)
        models = try c.decodeIfPresent([String].self, forKey: .models)
        hardwareInfo = try c.decodeIfPresent([String: JSONValue].self, forKey: .hardwareInfo)
        backendType = try c.decodeIfPresent(String.self, forKey: .backendType)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(namespace, forKey: .namespace)
        try c.encodeIfPresent(nodeName, forKey: .nodeName)
        try c.encodeIfPresent(group, forKey: .group)
        try c.encodeIfPresent(models, forKey: .models)
        try c.encodeIfPresent(hardwareInfo, forKey: .hardwareInfo)
        try c.encodeIfPresent(backendType, forKey: .backendType)
    }
}

/// Worker status values in `heartbeat.status`.
public enum WorkerStatus {
    public static let online = 1
    public static let busy = 2
    public static let offline = 3
}

/// `heartbeat` payload. The Go worker never sets `status`.
public struct HeartbeatPayload: Codable, Sendable, Equatable {
    public var status: Int?
    public var nodeName: String?
    public var hardwareInfo: [String: JSONValue]?
    public var currentModels: [String]?

    public init(status: Int? = nil, nodeName: String? = nil, hardwareInfo: [String: JSONValue]? = nil,
                currentModels: [String]? = nil) {
        self.status = status
        self.nodeName = nodeName
        self.hardwareInfo = hardwareInfo
        self.currentModels = currentModels
    }

    enum CodingKeys: String, CodingKey {
        case status
        case nodeName = "node_name"
        case hardwareInfo = "hardware_info"
        case currentModels = "current_models"
    }
}

/// `models_sync` payload.
public struct ModelsSyncPayload: Codable, Sendable, Equatable {
    public var group: String?
    public var models: [String]?
    public var hardwareInfo: [String: JSONValue]?
    public var backendType: String?

    public init(group: String? = nil, models: [String]? = nil, hardwareInfo: [String: JSONValue]? = nil,
                backendType: String? = nil) {
        self.group = group
        self.models = models
        self.hardwareInfo = hardwareInfo
        self.backendType = backendType
    }

    enum CodingKeys: String, CodingKey {
        case group, models
        case hardwareInfo = "hardware_info"
        case backendType = "backend_type"
    }
}

/// `cancel_request` payload (hub → worker only).
public struct CancelRequestPayload: Codable, Sendable, Equatable {
    public var targetRequestID: String
    public var reason: String?

    public init(targetRequestID: String, reason: String? = nil) {
        self.targetRequestID = targetRequestID
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case targetRequestID = "target_request_id"
        case reason
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        targetRequestID = try c.decodeIfPresent(String.self, forKey: .targetRequestID) ?? ""
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
    }
}

/// `ack` payload. Every ack on the wire carries one (the Go worker crashes otherwise).
public struct AckPayload: Codable, Sendable, Equatable {
    public var message: String?
    public var namespace: String?
    public var workerID: Int?
    public var channelID: Int?

    public init(message: String? = nil, namespace: String? = nil, workerID: Int? = nil, channelID: Int? = nil) {
        self.message = message
        self.namespace = namespace
        self.workerID = workerID
        self.channelID = channelID
    }

    enum CodingKeys: String, CodingKey {
        case message, namespace
        case workerID = "worker_id"
        case channelID = "channel_id"
    }
}

/// `error` payload, also used as `TunnelResponse.error`: `{code?, message}`.
public struct ErrorPayload: Codable, Sendable, Equatable, Error {
    public var code: String?
    public var message: String

    public init(code: String? = nil, message: String) {
        self.code = code
        self.message = message
    }

    enum CodingKeys: String, CodingKey { case code, message }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        code = try c.decodeIfPresent(String.self, forKey: .code)
        message = try c.decodeIfPresent(String.self, forKey: .message) ?? ""
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(code, forKey: .code)
        try c.encode(message, forKey: .message)
    }
}

// MARK: - Envelope

/// The control-stream envelope (spec §4.2). Build messages with the static constructors
/// (`.register(...)`, `.ack(...)`, ...). An ack always encodes a non-null `ack` object, even if
/// someone builds `ControlMessage(type: .ack)` by hand.
public struct ControlMessage: Codable, Sendable, Equatable {
    public var type: ControlMessageType
    public var requestID: String?
    public var auth: AuthPayload?
    public var register: RegisterPayload?
    public var heartbeat: HeartbeatPayload?
    public var modelsSync: ModelsSyncPayload?
    public var cancelRequest: CancelRequestPayload?
    public var ack: AckPayload?
    public var error: ErrorPayload?

    public init(type: ControlMessageType, requestID: String? = nil, auth: AuthPayload? = nil,
                register: RegisterPayload? = nil, heartbeat: HeartbeatPayload? = nil,
                modelsSync: ModelsSyncPayload? = nil, cancelRequest: CancelRequestPayload? = nil,
                ack: AckPayload? = nil, error: ErrorPayload? = nil) {
        self.type = type
        self.requestID = requestID
        self.auth = auth
        self.register = register
        self.heartbeat = heartbeat
        self.modelsSync = modelsSync
        self.cancelRequest = cancelRequest
        self.ack = ack
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case type, auth, register, heartbeat, ack, error
        case requestID = "request_id"
        case modelsSync = "models_sync"
        case cancelRequest = "cancel_request"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(ControlMessageType.self, forKey: .type) ?? ControlMessageType("")
        requestID = try c.decodeIfPresent(String.self, forKey: .requestID)
        auth = try c.decodeIfPresent(AuthPayload.self, forKey: .auth)
        register = try c.decodeIfPresent(RegisterPayload.self, forKey: .register)
        heartbeat = try c.decodeIfPresent(HeartbeatPayload.self, forKey: .heartbeat)
        modelsSync = try c.decodeIfPresent(ModelsSyncPayload.self, forKey: .modelsSync)
        cancelRequest = try c.decodeIfPresent(CancelRequestPayload.self, forKey: .cancelRequest)
        ack = try c.decodeIfPresent(AckPayload.self, forKey: .ack)
        error = try c.decodeIfPresent(ErrorPayload.self, forKey: .error)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encodeIfPresent(requestID, forKey: .requestID)
        try c.encodeIfPresent(auth, forKey: .auth)
        try c.encodeIfPresent(register, forKey: .register)
        try c.encodeIfPresent(heartbeat, forKey: .heartbeat)
        try c.encodeIfPresent(modelsSync, forKey: .modelsSync)
        try c.encodeIfPresent(cancelRequest, forKey: .cancelRequest)
        try c.encodeIfPresent(effectiveAck, forKey: .ack)
        try c.encodeIfPresent(error, forKey: .error)
    }

    /// The ack object that goes on the wire: never nil for an ack message.
    var effectiveAck: AckPayload? {
        if let ack { return ack }
        return type == .ack ? AckPayload() : nil
    }

    // MARK: Constructors

    public static func auth(requestID: String, token: String) -> ControlMessage {
        ControlMessage(type: .auth, requestID: requestID, auth: AuthPayload(token: token))
    }

    public static func register(requestID: String, _ payload: RegisterPayload) -> ControlMessage {
        ControlMessage(type: .register, requestID: requestID, register: payload)
    }

    public static func heartbeat(requestID: String, _ payload: HeartbeatPayload) -> ControlMessage {
        ControlMessage(type: .heartbeat, requestID: requestID, heartbeat: payload)
    }

    public static func modelsSync(requestID: String, _ payload: ModelsSyncPayload) -> ControlMessage {
        ControlMessage(type: .modelsSync, requestID: requestID, modelsSync: payload)
    }

    public static func cancelRequest(requestID: String, targetRequestID: String,
                                     reason: String? = TunnelProtocol.cancelReasonClientDisconnected) -> ControlMessage {
        ControlMessage(type: .cancelRequest, requestID: requestID,
                       cancelRequest: CancelRequestPayload(targetRequestID: targetRequestID, reason: reason))
    }

    /// An ack; always carries an `ack` object. Like Go's `omitempty`, an empty namespace and a
    /// zero worker/channel id are omitted.
    public static func ack(requestID: String?, message: String, namespace: String? = nil,
                           workerID: Int? = nil, channelID: Int? = nil) -> ControlMessage {
        ControlMessage(type: .ack, requestID: requestID,
                       ack: AckPayload(message: message,
                                       namespace: namespace.flatMap { $0.isEmpty ? nil : $0 },
                                       workerID: workerID.flatMap { $0 == 0 ? nil : $0 },
                                       channelID: channelID.flatMap { $0 == 0 ? nil : $0 }))
    }

    public static func error(requestID: String?, code: String?, message: String) -> ControlMessage {
        ControlMessage(type: .error, requestID: requestID, error: ErrorPayload(code: code, message: message))
    }

    // MARK: Wire encoding / decoding

    /// Writes compact JSON (Go field order) and a trailing "\n".
    public func writeLine(into buffer: inout ByteBuffer) {
        writeJSON(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// One NDJSON line, "\n" included.
    public func encodedLine(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 256)
        writeLine(into: &buffer)
        return buffer
    }

    /// Compact JSON without the newline, as a String (handy for logs and tests).
    public var jsonString: String {
        var buffer = ByteBuffer()
        writeJSON(into: &buffer)
        return String(buffer: buffer)
    }

    public func writeJSON(into buffer: inout ByteBuffer) {
        var o = JSONOut.ObjectWriter(&buffer)
        o.string("type", type.rawValue, &buffer)
        o.optString("request_id", requestID, &buffer)
        if let auth {
            o.key("auth", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.string("token", auth.token, &buffer)
            p.close(&buffer)
        }
        if let r = register {
            o.key("register", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.string("namespace", r.namespace, &buffer)
            p.optString("node_name", r.nodeName, &buffer)
            p.optString("group", r.group, &buffer)
            p.optStrings("models", r.models, &buffer)
            p.optObject("hardware_info", r.hardwareInfo, &buffer)
            p.optString("backend_type", r.backendType, &buffer)
            p.close(&buffer)
        }
        if let h = heartbeat {
            o.key("heartbeat", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.optInt("status", h.status, &buffer)
            p.optString("node_name", h.nodeName, &buffer)
            p.optObject("hardware_info", h.hardwareInfo, &buffer)
            p.optStrings("current_models", h.currentModels, &buffer)
            p.close(&buffer)
        }
        if let m = modelsSync {
            o.key("models_sync", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.optString("group", m.group, &buffer)
            p.optStrings("models", m.models, &buffer)
            p.optObject("hardware_info", m.hardwareInfo, &buffer)
            p.optString("backend_type", m.backendType, &buffer)
            p.close(&buffer)
        }
        if let cr = cancelRequest {
            o.key("cancel_request", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.string("target_request_id", cr.targetRequestID, &buffer)
            p.optString("reason", cr.reason, &buffer)
            p.close(&buffer)
        }
        if let a = effectiveAck {
            o.key("ack", &buffer)
            var p = JSONOut.ObjectWriter(&buffer)
            p.optString("message", a.message, &buffer)
            p.optString("namespace", a.namespace, &buffer)
            p.optInt("worker_id", a.workerID, &buffer)
            p.optInt("channel_id", a.channelID, &buffer)
            p.close(&buffer)
        }
        if let e = error {
            o.key("error", &buffer)
            JSONOut.writeError(e, into: &buffer)
        }
        o.close(&buffer)
    }

    /// Decodes one line (no trailing newline needed; surrounding whitespace allowed).
    public static func decode(line: ByteBuffer) throws -> ControlMessage {
        try JSONDecoder().decode(ControlMessage.self, from: Data(line.readableBytesView))
    }

    public static func decode(line: some Collection<UInt8>) throws -> ControlMessage {
        try JSONDecoder().decode(ControlMessage.self, from: Data(line))
    }
}

// MARK: - Internal JSON writer (Go-compatible compact output)

enum JSONOut {
    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Writes a JSON string literal with Go's escaping (`<`, `>`, `&`, U+2028, U+2029 as \u).
    static func writeString(_ s: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in writeEscaped(UnsafeRawBufferPointer(utf8), into: &buffer) }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func needsEscape(_ b: UInt8) -> Bool {
        b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b == UInt8(ascii: "<")
            || b == UInt8(ascii: ">") || b == UInt8(ascii: "&") || b == 0xE2
    }

    static func writeEscaped(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        var runStart = 0
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if !needsEscape(b) {
                i += 1
                continue
            }
            if b == 0xE2 {
                // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
                if i + 2 < n, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                    if runStart < i { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i])) }
                    buffer.writeStaticString(bytes[i + 2] == 0xA8 ? "\\u2028" : "\\u2029")
                    i += 3
                    runStart = i
                } else {
                    i += 1
                }
                continue
            }
            if runStart < i { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i])) }
            switch b {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            default:
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(b >> 4)])
                buffer.writeInteger(hex[Int(b & 0xF)])
            }
            i += 1
            runStart = i
        }
        if runStart < n { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<n])) }
    }

    static func writeInt<I: BinaryInteger>(_ value: I, into buffer: inout ByteBuffer) {
        buffer.writeString(String(value))
    }

    static func writeDouble(_ d: Double, into buffer: inout ByteBuffer) {
        guard d.isFinite else {
            buffer.writeStaticString("null")
            return
        }
        if d == d.rounded(.towardZero), abs(d) < 1e15 {
            buffer.writeString(String(Int64(d)))
        } else {
            buffer.writeString(d.description)
        }
    }

    static func writeValue(_ v: JSONValue, into buffer: inout ByteBuffer) {
        switch v {
        case .null: buffer.writeStaticString("null")
        case .bool(let b): buffer.writeStaticString(b ? "true" : "false")
        case .int(let i): writeInt(i, into: &buffer)
        case .double(let d): writeDouble(d, into: &buffer)
        case .string(let s): writeString(s, into: &buffer)
        case .array(let a):
            buffer.writeInteger(UInt8(ascii: "["))
            for (i, e) in a.enumerated() {
                if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                writeValue(e, into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let o): writeObject(o, into: &buffer)
        }
    }

    static func writeObject(_ o: [String: JSONValue], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "{"))
        for (i, k) in o.keys.sorted().enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            writeString(k, into: &buffer)
            buffer.writeInteger(UInt8(ascii: ":"))
            writeValue(o[k]!, into: &buffer)
        }
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    static func writeStringMap(_ m: [String: String], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "{"))
        for (i, k) in m.keys.sorted().enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            writeString(k, into: &buffer)
            buffer.writeInteger(UInt8(ascii: ":"))
            writeString(m[k]!, into: &buffer)
        }
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    static func writeError(_ e: ErrorPayload, into buffer: inout ByteBuffer) {
        var p = ObjectWriter(&buffer)
        p.optString("code", e.code, &buffer)
        p.string("message", e.message, &buffer)
        p.close(&buffer)
    }

    /// Writes `{"k":v,...}` with keys in call order: `var o = ObjectWriter(&buffer)`, then fields,
    /// then `o.close(&buffer)`. Nested objects are written between `key` and the next field.
    struct ObjectWriter {
        private var first = true

        init(_ buffer: inout ByteBuffer) {
            buffer.writeInteger(UInt8(ascii: "{"))
        }

        mutating func key(_ k: StaticString, _ buffer: inout ByteBuffer) {
            if first { first = false } else { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeInteger(UInt8(ascii: "\""))
            buffer.writeStaticString(k)
            buffer.writeStaticString("\":")
        }
        mutating func string(_ k: StaticString, _ v: String, _ buffer: inout ByteBuffer) {
            key(k, &buffer)
            JSONOut.writeString(v, into: &buffer)
        }
        mutating func optString(_ k: StaticString, _ v: String?, _ buffer: inout ByteBuffer) {
            if let v { string(k, v, &buffer) }
        }
        mutating func optInt(_ k: StaticString, _ v: Int?, _ buffer: inout ByteBuffer) {
            if let v {
                key(k, &buffer)
                JSONOut.writeInt(v, into: &buffer)
            }
        }
        mutating func optBool(_ k: StaticString, _ v: Bool?, _ buffer: inout ByteBuffer) {
            if let v {
                key(k, &buffer)
                buffer.writeStaticString(v ? "true" : "false")
            }
        }
        mutating func optStrings(_ k: StaticString, _ v: [String]?, _ buffer: inout ByteBuffer) {
            if let v {
                key(k, &buffer)
                buffer.writeInteger(UInt8(ascii: "["))
                for (i, s) in v.enumerated() {
                    if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                    JSONOut.writeString(s, into: &buffer)
                }
                buffer.writeInteger(UInt8(ascii: "]"))
            }
        }
        mutating func optObject(_ k: StaticString, _ v: [String: JSONValue]?, _ buffer: inout ByteBuffer) {
            if let v {
                key(k, &buffer)
                JSONOut.writeObject(v, into: &buffer)
            }
        }
        mutating func optStringMap(_ k: StaticString, _ v: [String: String]?, _ buffer: inout ByteBuffer) {
            if let v {
                key(k, &buffer)
                JSONOut.writeStringMap(v, into: &buffer)
            }
        }
        func close(_ buffer: inout ByteBuffer) {
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }
}
