// The tunnel's vocabulary (spec §4, §5): message types, ack messages, error codes, limits,
// request-id shapes and the WebSocket subprotocol names. Every constant is defined here once.

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

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
    /// WebSocket subprotocol / QUIC ALPN of the original protocol.
    public static let subprotocol = TunnelSubprotocol.tokilake

    /// `"<namespace>:<prefix>:<uuid v4 lowercase>"` as the Go worker builds control request ids.
    public static func makeRequestID(namespace: String, prefix: String, uuid: UUID = FastUUID.next()) -> String {
        "\(namespace):\(prefix):\(uuid.uuidString.lowercased())"
    }

    /// `"<namespace>:cancel:<UnixNano>"` as the Go hub builds cancel ids.
    public static func makeCancelRequestID(namespace: String, date: Date = Date()) -> String {
        let nanos = Int64((date.timeIntervalSince1970 * 1_000_000_000).rounded())
        return "\(namespace):cancel:\(nanos)"
    }

    /// `"<namespace>:relay:<uuid>"`, or `"tokiame:relay:<uuid>"` when the namespace is empty.
    public static func makeRelayRequestID(namespace: String, uuid: UUID = FastUUID.next()) -> String {
        let ns = namespace.isEmpty ? "tokiame" : namespace
        return "\(ns):relay:\(uuid.uuidString.lowercased())"
    }
}

/// The `type` of a control message. Open set: unknown types decode fine (the hub must answer
/// `unsupported_message_type: <t>`). Pattern-match with `case TunnelProtocol.MessageType.ack:`
/// or with the static members below (`case .ack:`).
public struct ControlMessageType: RawRepresentable, Hashable, Sendable,
    ExpressibleByStringLiteral, CustomStringConvertible
{
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }
    public var description: String { rawValue }

    public static let auth = TunnelProtocol.MessageType.auth
    public static let register = TunnelProtocol.MessageType.register
    public static let heartbeat = TunnelProtocol.MessageType.heartbeat
    public static let modelsSync = TunnelProtocol.MessageType.modelsSync
    public static let cancelRequest = TunnelProtocol.MessageType.cancelRequest
    public static let ack = TunnelProtocol.MessageType.ack
    public static let error = TunnelProtocol.MessageType.error
}

/// Worker status values in `heartbeat.status`.
public enum WorkerStatus {
    public static let online = 1
    public static let busy = 2
    public static let offline = 3
}

/// WebSocket subprotocol names (`Sec-WebSocket-Protocol`). The client offers what it supports,
/// the server selects one; the negotiation itself lives with the transport (TokiTunnel).
public enum TunnelSubprotocol {
    /// The original protocol: smux v1, no compression (what the Go Tokiame offers).
    public static let tokilake = "tokilake.v1"
    /// smux v1 + LZ4 link compression (docs/protocol.md).
    public static let lz4 = "toki-lz4"
    /// smux v2, uncompressed.
    public static let smux2 = "toki-smux2"
    /// smux v2 + LZ4.
    public static let smux2LZ4 = "toki-smux2-lz4"
}
