import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Writes usage rows off the request path: records collect in memory and are written as one
/// transaction every quarter second (one SQLite transaction per request would cost more than the
/// request itself).
final class UsageRecorder: Service, Sendable {
    let store: any UsageLog
    let logger: Logger
    private let pending = Locked<[UsageRecord]>([])
    static let maxPending = 100_000

    init(store: any UsageLog, logger: Logger) {
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
    // Each write runs in a task of its own: shutdown cancels the loop, and a write that
    // inherited that cancellation failed in the store (GRDB checks it) after its records had
    // been taken, so the last usage and presence were lost with an error at every shutdown.
    let write: @Sendable () async -> Void = { await Task { await flush() }.value }
    await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            await write()
        }
    }
    await write()
}
