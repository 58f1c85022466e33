// Control-stream messages of the Tokilake/Tokiame tunnel (spec §4).
//
// Field names are exactly the Go originals'. Each message lists its fields once (`fields`, in Go's
// declaration order); that list is its one encoder (compact JSON, optional fields omitted when nil
// like Go's `omitempty`) and its one decoder (the one-pass JSONReader; unknown keys ignored,
// null = absent, a repeated key's last value wins — nested payloads merge like Go's decoding into
// an existing struct). See WireFields.swift. `hardware_info` stays raw JSON bytes (`RawJSON`).

import NIOCore

// MARK: - Payloads

/// `auth` payload (QUIC only). `token` may carry `sk-` and/or `Bearer `.
public struct AuthPayload: WireObject, Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }

    static let absent = AuthPayload(token: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("token", &p.token)
    }
}

/// `register` payload.
public struct RegisterPayload: WireObject, Sendable, Equatable {
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

    static let absent = RegisterPayload(namespace: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("namespace", &p.namespace)
        try c.field("node_name", &p.nodeName)
        try c.field("group", &p.group)
        try c.field("models", &p.models)
        try c.field("hardware_info", &p.hardwareInfo)
        try c.field("backend_type", &p.backendType)
    }
}

/// `heartbeat` payload. The Go worker never sets `status`.
public struct HeartbeatPayload: WireObject, Sendable, Equatable {
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

    static let absent = HeartbeatPayload()

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("status", &p.status)
        try c.field("node_name", &p.nodeName)
        try c.field("hardware_info", &p.hardwareInfo)
        try c.field("current_models", &p.currentModels)
    }
}

/// `models_sync` payload.
public struct ModelsSyncPayload: WireObject, Sendable, Equatable {
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

    static let absent = ModelsSyncPayload()

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("group", &p.group)
        try c.field("models", &p.models)
        try c.field("hardware_info", &p.hardwareInfo)
        try c.field("backend_type", &p.backendType)
    }
}

/// `cancel_request` payload (hub → worker only).
public struct CancelRequestPayload: WireObject, Sendable, Equatable {
    public var targetRequestID: String
    public var reason: String?

    public init(targetRequestID: String, reason: String? = nil) {
        self.targetRequestID = targetRequestID
        self.reason = reason
    }

    static let absent = CancelRequestPayload(targetRequestID: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("target_request_id", &p.targetRequestID)
        try c.field("reason", &p.reason)
    }
}

/// `ack` payload. Every ack on the wire carries one (the Go worker crashes otherwise).
public struct AckPayload: WireObject, Sendable, Equatable {
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

    static let absent = AckPayload()

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("message", &p.message)
        try c.field("namespace", &p.namespace)
        try c.field("worker_id", &p.workerID)
        try c.field("channel_id", &p.channelID)
    }
}

/// `error` payload, also used as `TunnelResponse.error`: `{code?, message}`.
public struct ErrorPayload: WireObject, Sendable, Equatable, Error {
    public var code: String?
    public var message: String

    public init(code: String? = nil, message: String) {
        self.code = code
        self.message = message
    }

    static let absent = ErrorPayload(message: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("code", &p.code)
        try c.field("message", &p.message)
    }
}

// MARK: - Envelope

/// The control-stream envelope (spec §4.2). Build messages with the static constructors
/// (`.register(...)`, `.ack(...)`, ...). An ack always encodes a non-null `ack` object, even if
/// someone builds `ControlMessage(type: .ack)` by hand.
public struct ControlMessage: NDJSONLine, NDJSONDecodable, WireObject, Sendable, Equatable {
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
    /// "cancel_request"?,"ack"?,"error"?}` (Go field order); an ack always carries its object.
    public func writeJSON(into buffer: inout ByteBuffer) {
        var m = self
        m.ack = effectiveAck
        m.writeFields(into: &buffer)
    }

    static let absent = ControlMessage(type: ControlMessageType(""))

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ m: inout Self) throws(Coder.Failure) {
        try c.field("type", &m.type)
        try c.field("request_id", &m.requestID)
        try c.field("auth", &m.auth)
        try c.field("register", &m.register)
        try c.field("heartbeat", &m.heartbeat)
        try c.field("models_sync", &m.modelsSync)
        try c.field("cancel_request", &m.cancelRequest)
        try c.field("ack", &m.ack)
        try c.field("error", &m.error)
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
        try decodeFields(bytes)
    }
}
