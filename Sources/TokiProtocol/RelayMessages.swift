// The relay extension (toki peers only; docs/protocol.md "Relays"). A child node (`toki
// relay-only`) dials its parent like a worker, asking for the relay role at the upgrade
// (`TunnelProtocol.relayHeader`). Its control stream then carries `RelayMessage` lines instead
// of the worker messages; data streams the parent opens start with one `route` line naming the
// namespace, and everything after it is the original data framing, end to end between the root
// and the worker.

import NIOCore

extension TunnelProtocol {
    /// Upgrade request header of a child relay (its node id); the parent answers with its own.
    /// A parent that does not answer it does not speak the relay extension.
    public static let relayHeader = "X-Toki-Relay"

    /// How many relays may stand between the root and a worker (root ← relay ← relay ← relay ← relay).
    public static let defaultHopLimit = 4

    /// Longest `route` line a relay reads at the start of a data stream.
    public static let maxRouteLineLength = 4096

    public enum RelayMessageType {
        /// child → parent, first line: who the child is (`node`). Ack: the parent's `node`.
        public static let hello: ControlMessageType = "hello"
        /// child → parent: is `token` valid? Ack: its `principal`.
        public static let authenticate: ControlMessageType = "authenticate"
        /// child → parent: admit `worker` for the owner of `token`. Ack: `worker` as admitted.
        public static let workerUp: ControlMessageType = "worker_up"
        /// child → parent: `worker`'s models (and groups) changed. Ack: `worker` as authorised.
        public static let workerUpdate: ControlMessageType = "worker_update"
        /// child → parent: the worker `namespace` left (no ack).
        public static let workerDown: ControlMessageType = "worker_down"
        /// child → parent: requests in flight to worker `namespace` now (`in_flight`), sent when
        /// it changed, at most every 250 ms per worker (no ack).
        public static let workerLoad: ControlMessageType = "worker_load"
        /// child → parent: a round trip to measure the link (ack, nothing else).
        public static let ping: ControlMessageType = "ping"
        /// parent → child: pass `cancel_request` on to the worker `namespace` (no ack).
        public static let cancel: ControlMessageType = "cancel"
        /// parent → child: the token `token_id` (an id of the root's store, never the secret)
        /// was revoked: forget its cached verdicts, drop the workers admitted with it, and pass
        /// it on to the child's own relays (no ack).
        public static let revoke: ControlMessageType = "revoke"
        /// First line of a data stream the parent opens: the stream is for worker `namespace`.
        public static let route: ControlMessageType = "route"
    }

    public enum RelayErrorCode {
        /// The link would close a loop, or exceed the hop limit.
        public static let loop = "relay_loop"
        public static let hopLimit = "relay_hop_limit"
        /// A message about a namespace this relay never had admitted.
        public static let unknownNamespace = "relay_unknown_namespace"
        /// An announcement's `seq` was not the previous one plus 1: the parent's view of the
        /// subtree may have lost a change, so it closes the link and the child's reconnect
        /// sends a fresh snapshot.
        public static let sequenceGap = "relay_sequence_gap"
        /// The relay cannot reach its parent: admission is impossible right now.
        public static let upstreamUnavailable = "relay_upstream_unavailable"
        public static let authFailed = HubErrorCode.authFailed
    }
}

/// A node of a chain: its id and the ids from the root down to it (itself last).
public struct RelayNode: WireObject, Sendable, Equatable {
    public var id: String
    public var path: [String]?

    public init(id: String, path: [String]? = nil) {
        self.id = id
        self.path = path
    }

    static let absent = RelayNode(id: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try c.field("id", &p.id)
        try c.field("path", &p.path)
    }
}

/// A worker as a relay announces it: its `register` payload (flattened into this object, as
/// the worker sent it) and the relays it sits behind (`via`, nearest the parent first). In an
/// ack, `group` and `worker_id` are what was granted.
public struct RelayWorker: WireObject, Sendable, Equatable {
    public var registration: RegisterPayload
    public var via: [String]?
    public var workerID: Int?

    public init(namespace: String, nodeName: String? = nil, models: [String]? = nil, group: String? = nil,
                hardwareInfo: RawJSON? = nil, via: [String]? = nil, workerID: Int? = nil) {
        registration = RegisterPayload(namespace: namespace, nodeName: nodeName, group: group, models: models, hardwareInfo: hardwareInfo)
        (self.via, self.workerID) = (via, workerID)
    }

    public var namespace: String { registration.namespace }
    public var nodeName: String? { registration.nodeName }
    public var models: [String]? { registration.models }
    /// Comma-separated groups asked for (as in `register`); in an ack, the groups granted.
    public var group: String? { registration.group }
    public var hardwareInfo: RawJSON? { registration.hardwareInfo }

    static let absent = RelayWorker(namespace: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        try RegisterPayload.fields(&c, &p.registration)
        try c.field("via", &p.via)
        try c.field("worker_id", &p.workerID)
    }
}

/// Who a token stands for, as the root decided.
public struct RelayPrincipal: WireObject, Sendable, Equatable {
    public var userID: Int
    public var userName: String
    public var group: String
    /// The token's id in the root's store: what a later `revoke` names.
    public var tokenID: Int?

    public init(userID: Int, userName: String, group: String, tokenID: Int? = nil) {
        self.userID = userID
        self.userName = userName
        self.group = group
        self.tokenID = tokenID
    }

    static let absent = RelayPrincipal(userID: 0, userName: "", group: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ p: inout Self) throws(Coder.Failure) {
        var id: Int? = p.userID
        try c.field("user_id", &id)
        p.userID = id ?? 0
        try c.field("user_name", &p.userName)
        try c.field("group", &p.group)
        try c.field("token_id", &p.tokenID)
    }
}

/// One line of a relay link (control stream, or the `route` line of a data stream).
public struct RelayMessage: NDJSONLine, NDJSONDecodable, WireObject, Sendable, Equatable {
    public var type: ControlMessageType
    public var requestID: String?
    public var node: RelayNode?
    public var token: String?
    public var namespace: String?
    public var worker: RelayWorker?
    public var principal: RelayPrincipal?
    public var cancelRequest: CancelRequestPayload?
    public var error: ErrorPayload?
    /// `revoke`: the revoked token's id in the root's store.
    public var tokenID: Int?
    /// `worker_load`: requests in flight to the worker.
    public var inFlight: Int?
    /// Announcements (`worker_up`, `worker_update`, `worker_down`): their number on this link,
    /// 1 for the first after `hello` (the snapshot's first `worker_up`), each the previous + 1.
    public var seq: Int?

    public init(type: ControlMessageType, requestID: String? = nil, node: RelayNode? = nil, token: String? = nil,
                namespace: String? = nil, worker: RelayWorker? = nil, principal: RelayPrincipal? = nil,
                cancelRequest: CancelRequestPayload? = nil, error: ErrorPayload? = nil, tokenID: Int? = nil, inFlight: Int? = nil, seq: Int? = nil) {
        self.seq = seq
        self.tokenID = tokenID
        self.inFlight = inFlight
        self.type = type
        self.requestID = requestID
        self.node = node
        self.token = token
        self.namespace = namespace
        self.worker = worker
        self.principal = principal
        self.cancelRequest = cancelRequest
        self.error = error
    }

    public var encodedLengthHint: Int { 256 }

    public func writeJSON(into buffer: inout ByteBuffer) { writeFields(into: &buffer) }

    static let absent = RelayMessage(type: ControlMessageType(""))

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ m: inout Self) throws(Coder.Failure) {
        try c.field("type", &m.type)
        try c.field("request_id", &m.requestID)
        try c.field("node", &m.node)
        try c.field("token", &m.token)
        try c.field("namespace", &m.namespace)
        try c.field("worker", &m.worker)
        try c.field("principal", &m.principal)
        try c.field("cancel_request", &m.cancelRequest)
        try c.field("error", &m.error)
        try c.field("token_id", &m.tokenID)
        try c.field("in_flight", &m.inFlight)
        try c.field("seq", &m.seq)
    }

    /// Whether this line changes the parent's view of the subtree (and so is numbered).
    public var isAnnouncement: Bool {
        type == TunnelProtocol.RelayMessageType.workerUp || type == TunnelProtocol.RelayMessageType.workerUpdate
            || type == TunnelProtocol.RelayMessageType.workerDown
    }

    /// The decoder (one line; unknown keys ignored). Throws `JSONReadError`.
    public static func decode(line: ByteBuffer) throws -> RelayMessage {
        try line.withUnsafeReadableBytes { try decodeFields($0) }
    }

    public static func ack(requestID: String?, node: RelayNode? = nil, worker: RelayWorker? = nil,
                           principal: RelayPrincipal? = nil) -> RelayMessage {
        RelayMessage(type: .ack, requestID: requestID, node: node, worker: worker, principal: principal)
    }

    public static func error(requestID: String?, code: String, message: String) -> RelayMessage {
        RelayMessage(type: .error, requestID: requestID, error: ErrorPayload(code: code, message: message))
    }

    /// The token `tokenID` of the root's store was revoked.
    public static func revoke(tokenID: Int) -> RelayMessage {
        RelayMessage(type: TunnelProtocol.RelayMessageType.revoke, tokenID: tokenID)
    }

    /// The first line of a data stream: it is for worker `namespace`.
    public static func route(namespace: String) -> RelayMessage {
        RelayMessage(type: TunnelProtocol.RelayMessageType.route, namespace: namespace)
    }
}
