import Logging
import NIOCore

import TokiMux
import TokiProtocol
import TokiStore
import TokiTunnel

@testable import TokiHub

/// How a fake worker answers one tunnelled request.
enum FakeAnswer: Sendable {
    /// A head, the body in one chunk, then eof.
    case respond(status: Int = 200, headers: [String: String] = ["Content-Type": "application/json"], body: String)
    /// An SSE head, then each chunk on its own line `gap` apart, then eof.
    case stream(chunks: [String], gap: Duration)
    /// An error line instead of a head.
    case error(code: String, message: String)
    /// These bytes as they are (a malformed answer).
    case raw(String)
    /// Reads the request and never answers.
    case silent
    /// Closes the stream without a word.
    case hangUp
}

/// One direction of an in-memory link (no back-pressure: enough for tests).
final class MemoryLink: MuxOutbound {
    let stream: AsyncStream<ByteBuffer>
    private let continuation: AsyncStream<ByteBuffer>.Continuation

    init() { (stream, continuation) = AsyncStream.makeStream() }

    func write(_ message: ByteBuffer) async throws { continuation.yield(message) }
    func finish() { continuation.finish() }
}

/// The route seam's fake: a worker behind an in-memory smux session pair. The hub side is a
/// real `MuxSession` (the hub's `TunnelCall` reads and writes it as it would a worker's), the
/// worker side answers each request as `answer` says and records what it got.
final class FakeWorkerRoute: WorkerRoute {
    let hubSide: MuxSession
    let workerSide: MuxSession
    let overflow: ResponseBuffer.Overflow = .wait
    let received = Locked<[TunnelRequest]>([])
    let cancelled = Locked<[String]>([])
    private let links = (toWorker: MemoryLink(), toHub: MemoryLink())
    private let task = Locked<Task<Void, Never>?>(nil)

    init(answer: @escaping @Sendable (TunnelRequest) -> FakeAnswer) throws {
        hubSide = try MuxSession(role: .server)
        workerSide = try MuxSession(role: .client)
        let (hubSide, workerSide, links, received) = (hubSide, workerSide, links, received)
        task.withLock {
            $0 = Task {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { try? await hubSide.run(inbound: links.toHub.stream, outbound: links.toWorker) }
                    group.addTask { try? await workerSide.run(inbound: links.toWorker.stream, outbound: links.toHub) }
                    group.addTask {
                        await withTaskGroup(of: Void.self) { streams in
                            while let stream = try? await workerSide.accept() {
                                streams.addTask { await Self.serve(stream, answer: answer, received: received) }
                            }
                        }
                    }
                }
            }
        }
    }

    var requests: [TunnelRequest] { received.withLock { $0 } }

    func openCall(requestID: String) throws -> TunnelCall { try TunnelCall.open(on: hubSide, requestID: requestID) }
    func openStream() async throws -> MuxStream { try hubSide.openStream() }
    func cancel(requestID: String) { cancelled.withLock { $0.append(requestID) } }
    func isSilent(since instant: NIODeadline) -> Bool { false }
    var isSending: Bool { false }
    func ping() async throws {}

    func close() {
        hubSide.close()
        workerSide.close()
        links.toHub.finish()
        links.toWorker.finish()
    }

    /// Closes the sessions and waits for their tasks.
    func stop() async {
        close()
        await task.withLock { $0 }?.value
    }

    static func serve(_ stream: MuxStream, answer: @Sendable (TunnelRequest) -> FakeAnswer, received: Locked<[TunnelRequest]>) async {
        var framer = NDJSONLineFramer(maxLineLength: TunnelProtocol.maxRequestLineLength)
        var line: ByteBuffer?
        while line == nil {
            guard let chunk = try? await stream.read(), (try? framer.append(chunk)) != nil else { return }
            line = try? framer.nextLine()
        }
        guard let line, let request = try? TunnelRequest.decode(line: line) else { return }
        received.withLock { $0.append(request) }
        let id = request.requestID
        switch answer(request) {
        case .respond(let status, let headers, let body):
            var out = TunnelResponse(requestID: id, statusCode: status, headers: headers).encodedLine()
            out.writeImmutableBuffer(TunnelResponse(requestID: id, bodyChunk: ByteBuffer(string: body)).encodedLine())
            out.writeImmutableBuffer(TunnelResponse(requestID: id, eof: true).encodedLine())
            try? await stream.write(out)
            while (try? await stream.read()) != nil {}  // until the hub closes it
        case .stream(let chunks, let gap):
            try? await stream.write(TunnelResponse(requestID: id, statusCode: 200, headers: ["Content-Type": "text/event-stream"]).encodedLine())
            for chunk in chunks {
                try? await Task.sleep(for: gap)
                try? await stream.write(TunnelResponse(requestID: id, bodyChunk: ByteBuffer(string: chunk)).encodedLine())
            }
            try? await stream.write(TunnelResponse(requestID: id, eof: true).encodedLine())
            while (try? await stream.read()) != nil {}
        case .error(let code, let message):
            try? await stream.write(TunnelResponse(requestID: id, error: ErrorPayload(code: code, message: message)).encodedLine())
            while (try? await stream.read()) != nil {}
        case .raw(let text):
            try? await stream.write(ByteBuffer(string: text))
            while (try? await stream.read()) != nil {}
        case .silent:
            while (try? await stream.read()) != nil {}
        case .hangUp:
            stream.close()
        }
    }
}

extension WorkerRegistry {
    /// Registers a fake worker as the session handler would a real one.
    @discardableResult
    func addFake(_ namespace: String, models: Set<String>, groups: Set<String> = ["default"], userID: Int64 = 1,
                 answer: @escaping @Sendable (TunnelRequest) -> FakeAnswer) throws -> (WorkerConnection, FakeWorkerRoute) {
        let route = try FakeWorkerRoute(answer: answer)
        let connection = WorkerConnection(sessionID: nextSessionID(), namespace: namespace, principal: WorkerPrincipal(userID: userID, userName: "u", group: "default"), workerID: 1, nodeName: namespace,
                                          groups: groups, models: models, hardwareInfo: nil, route: route,
                                          logger: Logger(label: "test.worker"))
        precondition(claim(connection))
        return (connection, route)
    }
}
