import NIOCore

/// An actor whose executor is an event loop. Async code isolated to it runs on that loop's
/// thread, and so do the `nonisolated(nonsending)` reads it awaits: when the loop delivers a
/// frame and resumes the reader, the reader continues on the same thread, in the same loop
/// tick, without waking a thread of the global pool. For per-link control loops that wait
/// most of their life and then do a few microseconds of work (a heartbeat and its ack).
/// Nothing isolated to it may block: it shares the thread with every channel of the loop.
public actor EventLoopIsolation {
    public nonisolated let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        eventLoop.executor.asUnownedSerialExecutor()
    }
}
