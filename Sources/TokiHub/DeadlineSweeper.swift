import Foundation
import ServiceLifecycle

/// Deadlines for many requests with one task: a write to a client that stalls (the client stopped
/// reading: its unread bytes would otherwise fill the worker session's shared receive budget), or
/// a worker that does not answer in time. Armed and disarmed under a lock; checked every 250 ms.
final class DeadlineSweeper: Service, Sendable {
    private let armed = Locked<[UInt64: (due: ContinuousClock.Instant, action: @Sendable () -> Void)]>([:])
    private let counter = Locked<UInt64>(0)

    func makeID() -> UInt64 { counter.withLock { $0 += 1; return $0 } }

    func arm(_ id: UInt64, after delay: Duration, action: @escaping @Sendable () -> Void) {
        armed.withLock { $0[id] = (.now + delay, action) }
    }

    func disarm(_ id: UInt64) {
        armed.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// Until graceful shutdown (or cancellation).
    func run() async {
        await cancelWhenGracefulShutdown { await self.sweep() }
    }

    private func sweep() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            let now = ContinuousClock.now
            let due = armed.withLock { armed -> [@Sendable () -> Void] in
                let ids = armed.filter { $0.value.due <= now }.map(\.key)
                return ids.compactMap { armed.removeValue(forKey: $0)?.action }
            }
            for action in due { action() }
        }
    }
}
