// chat-replay: the bytes on the wire when recorded chat traffic goes through the tunnel.
//
// What is replayed: every row of traffic-chat.jsonl (240 recorded /v1/chat/completions calls) is
// one request on its own smux stream, as Tokilake does: the hub opens the stream and writes one
// request line, the worker answers. Rows are spread over `--streams` lanes (8 by default): lane k
// serves rows k, k+8, k+16, … one after the other, so 8 streams are in flight at any time.
//
// How the worker answers (`--framing`):
//   lines (default) — as the toki/Tokiame worker does: one TunnelResponse head line
//     `{"request_id":…,"status_code":200,"headers":{"Content-Type":…}}`, then one
//     `{"request_id":…,"body_chunk":"<base64>"}` line per SSE event (a non-streamed JSON body
//     is one chunk), then `{"request_id":…,"eof":true}`; each line is one stream write.
//   raw — only the SSE event bytes (or the JSON body), one stream write per event.
// Between two events of one response the worker sleeps `--gap-ms` (default 1 ms), so events
// are not artificially batched into one message (real token streams are ~15 ms apart).
//
// Where bytes are counted: the two MuxSessions are joined by an in-process link whose outbound
// is a counting decorator around TokiTunnel's own `TunnelMessageWriter` (the code that turns
// each mux batch into one binary WebSocket message, LZ4 linked blocks with `toki-lz4`), and
// whose inbound is TokiTunnel's `TunnelFrameReader`. Wire bytes = the WebSocket message payloads
// plus their frame headers (2/4/10 bytes by length, +4 for the mask: worker→hub is the client
// direction), i.e. what a TCP capture would show minus TCP/IP headers. Only the worker→hub
// direction (the responses) is in `wire`; the hub→worker direction is printed separately.

import Foundation
import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// One direction of the in-process tunnel: mux batches → WebSocket message payloads (counted).
final class CountingLinkOutbound: MuxOutbound {
    struct Counters {
        var batches = 0
        var muxBytes = 0
        var messageBytes = 0
        var frameBytes = 0
    }

    let writer: Mutex<TunnelMessageWriter>
    let counters = Mutex(Counters())
    let masked: Bool
    let sink: AsyncStream<ByteBuffer>.Continuation

    init(lz4: Bool, masked: Bool, sink: AsyncStream<ByteBuffer>.Continuation) {
        writer = Mutex(TunnelMessageWriter(lz4: lz4))
        self.masked = masked
        self.sink = sink
    }

    static func frameHeaderSize(payload: Int, masked: Bool) -> Int {
        (payload < 126 ? 2 : payload < 65536 ? 4 : 10) + (masked ? 4 : 0)
    }

    func write(_ batch: ByteBuffer) async throws {
        let message = writer.withLock { $0.message(for: batch) }
        counters.withLock {
            $0.batches += 1
            $0.muxBytes += batch.readableBytes
            $0.messageBytes += message.readableBytes
            $0.frameBytes += message.readableBytes + Self.frameHeaderSize(payload: message.readableBytes, masked: masked)
        }
        sink.yield(message)
        await Task.yield()
    }
}

/// The other end of a link: binary messages → mux byte stream.
struct LinkInbound: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let messages: AsyncStream<ByteBuffer>
    let lz4: Bool

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<ByteBuffer>.AsyncIterator
        var reader: TunnelFrameReader

        mutating func next() async throws -> ByteBuffer? {
            while let message = await base.next() {
                if let bytes = try reader.receive(opcode: .binary, fin: true, data: message) { return bytes }
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: messages.makeAsyncIterator(), reader: TunnelFrameReader(lz4: lz4))
    }
}

struct RecordedCall: Sendable {
    var requestJSON: String
    var contentType: String
    var status: Int
    var body: [UInt8]
    /// The body cut at SSE event boundaries (each event with its blank line); one piece if not SSE.
    var events: [[UInt8]]
}

enum ChatReplay {
    static func load(_ path: String) throws -> [RecordedCall] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var calls: [RecordedCall] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let response = object["response"] as? String
            else { throw UsageError(description: "\(path): a line without a response") }
            let request = object["request"].flatMap { try? JSONSerialization.data(withJSONObject: $0) }
                .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            let contentType = object["content_type"] as? String ?? "application/json"
            let body = Array(response.utf8)
            var events: [[UInt8]] = []
            if contentType.hasPrefix("text/event-stream") {
                var start = 0
                var i = 0
                while i + 1 < body.count {
                    if body[i] == 0x0A, body[i + 1] == 0x0A {
                        events.append(Array(body[start..<(i + 2)]))
                        start = i + 2
                        i += 2
                    } else {
                        i += 1
                    }
                }
                if start < body.count { events.append(Array(body[start...])) }
            } else {
                events = [body]
            }
            calls.append(RecordedCall(requestJSON: request, contentType: contentType,
                                      status: object["status"] as? Int ?? 200, body: body, events: events))
        }
        return calls
    }

    /// What the worker writes for one call, one element per stream write.
    static func writes(for call: RecordedCall, id: String, lines: Bool) -> [ByteBuffer] {
        guard lines else { return call.events.map { ByteBuffer(bytes: $0) } }
        var out: [ByteBuffer] = []
        var head = ByteBuffer()
        TunnelResponse.writeHeadLine(requestID: id, statusCode: call.status, headers: ["Content-Type": call.contentType], into: &head)
        out.append(head)
        for event in call.events {
            var line = ByteBuffer()
            TunnelResponse.writeBodyChunkLine(requestID: id, chunk: ByteBuffer(bytes: event), into: &line)
            out.append(line)
        }
        var eof = ByteBuffer()
        TunnelResponse.writeEOFLine(requestID: id, into: &eof)
        out.append(eof)
        return out
    }

    static func run(_ args: Arguments) async throws {
        guard let file = args.values["file"] else { throw UsageError(description: "chat-replay needs --file") }
        let lanes = try args.int("streams", default: 8)
        let lz4 = args.flags.contains("lz4")
        let lines: Bool
        switch args.values["framing"] ?? "lines" {
        case "lines": lines = true
        case "raw": lines = false
        case let other: throw UsageError(description: "--framing: lines or raw, not \(other)")
        }
        let gap = try args.double("gap-ms", default: 1)
        let version = UInt8(try args.int("version", default: 1))
        startWatchdog(try args.double("timeout", default: 300))
        let calls = try load(file)
        guard !calls.isEmpty, lanes > 0 else { throw UsageError(description: "nothing to replay") }

        var config = SmuxConfiguration()
        config.version = version
        let hub = try MuxSession(role: .server, configuration: config)
        let worker = try MuxSession(role: .client, configuration: config)
        let (toWorker, toWorkerSink) = AsyncStream<ByteBuffer>.makeStream()
        let (toHub, toHubSink) = AsyncStream<ByteBuffer>.makeStream()
        let hubOut = CountingLinkOutbound(lz4: lz4, masked: false, sink: toWorkerSink)
        let workerOut = CountingLinkOutbound(lz4: lz4, masked: true, sink: toHubSink)
        let hubRun = Task { try await hub.run(inbound: LinkInbound(messages: toHub, lz4: lz4), outbound: hubOut) }
        let workerRun = Task { try await worker.run(inbound: LinkInbound(messages: toWorker, lz4: lz4), outbound: workerOut) }

        // Worker: answer each stream from the recording named in its request line.
        let serving = Task {
            await withTaskGroup(of: Void.self) { group in
                while let stream = try? await worker.accept() {
                    group.addTask {
                        var request = ByteBuffer()
                        while !request.readableBytesView.contains(0x0A), let chunk = try? await stream.read() {
                            request.writeImmutableBuffer(chunk)
                        }
                        // The request line starts {"request_id":"req-<index>",
                        let text = String(buffer: request)
                        guard let range = text.range(of: "req-"),
                              let index = Int(text[range.upperBound...].prefix(while: { $0.isNumber })),
                              calls.indices.contains(index)
                        else { return stream.close() }
                        let call = calls[index]
                        let id = "req-\(index)"
                        let pieces = writes(for: call, id: id, lines: lines)
                        for (n, piece) in pieces.enumerated() {
                            if n > 0, gap > 0 { try? await Task.sleep(for: .microseconds(Int(gap * 1000))) }
                            do { try await stream.write(piece) } catch { return }
                        }
                        stream.closeWrite()
                        stream.close()
                    }
                }
            }
        }

        // Hub: `lanes` concurrent lanes, one stream per call; checks every byte that comes back.
        let clock = ContinuousClock()
        let start = clock.now
        let received = try await withThrowingTaskGroup(of: Int.self) { group in
            for lane in 0..<lanes {
                group.addTask {
                    var total = 0
                    for index in stride(from: lane, to: calls.count, by: lanes) {
                        let stream = try hub.openStream()
                        let id = "req-\(index)"
                        var request = ByteBuffer()
                        request.writeString("{\"request_id\":\"\(id)\",\"route_kind\":\"chat_completions\",\"body\":")
                        request.writeString(calls[index].requestJSON)
                        request.writeString("}\n")
                        try await stream.write(request)
                        var got = ByteBuffer()
                        while let chunk = try await stream.read() { got.writeImmutableBuffer(chunk) }
                        stream.close()
                        var expected = ByteBuffer()
                        for var piece in writes(for: calls[index], id: id, lines: lines) { expected.writeBuffer(&piece) }
                        guard got == expected else {
                            throw UsageError(description: "\(id): got \(got.readableBytes) bytes, expected \(expected.readableBytes)")
                        }
                        total += got.readableBytes
                    }
                    return total
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = clock.now - start
        worker.close()
        hub.close()
        toHubSink.finish()
        toWorkerSink.finish()
        _ = await hubRun.result
        _ = await workerRun.result
        serving.cancel()
        _ = await serving.result

        let raw = calls.reduce(0) { $0 + $1.body.count }
        let events = calls.reduce(0) { $0 + $1.events.count }
        let up = workerOut.counters.withLock { $0 }
        let down = hubOut.counters.withLock { $0 }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        func f(_ x: Double) -> String { String(format: "%.4f", x) }
        print("""
            RESULT ok chat-replay streams=\(lanes) calls=\(calls.count) events=\(events) framing=\(lines ? "lines" : "raw") \
            lz4=\(lz4) version=\(version) gap_ms=\(gap) seconds=\(String(format: "%.3f", seconds)) \
            raw_bytes=\(raw) app_bytes=\(received) mux_bytes=\(up.muxBytes) messages=\(up.batches) \
            message_bytes=\(up.messageBytes) wire_bytes=\(up.frameBytes) \
            wire_per_raw=\(f(Double(up.frameBytes) / Double(raw))) wire_per_mux=\(f(Double(up.frameBytes) / Double(up.muxBytes))) \
            hub_to_worker_wire_bytes=\(down.frameBytes)
            """)
    }
}
