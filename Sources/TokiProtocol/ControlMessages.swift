// Control-stream messages of the Tokilake/Tokiame tunnel (spec §4).
//
// Field names are exactly the Go originals'. Each message has one encoder (`writeJSON`: compact
// JSON, fields in Go's declaration order, optional fields omitted when nil like Go's
// `omitempty`) and one decoder (`ControlMessage.decode`: the one-pass JSONReader; unknown keys
// ignored, null = absent, a repeated key's last value wins — nested payloads merge like Go's
// decoding into an existing struct). `hardware_info` stays raw JSON bytes (`RawJSON`).

import NIOCore

// MARK: - Payloads

/// `auth` payload (QUIC only). `token` may carry `sk-` and/or `Bearer `.
public struct AuthPayload: Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.string("token", token, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: AuthPayload?) throws -> AuthPayload? {
        try r.readObject(into: existing, or: AuthPayload(token: "")) { r, p, key in
            if key == "token" {
                try r.read(&p.token)
            } else {
                return false
            }
            return true
        }
    }
}

/// `register` payload.
public struct RegisterPayload: Sendable, Equatable {
    public var namespace: String
    public var nodeName: String?
    public var group: String?
    public var models: [String]?
    public var hardwareInfo: RawJSON?
    public var backendType: String?

    public init(namespace: String, nodeName: String? = nil, group: String? = nil, models: [String]? = nil,
                hardwareInfo: RawJSON? = nil, backendType: String? = nil) {
        self.namespace = namespace
        self.nodeName = nodeName
        self.group = group
        self.models = models
        self.hardwareInfo = hardwareInfo
        self.backendType = backendType
    }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.string("namespace", namespace, &buffer)
        p.optString("node_name", nodeName, &buffer)
        p.optString("group", group, &buffer)
        p.optStrings("models", models, &buffer)
        p.optRaw("hardware_info", hardwareInfo, &buffer)
        p.optString("backend_type", backendType, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: RegisterPayload?) throws -> RegisterPayload? {
        try r.readObject(into: existing, or: RegisterPayload(namespace: "")) { r, p, key in
            if key == "namespace" {
                try r.read(&p.namespace)
            } else if key == "node_name" {
                try r.read(&p.nodeName)
            } else if key == "group" {
                try r.read(&p.group)
            } else if key == "models" {
                p.models = try r.readStrings()
            } else if key == "hardware_info" {
                p.hardwareInfo = try r.readRawObject()
            } else if key == "backend_type" {
                try r.read(&p.backendType)
            } else {
                return false
            }
            return true
        }
    }
}

/// `heartbeat` payload. The Go worker never sets `status`.
public struct HeartbeatPayload: Sendable, Equatable {
    public var status: Int?
    public var nodeName: String?
    public var hardwareInfo: RawJSON?
    public var currentModels: [String]?

    public init(status: Int? = nil, nodeName: String? = nil, hardwareInfo: RawJSON? = nil,
                currentModels: [String]? = nil) {
        self.status = status
        self.nodeName = nodeName
        self.hardwareInfo = hardwareInfo
        self.currentModels = currentModels
    }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.optInt("status", status, &buffer)
        p.optString("node_name", nodeName, &buffer)
        p.optRaw("hardware_info", hardwareInfo, &buffer)
        p.optStrings("current_models", currentModels, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: HeartbeatPayload?) throws -> HeartbeatPayload? {
        try r.readObject(into: existing, or: HeartbeatPayload()) { r, p, key in
            if key == "status" {
                try r.read(&p.status)
            } else if key == "node_name" {
                try r.read(&p.nodeName)
            } else if key == "hardware_info" {
                p.hardwareInfo = try r.readRawObject()
            } else if key == "current_models" {
                p.currentModels = try r.readStrings()
            } else {
                return false
            }
            return true
        }
    }
}

/// `models_sync` payload.
public struct ModelsSyncPayload: Sendable, Equatable {
    public var group: String?
    public var models: [String]?
    public var hardwareInfo: RawJSON?
    public var backendType: String?

    public init(group: String? = nil, models: [String]? = nil, hardwareInfo: RawJSON? = nil,
                backendType: String? = nil) {
        self.group = group
        self.models = models
        self.hardwareInfo = hardwareInfo
        self.backendType = backendType
    }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.optString("group", group, &buffer)
        p.optStrings("models", models, &buffer)
        p.optRaw("hardware_info", hardwareInfo, &buffer)
        p.optString("backend_type", backendType, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: ModelsSyncPayload?) throws -> ModelsSyncPayload? {
        try r.readObject(into: existing, or: ModelsSyncPayload()) { r, p, key in
            if key == "group" {
                try r.read(&p.group)
            } else if key == "models" {
                p.models = try r.readStrings()
            } else if key == "hardware_info" {
                p.hardwareInfo = try r.readRawObject()
            } else if key == "backend_type" {
                try r.read(&p.backendType)
            } else {
                return false
            }
            return true
        }
    }
}

/// `cancel_request` payload (hub → worker only).
public struct CancelRequestPayload: Sendable, Equatable {
    public var targetRequestID: String
    public var reason: String?

    public init(targetRequestID: String, reason: String? = nil) {
        self.targetRequestID = targetRequestID
        self.reason = reason
    }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.string("target_request_id", targetRequestID, &buffer)
        p.optString("reason", reason, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: CancelRequestPayload?) throws -> CancelRequestPayload? {
        try r.readObject(into: existing, or: CancelRequestPayload(targetRequestID: "")) { r, p, key in
            if key == "target_request_id" {
                try r.read(&p.targetRequestID)
            } else if key == "reason" {
                try r.read(&p.reason)
            } else {
                return false
            }
            return true
        }
    }
}

/// `ack` payload. Every ack on the wire carries one (the Go worker crashes otherwise).
public struct AckPayload: Sendable, Equatable {
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

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.optString("message", message, &buffer)
        p.optString("namespace", namespace, &buffer)
        p.optInt("worker_id", workerID, &buffer)
        p.optInt("channel_id", channelID, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: AckPayload?) throws -> AckPayload? {
        try r.readObject(into: existing, or: AckPayload()) { r, p, key in
            if key == "message" {
                try r.read(&p.message)
            } else if key == "namespace" {
                try r.read(&p.namespace)
            } else if key == "worker_id" {
                try r.read(&p.workerID)
            } else if key == "channel_id" {
                try r.read(&p.channelID)
            } else {
                return false
            }
            return true
        }
    }
}

/// `error` payload, also used as `TunnelResponse.error`: `{code?, message}`.
public struct ErrorPayload: Sendable, Equatable, Error {
    public var code: String?
    public var message: String

    public init(code: String? = nil, message: String) {
        self.code = code
        self.message = message
    }

    func writeJSON(into buffer: inout ByteBuffer) {
        var p = JSONOut.ObjectWriter(&buffer)
        p.optString("code", code, &buffer)
        p.string("message", message, &buffer)
        p.close(&buffer)
    }

    static func read(_ r: inout JSONReader, into existing: ErrorPayload?) throws -> ErrorPayload? {
        try r.readObject(into: existing, or: ErrorPayload(message: "")) { r, p, key in
            if key == "code" {
                try r.read(&p.code)
            } else if key == "message" {
                try r.read(&p.message)
            } else {
                return false
            }
            return true
        }
    }
}

// MARK: - Envelope

/// The control-stream envelope (spec §4.2). Build messages with the static constructors
/// (`.register(...)`, `.ack(...)`, ...). An ack always encodes a non-null `ack` object, even if
/// someone builds `ControlMessage(type: .ack)` by hand.
public struct ControlMessage: NDJSONLine, Sendable, Equatable {
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

    // MARK: Encoding

    public var encodedLengthHint: Int { 256 }

    /// The encoder: `{"type","request_id"?,"auth"?,"register"?,"heartbeat"?,"models_sync"?,
    /// "cancel_request"?,"ack"?,"error"?}` (Go field order).
    public func writeJSON(into buffer: inout ByteBuffer) {
        var o = JSONOut.ObjectWriter(&buffer)
        o.string("type", type.rawValue, &buffer)
        o.optString("request_id", requestID, &buffer)
        if let auth {
            o.key("auth", &buffer)
            auth.writeJSON(into: &buffer)
        }
        if let register {
            o.key("register", &buffer)
            register.writeJSON(into: &buffer)
        }
        if let heartbeat {
            o.key("heartbeat", &buffer)
            heartbeat.writeJSON(into: &buffer)
        }
        if let modelsSync {
            o.key("models_sync", &buffer)
            modelsSync.writeJSON(into: &buffer)
        }
        if let cancelRequest {
            o.key("cancel_request", &buffer)
            cancelRequest.writeJSON(into: &buffer)
        }
        if let ack = effectiveAck {
            o.key("ack", &buffer)
            ack.writeJSON(into: &buffer)
        }
        if let error {
            o.key("error", &buffer)
            error.writeJSON(into: &buffer)
        }
        o.close(&buffer)
    }

    // MARK: Decoding

    /// The decoder: one line (no trailing newline needed; surrounding whitespace allowed).
    /// Throws `JSONReadError` on anything that is not a well-formed control message.
    public static func decode(line: ByteBuffer) throws -> ControlMessage {
        try line.withUnsafeReadableBytes { try decode(bytes: $0) }
    }

    public static func decode(line: some Collection<UInt8>) throws -> ControlMessage {
        if let m = try line.withContiguousStorageIfAvailable({ try decode(bytes: UnsafeRawBufferPointer($0)) }) {
            return m
        }
        return try Array(line).withUnsafeBytes { try decode(bytes: $0) }
    }

    public static func decode(bytes: UnsafeRawBufferPointer) throws -> ControlMessage {
        try JSONReader.read(bytes) { r in
            var m = ControlMessage(type: ControlMessageType(""))
            try r.readFields(of: &m) { r, m, key in
                if key == "type" {
                    if let v = try r.readOptionalString() { m.type = ControlMessageType(v) }
                } else if key == "request_id" {
                    try r.read(&m.requestID)
                } else if key == "heartbeat" {
                    m.heartbeat = try HeartbeatPayload.read(&r, into: m.heartbeat)
                } else if key == "ack" {
                    m.ack = try AckPayload.read(&r, into: m.ack)
                } else if key == "register" {
                    m.register = try RegisterPayload.read(&r, into: m.register)
                } else if key == "models_sync" {
                    m.modelsSync = try ModelsSyncPayload.read(&r, into: m.modelsSync)
                } else if key == "cancel_request" {
                    m.cancelRequest = try CancelRequestPayload.read(&r, into: m.cancelRequest)
                } else if key == "error" {
                    m.error = try ErrorPayload.read(&r, into: m.error)
                } else if key == "auth" {
                    m.auth = try AuthPayload.read(&r, into: m.auth)
                } else {
                    return false
                }
                return true
            }
            return m
        }
    }
}
