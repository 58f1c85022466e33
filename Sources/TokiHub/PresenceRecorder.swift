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
    private let pending = Locked<[String: WorkerPresence]>([:])

    init(store: any WorkerDirectory, logger: Logger) {
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
        do { try await store.recordPresence(updates, now: Date()) } catch {
            logger.error("could not record worker presence", metadata: ["error": "\(error)", "workers": "\(updates.count)"])
        }
    }
}
