import Foundation
import Logging
import ServiceLifecycle
import TokiStore

/// Deletes usage rows older than the retention period, at start and then hourly. The ledger is
/// kept: it is the permanent record of money, and a pruned request's charge still cannot be
/// charged again.
struct UsageRetention: Service {
    let store: any AccountAdministration
    let keep: Duration
    let logger: Logger
    static let period: Duration = .seconds(3600)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await prune()
                try? await Task.sleep(for: Self.period)
            }
        }
    }

    func prune() async {
        let cutoff = Date().addingTimeInterval(-Double(keep.components.seconds))
        do {
            let removed = try await store.pruneUsage(olderThan: cutoff)
            if removed > 0 { logger.info("pruned usage rows past the retention period", metadata: ["rows": "\(removed)"]) }
        } catch {
            logger.error("could not prune usage rows", metadata: ["error": "\(error)"])
        }
    }
}
