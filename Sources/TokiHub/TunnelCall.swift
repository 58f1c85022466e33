import NIOCore
import TokiMux
import TokiProtocol
import TokiTunnel

/// Why a tunnelled request failed.
enum UpstreamFailure: Error, CustomStringConvertible, Sendable {
    /// The worker answered with an error line (`target_not_found`, `local_request_failed`, …).
    case worker(code: String?, message: String)
    /// The data stream ended without `eof`: the body is incomplete.
    case truncated
    /// The tunnel failed (worker disconnected, protocol error).
    case transport(String)
    /// A response line was not valid.
    case malformed(String)
    /// The worker sent nothing for this long after the head.
    case idle(Duration)

    var description: String {
        switch self {
        case .worker(let code, let message): "worker error \(code ?? "-"): \(message)"
        case .truncated: "the worker's response ended without eof (truncated)"
        case .transport(let why): "tunnel failed: \(why)"
        case .malformed(let why): "malformed response from worker: \(why)"
        case .idle(let limit): "the worker sent nothing for \(limit.components.seconds) s"
        }
    }

    /// The error code to give the client (OpenAI shape).
    var code: String {
        switch self {
        case .worker(let code, _): code ?? TunnelProtocol.WorkerErrorCode.tokiameStreamError
        case .truncated: "truncated_response"
        case .transport: "worker_disconnected"
        case .malformed: "malformed_worker_response"
        case .idle: "worker_timeout"
        }
    }
}

/// The response head a worker sent, checked (`ResponseHead.validate`).
struct TunnelHead: Sendable {
    var head: ResponseHead
    /// Body bytes and/or eof carried on the head line itself (allowed by the Go hub).
    var firstChunk: ByteBuffer?
    var eof: Bool

    var status: Int { head.status }
}

/// One request over one hub-opened data stream: writes the TunnelRequest line, then reads the
/// NDJSON response lines. Never half-closes before the end: a Go or toki worker takes the
/// peer's FIN as "the hub went away" (ours) or ignores it (Go).
///
/// A class used by one task at a time (the route handler, then the response body writer it
/// hands over to), hence `@unchecked Sendable`.
final class TunnelCall: @unchecked Sendable {
    let stream: MuxStream
    let requestID: String
    /// Bytes that go out before the request line (a relay's `route` line).
    private let preamble: ByteBuffer?
    private let lines: StreamLineReader
    private var finished = false

    init(stream: MuxStream, requestID: String, preamble: ByteBuffer? = nil) {
        self.stream = stream
        self.requestID = requestID
        self.preamble = preamble
        lines = StreamLineReader(stream, maxLineLength: TunnelProtocol.maxResponseLineLength)
    }

    /// Opens the data stream. The request goes out with `send`, so deadlines can be armed in
    /// between: a worker that never reads its request must not hold the caller in `send`.
    static func open(on session: MuxSession, requestID: String, preamble: ByteBuffer? = nil) throws -> TunnelCall {
        do {
            return TunnelCall(stream: try session.openStream(), requestID: requestID, preamble: preamble)
        } catch {
            throw UpstreamFailure.transport("\(error)")
        }
    }

    /// Writes the request line (waits while the worker does not take it: back-pressure).
    func send(_ request: TunnelRequest) async throws {
        var line = ByteBufferAllocator().buffer(capacity: (preamble?.readableBytes ?? 0) + request.encodedLengthHint)
        if let preamble { line.writeImmutableBuffer(preamble) }
        request.writeLine(into: &line)
        do { try await stream.write(line) } catch {
            throw UpstreamFailure.transport("\(error)")
        }
    }

    /// The next response line if it has already arrived (nil: not yet).
    private func bufferedLine() throws -> TunnelResponse? {
        let line: ByteBuffer?
        do { line = try lines.bufferedLine() } catch { throw UpstreamFailure.malformed("\(error)") }
        return try line.map(Self.decode)
    }

    /// Reads the next response line, or nil when the stream ended. A last line without "\n"
    /// still counts, as bufio.ReadBytes would return it.
    private func nextLine() async throws -> TunnelResponse? {
        let line: ByteBuffer?
        do { line = try await lines.nextLine() } catch is CancellationError {
            throw CancellationError()
        } catch let error as LineTooLong {
            throw UpstreamFailure.malformed("\(error)")
        } catch {
            throw UpstreamFailure.transport("\(error)")
        }
        return try line.map(Self.decode)
    }

    private static func decode(_ line: ByteBuffer) throws -> TunnelResponse {
        do { return try TunnelResponse.decodeLine(line) } catch { throw UpstreamFailure.malformed("\(error)") }
    }

    /// An error line ends the call with the worker's error; `eof` ends it normally.
    private func absorb(_ response: TunnelResponse) throws {
        if let error = response.error {
            finished = true
            throw UpstreamFailure.worker(code: error.code, message: error.message)
        }
        if response.eof == true { finished = true }
    }

    /// The head line. An error line before it, or the stream ending, is a failure.
    func readHead() async throws -> TunnelHead {
        guard let response = try await nextLine() else { throw UpstreamFailure.truncated }
        try absorb(response)
        let head: ResponseHead
        do { head = try ResponseHead.validate(statusCode: response.statusCode, headers: response.headers) } catch {
            finished = true
            throw UpstreamFailure.malformed("\(error)")
        }
        return TunnelHead(head: head, firstChunk: response.bodyChunk, eof: response.eof == true)
    }

    /// The next body chunk; nil after `eof`. Throws if the worker reported an error or the
    /// stream ended without `eof`.
    func nextChunk() async throws -> ByteBuffer? {
        while !finished {
            guard let response = try await nextLine() else { throw UpstreamFailure.truncated }
            try absorb(response)
            if let chunk = response.bodyChunk, chunk.readableBytes > 0 { return chunk }
        }
        return nil
    }

    /// What `bufferedChunk` found without waiting.
    enum Buffered {
        case chunk(ByteBuffer)
        case end
        /// The next line has not arrived yet.
        case pending
    }

    /// The next body chunk if its line has already arrived (small answers often come whole with
    /// the head): lets the caller finish them without a pump task. Throws as `nextChunk` does.
    func bufferedChunk() throws -> Buffered {
        while !finished {
            guard let response = try bufferedLine() else { return .pending }
            try absorb(response)
            if let chunk = response.bodyChunk, chunk.readableBytes > 0 { return .chunk(chunk) }
        }
        return .end
    }

    var isFinished: Bool { finished }

    func close() { stream.close() }
}
