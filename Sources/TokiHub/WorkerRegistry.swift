import Foundation
import Logging
import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// A registered worker: its identity, models and in-flight requests, and the route that reaches it.
public final class WorkerConnection: Sendable {
    public let sessionID: UInt64
    public let namespace: String
    public let workerID: Int64
    /// Who the worker acts for (at a relay, with the token it presented: re-announcing the
    /// worker upstream after a reconnect needs it).
    public let principal: WorkerPrincipal
    /// The relays between this node and the worker, nearest first; empty for a direct worker.
    public let via: [String]
    let route: any WorkerRoute
    let logger: Logger
    let state: Mutex<State>

    struct State: Sendable {
        var models: Set<String>
        var groups: Set<String>
        var nodeName: String
        var hardwareInfo: RawJSON?
        var inFlight = 0
        /// What the relay this worker is behind last said of its in-flight requests (its
        /// count includes this node's requests through it, and any of its own users').
        var reportedInFlight: Int?
        /// Tunnel ids of the requests in flight.
        var requests: Set<String> = []
        var lastSeen = ContinuousClock.now
        var closed = false
        /// A liveness probe is out: the worker was silent while a request waited.
        var probing = false
    }

    init(sessionID: UInt64, namespace: String, principal: WorkerPrincipal, workerID: Int64, nodeName: String, groups: Set<String>,
         models: Set<String>, hardwareInfo: RawJSON?, via: [String] = [], route: any WorkerRoute, logger: Logger) {
        self.sessionID = sessionID
        self.namespace = namespace
        self.principal = principal
        self.via = via
        self.workerID = workerID
        self.route = route
        self.logger = logger
        self.state = Mutex(State(models: models, groups: groups, nodeName: nodeName, hardwareInfo: hardwareInfo))
    }

    public var userID: Int64 { principal.userID }
    public var models: Set<String> { state.withLock { $0.models } }
    public var groups: Set<String> { state.withLock { $0.groups } }
    public var nodeName: String { state.withLock { $0.nodeName } }
    public var inFlight: Int { state.withLock { $0.inFlight } }
    /// The requests in flight to the worker as far as this node knows: its own, or what the
    /// relay below reported, whichever is more.
    public var load: Int { state.withLock { max($0.inFlight, $0.reportedInFlight ?? 0) } }
    public var hardwareInfo: RawJSON? { state.withLock { $0.hardwareInfo } }

    /// A data stream spliced to the worker at a relay: in flight like a request of this node.
    public func beginSplice() { state.withLock { $0.inFlight += 1 } }
    public func endSplice() { state.withLock { $0.inFlight -= 1 } }

    /// Registers an in-flight request; false if the worker is already gone (or the id is taken).
    func begin(requestID: String) -> Bool {
        state.withLock { state in
            guard !state.closed, state.requests.insert(requestID).inserted else { return false }
            state.inFlight += 1
            return true
        }
    }

    func end(requestID: String) {
        state.withLock { state in
            if state.requests.remove(requestID) != nil { state.inFlight -= 1 }
        }
    }

    /// Opens a raw data stream to the worker (a relay splices its parent's stream into it).
    public func openStream() async throws -> MuxStream {
        try await route.openStream()
    }

    /// Drops the worker's link (its session then ends and the worker leaves as usual).
    public func disconnect() { route.close() }

    /// Asks the worker to abort a request (the client went away).
    public func cancel(requestID: String) {
        route.cancel(requestID: requestID)
    }

    /// Whether a liveness probe is out (routing prefers other workers meanwhile).
    var isSuspect: Bool { state.withLock { $0.probing } }

    /// A request has waited for its head since `since`. If nothing at all came from the worker
    /// since then and it is not busy taking data from us, it is asked for a pong; if none comes
    /// within `timeout` the worker is frozen (process stopped, TCP still up) and its route is
    /// closed: its pending requests fail at once and are retried elsewhere, as if it had died.
    func probeIfSilent(since: NIODeadline, timeout: Duration, deadlines: DeadlineSweeper) {
        guard route.isSilent(since: since), !route.isSending else { return }
        let start = state.withLock { state -> Bool in
            guard !state.probing, !state.closed else { return false }
            state.probing = true
            return true
        }
        guard start else { return }
        let sent = NIODeadline.now()
        let (route, logger, namespace) = (self.route, self.logger, self.namespace)
        deadlines.arm(deadlines.makeID(), after: timeout) {
            if route.isSilent(since: sent) {
                logger.warning("worker answers nothing, not even a ping: closing its tunnel", metadata: [
                    "namespace": "\(namespace)", "timeout": "\(timeout)",
                ])
                route.close()
            }
            self.state.withLock { $0.probing = false }
        }
        Task { try? await route.ping() }
    }

    /// Marks the worker gone: no new request begins on it (those in flight fail with its link).
    func markClosed() {
        state.withLock { state in
            state.closed = true
            state.requests = []
        }
    }
}

/// All live workers, indexed by namespace and by (group, model), so routing a request costs
/// O(1) in the size of the fleet: the index is maintained on register, model/group changes and
/// departure; choosing reads one route's array (a copy-on-write snapshot) outside the lock.
public final class WorkerRegistry: Sendable {
    struct RouteKey: Hashable, Sendable {
        var group: String
        var model: String
    }

    struct State: Sendable {
        var byNamespace: [String: WorkerConnection] = [:]
        var byRoute: [RouteKey: [WorkerConnection]] = [:]
        /// Per group: model → number of workers serving it (for `/v1/models`).
        var modelsByGroup: [String: [String: Int]] = [:]
        var nextSessionID: UInt64 = 0

        mutating func index(_ connection: WorkerConnection, models: Set<String>, groups: Set<String>) {
            for group in groups {
                for model in models {
                    byRoute[RouteKey(group: group, model: model), default: []].append(connection)
                    modelsByGroup[group, default: [:]][model, default: 0] += 1
                }
            }
        }

        mutating func unindex(_ connection: WorkerConnection, models: Set<String>, groups: Set<String>) {
            for group in groups {
                for model in models {
                    let key = RouteKey(group: group, model: model)
                    byRoute[key]?.removeAll { $0 === connection }
                    if byRoute[key]?.isEmpty == true { byRoute[key] = nil }
                    modelsByGroup[group]?[model, default: 1] -= 1
                    if modelsByGroup[group]?[model] == 0 { modelsByGroup[group]?[model] = nil }
                    if modelsByGroup[group]?.isEmpty == true { modelsByGroup[group] = nil }
                }
            }
        }
    }

    let state = Mutex(State())

    public init() {}

    func nextSessionID() -> UInt64 {
        state.withLock { state in
            state.nextSessionID += 1
            return state.nextSessionID
        }
    }

    /// Claims the namespace for this connection and makes it routable; false if another live
    /// session of another user holds the namespace. A session of the same user is replaced: a
    /// worker that reconnects after a silent drop takes its namespace over at once instead of
    /// being refused until the stale session's heartbeat deadline (Tokilake refused it).
    func claim(_ connection: WorkerConnection) -> Bool {
        let outcome = state.withLock { state -> (claimed: Bool, replaced: WorkerConnection?) in
            var replaced: WorkerConnection?
            if let existing = state.byNamespace[connection.namespace] {
                if existing === connection { return (true, nil) }
                guard existing.userID == connection.userID else { return (false, nil) }
                let (models, groups) = existing.state.withLock { ($0.models, $0.groups) }
                state.unindex(existing, models: models, groups: groups)
                replaced = existing
            }
            state.byNamespace[connection.namespace] = connection
            let (models, groups) = connection.state.withLock { ($0.models, $0.groups) }
            state.index(connection, models: models, groups: groups)
            return (true, replaced)
        }
        if let stale = outcome.replaced {
            stale.logger.info("worker session replaced by a new one of the same owner", metadata: ["namespace": "\(stale.namespace)"])
            stale.markClosed()
            stale.route.retire()
        }
        return outcome.claimed
    }

    /// Removes the connection; true if it still held its namespace (false: it was replaced,
    /// and its departure must not be recorded over its successor's presence).
    @discardableResult
    func release(_ connection: WorkerConnection) -> Bool {
        state.withLock { state in
            guard state.byNamespace[connection.namespace] === connection else { return false }
            state.byNamespace[connection.namespace] = nil
            let (models, groups) = connection.state.withLock { ($0.models, $0.groups) }
            state.unindex(connection, models: models, groups: groups)
            if state.byNamespace.isEmpty { state.byNamespace = [:] }  // give back a departed fleet's capacity
            return true
        }
    }

    /// Changes what a connection serves (models_sync, heartbeat); re-indexes it if registered.
    /// Returns whether anything changed.
    @discardableResult
    func update(_ connection: WorkerConnection, models: Set<String>? = nil, groups: Set<String>? = nil) -> Bool {
        state.withLock { state in
            let (old, new) = connection.state.withLock { conn -> ((Set<String>, Set<String>), (Set<String>, Set<String>)) in
                let old = (conn.models, conn.groups)
                if let models { conn.models = models }
                if let groups { conn.groups = groups }
                return (old, (conn.models, conn.groups))
            }
            guard old != new else { return false }
            if state.byNamespace[connection.namespace] === connection {
                state.unindex(connection, models: old.0, groups: old.1)
                state.index(connection, models: new.0, groups: new.1)
            }
            return true
        }
    }

    /// The worker registered under `namespace`, if any.
    public func worker(namespace: String) -> WorkerConnection? {
        state.withLock { $0.byNamespace[namespace] }
    }

    public var workers: [WorkerConnection] {
        state.withLock { Array($0.byNamespace.values) }
    }

    /// Online workers serving `model` for a caller in `group`, at most `limit`, best first: the
    /// first is the better of two random picks by (liveness probe out, in-flight requests) — the
    /// "power of two choices", one RNG draw — and the rest follow in random order for retries.
    func candidates(model: String, group: String, limit: Int = 3) -> [WorkerConnection] {
        let route = state.withLock { $0.byRoute[RouteKey(group: group, model: model)] } ?? []
        guard limit > 0, !route.isEmpty else { return [] }
        func load(_ worker: WorkerConnection) -> Int {
            worker.state.withLock { ($0.probing ? 1 << 32 : 0) + max($0.inFlight, $0.reportedInFlight ?? 0) + ($0.closed ? 1 << 40 : 0) }
        }
        if route.count == 1 { return route }
        if route.count <= limit {
            // Few enough to rank all: by load, ties at random.
            return route.map { ($0, load($0), FastRandom.next()) }.sorted { ($0.1, $0.2) < ($1.1, $1.2) }.map(\.0)
        }
        let draw = FastRandom.next()
        let n = UInt64(route.count)
        let i = Int(draw % n)
        var j = Int((draw >> 32) % (n - 1))
        if j >= i { j += 1 }
        let (first, second) = load(route[i]) <= load(route[j]) ? (route[i], route[j]) : (route[j], route[i])
        var picked = [first, second]
        // Further fallbacks walk from a random offset, skipping the two already chosen.
        var k = Int((draw >> 16) % n)
        while picked.count < limit {
            let candidate = route[k]
            if candidate !== first && candidate !== second { picked.append(candidate) }
            k = (k + 1) % route.count
        }
        return picked
    }

    /// Whether any worker serves `model`, in any group (for the metrics' model label; not
    /// on the answered path).
    func serves(model: String) -> Bool {
        state.withLock { state in state.modelsByGroup.values.contains { $0[model] != nil } }
    }

    /// Models reachable from `group`, sorted.
    func models(group: String) -> [String] {
        models(groups: [group])
    }

    /// Models reachable from any of `groups`, sorted.
    func models(groups: [String]) -> [String] {
        let all = state.withLock { state in
            groups.reduce(into: Set<String>()) { models, group in
                if let served = state.modelsByGroup[group] { models.formUnion(served.keys) }
            }
        }
        return all.sorted()
    }

    /// Candidates for a caller who may use several groups, each with the group it was found in:
    /// the caller's private pools first (its own GPUs before the hub's), then `primary`, each
    /// group's best first, a worker serving several of them listed once, at most `limit`.
    func candidates(model: String, groups: [String], primary: String, limit: Int = 3) -> [(worker: WorkerConnection, group: String)] {
        if groups.count == 1 { return candidates(model: model, group: groups[0], limit: limit).map { ($0, groups[0]) } }
        var picked: [(worker: WorkerConnection, group: String)] = []
        for group in groups.filter({ $0 != primary }) + groups.filter({ $0 == primary }) where picked.count < limit {
            for worker in candidates(model: model, group: group, limit: limit) where picked.count < limit {
                if !picked.contains(where: { $0.worker === worker }) { picked.append((worker, group)) }
            }
        }
        return picked
    }
}

/// A cheap random number source for routing: SplitMix64 over an atomic counter (no system call
/// per draw, unlike `SystemRandomNumberGenerator` on Linux). Not for anything secret.
enum FastRandom {
    private static let counter = Atomic<UInt64>(UInt64(UInt(bitPattern: ObjectIdentifier(Box.self).hashValue)) ^ 0x9E37_79B9_7F4A_7C15)
    private final class Box {}

    static func next() -> UInt64 {
        var z = counter.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
