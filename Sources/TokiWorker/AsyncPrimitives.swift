// Small concurrency helpers used by the worker: a one-shot event, a change counter, a time limit,
// the reconnect back-off and an NDJSON line reader over a mux stream.

import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// A value under a lock that tasks can wait on: `wait(until:)` returns once the value satisfies
/// the condition (at once if it already does) or the waiting task is cancelled. Every `withLock`
/// wakes the waiters whose condition now holds. The one piece of waiter bookkeeping behind
/// `AsyncEvent`, `ChangeSignal` and `InFlightRegistry`'s drain.
final class AsyncCondition<Value: Sendable>: Sendable {
    private struct Waiter {
        let ready: @Sendable (Value) -> Bool
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var value: Value
        var nextID: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
    }

    private let state: Mutex<State>

    init(_ value: Value) { state = Mutex(State(value: value)) }

    var value: Value { state.withLock { $0.value } }

    @discardableResult
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        var woken: [CheckedContinuation<Void, Never>] = []
        let result = try state.withLock { state -> R in
            let result = try body(&state.value)
            if !state.waiters.isEmpty {
                for (id, waiter) in state.waiters where waiter.ready(state.value) {
                    woken.append(waiter.continuation)
                    state.waiters[id] = nil
                }
            }
            return result
        }
        for continuation in woken { continuation.resume() }
        return result
    }

    func wait(until ready: @escaping @Sendable (Value) -> Bool) async {
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if ready(state.value) || Task.isCancelled { return true }
                    state.waiters[id] = Waiter(ready: ready, continuation: continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }
}

/// A one-shot event. `wait()` returns once `set()` was called, or as soon as the waiting task is
/// cancelled.
final class AsyncEvent: Sendable {
    private let condition = AsyncCondition(false)

    init() {}

    var isSet: Bool { condition.value }

    func set() { condition.withLock { $0 = true } }

    func wait() async { await condition.wait { $0 } }
}

/// A version counter whose waiters wake on every bump.
final class ChangeSignal: Sendable {
    private let condition = AsyncCondition(0)

    init() {}

    var version: Int { condition.value }

    func bump() { condition.withLock { $0 += 1 } }

    /// Returns once the version differs from `seen` (at once if it already does), or on cancellation.
    func wait(after seen: Int) async { await condition.wait { $0 != seen } }
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


