import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import TokiProtocol
import TokiStore
import TokiTunnel

/// One forwarded request whose head has arrived: what the streamer needs to finish it.
struct ForwardedCall: Sendable {
    var head: TunnelHead
    var call: TunnelCall
    var worker: WorkerConnection
    var tunnelID: String
    var user: AuthenticatedToken
    var model: String
    var requestID: String
    var started: ContinuousClock.Instant
    var client: any Channel
    var logger: Logger
    var billing: CallBilling
    /// The request's metrics series (nil: not counted).
    var series: RequestSeries? = nil
}

/// Turns a worker's response into the client's, as it arrives.
///
/// - A pump task takes chunks off the mux stream into a `ResponseBuffer` (the client's to hold,
///   bounded), so a slow client never stalls the worker's other streams.
/// - A client that acknowledges no bytes for `slowClientTimeout` while a write is pending is cut
///   off (`SlowClientWatch`); a steady slow reader never is. The socket's unsent-data low-water
///   mark keeps the kernel from queueing megabytes for a client that does not read.
/// - After the head, a worker silent for `streamIdleTimeout` fails the response; while an SSE
///   response is idle, a comment line every `sseKeepAliveInterval` keeps proxies from cutting the client.
/// - A failure after the head ends the response visibly: an SSE `error` event (and no `[DONE]`),
///   or an aborted body.
struct ResponseStreamer: Sendable {
    let usage: ChargeRecorder
    let billing: Billing
    let deadlines: DeadlineSweeper
    /// The hub's settings; the streamer reads `slowClientTimeout`, `responseBufferBytes`,
    /// `streamIdleTimeout` and `sseKeepAliveInterval`.
    let configuration: HubConfiguration

    /// Unsent bytes the kernel may hold for a streamed response before the socket stops being
    /// writable (TCP_NOTSENT_LOWAT).
    static let unsentLowWater: CInt = 64 * 1024
    static let keepAliveComment = ByteBuffer(string: ": keep-alive\n\n")

    func response(for forwarded: ForwardedCall) async throws -> Response {
        var fields = HTTPFields()
        for header in forwarded.head.head.headers {
            guard let name = HTTPField.Name(header.name) else { continue }
            fields.append(HTTPField(name: name, value: header.value))
        }
        fields[.xRequestID] = forwarded.requestID
        let status = HTTPResponse.Status(code: forwarded.head.status)
        if forwarded.head.head.droppedHeaders > 0 {
            forwarded.logger.info("dropped worker headers that cannot be forwarded", metadata: [
                "worker": "\(forwarded.worker.namespace)", "count": "\(forwarded.head.head.droppedHeaders)",
            ])
        }
        guard forwarded.head.head.allowsBody else {
            // 204/304: a body would be read by the client as the answer to its next request.
            release(forwarded, complete: forwarded.head.eof)
            usage.record(charge(for: forwarded, status: forwarded.head.status, sniffer: UsageSniffer(), ending: .complete))
            return Response(status: status, headers: fields, body: ResponseBody())
        }
        // Whatever already arrived with the head: a small answer is often complete here (a toki
        // worker sends one of known length in one piece) and is answered in one go, with a
        // Content-Length, no pump task and no chunked framing.
        var arrived: [ByteBuffer] = []
        if let first = forwarded.head.firstChunk, first.readableBytes > 0 { arrived.append(first) }
        var early: Result<Bool, any Error> = .success(forwarded.head.eof)  // true: the answer is complete
        if !forwarded.head.eof {
            do {
                drain: while true {
                    switch try forwarded.call.bufferedChunk() {
                    case .chunk(let chunk): arrived.append(chunk)
                    case .end:
                        early = .success(true)
                        break drain
                    case .pending: break drain
                    }
                }
            } catch {
                early = .failure(error)
            }
        }
        if case .success(true) = early {
            return try await whole(forwarded, arrived: arrived, status: status, fields: fields)
        }
        let streamer = self
        let (alreadyArrived, earlyOutcome) = (arrived, early)
        return Response(status: status, headers: fields, body: ResponseBody { writer in
            try await streamer.stream(forwarded, arrived: alreadyArrived, early: earlyOutcome, to: &writer)
        })
    }

    /// A complete answer: charged (durably, when priced) before anything of it is sent, then
    /// sent as one body.
    private func whole(_ forwarded: ForwardedCall, arrived: [ByteBuffer], status: HTTPResponse.Status,
                       fields: HTTPFields) async throws -> Response {
        release(forwarded, complete: true)
        var sniffer = UsageSniffer(countEvents: forwarded.head.head.isEventStream)
        var output = HeldOutput(head: forwarded.head.head, stripUsage: forwarded.billing.stripUsage)
        var pieces: [ByteBuffer] = []
        for chunk in arrived {
            sniffer.observe(chunk)
            pieces += output.pieces(for: chunk)
        }
        pieces += output.finish()
        do {
            try await usage.settle(charge(for: forwarded, status: forwarded.head.status, sniffer: sniffer, ending: .complete))
        } catch {
            forwarded.logger.error("could not record the charge of a complete answer; not delivered", metadata: ["error": "\(error)"])
            throw OpenAIError.chargeFailed
        }
        let body: ByteBuffer
        if pieces.count == 1 {
            body = pieces[0]
        } else {
            var joined = ByteBufferAllocator().buffer(capacity: pieces.reduce(0) { $0 + $1.readableBytes })
            for piece in pieces { joined.writeImmutableBuffer(piece) }
            body = joined
        }
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: body))
    }

    /// Ends the call: the worker is told to stop unless it finished, the slot is freed.
    private func release(_ forwarded: ForwardedCall, complete: Bool) {
        if !complete { forwarded.worker.cancel(requestID: forwarded.tunnelID) }
        forwarded.call.close()
        forwarded.worker.end(requestID: forwarded.tunnelID)
    }

    /// How a response ended, for its charge.
    enum Ending {
        case complete
        /// The worker failed after the head: only what the backend reported is charged.
        case workerFailed
        /// The client went away: what was generated until then is charged.
        case clientGone
    }

    /// The usage row and charge of a call: the backend's reported usage, or (unless the worker
    /// failed) the estimate; only answers with a 2xx status cost anything.
    func charge(for forwarded: ForwardedCall, status: Int, sniffer: UsageSniffer, ending: Ending) -> Charge {
        let bill = forwarded.billing
        let reported = sniffer.usage
        var counts: TokenCounts?
        if reported.prompt != nil || reported.completion != nil {
            counts = TokenCounts(prompt: reported.prompt ?? 0, completion: reported.completion ?? 0, estimated: false)
        } else if ending != .workerFailed, (200..<300).contains(status) {
            counts = .estimate(requestBytes: bill.requestBytes, responseEvents: forwarded.head.head.isEventStream ? sniffer.dataEvents : nil,
                               responseBytes: sniffer.bytes)
        }
        let cost = (200..<300).contains(status) ? counts.flatMap { counts in bill.price.map { $0.cost(counts) } } ?? .zero : .zero
        let worker = forwarded.worker
        let row = UsageRecord(
            requestID: forwarded.requestID, userID: forwarded.user.userID, tokenID: forwarded.user.tokenID, model: forwarded.model,
            namespace: worker.namespace, statusCode: status, promptTokens: counts?.prompt, completionTokens: counts?.completion,
            durationMS: (ContinuousClock.now - forwarded.started).milliseconds, groupName: bill.group,
            path: worker.via.isEmpty ? "direct" : worker.via.joined(separator: ">"), estimated: counts?.estimated ?? false, cost: cost,
            ttftMS: (bill.headAt - forwarded.started).milliseconds)
        bill.permit.complete(tokens: counts.map { $0.prompt + $0.completion })
        forwarded.series?.finished(duration: ContinuousClock.now - forwarded.started, firstByte: bill.headAt - forwarded.started,
                                   promptTokens: counts?.prompt, completionTokens: counts?.completion)
        return Charge(chargeID: bill.chargeID, usage: row, cost: cost, creditUserID: bill.price?.creditUserID)
    }

    private func stream(_ forwarded: ForwardedCall, arrived alreadyArrived: [ByteBuffer], early earlyOutcome: Result<Bool, any Error>,
                        to writer: inout any ResponseBodyWriter) async throws {
        let logger = forwarded.logger
        let worker = forwarded.worker
        let isSSE = forwarded.head.head.isEventStream
        var sniffer = UsageSniffer(countEvents: isSSE)
        var output = HeldOutput(head: forwarded.head.head, stripUsage: forwarded.billing.stripUsage)
        Self.limitUnsentBytes(on: forwarded.client)
        let buffer = ResponseBuffer(limit: configuration.responseBufferBytes, overflow: worker.route.overflow)
        let cutOff: @Sendable (String) -> Void = { why in
            // The blocked write fails once the connection is closed; `finish` then cancels on the worker.
            logger.warning("cutting off a client", metadata: ["worker": "\(worker.namespace)", "reason": "\(why)"])
            forwarded.call.close()
            buffer.close()
            forwarded.client.close(promise: nil)
        }
        let slowClientTimeout = configuration.slowClientTimeout
        let watch = SlowClientWatch(deadlines: deadlines, timeout: slowClientTimeout, client: forwarded.client) {
            cutOff("it accepted no bytes for \(slowClientTimeout)")
        }
        let ticker = deadlines.makeID()
        let (idleTimeout, keepAliveInterval) = (configuration.streamIdleTimeout, configuration.sseKeepAliveInterval)
        let tickPeriod = min(idleTimeout, keepAliveInterval)
        let deadlines = self.deadlines
        var outcome: Result<Void, any Error> = .success(())
        var complete = false
        var charged = false
        var failedStatus: Int?
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await Self.pump(forwarded.call, first: alreadyArrived, failure: earlyOutcome, into: buffer) {
                    cutOff("it holds more than \(buffer.limit) bytes of unread response")
                }
            }
            defer {
                watch.stop()
                deadlines.disarm(ticker)
                buffer.close()
                forwarded.call.close()
            }
            deadlines.arm(ticker, after: tickPeriod) { buffer.tick() }
            var lastFromWorker = ContinuousClock.now
            var lastWrite = lastFromWorker
            var tail = EventBoundary()
            do {
                loop: while true {
                    switch await buffer.next() {
                    case .chunk(let chunk):
                        lastFromWorker = .now
                        sniffer.observe(chunk)
                        tail.observe(chunk)
                        for piece in output.pieces(for: chunk) {
                            watch.willWrite()
                            try await writer.write(piece)
                            watch.didWrite()
                            lastWrite = .now
                        }
                    case .tick:
                        let now = ContinuousClock.now
                        if now - lastFromWorker >= idleTimeout { throw UpstreamFailure.idle(idleTimeout) }
                        if isSSE, tail.atBoundary, now - lastWrite >= keepAliveInterval {
                            watch.willWrite()
                            try await writer.write(Self.keepAliveComment)
                            watch.didWrite()
                            lastWrite = .now
                        }
                        deadlines.arm(ticker, after: tickPeriod) { buffer.tick() }
                    case .end:
                        complete = true
                        // The charge is durable before the client has the answer's last bytes.
                        charged = true
                        try await usage.settle(charge(for: forwarded, status: forwarded.head.status, sniffer: sniffer, ending: .complete))
                        for piece in output.finish() {
                            watch.willWrite()
                            try await writer.write(piece)
                            watch.didWrite()
                        }
                        try await writer.finish(nil)
                        break loop
                    case .failed(let error):
                        throw error
                    case .cancelled:
                        throw CancellationError()
                    }
                }
            } catch let failure as UpstreamFailure {
                logger.warning("worker failed mid-response", metadata: ["worker": "\(worker.namespace)", "error": "\(failure)"])
                failedStatus = 502
                if isSSE {
                    // End the stream visibly: an error event, then the end (no `[DONE]`).
                    var event = ByteBuffer(string: "event: error\ndata: ")
                    event.writeImmutableBuffer(OpenAIError.upstream("The worker failed mid-stream: \(failure)", code: failure.code).json)
                    event.writeString("\n\n")
                    do {
                        try await writer.write(event)
                        try await writer.finish(nil)
                    } catch {
                        outcome = .failure(error)
                    }
                } else {
                    outcome = .failure(failure)  // abort: a chunked body without its end is visibly broken
                }
            } catch {
                // The client went away, was cut off, or we were cancelled.
                logger.info("client went away; cancelled on the worker", metadata: ["worker": "\(worker.namespace)"])
                outcome = .failure(error)
            }
        }
        release(forwarded, complete: complete)
        if !charged {
            usage.record(charge(for: forwarded, status: failedStatus ?? 499, sniffer: sniffer,
                                ending: failedStatus == nil ? .clientGone : .workerFailed))
        }
        try outcome.get()
    }

    /// Moves the worker's chunks (`first`: those that came with the head; `failure`: an error met
    /// while taking them) into the client's buffer until the end, a failure, or the writer side
    /// closing. `overflowed` runs when a `.cut` buffer goes over its limit.
    static func pump(_ call: TunnelCall, first: [ByteBuffer], failure: Result<Bool, any Error>, into buffer: ResponseBuffer,
                     overflowed: @Sendable () -> Void) async {
        func push(_ chunk: ByteBuffer) async -> Bool {
            switch await buffer.push(chunk) {
            case .accepted: return true
            case .overflow:
                overflowed()
                return false
            case .closed: return false
            }
        }
        do {
            for chunk in first {
                guard await push(chunk) else { return }
            }
            if case .failure(let error) = failure { throw error }
            while let chunk = try await call.nextChunk() {
                guard await push(chunk) else { return }
            }
            buffer.finish(.end)
        } catch {
            buffer.finish(.failed(error))
        }
    }

    /// Keeps at most `unsentLowWater` unsent bytes in the kernel for this client, so writes
    /// complete as the client reads instead of after megabytes drained (Linux otherwise signals
    /// writability only when half its send queue is free).
    static func limitUnsentBytes(on channel: any Channel) {
        #if os(Linux)
        let option = ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: CInt(TCP_NOTSENT_LOWAT)))
        channel.setOption(option, value: SocketOptionValue(unsentLowWater)).whenFailure { _ in }
        #endif
    }
}

/// What to write of each chunk, holding back what would tell the client the answer is complete
/// until its charge is committed. Streamed responses are chunked (a worker's `Content-Length` is
/// not forwarded), so the body's end is written after the commit anyway; an SSE stream also
/// keeps back the chunk that ends with `data: [DONE]`, which clients take as the end. Applies
/// the `UsageStripper` when the hub asked for usage.
struct HeldOutput {
    private let isSSE: Bool
    private var stripper: UsageStripper?
    private var held: ByteBuffer?
    private static let done = Array("[DONE]".utf8)

    init(head: ResponseHead, stripUsage: Bool) {
        isSSE = head.isEventStream
        stripper = stripUsage && isSSE ? UsageStripper() : nil
    }

    /// The buffers to write now for `chunk`.
    mutating func pieces(for chunk: ByteBuffer) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        if stripper != nil {
            for piece in stripper!.filter(chunk) { hold(piece, into: &out) }
        } else {
            hold(chunk, into: &out)
        }
        return out
    }

    /// What was held back, to write once the charge is committed.
    mutating func finish() -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        if let rest = stripper?.finish() { hold(rest, into: &out) }
        if let held { out.append(held) }
        held = nil
        return out
    }

    private mutating func hold(_ piece: ByteBuffer, into out: inout [ByteBuffer]) {
        guard piece.readableBytes > 0 else { return }
        if let previous = held {
            out.append(previous)
            held = nil
        }
        if isSSE, Self.endsWithDone(piece) {
            held = piece
        } else {
            out.append(piece)
        }
    }

    /// Whether the piece's last event is `data: [DONE]`.
    static func endsWithDone(_ piece: ByteBuffer) -> Bool {
        let view = piece.readableBytesView
        var end = view.endIndex
        while end > view.startIndex, view[end - 1] == 0x0A || view[end - 1] == 0x0D || view[end - 1] == 0x20 { end -= 1 }
        guard end - view.startIndex >= done.count else { return false }
        return view[(end - done.count)..<end].elementsEqual(done)
    }
}

/// Whether the bytes written so far end an SSE event (a blank line), so a comment can go in
/// between. Carriage returns are skipped: `\r\n\r\n` ends an event as `\n\n` does.
struct EventBoundary {
    private var last: (UInt8, UInt8) = (0x0A, 0x0A)

    var atBoundary: Bool { last == (0x0A, 0x0A) }

    mutating func observe(_ chunk: ByteBuffer) {
        var newest: UInt8?
        for byte in chunk.readableBytesView.reversed() where byte != 0x0D {
            guard let later = newest else {
                newest = byte
                continue
            }
            last = (byte, later)
            return
        }
        if let newest { last = (last.1, newest) }
    }
}
