import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Workers' presence (heartbeats, model changes, departures) written off the control path: the
/// latest state per namespace is kept in memory and all are written in one transaction a second
/// (a transaction per heartbeat cost more than the rest of the heartbeat, and thousands of
/// workers send one every 15 s). Departures go through here too, so a heartbeat flushed late can
/// never mark a departed worker online again.
final class PresenceRecorder: Service, Sendable {
    let store: any WorkerDirectory
    let logger: Logger
    /// A heartbeat that changes nothing refreshes `last_seen_at` at most this often: at 10,000
    /// workers, writing every heartbeat's timestamp was the largest part of the hub's idle CPU.
    /// Registrations, model changes and departures are always written at the next flush.
    let refreshInterval: Duration
    private struct State {
        var pending: [String: WorkerPresence] = [:]
        /// When each online namespace's presence was last handed to the store.
        var written: [String: ContinuousClock.Instant] = [:]
    }
    private let state = Locked(State())

    init(store: any WorkerDirectory, logger: Logger, refreshInterval: Duration = .seconds(60)) {
        self.store = store
        self.logger = logger
        self.refreshInterval = refreshInterval
    }

    /// `namespace` was seen; `models`, if given, replace the stored list.
    func seen(_ namespace: String, models: [String]?, now: ContinuousClock.Instant = .now) {
        state.withLock { state in
            if models == nil {
                if case .online(let earlier?) = state.pending[namespace] {
                    state.pending[namespace] = .online(models: earlier)  // keep a not yet written model change
                    return
                }
                if let written = state.written[namespace], now - written < refreshInterval, state.pending[namespace] == nil { return }
            }
            state.pending[namespace] = .online(models: models)
            state.written[namespace] = now
        }
    }

    /// `namespace`'s session ended.
    func departed(_ namespace: String) {
        state.withLock { state in
            state.pending[namespace] = .offline
            state.written[namespace] = nil
        }
    }

    /// What the next flush writes (and forgets).
    func takePending() -> [String: WorkerPresence] {
        state.withLock { state -> [String: WorkerPresence] in
            if state.written.isEmpty { state.written = [:] }  // give back a departed fleet's capacity
            // Handed over, not copied: emptying a shared dictionary "keeping capacity" would
            // allocate a copy as large as the biggest burst (a fleet's departure) and keep it.
            let pending = state.pending
            state.pending = [:]
            return pending
        }
    }

    func run() async throws {
        await runFlushing(every: .seconds(1)) { await self.flush() }
    }

    private func flush() async {
        let updates = takePending()
        guard !updates.isEmpty else { return }
        do { try await store.recordPresence(updates, now: Date()) } catch {
            logger.error("could not record worker presence", metadata: ["error": "\(error)", "workers": "\(updates.count)"])
        }
    }
}

/// Where a worker's life is reported: the hub records it in its store (`PresenceRecorder`); a
/// relay announces it to its parent.
public protocol WorkerPresenceSink: Sendable {
    /// The worker registered (admitted and routable).
    func joined(_ worker: WorkerConnection)
    /// The worker was heard from; `models` is its new list when it changed.
    func seen(_ worker: WorkerConnection, models: [String]?)
    /// The worker's session ended.
    func departed(_ worker: WorkerConnection)
}

extension WorkerPresenceSink {
    public func joined(_ worker: WorkerConnection) {}
}

/// Two sinks told the same (a hub that exports its workers upstream records them as well).
struct PresenceTee: WorkerPresenceSink {
    let first: any WorkerPresenceSink
    let second: any WorkerPresenceSink

    func joined(_ worker: WorkerConnection) { first.joined(worker); second.joined(worker) }
    func seen(_ worker: WorkerConnection, models: [String]?) { first.seen(worker, models: models); second.seen(worker, models: models) }
    func departed(_ worker: WorkerConnection) { first.departed(worker); second.departed(worker) }
}

extension PresenceRecorder: WorkerPresenceSink {
    func seen(_ worker: WorkerConnection, models: [String]?) { seen(worker.namespace, models: models) }
    func departed(_ worker: WorkerConnection) { departed(worker.namespace) }
}
