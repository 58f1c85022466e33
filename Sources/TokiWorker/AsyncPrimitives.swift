// Small concurrency helpers used by the worker: a one-shot event, a change counter, a time limit,
// the reconnect back-off and an NDJSON line reader over a mux stream.

import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// A one-shot event. `wait()` returns once `set()` was called, or as soon as the waiting task is
/// cancelled.
final class AsyncEvent: Sendable {
    private struct State {
        var isSet = false
        var nextID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    init() {}

    var isSet: Bool { state.withLock { $0.isSet } }

    func set() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.isSet else { return [] }
            state.isSet = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.isSet || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}

/// A version counter whose waiters wake on every bump.
final class ChangeSignal: Sendable {
    private struct State {
        var version = 0
        var nextID: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    init() {}

    var version: Int { state.withLock { $0.version } }

    func bump() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.version += 1
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the version differs from `seen` (at once if it already does), or on cancellation.
    func wait(after seen: Int) async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.version != seen || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}

/// Sleeps for `duration` unless `event` is set first or the task is cancelled.
func sleep(for duration: Duration, unlessSet event: AsyncEvent) async {
    await withTaskGroup(of: Void.self) { group in
        group.addTask { try? await Task.sleep(for: duration) }
        group.addTask { await event.wait() }
        await group.next()
        group.cancelAll()
    }
}

/// Exponential back-off with full jitter: the n-th delay is uniform in [0, min(cap, base·2ⁿ)].
public struct ReconnectBackoff: Sendable {
    public var base: Duration
    public var cap: Duration
    public private(set) var attempt = 0

    public init(base: Duration, cap: Duration) {
        self.base = base
        self.cap = max(cap, base)
    }

    /// The upper bound of the next delay.
    public var ceiling: Duration {
        let factor = attempt >= 30 ? Double(1 << 30) : Double(1 << attempt)
        let seconds = min(base.seconds * factor, cap.seconds)
        return .nanoseconds(Int64(seconds * 1e9))
    }

    public mutating func nextDelay<R: RandomNumberGenerator>(using generator: inout R) -> Duration {
        let bound = ceiling.seconds
        attempt += 1
        guard bound > 0 else { return .zero }
        return .nanoseconds(Int64(Double.random(in: 0...bound, using: &generator) * 1e9))
    }

    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    /// Back to the first step (after a connection that stayed up).
    public mutating func reset() { attempt = 0 }

    /// Straight to the capped step (for rejections that will not go away soon).
    public mutating func saturate() {
        while ceiling < cap, attempt < 30 { attempt += 1 }
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
