// The line plumbing of tunnel streams, written once: reading NDJSON lines from a mux stream,
// and the control stream's single serialized writer (spec §4.1). Used by the hub's worker
// sessions, the worker's connection and request relay, and the tests' fake hub.

import NIOCore
import Synchronization
import TokiMux
import TokiProtocol

/// Reads NDJSON lines from a mux stream (one reader at a time; the lock only makes it Sendable).
public final class StreamLineReader: Sendable {
    public let stream: MuxStream
    private let framer: Mutex<NDJSONLineFramer>

    /// - Parameter maxLineLength: `TunnelProtocol.maxControlLineLength` for control streams,
    ///   `maxRequestLineLength` / `maxResponseLineLength` for data streams.
    public init(_ stream: MuxStream, maxLineLength: Int) {
        self.stream = stream
        self.framer = Mutex(NDJSONLineFramer(maxLineLength: maxLineLength))
    }

    /// The next line (trimmed, never blank); nil at end of stream. A last line without "\n" is
    /// returned before the nil when `includingTail` (Go's `ReadBytes` hands it over with io.EOF),
    /// dropped otherwise. Throws `LineTooLong` or the stream's read error.
    public nonisolated(nonsending) func nextLine(includingTail: Bool = true) async throws -> ByteBuffer? {
        while true {
            if let line = try bufferedLine() { return line }
            guard let chunk = try await stream.read() else {
                let tail = framer.withLock { $0.finish() }
                return includingTail ? tail : nil
            }
            try framer.withLock { try $0.append(chunk) }
        }
    }

    /// The next line if it has already arrived, without reading the stream (nil: no complete
    /// line is buffered yet). Throws `LineTooLong`.
    public func bufferedLine() throws -> ByteBuffer? {
        try framer.withLock { try $0.nextLine() }
    }

    /// What arrived after the lines read so far (the reader is done with lines).
    public func takeRemainder() -> ByteBuffer? {
        framer.withLock { $0.takeRemainder() }
    }
}

/// A control stream: decoded messages in, one serialized bounded queue of lines out.
///
/// Any task may `send`. A line goes straight into the mux stream when nothing is queued before
/// it and the stream can take it at once (the common case: no task switch per line); otherwise
/// it waits in the queue that `runWriter` (exactly one task) drains in order. A slow peer holds
/// at most `backlog` queued lines (beyond that, messages are dropped and `send` says so). One
/// task at a time calls `receive`.
public final class ControlChannel: Sendable {
    /// A line that is not a control message (the hub treats it as fatal, the worker reconnects).
    public struct Malformed: Error, CustomStringConvertible {
        public let error: JSONReadError
        public var description: String { "\(error)" }
    }

    public static let defaultBacklog = 1024

    public let stream: MuxStream
    public let lines: StreamLineReader
    private let outbox: AsyncStream<ByteBuffer>
    private let input: AsyncStream<ByteBuffer>.Continuation
    /// Lines handed to the queue and not yet written by `runWriter` (while any are, later lines
    /// queue behind them, in order), and whether `finish()` was called.
    private let outboxState = Mutex((queued: 0, finished: false))

    public init(_ stream: MuxStream, maxLineLength: Int = TunnelProtocol.maxControlLineLength, backlog: Int = defaultBacklog) {
        self.stream = stream
        self.lines = StreamLineReader(stream, maxLineLength: maxLineLength)
        (outbox, input) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingOldest(backlog))
    }

    /// Sends `message` now or queues it; false if it was dropped (backlog full, or finished).
    @discardableResult
    public func send(_ message: ControlMessage) -> Bool {
        send(line: message.encodedLine())
    }

    /// Sends any line type (a relay link's `RelayMessage`); see `send(_:)`.
    @discardableResult
    public func send<Message: NDJSONLine>(_ message: Message) -> Bool {
        send(line: message.encodedLine())
    }

    private func send(line: ByteBuffer) -> Bool {
        return outboxState.withLock { state in
            guard !state.finished else { return false }
            if state.queued == 0, stream.tryWrite(line) { return true }
            guard case .enqueued = input.yield(line) else { return false }
            state.queued += 1
            return true
        }
    }

    /// No more messages: the writer returns once what is queued has been written.
    public func finish() {
        outboxState.withLock { $0.finished = true }
        input.finish()
    }

    /// The one writer: writes queued lines in order until `finish()`, or throws the first write
    /// error (the session is gone or closing).
    public func runWriter() async throws {
        for await line in outbox {
            try await stream.write(line)
            outboxState.withLock { $0.queued -= 1 }
        }
    }

    /// The next message with its line; nil at end of stream. `includingTail`: see
    /// `StreamLineReader.nextLine`. Throws `Malformed`, `LineTooLong`, or the read error.
    public nonisolated(nonsending) func receive(includingTail: Bool = true) async throws -> (message: ControlMessage, line: ByteBuffer)? {
        try await receive(ControlMessage.self, includingTail: includingTail)
    }

    /// The next line decoded as `Message` (a relay link's control stream carries `RelayMessage`).
    public nonisolated(nonsending) func receive<Message: NDJSONDecodable>(_ type: Message.Type, includingTail: Bool = true) async throws
        -> (message: Message, line: ByteBuffer)? {
        guard let line = try await lines.nextLine(includingTail: includingTail) else { return nil }
        do {
            return (try Message.decode(line: line), line)
        } catch let error as JSONReadError {
            throw Malformed(error: error)
        }
    }
}
