import Logging
import ServiceLifecycle
import TokiStore

/// Checkpoints the store's write-ahead log every `period`, so that no commit does it (a
/// checkpoint inside a commit held every charge waiting on that commit for an fsync).
struct StoreCheckpointer: Service {
    let store: any StoreMaintenance
    let logger: Logger
    var period: Duration = .seconds(1)

    func run() async throws {
        await runFlushing(every: period) { [store, logger] in
            do {
                try await store.checkpointLog()
            } catch {
                logger.warning("could not checkpoint the database log", metadata: ["error": "\(error)"])
            }
        }
    }
}
