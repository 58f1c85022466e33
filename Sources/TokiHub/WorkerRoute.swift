import NIOCore
import TokiMux
import TokiProtocol
import TokiTunnel

/// How the hub reaches one registered worker. The registry holds a route per worker and the
/// proxy only asks it to open a call; what carries the call is the route's business.
///
/// Today the one conformance is `SessionRoute`: a worker over its own tunnel session. A worker
/// reached through a relay's session (by namespace) is meant to be a second conformance.
/// Called on every request: conformances must not allocate or hop tasks beyond what the call
/// itself needs.
protocol WorkerRoute: AnyObject, Sendable {
    /// Opens the data stream of one request. The request goes out with `TunnelCall.send`, so the
    /// caller can arm its deadlines first. Throws `UpstreamFailure.transport` if the link is gone.
    func openCall(requestID: String) throws -> TunnelCall
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
}
