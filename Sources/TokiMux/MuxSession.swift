import Logging
import NIOCore
import Synchronization

/// Where a session's batches of frames go. Awaiting `write` is the transport's back-pressure.
public protocol MuxOutbound: Sendable {
    func write(_ message: ByteBuffer) async throws
}

/// Why a session or stream operation failed.
public enum MuxError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `close()` was called on the session.
    case sessionClosed
    /// The transport ended (peer closed the WebSocket/TCP connection).
    case transportEnded
    /// Keepalive was on and nothing arrived within the timeout.
    case keepAliveTimeout
    /// The peer broke the protocol.
    case protocolViolation(SmuxProtocolError)

    public var description: String {
        switch self {
        case .sessionClosed: "smux session closed"
        case .transportEnded: "smux session ended: the transport was closed by the peer"
        case .keepAliveTimeout: "smux session closed: keepalive timeout (nothing received)"
        case .protocolViolation(let error): error.description
        }
    }
}

/// What drives a session from a push transport (a NIO channel handler) instead of `run`'s tasks.
/// The session calls these with its lock held: they must only schedule work (e.g.
/// `eventLoop.execute`), never call back into the session synchronously.
public protocol MuxTransportDriver: AnyObject, Sendable {
    /// Frames are queued: call `takeOutbound()` until it returns nil (or the transport is full).
    func outboundPending()
    /// `receive` returned false earlier and the budget is back: read the transport again.
    func resumeReading()
    /// The session ended (closed, protocol violation, keepalive timeout): close the transport.
    func sessionEnded(_ error: MuxError)
}

/// An smux session over any byte transport, in one of two ways:
/// - `run(inbound:outbound:)`: one reader task, one writer task (which batches every queued
///   frame into one transport message) and an optional keepalive task;
/// - `attach(_:)`: a `MuxTransportDriver` (a channel handler) pushes received bytes in with
///   `receive` and takes batches out with `takeOutbound`, with no task of its own: an idle
///   session then costs no task at all.
/// Streams get async read/write with back-pressure either way:
/// - reading pauses when the receive budget (or accept backlog) is full;
/// - writers wait when the outbound queue is full, and in version 2 for the peer's window.
public final class MuxSession: Sendable {
    public let role: SmuxRole
    public let configuration: SmuxConfiguration
    let logger: Logger
    let state: Mutex<State>

    struct Waiter<Value>: Sendable {
        var token: UInt64
        var continuation: UnsafeContinuation<Value, any Error>
    }

    struct State: Sendable {
        var machine: SmuxSessionMachine
        var closedError: MuxError?
        var nextToken: UInt64 = 0
        var readWaiters: [UInt32: Waiter<ByteBuffer?>] = [:]
        var writeWaiters: [UInt32: Waiter<Void>] = [:]
        var spaceWaiters = CircularBuffer<UInt32>()
        var acceptWaiter: Waiter<UInt32>?
        var writerSleeping: UnsafeContinuation<Bool, Never>?
        var readerSleeping: UnsafeContinuation<Void, Never>?
        /// `flush()` callers, resumed once everything queued has been handed to the transport.
        var flushWaiters: [UnsafeContinuation<Void, Never>] = []
        var writing = false
        /// Inbound bytes: the frame decoder and an incomplete frame carried to the next message.
        var decoder: SmuxFrameDecoder
        var carried: ByteBuffer?
        var frames: [SmuxFrame] = []
        /// Push mode (`attach`): the driver, whether it was told to pause reading, whether it has
        /// been told about queued frames since it last took them.
        var driver: (any MuxTransportDriver)?
        var driverPaused = false
        var driverNotified = false
        var lastKeepAliveCheck = ContinuousClock.now
        /// `refuseIncomingStreams()` was called: streams the peer opens are closed at once.
        var refusingStreams = false
        /// Continuations to resume once the lock is released (`MuxSession.locked`). Resuming a
        /// task takes the runtime's lock on it, and a task being cancelled holds that lock while
        /// its cancellation handler waits for ours: resuming under our lock could deadlock.
        var resumptions: [@Sendable () -> Void] = []

        mutating func later(_ resume: @escaping @Sendable () -> Void) { resumptions.append(resume) }

        /// Closes every stream the peer opened and nobody accepted.
        mutating func refuseBacklog() {
            while let id = machine.accept() { machine.close(streamID: id) }
            wakeReader()
            wakeWriter()
        }

        mutating func wakeFlushWaitersIfIdle() {
            guard !writing, !machine.hasOutbound else { return }
            for waiter in flushWaiters { later { waiter.resume() } }
            flushWaiters = []
        }

        mutating func token() -> UInt64 {
            nextToken &+= 1
            return nextToken
        }

        /// Resumes the writer task if it sleeps (or tells the driver) and there is something to send.
        mutating func wakeWriter() {
            guard machine.hasOutbound else { return }
            if let writer = writerSleeping {
                writerSleeping = nil
                later { writer.resume(returning: true) }
            } else if let driver, !driverNotified {
                driverNotified = true
                driver.outboundPending()
            }
        }

        /// Resumes the reader (task or driver) if it paused for budget and the budget is back.
        mutating func wakeReader() {
            guard machine.canReceive else { return }
            if let reader = readerSleeping {
                readerSleeping = nil
                later { reader.resume() }
            } else if driverPaused, let driver {
                driverPaused = false
                driver.resumeReading()
            }
        }

        /// Decodes a transport message (completing a frame carried from the last one) and feeds
        /// its frames to the machine. Returns whether more may be received now.
        mutating func receive(_ message: ByteBuffer) throws -> Bool {
            var buffer: ByteBuffer
            if var carried {
                self.carried = nil
                carried.writeImmutableBuffer(message)
                buffer = carried
            } else {
                buffer = message
            }
            let messageBytes = buffer.readableBytes
            frames.removeAll(keepingCapacity: true)
            while var frame = try decoder.decode(buffer: &buffer) {
                // A small payload sliced out of a large message would pin the whole message
                // in memory while it waits to be read: copy those (under a quarter of their
                // message), keep the rest zero-copy. Pinning is then at most 4x the budget.
                if frame.command == .psh, frame.payload.readableBytes * 4 < messageBytes {
                    frame.payload = ByteBuffer(bytes: frame.payload.readableBytesView)
                }
                frames.append(frame)
            }
            if buffer.readableBytes > 0 { carried = buffer }
            for frame in frames { dispatch(try machine.receive(frame)) }
            frames.removeAll(keepingCapacity: true)
            return machine.canReceive
        }

        /// One keepalive period: queues a NOP; every `keepAliveTimeout`, checks that something
        /// arrived (like Go, a session paused on its own receive budget is not idle).
        mutating func keepAlive(now: ContinuousClock.Instant, timeout: Duration) -> Bool {
            machine.queueKeepAlive()
            wakeWriter()
            guard now - lastKeepAliveCheck >= timeout else { return true }
            lastKeepAliveCheck = now
            return machine.checkIdle() || !machine.canReceive
        }

        mutating func wakeWriters(ofStream id: UInt32) {
            if let waiter = writeWaiters.removeValue(forKey: id) {
                later { waiter.continuation.resume() }
            }
        }

        /// After the writer drained the queue: let waiting writers (oldest first) queue more.
        mutating func wakeSpaceWaiters() {
            while machine.outboundHasRoom, let id = spaceWaiters.popFirst() {
                wakeWriters(ofStream: id)
            }
        }

        mutating func read(_ id: UInt32) -> SmuxSessionMachine.ReadResult {
            let result = machine.read(streamID: id)
            if case .data = result {
                wakeReader()
                wakeWriter()  // a UPD may have been queued
            }
            return result
        }

        mutating func dispatch(_ event: SmuxSessionMachine.Event) {
            switch event {
            case .none:
                break
            case .accepted:
                if refusingStreams {
                    refuseBacklog()
                } else if let waiter = acceptWaiter, let id = machine.accept() {
                    acceptWaiter = nil
                    later { waiter.continuation.resume(returning: id) }
                }
            case .readable(let id):
                if let waiter = readWaiters[id] {
                    switch read(id) {
                    case .data(let chunk):
                        readWaiters[id] = nil
                        later { waiter.continuation.resume(returning: chunk) }
                    case .endOfStream:
                        readWaiters[id] = nil
                        later { waiter.continuation.resume(returning: nil) }
                    case .wouldBlock:
                        break
                    }
                }
            case .windowUpdated(let id):
                wakeWriters(ofStream: id)
            }
        }

        mutating func shutdown(_ error: MuxError) {
            guard closedError == nil else { return }
            closedError = error
            for waiter in readWaiters.values { later { waiter.continuation.resume(throwing: error) } }
            readWaiters = [:]
            for waiter in writeWaiters.values { later { waiter.continuation.resume(throwing: error) } }
            writeWaiters = [:]
            spaceWaiters.removeAll()
            if let waiter = acceptWaiter { later { waiter.continuation.resume(throwing: error) } }
            acceptWaiter = nil
            if let writer = writerSleeping { later { writer.resume(returning: false) } }
            writerSleeping = nil
            if let reader = readerSleeping { later { reader.resume() } }
            readerSleeping = nil
            for waiter in flushWaiters { later { waiter.resume() } }
            flushWaiters = []
            if let driver {
                self.driver = nil  // the driver holds the session: no cycle past the end
                driver.sessionEnded(error)
            }
        }
    }

    /// Runs `body` under the session's lock, then resumes the continuations it released (never
    /// under the lock: see `State.resumptions`).
    @inline(__always)
    func locked<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        var resumptions: [@Sendable () -> Void] = []
        let result: Result<R, E> = state.withLock { state in
            let result: Result<R, E>
            do throws(E) { result = .success(try body(&state)) } catch { result = .failure(error) }
            if !state.resumptions.isEmpty { swap(&resumptions, &state.resumptions) }
            return result
        }
        for resume in resumptions { resume() }
        return try result.get()
    }

    public init(role: SmuxRole, configuration: SmuxConfiguration = .tokilake, logger: Logger = Logger(label: "toki.mux")) throws {
        self.role = role
        self.configuration = try configuration.validated()
        self.logger = logger
        self.state = Mutex(State(
            machine: try SmuxSessionMachine(role: role, configuration: configuration),
            decoder: SmuxFrameDecoder(version: configuration.version, maxPayload: configuration.maxReceiveFrameSize)))
    }

    /// A one-line view of the session's state, for logs and diagnostics.
    public var diagnostics: String {
        locked { state in
            "streams=\(state.machine.openStreamCount) unread=\(state.machine.unreadBytes) queued=\(state.machine.queuedDataBytes) "
                + "readers=\(state.readWaiters.keys.sorted()) writers=\(state.writeWaiters.keys.sorted()) space=\(Array(state.spaceWaiters)) "
                + "accepting=\(state.acceptWaiter != nil) writerSleeping=\(state.writerSleeping != nil) readerSleeping=\(state.readerSleeping != nil) "
                + "closed=\(state.closedError.map { "\($0)" } ?? "no")"
        }
    }

    /// Whether frames are queued or being handed to the transport (the peer is taking data).
    public var isSending: Bool {
        locked { $0.writing || $0.machine.hasOutbound }
    }

    /// Why the session ended, or nil while it runs.
    public var closedError: MuxError? { locked { $0.closedError } }

    // MARK: Running

    /// Runs the session until the transport ends, the peer breaks the protocol, keepalive times
    /// out or `close()` is called. Returns normally only after `close()`. Stream operations fail
    /// with the session's error once it has ended.
    public func run<Inbound: AsyncSequence & Sendable>(inbound: Inbound, outbound: some MuxOutbound) async throws
    where Inbound.Element == ByteBuffer {
        let ending: MuxError = await withTaskGroup(of: MuxError.self) { group in
            group.addTask { await self.readLoop(inbound) }
            group.addTask { await self.writeLoop(outbound) }
            if let interval = configuration.keepAliveInterval {
                group.addTask { await self.keepAliveLoop(interval: interval) }
            }
            let first = await group.next() ?? .sessionClosed
            self.locked { $0.shutdown(first) }
            group.cancelAll()
            return self.locked { $0.closedError } ?? first
        }
        if ending != .sessionClosed { throw ending }
    }

    /// Ends the session: every pending and later stream operation fails, `run` returns.
    /// Frames still queued are dropped; use `flush()` first to send them.
    public func close() {
        locked { $0.shutdown(.sessionClosed) }
    }

    /// Waits until every frame queued so far has been handed to the transport (or the session
    /// ended). For a clean goodbye: finish streams, `await flush()`, then `close()`.
    public func flush() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            locked { state in
                if state.closedError != nil || (!state.writing && !state.machine.hasOutbound) {
                    state.later { continuation.resume() }
                } else {
                    state.flushWaiters.append(continuation)
                }
            }
        }
    }

    private func readLoop<Inbound: AsyncSequence>(_ inbound: Inbound) async -> MuxError where Inbound.Element == ByteBuffer {
        do {
            for try await message in inbound {
                let canContinue: Bool = try locked { state in
                    if state.closedError != nil { return false }
                    _ = try state.receive(message)
                    return true
                }
                if !canContinue { return .sessionClosed }
                // Back-pressure: stop reading the transport until the application catches up.
                await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                    locked { state in
                        if state.closedError != nil || state.machine.canReceive {
                            state.later { continuation.resume() }
                        } else {
                            state.readerSleeping = continuation
                        }
                    }
                }
            }
            return .transportEnded
        } catch let error as SmuxProtocolError {
            logger.warning("closing smux session", metadata: ["error": "\(error)"])
            return .protocolViolation(error)
        } catch {
            return Task.isCancelled ? .sessionClosed : .transportEnded
        }
    }

    private func writeLoop(_ outbound: some MuxOutbound) async -> MuxError {
        let allocator = ByteBufferAllocator()
        while true {
            let hasWork = await withUnsafeContinuation { (continuation: UnsafeContinuation<Bool, Never>) in
                locked { state in
                    if state.closedError != nil {
                        state.later { continuation.resume(returning: false) }
                    } else if state.machine.hasOutbound {
                        state.later { continuation.resume(returning: true) }
                    } else {
                        state.writerSleeping = continuation
                    }
                }
            }
            guard hasWork else { return .sessionClosed }
            // A fresh buffer per batch: the transport may still hold the previous one.
            var batch = allocator.buffer(capacity: locked { $0.machine.pendingOutboundBytes })
            locked { state in
                state.machine.takeOutbound(into: &batch)
                state.writing = true
                state.wakeSpaceWaiters()
            }
            do {
                try await outbound.write(batch)
            } catch {
                return Task.isCancelled ? .sessionClosed : .transportEnded
            }
            locked { state in
                state.writing = false
                state.wakeFlushWaitersIfIdle()
            }
        }
    }

    private func keepAliveLoop(interval: Duration) async -> MuxError {
        while true {
            do { try await Task.sleep(for: interval) } catch { return .sessionClosed }
            if !keepAlive() { return .keepAliveTimeout }
        }
    }

    // MARK: Driving from a push transport

    /// Hands the session to `driver` instead of `run`: from now on the driver feeds it with
    /// `receive`, takes its output with `takeOutbound`, calls `keepAlive()` every
    /// `keepAliveInterval` if that is set, and reports the transport's end with `transportEnded`.
    /// Call once, before the first `receive`.
    public func attach(_ driver: some MuxTransportDriver) {
        locked { state in
            guard state.closedError == nil else { return driver.sessionEnded(state.closedError!) }
            state.driver = driver
            state.wakeWriter()
        }
    }

    /// Bytes from the transport. Returns false when reading should pause until the driver's
    /// `resumeReading()` (or when the session has ended). A protocol violation ends the session.
    public func receive(_ message: ByteBuffer) -> Bool {
        locked { state in
            guard state.closedError == nil else { return false }
            do {
                if try state.receive(message) { return true }
                state.driverPaused = true
                return false
            } catch let error as SmuxProtocolError {
                logger.warning("closing smux session", metadata: ["error": "\(error)"])
                state.shutdown(.protocolViolation(error))
                return false
            } catch {
                state.shutdown(.transportEnded)
                return false
            }
        }
    }

    /// The next batch of queued frames (at most `maxBatchSize` bytes), handed over to the
    /// transport; nil when nothing is queued. The driver takes batches while its transport has
    /// room and is told again (`outboundPending`) when more is queued.
    public func takeOutbound() -> ByteBuffer? {
        locked { state in
            state.driverNotified = false
            guard state.closedError == nil, state.machine.hasOutbound else { return nil }
            var batch = ByteBufferAllocator().buffer(capacity: min(state.machine.pendingOutboundBytes, configuration.maxBatchSize))
            state.machine.takeOutbound(into: &batch)
            state.wakeSpaceWaiters()
            state.wakeFlushWaitersIfIdle()
            return batch
        }
    }

    /// The transport closed (or failed): the session ends with `transportEnded`.
    public func transportEnded() {
        locked { $0.shutdown(.transportEnded) }
    }

    /// One keepalive period (see `SmuxConfiguration.keepAliveInterval`): queues a NOP and, once
    /// per timeout, checks that the peer sent something. Returns false, ending the session with
    /// `keepAliveTimeout`, when it did not.
    @discardableResult
    public func keepAlive() -> Bool {
        locked { state in
            guard state.closedError == nil else { return false }
            if state.keepAlive(now: .now, timeout: configuration.keepAliveTimeout) { return true }
            state.shutdown(.keepAliveTimeout)
            return false
        }
    }

    // MARK: Streams

    /// Opens a stream (queues its SYN; no round trip, as in smux).
    public func openStream() throws -> MuxStream {
        let id = try locked { state -> UInt32 in
            if let error = state.closedError { throw error }
            let id = try state.machine.openStream()
            state.wakeWriter()
            return id
        }
        return MuxStream(id: id, session: self)
    }

    /// From now on every stream the peer opens (and any not accepted yet) is closed at once,
    /// without a task waiting in `accept()`: for an end that uses only the streams it accepted
    /// so far (the hub's side of a worker: one control stream) and must not let others fill the
    /// accept backlog. `accept()` must not be called afterwards.
    public func refuseIncomingStreams() {
        locked { state in
            state.refusingStreams = true
            state.refuseBacklog()
        }
    }

    /// Waits for the next stream the peer opens. One caller at a time.
    public func accept() async throws -> MuxStream {
        let token = locked { $0.token() }
        let id: UInt32 = try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                locked { state in
                    if let error = state.closedError {
                        state.later { continuation.resume(throwing: error) }
                    } else if Task.isCancelled {
                        // Cancelled before the waiter existed: the handler has already run.
                        state.later { continuation.resume(throwing: CancellationError()) }
                    } else if let id = state.machine.accept() {
                        state.wakeReader()
                        state.later { continuation.resume(returning: id) }
                    } else {
                        if let old = state.acceptWaiter { state.later { old.continuation.resume(throwing: CancellationError()) } }
                        state.acceptWaiter = Waiter(token: token, continuation: continuation)
                    }
                }
            }
        } onCancel: {
            locked { state in
                if let waiter = state.acceptWaiter, waiter.token == token {
                    state.acceptWaiter = nil
                    state.later { waiter.continuation.resume(throwing: CancellationError()) }
                }
            }
        }
        locked { $0.wakeReader() }
        return MuxStream(id: id, session: self)
    }

    /// The next bytes of a stream; nil at its end (the peer's FIN). Bytes that arrived before the
    /// session ended are still delivered, as Go's smux does; only then do reads fail with the
    /// session's error (never a clean end: a stream cut by a dead link must not look complete).
    nonisolated(nonsending) func read(streamID id: UInt32) async throws -> ByteBuffer? {
        enum Next { case done(ByteBuffer?), wait(UInt64) }
        let next = try locked { state -> Next in
            if let error = state.closedError {
                switch state.read(id) {
                case .data(let chunk): return .done(chunk)
                case .endOfStream: return .done(nil)
                case .wouldBlock: throw error
                }
            }
            guard state.machine.isReadable(streamID: id) else { return .wait(state.token()) }
            if case .data(let chunk) = state.read(id) { return .done(chunk) }
            return .done(nil)
        }
        guard case .wait(let token) = next else {
            guard case .done(let chunk) = next else { return nil }
            return chunk
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                locked { state in
                    if let error = state.closedError {
                        switch state.read(id) {
                        case .data(let chunk): return state.later { continuation.resume(returning: chunk) }
                        case .endOfStream: return state.later { continuation.resume(returning: nil) }
                        case .wouldBlock: return state.later { continuation.resume(throwing: error) }
                        }
                    }
                    switch state.read(id) {
                    case .data(let chunk): state.later { continuation.resume(returning: chunk) }
                    case .endOfStream: state.later { continuation.resume(returning: nil) }
                    case .wouldBlock:
                        if Task.isCancelled { return state.later { continuation.resume(throwing: CancellationError()) } }
                        if let old = state.readWaiters[id] { state.later { old.continuation.resume(throwing: CancellationError()) } }
                        state.readWaiters[id] = Waiter(token: token, continuation: continuation)
                    }
                }
            }
        } onCancel: {
            locked { state in
                if let waiter = state.readWaiters[id], waiter.token == token {
                    state.readWaiters[id] = nil
                    state.later { waiter.continuation.resume(throwing: CancellationError()) }
                }
            }
        }
    }

    func write(streamID id: UInt32, _ data: ByteBuffer) async throws {
        var data = data
        while true {
            let done = try locked { state -> Bool in
                if let error = state.closedError { throw error }
                let taken: Int
                do {
                    taken = try state.machine.write(streamID: id, &data)
                } catch let error as SmuxProtocolError {
                    state.shutdown(.protocolViolation(error))
                    throw MuxError.protocolViolation(error)
                }
                if taken > 0 { state.wakeWriter() }
                return data.readableBytes == 0
            }
            if done { return }
            try await waitForWriteRoom(streamID: id)
        }
    }

    /// Queues `data` only if it can be taken whole at once (see `MuxStream.tryWrite`).
    func tryWrite(streamID id: UInt32, _ data: ByteBuffer) -> Bool {
        locked { state in
            guard state.closedError == nil, state.machine.canWriteAtOnce(streamID: id, count: data.readableBytes) else { return false }
            var data = data
            guard (try? state.machine.write(streamID: id, &data)) != nil else { return false }
            state.wakeWriter()
            return true
        }
    }

    private func waitForWriteRoom(streamID id: UInt32) async throws {
        let token = locked { $0.token() }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                locked { state in
                    if let error = state.closedError {
                        return state.later { continuation.resume(throwing: error) }
                    }
                    let queueRoom = state.machine.outboundHasRoom
                    if queueRoom && state.machine.hasSendWindow(streamID: id) {
                        return state.later { continuation.resume() }
                    }
                    if Task.isCancelled { return state.later { continuation.resume(throwing: CancellationError()) } }
                    if let old = state.writeWaiters[id] { state.later { old.continuation.resume(throwing: CancellationError()) } }
                    state.writeWaiters[id] = Waiter(token: token, continuation: continuation)
                    if !queueRoom { state.spaceWaiters.append(id) }
                }
            }
        } onCancel: {
            locked { state in
                if let waiter = state.writeWaiters[id], waiter.token == token {
                    state.writeWaiters[id] = nil
                    state.later { waiter.continuation.resume(throwing: CancellationError()) }
                }
            }
        }
    }

    func closeWrite(streamID id: UInt32) {
        locked { state in
            guard state.closedError == nil else { return }
            state.machine.closeWrite(streamID: id)
            state.wakeWriter()
        }
    }

    func close(streamID id: UInt32) {
        locked { state in
            guard state.closedError == nil else { return }
            state.machine.close(streamID: id)
            if let reader = state.readWaiters.removeValue(forKey: id) { state.later { reader.continuation.resume(returning: nil) } }
            if let writer = state.writeWaiters.removeValue(forKey: id) { state.later { writer.continuation.resume(throwing: SmuxSessionMachine.StreamError.unknownStream(id)) } }
            state.wakeReader()
            state.wakeWriter()
        }
    }
}

/// One smux stream. Reads return whole received frames (no copy); `nil` is end of stream.
/// Dropping the last reference closes the stream, so a forgotten stream cannot pin the budget.
public final class MuxStream: Sendable, AsyncSequence {
    public typealias Element = ByteBuffer
    public let id: UInt32
    let session: MuxSession

    init(id: UInt32, session: MuxSession) {
        self.id = id
        self.session = session
    }

    deinit { session.close(streamID: id) }

    /// The next chunk of data, or nil once the peer has sent FIN and everything was read.
    /// Runs on the caller's executor (no hop to the global pool and back per chunk).
    public nonisolated(nonsending) func read() async throws -> ByteBuffer? {
        try await session.read(streamID: id)
    }

    /// Queues `data` as PSH frames; waits while the outbound queue or (v2) the peer's window is full.
    public func write(_ data: ByteBuffer) async throws {
        try await session.write(streamID: id, data)
    }

    /// Queues `data` now if the stream can take all of it without waiting (it fits one frame,
    /// the outbound queue has room and, in v2, the peer's window); false, with nothing queued,
    /// otherwise or once the session has ended. For small messages sent from code that must not
    /// wait (a control line): no task, no suspension.
    public func tryWrite(_ data: ByteBuffer) -> Bool {
        session.tryWrite(streamID: id, data)
    }

    /// Half close: sends FIN after the data written so far; reading continues.
    public func closeWrite() {
        session.closeWrite(streamID: id)
    }

    /// Full close: FIN (if not sent) and forget the stream; unread data is dropped.
    public func close() {
        session.close(streamID: id)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: MuxStream
        public mutating func next() async throws -> ByteBuffer? { try await stream.read() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }
}
