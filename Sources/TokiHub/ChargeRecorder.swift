import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Writes usage rows and their charges (`Charge`: one SQLite transaction each batch) with group
/// commit, leader style: a request whose charge must be durable before it completes finds no
/// write in progress and writes the queue itself, its charge included (no hand-off to another
/// task on the way); requests arriving meanwhile queue and wait, and when the write ends their
/// charges (and anything else queued) go together in the next one. One write pays for many
/// requests, and under no load a charge costs one transaction and no extra wake-ups. Rows
/// nobody waits for (free requests, failures, disconnects) go with the next write, at most
/// `period` later.
final class ChargeRecorder: Service, Sendable {
    let ledger: any BillingLedger
    let billing: Billing?
    let logger: Logger
    let period: Duration
    private let state = Locked(State())
    static let maxPending = 100_000

    private struct State {
        var charges: [Charge] = []
        var waiters: [CheckedContinuation<Void, any Error>] = []
        /// A write is in progress: its writer will take what is queued.
        var writing = false
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
    }

    /// Queues a row (and its charge) for the next write.
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
        enum Role { case inline, leader, follower }
        let role = state.withLock { state -> Role in
            if state.closed { return .inline }
            if state.writing { return .follower }
            state.writing = true
            state.charges.append(charge)
            return .leader
        }
        switch role {
        case .inline:
            try await write([charge])
        case .leader:
            // The first batch holds this charge; whoever queued meanwhile is written by a
            // successor, so this request does not wait for their write too.
            let failure = await writeBatch()
            handOff()
            if let failure { throw failure }
        case .follower:
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Void, any Error>) in
                let lead = state.withLock { state -> Bool in
                    state.charges.append(charge)
                    state.waiters.append(waiter)
                    if state.writing { return false }
                    state.writing = true  // the write ended in between: this waiter's batch needs a writer
                    return true
                }
                if lead { handOff(alreadyWriting: true) }
            }
        }
    }

    /// Writes what is queued as one batch (the caller holds `writing`); resumes its waiters.
    /// Returns the failure, if the write failed.
    private func writeBatch() async -> CommitFailed? {
        let (charges, waiters) = state.withLock { state in
            defer {
                state.charges.removeAll(keepingCapacity: true)
                state.waiters.removeAll(keepingCapacity: true)
            }
            return (state.charges, state.waiters)
        }
        guard !charges.isEmpty else { return nil }
        do {
            try await write(charges)
            for waiter in waiters { waiter.resume() }
            return nil
        } catch {
            logger.error("could not record usage and charges", metadata: ["error": "\(error)", "rows": "\(charges.count)"])
            let failure = CommitFailed(reason: "\(error)")
            for waiter in waiters { waiter.resume(throwing: failure) }
            return failure
        }
    }

    /// Gives up `writing`, or, if charges queued meanwhile, keeps it and writes them in a task
    /// of their own until the queue is empty.
    private func handOff(alreadyWriting: Bool = false) {
        let more = state.withLock { state -> Bool in
            if alreadyWriting || !state.charges.isEmpty { return true }
            state.writing = false
            return false
        }
        guard more else { return }
        Task {
            while true {
                _ = await self.writeBatch()
                let done = self.state.withLock { state -> Bool in
                    if state.charges.isEmpty {
                        state.writing = false
                        return true
                    }
                    return false
                }
                if done { return }
            }
        }
    }

    func run() async throws {
        state.withLock { $0.closed = false }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: self.period)
                await self.flush()
            }
        }
        // The last batch, and from now on commits write inline. A write still at work finishes
        // first (the process may end right after this returns).
        state.withLock { $0.closed = true }
        await Task {
            for _ in 0..<1000 where self.state.withLock({ $0.writing }) { try? await Task.sleep(for: .milliseconds(10)) }
            await self.flush()
        }.value
    }

    /// The periodic write of rows nobody waits for (skipped while a writer is at work: it takes them).
    private func flush() async {
        let lead = state.withLock { state -> Bool in
            guard !state.writing, !state.charges.isEmpty else { return false }
            state.writing = true
            return true
        }
        guard lead else { return }
        _ = await writeBatch()
        handOff()
    }

    private func write(_ charges: [Charge]) async throws {
        // A cancelled caller does not cancel it (the ledger's contract): others may wait for this write.
        let outcome = try await ledger.commitCharges(charges, now: Date())
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
