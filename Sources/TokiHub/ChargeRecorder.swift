import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Writes usage rows and their charges (`Charge`: one SQLite transaction each batch) with group
/// commit: a request that must not complete before its charge is durable waits in `commit`,
/// and every charge queued meanwhile (by any request) goes into the same transaction, so one
/// write pays for many requests and no request waits on another's transaction. Rows nobody
/// waits for (failures, disconnects) go with the next batch, at most `period` later.
final class ChargeRecorder: Service, Sendable {
    let ledger: any BillingLedger
    let billing: Billing?
    let logger: Logger
    let period: Duration
    private let state = Locked(State())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    static let maxPending = 100_000

    private struct State {
        var charges: [Charge] = []
        var waiters: [CheckedContinuation<Void, any Error>] = []
        /// Until `run` starts and after its last flush: commits write inline (nobody would flush them).
        var closed = true
    }

    struct CommitFailed: Error, CustomStringConvertible {
        var reason: String
        var description: String { "the charge could not be recorded: \(reason)" }
    }

    init(ledger: any BillingLedger, billing: Billing?, logger: Logger, period: Duration = .milliseconds(250)) {
        self.ledger = ledger
        self.billing = billing
        self.logger = logger
        self.period = period
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a row (and its charge) for the next batch.
    func record(_ charge: Charge) {
        let (dropped, inline) = state.withLock { state -> (Bool, Bool) in
            if state.closed { return (false, true) }
            guard state.charges.count < Self.maxPending else { return (true, false) }
            state.charges.append(charge)
            return (false, false)
        }
        if inline {
            Task { try? await self.write([charge]) }
            return
        }
        if dropped { logger.error("usage log backlog full; a row was dropped", metadata: ["request_id": "\(charge.usage.requestID)"]) }
    }

    /// A completed request's charge, before the client gets the answer's last bytes: one that
    /// costs something returns once committed; a free one (only its usage row) is queued.
    func settle(_ charge: Charge) async throws {
        if charge.cost.nanos > 0 {
            try await commit(charge)
        } else {
            record(charge)
        }
    }

    /// Queues `charge` and returns once it is committed (throws if the write failed).
    func commit(_ charge: Charge) async throws {
        let inline = state.withLock { $0.closed }
        if inline {
            try await write([charge])
            return
        }
        try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
            let closed = state.withLock { state -> Bool in
                if state.closed { return true }
                state.charges.append(charge)
                state.waiters.append(waiter)
                return false
            }
            if closed {
                Task { do { try await self.write([charge]); waiter.resume() } catch { waiter.resume(throwing: error) } }
            } else {
                wake.yield()
            }
        }
    }

    func run() async throws {
        state.withLock { $0.closed = false }
        let ticker = Task { [wake, period] in
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                wake.yield()
            }
        }
        await cancelWhenGracefulShutdown {
            for await _ in self.wakes { await self.flush() }
        }
        ticker.cancel()
        // The last batch, and from now on commits write inline.
        state.withLock { $0.closed = true }
        await Task { await self.flush() }.value
    }

    private func flush() async {
        let (charges, waiters) = state.withLock { state in
            defer {
                state.charges.removeAll(keepingCapacity: true)
                state.waiters.removeAll(keepingCapacity: true)
            }
            return (state.charges, state.waiters)
        }
        guard !charges.isEmpty else { return }
        do {
            try await write(charges)
            for waiter in waiters { waiter.resume() }
        } catch {
            logger.error("could not record usage and charges", metadata: ["error": "\(error)", "rows": "\(charges.count)"])
            for waiter in waiters { waiter.resume(throwing: CommitFailed(reason: "\(error)")) }
        }
    }

    private func write(_ charges: [Charge]) async throws {
        // Its own task: a cancelled caller must not cancel a write other requests wait for.
        let outcome = try await Task { [ledger] in try await ledger.commitCharges(charges, now: Date()) }.value
        billing?.applied(outcome)
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
