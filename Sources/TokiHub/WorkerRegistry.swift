import Foundation
import Logging
import NIOCore
import Synchronization
import TokiMux
import TokiTunnel

/// A worker's tunnel link as liveness probes see it.
struct WorkerLink: Sendable {
    let activity: LinkActivity
    let ping: @Sendable () async throws -> Void
}

/// A registered worker: its tunnel session, identity, models and in-flight requests.
public final class WorkerConnection: Sendable {
    public let sessionID: UInt64
    public let namespace: String
    public let userID: Int64
    public let workerID: Int64
    let session: MuxSession
    let control: ControlWriter
    let link: WorkerLink
    let logger: Logger
    let state: Mutex<State>

    struct State: Sendable {
        var models: Set<String>
        var groups: Set<String>
        var nodeName: String
        var hardwareInfo: [String: JSONValue]?
        var inFlight = 0
        /// Tunnel request id → the task to cancel when the worker goes away.
        var requests: [String: @Sendable () -> Void] = [:]
        var lastSeen = ContinuousClock.now
        var closed = false
        /// A liveness probe is out: the worker was silent while a request waited.
        var probing = false
    }

    init(sessionID: UInt64, namespace: String, userID: Int64, workerID: Int64, nodeName: String, groups: Set<String>,
         models: Set<String>, hardwareInfo: [String: JSONValue]?, session: MuxSession, control: ControlWriter, link: WorkerLink,
         logger: Logger) {
        self.sessionID = sessionID
        self.namespace = namespace
        self.userID = userID
        self.workerID = workerID
        self.session = session
        self.control = control
        self.link = link
        self.logger = logger
        self.state = Mutex(State(models: models, groups: groups, nodeName: nodeName, hardwareInfo: hardwareInfo))
    }

    public var models: Set<String> { state.withLock { $0.models } }
    public var groups: Set<String> { state.withLock { $0.groups } }
    public var nodeName: String { state.withLock { $0.nodeName } }
    public var inFlight: Int { state.withLock { $0.inFlight } }

    /// Registers an in-flight request; false if the worker is already gone.
    func begin(requestID: String, onWorkerLost: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            guard !state.closed, state.requests[requestID] == nil else { return false }
            state.requests[requestID] = onWorkerLost
            state.inFlight += 1
            return true
        }
    }

    func end(requestID: String) {
        state.withLock { state in
            if state.requests.removeValue(forKey: requestID) != nil { state.inFlight -= 1 }
        }
    }

    /// Asks the worker to abort a request (the client went away).
    func cancel(requestID: String) {
        let message = ControlMessage.cancelRequest(
            requestID: TunnelProtocol.makeCancelRequestID(namespace: namespace),
            targetRequestID: requestID,
            reason: TunnelProtocol.cancelReasonClientDisconnected
        )
        control.send(message)
    }

    /// Whether a liveness probe is out (routing prefers other workers meanwhile).
    var isSuspect: Bool { state.withLock { $0.probing } }

    /// A request has waited for its head since `since`. If nothing at all came from the worker
    /// since then and it is not busy taking data from us, it is asked for a pong; if none comes
    /// within `timeout` the worker is frozen (process stopped, TCP still up) and its session is
    /// closed: its pending requests fail at once and are retried elsewhere, as if it had died.
    func probeIfSilent(since: NIODeadline, timeout: Duration, deadlines: DeadlineSweeper) {
        guard link.activity.silent(since: since), !session.isSending else { return }
        let start = state.withLock { state -> Bool in
            guard !state.probing, !state.closed else { return false }
            state.probing = true
            return true
        }
        guard start else { return }
        let sent = NIODeadline.now()
        let (link, session, logger, namespace) = (self.link, self.session, self.logger, self.namespace)
        deadlines.arm(deadlines.makeID(), after: timeout) {
            if link.activity.silent(since: sent) {
                logger.warning("worker answers nothing, not even a ping: closing its tunnel", metadata: [
                    "namespace": "\(namespace)", "timeout": "\(timeout)",
                ])
                session.close()
            }
            self.state.withLock { $0.probing = false }
        }
        Task { try? await link.ping() }
    }

    /// Marks the worker gone and fails every in-flight request at once.
    func markClosed() {
        let lost = state.withLock { state -> [@Sendable () -> Void] in
            state.closed = true
            defer { state.requests = [:] }
            return Array(state.requests.values)
        }
        for fail in lost { fail() }
    }
}

/// Serialises control-stream writes (acks from the reader, cancels from request handlers):
/// one writer task, so a long line is never interleaved with another.
final class ControlWriter: Sendable {
    private let continuation: AsyncStream<ByteBuffer>.Continuation
    private let stream: AsyncStream<ByteBuffer>

    init() {
        (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
    }

    func send(_ message: ControlMessage) {
        continuation.yield(message.encodedLine())
    }

    func finish() { continuation.finish() }

    /// Runs until `finish()` or a write fails.
    func run(on stream: MuxStream) async {
        for await line in self.stream {
            do { try await stream.write(line) } catch { return }
        }
    }
}

/// All live workers, indexed by namespace and by model.
public final class WorkerRegistry: Sendable {
    struct State: Sendable {
        var byNamespace: [String: WorkerConnection] = [:]
        var nextSessionID: UInt64 = 0
    }

    let state = Mutex(State())

    public init() {}

    func nextSessionID() -> UInt64 {
        state.withLock { state in
            state.nextSessionID += 1
            return state.nextSessionID
        }
    }

    /// The live connection holding `namespace`, if any.
    func connection(namespace: String) -> WorkerConnection? {
        state.withLock { $0.byNamespace[namespace] }
    }

    /// Claims the namespace for this connection; false if another live session holds it.
    func claim(_ connection: WorkerConnection) -> Bool {
        state.withLock { state in
            if let existing = state.byNamespace[connection.namespace], existing !== connection { return false }
            state.byNamespace[connection.namespace] = connection
            return true
        }
    }

    /// Removes the connection (only if it still holds its namespace).
    func release(_ connection: WorkerConnection) {
        state.withLock { state in
            if state.byNamespace[connection.namespace] === connection {
                state.byNamespace[connection.namespace] = nil
            }
        }
    }

    public var workers: [WorkerConnection] {
        state.withLock { Array($0.byNamespace.values) }
    }

    /// Online workers serving `model` for a caller in `group`, best first: fewest in-flight
    /// requests, ties broken at random (every worker has weight 1, as in Tokilake); workers under
    /// a liveness probe last.
    func candidates(model: String, group: String) -> [WorkerConnection] {
        let all = state.withLock { state in
            state.byNamespace.values.filter { $0.state.withLock { $0.models.contains(model) && $0.groups.contains(group) && !$0.closed } }
        }
        return all.map { ($0, ($0.isSuspect ? 1 << 32 : 0) + $0.inFlight, UInt64.random(in: 0...UInt64.max)) }
            .sorted { ($0.1, $0.2) < ($1.1, $1.2) }
            .map(\.0)
    }

    /// Models reachable from `group`, sorted.
    func models(group: String) -> [String] {
        let sets = state.withLock { state in
            state.byNamespace.values.compactMap { connection in
                connection.state.withLock { $0.groups.contains(group) ? $0.models : nil }
            }
        }
        return Array(sets.reduce(into: Set<String>()) { $0.formUnion($1) }).sorted()
    }

    /// Whether any live worker (in any group) serves the model.
    func isServed(_ model: String) -> Bool {
        state.withLock { $0.byNamespace.values.contains { $0.state.withLock { $0.models.contains(model) } } }
    }
}
