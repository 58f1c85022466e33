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

/// Writes usage rows off the request path, in batches.
final class UsageRecorder: Service, Sendable {
    let store: HubStore
    let logger: Logger
    private let stream: AsyncStream<UsageRecord>
    private let continuation: AsyncStream<UsageRecord>.Continuation

    init(store: HubStore, logger: Logger) {
        self.store = store
        self.logger = logger
        (stream, continuation) = AsyncStream<UsageRecord>.makeStream(bufferingPolicy: .bufferingNewest(100_000))
    }

    func record(requestID: String, user: AuthenticatedToken, model: String, namespace: String?, status: Int,
                started: ContinuousClock.Instant, sniffer: UsageSniffer?) {
        let elapsed = ContinuousClock.now - started
        let usage = sniffer?.usage
        continuation.yield(UsageRecord(
            requestID: requestID, userID: user.userID, tokenID: user.tokenID, model: model, namespace: namespace,
            statusCode: status, promptTokens: usage?.prompt, completionTokens: usage?.completion,
            durationMS: Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        ))
    }

    func run() async throws {
        var batch: [UsageRecord] = []
        // Ends when the service group shuts down; whatever is queued is written first.
        await withGracefulShutdownHandler {
            for await record in stream {
                batch.append(record)
                if batch.count >= 256 { await flush(&batch) }
                // Opportunistic: write what has accumulated without waiting for more.
                await flush(&batch)
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
        await flush(&batch)
    }

    private func flush(_ batch: inout [UsageRecord]) async {
        guard !batch.isEmpty else { return }
        do { try await store.recordUsage(batch) } catch {
            logger.error("could not record usage", metadata: ["error": "\(error)", "rows": "\(batch.count)"])
        }
        batch.removeAll(keepingCapacity: true)
    }
}

/// Watches writes to clients: a write that has not completed within the timeout means the client
/// stopped reading; its request is then cancelled on the worker and its stream closed, which
/// returns the stream's buffered bytes to the session budget. One task for the whole hub.
final class SlowClientGuard: Sendable {
    let timeout: Duration
    private let pending = Locked<[UInt64: (since: ContinuousClock.Instant, cutOff: @Sendable () -> Void)]>([:])
    private let counter = Locked<UInt64>(0)

    init(timeout: Duration) { self.timeout = timeout }

    func makeID() -> UInt64 { counter.withLock { $0 += 1; return $0 } }

    func writeStarted(_ id: UInt64, cutOff: @escaping @Sendable () -> Void) {
        pending.withLock { $0[id] = (.now, cutOff) }
    }

    func writeFinished(_ id: UInt64) {
        pending.withLock { _ = $0.removeValue(forKey: id) }
    }

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let now = ContinuousClock.now
            let expired = pending.withLock { pending -> [@Sendable () -> Void] in
                let ids = pending.filter { now - $0.value.since > timeout }.map(\.key)
                return ids.compactMap { pending.removeValue(forKey: $0)?.cutOff }
            }
            for cutOff in expired { cutOff() }
        }
    }
}
