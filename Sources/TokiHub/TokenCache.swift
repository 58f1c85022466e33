import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Remembers successful token lookups briefly so the hot path does not hit SQLite on every
/// request. Keyed by the token's SHA-256 (the plaintext is never kept); failures are not
/// cached, and the map is bounded.
final class TokenCache: Sendable {
    let store: HubStore
    let ttl: Duration
    let entries = Locked<[String: (token: AuthenticatedToken, expires: ContinuousClock.Instant)]>([:])
    static let maxEntries = 10_000

    init(store: HubStore, ttl: Duration) {
        self.store = store
        self.ttl = ttl
    }

    func authenticate(_ presented: String) async throws -> AuthenticatedToken? {
        guard let canonical = TokenCrypto.canonicalize(presented) else { return nil }
        let key = TokenCrypto.hashHex(canonical)
        let now = ContinuousClock.now
        if let hit = entries.withLock({ $0[key] }), hit.expires > now, hit.token.expiresAt.map({ $0 > Date() }) ?? true {
            return hit.token
        }
        guard let token = try await store.authenticate(token: canonical) else {
            entries.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        }
        entries.withLock { entries in
            if entries.count >= Self.maxEntries { entries.removeAll(keepingCapacity: true) }
            entries[key] = (token, now + ttl)
        }
        return token
    }

    func forgetAll() { entries.withLock { $0.removeAll() } }
}

/// Writes usage rows off the request path: records collect in memory and are written as one
/// transaction every quarter second (one SQLite transaction per request would cost more than the
/// request itself).
final class UsageRecorder: Service, Sendable {
    let store: HubStore
    let logger: Logger
    private let pending = Locked<[UsageRecord]>([])
    static let maxPending = 100_000

    init(store: HubStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    func record(requestID: String, user: AuthenticatedToken, model: String, namespace: String?, status: Int,
                started: ContinuousClock.Instant, sniffer: UsageSniffer?) {
        let elapsed = ContinuousClock.now - started
        let usage = sniffer?.usage
        let row = UsageRecord(
            requestID: requestID, userID: user.userID, tokenID: user.tokenID, model: model, namespace: namespace,
            statusCode: status, promptTokens: usage?.prompt, completionTokens: usage?.completion,
            durationMS: Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        )
        let dropped = pending.withLock { rows -> Bool in
            guard rows.count < Self.maxPending else { return true }
            rows.append(row)
            return false
        }
        if dropped { logger.error("usage log backlog full; a row was dropped", metadata: ["request_id": "\(requestID)"]) }
    }

    func run() async throws {
        await runFlushing(every: .milliseconds(250)) { await self.flush() }
    }

    private func flush() async {
        let rows = pending.withLock { rows -> [UsageRecord] in
            defer { rows.removeAll(keepingCapacity: true) }
            return rows
        }
        guard !rows.isEmpty else { return }
        do { try await store.recordUsage(rows) } catch {
            logger.error("could not record usage", metadata: ["error": "\(error)", "rows": "\(rows.count)"])
        }
    }
}

/// Until graceful shutdown: calls `flush` every `period`; then once more for the rest.
func runFlushing(every period: Duration, _ flush: @escaping @Sendable () async -> Void) async {
    await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            await flush()
        }
    }
    await flush()
}

/// Workers' presence (heartbeats, model changes, departures) written off the control path: the
/// latest state per namespace is kept in memory and all are written in one transaction a second
/// (a transaction per heartbeat cost more than the rest of the heartbeat, and thousands of
/// workers send one every 15 s). Departures go through here too, so a heartbeat flushed late can
/// never mark a departed worker online again.
final class PresenceRecorder: Service, Sendable {
    let store: HubStore
    let logger: Logger
    private let pending = Locked<[String: WorkerPresence]>([:])

    init(store: HubStore, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    /// `namespace` was seen; `models`, if given, replace the stored list.
    func seen(_ namespace: String, models: [String]?) {
        pending.withLock { pending in
            if models == nil, case .online(let earlier?) = pending[namespace] {
                pending[namespace] = .online(models: earlier)  // keep a not yet written model change
            } else {
                pending[namespace] = .online(models: models)
            }
        }
    }

    /// `namespace`'s session ended.
    func departed(_ namespace: String) {
        pending.withLock { $0[namespace] = .offline }
    }

    func run() async throws {
        await runFlushing(every: .seconds(1)) { await self.flush() }
    }

    private func flush() async {
        let updates = pending.withLock { pending -> [String: WorkerPresence] in
            defer { pending.removeAll(keepingCapacity: true) }
            return pending
        }
        guard !updates.isEmpty else { return }
        do { try await store.recordPresence(updates) } catch {
            logger.error("could not record worker presence", metadata: ["error": "\(error)", "workers": "\(updates.count)"])
        }
    }
}
