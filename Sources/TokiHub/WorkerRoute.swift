import NIOCore
import TokiMux
import TokiProtocol
import TokiTunnel

/// How the hub reaches one registered worker. The registry holds a route per worker and the
/// proxy only asks it to open a call; what carries the call is the route's business.
///
/// `SessionRoute`: a worker over its own tunnel session; `RelayRoute`: a worker behind a child
/// relay, reached over the relay's session by namespace.
/// Called on every request: conformances must not allocate or hop tasks beyond what the call
/// itself needs.
protocol WorkerRoute: AnyObject, Sendable {
    /// Opens the data stream of one request. The request goes out with `TunnelCall.send`, so the
    /// caller can arm its deadlines first. Throws `UpstreamFailure.transport` if the link is gone.
    func openCall(requestID: String) throws -> TunnelCall
    /// Opens a raw data stream to the worker (a relay splicing its parent's stream to it); the
    /// bytes written are the worker's data framing.
    func openStream() async throws -> MuxStream
    /// Asks the worker to abort `requestID` (its client went away, or the hub gave up on it).
    func cancel(requestID: String)
    /// What a client's response buffer does past its limit: `.wait` where the link has
    /// per-stream windows (smux v2: only this request's stream stops), else `.cut`.
    var overflow: ResponseBuffer.Overflow { get }
    /// Whether nothing at all arrived over the link after `instant`.
    func isSilent(since instant: NIODeadline) -> Bool
    /// Whether the hub is busy sending on the link (the worker's silence then proves nothing).
    var isSending: Bool { get }
    /// A liveness ping on the link (any answer counts as activity).
    func ping() async throws
    /// Drops the link: its calls fail at once (and are retried elsewhere if nothing was sent yet).
    func close()
    /// The worker registered again over a newer session: drop what only this route holds (a
    /// direct worker's stale session). A relay route holds nothing of its own.
    func retire()
}

extension WorkerRoute {
    func retire() {}
}

/// A worker's tunnel link as liveness probes see it.
struct WorkerLink: Sendable {
    let activity: LinkActivity
    let ping: @Sendable () async throws -> Void
}

/// A worker connected directly: its own mux session, its control stream, its WebSocket link.
final class SessionRoute: WorkerRoute {
    let session: MuxSession
    let control: ControlChannel
    let link: WorkerLink
    let namespace: String
    let overflow: ResponseBuffer.Overflow

    init(session: MuxSession, control: ControlChannel, link: WorkerLink, namespace: String) {
        self.session = session
        self.control = control
        self.link = link
        self.namespace = namespace
        self.overflow = session.configuration.version >= 2 ? .wait : .cut
    }

    func openCall(requestID: String) throws -> TunnelCall {
        try TunnelCall.open(on: session, requestID: requestID)
    }

    func openStream() async throws -> MuxStream { try session.openStream() }

    func cancel(requestID: String) {
        control.send(.cancelRequest(
            requestID: TunnelProtocol.makeCancelRequestID(namespace: namespace),
            targetRequestID: requestID,
            reason: TunnelProtocol.cancelReasonClientDisconnected
        ))
    }

    func isSilent(since instant: NIODeadline) -> Bool {
        link.activity.silent(since: instant)
    }

    var isSending: Bool { session.isSending }

    func ping() async throws { try await link.ping() }

    func close() { session.close() }

    func retire() { session.close() }
}

/// A worker behind a child relay: its calls are streams on the relay's session that start with
/// a `route` line naming the worker; the relay splices the rest to it. Liveness is the relay
/// link's (it carries smux keepalives), and closing the route drops the relay link, as the
/// probe only closes a route whose link answers nothing.
final class RelayRoute: WorkerRoute {
    let link: RelayLink
    let namespace: String
    let overflow: ResponseBuffer.Overflow
    private let routeLine: ByteBuffer

    init(link: RelayLink, namespace: String) {
        self.link = link
        self.namespace = namespace
        self.overflow = link.session.configuration.version >= 2 ? .wait : .cut
        self.routeLine = RelayMessage.route(namespace: namespace).encodedLine()
    }

    func openCall(requestID: String) throws -> TunnelCall {
        try TunnelCall.open(on: link.session, requestID: requestID, preamble: routeLine)
    }

    func openStream() async throws -> MuxStream {
        let stream = try link.session.openStream()
        try await stream.write(routeLine)
        return stream
    }

    func cancel(requestID: String) {
        link.control.send(RelayMessage(type: TunnelProtocol.RelayMessageType.cancel, namespace: namespace,
                                       cancelRequest: CancelRequestPayload(targetRequestID: requestID,
                                                                           reason: TunnelProtocol.cancelReasonClientDisconnected)))
    }

    func isSilent(since instant: NIODeadline) -> Bool { link.link.activity.silent(since: instant) }

    var isSending: Bool { link.session.isSending }

    func ping() async throws { try await link.link.ping() }

    func close() { link.session.close() }
}

/// A child relay's link: its session, control stream and WebSocket link.
struct RelayLink: Sendable {
    let session: MuxSession
    let control: ControlChannel
    let link: WorkerLink
    /// The child relay's node id.
    let nodeID: String
}
