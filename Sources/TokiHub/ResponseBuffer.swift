import NIOCore
import Synchronization

/// The bytes the hub has taken off a worker's stream for one client and not yet written to it.
///
/// A pump task moves response chunks from the mux stream into this buffer as fast as they come,
/// so a client that reads slowly never leaves them in the worker session's receive budget, which
/// all requests on that worker share (smux v1 has no per-stream window: one stalled stream there
/// stops every other). The buffer is the client's to hold, up to `limit`:
/// - `.cut` (v1 links): past the limit the request is cut off;
/// - `.wait` (v2 links): past the limit the pump waits; the stream's own window then stops the
///   worker for this request only.
/// The writer side also wakes on `tick()` (a timer) to judge idleness and send SSE keep-alives.
final class ResponseBuffer: Sendable {
    enum Overflow: Sendable {
        case cut
        case wait
    }

    enum Event: Sendable {
        case chunk(ByteBuffer)
        case end
        case failed(any Error)
        case tick
        case cancelled
    }

    enum PushResult: Sendable, Equatable {
        case accepted
        /// `.cut` mode and the buffer is over its limit.
        case overflow
        /// The writer side is gone.
        case closed
    }

    private struct State: Sendable {
        var chunks = CircularBuffer<ByteBuffer>()
        var bytes = 0
        var ending: Event?
        var ticked = false
        var closed = false
        var reader: UnsafeContinuation<Event, Never>?
        var pusher: UnsafeContinuation<Void, Never>?

        /// Hands the reader its next event if it waits and one is there.
        mutating func wakeReader() {
            if let reader, let event = nextEvent() {
                self.reader = nil
                reader.resume(returning: event)
            }
        }

        /// The event for the reader now, if any.
        mutating func nextEvent() -> Event? {
            if let chunk = chunks.popFirst() {
                bytes -= chunk.readableBytes
                return .chunk(chunk)
            }
            if let ending { return ending }
            if ticked {
                ticked = false
                return .tick
            }
            return nil
        }
    }

    let limit: Int
    let overflow: Overflow
    private let state = Mutex(State())

    init(limit: Int, overflow: Overflow) {
        self.limit = limit
        self.overflow = overflow
    }

    /// Bytes waiting for the client.
    var bufferedBytes: Int { state.withLock { $0.bytes } }

    /// Adds a chunk. In `.wait` mode, returns once the buffer is under its limit again.
    func push(_ chunk: ByteBuffer) async -> PushResult {
        let (result, mustWait) = state.withLock { state -> (PushResult, Bool) in
            guard !state.closed else { return (.closed, false) }
            state.chunks.append(chunk)
            state.bytes += chunk.readableBytes
            state.wakeReader()
            guard state.bytes > limit else { return (.accepted, false) }
            return overflow == .cut ? (.overflow, false) : (.accepted, true)
        }
        guard mustWait else { return result }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.closed || state.bytes <= limit { return true }
                state.pusher = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        return state.withLock { $0.closed } ? .closed : .accepted
    }

    /// The worker's response ended (`.end`) or failed (`.failed`).
    func finish(_ event: Event) {
        state.withLock { state in
            guard state.ending == nil else { return }
            state.ending = event
            state.wakeReader()
        }
    }

    /// Wakes the writer side once (a timer fired).
    func tick() {
        state.withLock { state in
            state.ticked = true
            state.wakeReader()
        }
    }

    /// The writer side is done: wakes a waiting pusher and drops what is left.
    func close() {
        state.withLock { state in
            state.closed = true
            state.chunks.removeAll()
            state.bytes = 0
            state.pusher?.resume()
            state.pusher = nil
            state.reader?.resume(returning: .cancelled)
            state.reader = nil
        }
    }

    /// The next event for the writer side; `.cancelled` if the calling task is cancelled.
    func next() async -> Event {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Event, Never>) in
                let now = state.withLock { state -> Event? in
                    if let event = state.nextEvent() {
                        if state.bytes <= limit, let pusher = state.pusher {
                            state.pusher = nil
                            pusher.resume()
                        }
                        return event
                    }
                    if state.closed || Task.isCancelled { return .cancelled }
                    state.reader = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            state.withLock { state in
                state.reader?.resume(returning: .cancelled)
                state.reader = nil
            }
        }
    }
}
