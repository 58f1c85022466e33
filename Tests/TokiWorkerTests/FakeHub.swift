// Test harness: a fake hub built from TunnelListener (the test plays the hub side of the
// control protocol and opens data streams itself), and the stub backend as a child process.

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Synchronization
import TestSupport
import Testing
import TokiMux
import TokiProtocol
import TokiTunnel

@testable import TokiWorker

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The hub side of one worker connection, on the same control channel the hub uses.
final class HubConnection: Sendable {
    let session: MuxSession
    let channel: ControlChannel
    let writer: Task<Void, Never>
    var control: MuxStream { channel.stream }

    init(session: MuxSession, control: MuxStream) {
        self.session = session
        let channel = ControlChannel(control)
        self.channel = channel
        self.writer = Task { try? await channel.runWriter() }
    }

    deinit {
        channel.finish()
    }

    /// The next control message and its raw JSON text.
    func next(timeout: Duration = .seconds(20)) async throws -> (message: ControlMessage, raw: String) {
        let channel = self.channel
        guard let received = try await withTimeLimit(timeout, { try await channel.receive() }) else {
            throw HarnessError("no control message within \(timeout)")
        }
        guard let received else { throw HarnessError("control stream closed") }
        return (received.message, String(buffer: received.line))
    }

    /// The next message of `type`, skipping others (e.g. heartbeats).
    func next(_ type: ControlMessageType, timeout: Duration = .seconds(20)) async throws -> (message: ControlMessage, raw: String) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { throw HarnessError("no \(type) message within \(timeout)") }
            let got = try await next(timeout: left)
            if got.message.type == type { return got }
        }
    }

    /// Queues `message` on the control channel (written in order by its one writer).
    func send(_ message: ControlMessage) async throws {
        guard channel.send(message) else { throw HarnessError("control channel backlog full") }
    }

    /// register → ack(register_ok), models_sync → ack(models_sync_ok). Returns both raw lines.
    @discardableResult
    func handshake(workerID: Int = 7, channelID: Int = 9) async throws -> (register: (message: ControlMessage, raw: String), sync: (message: ControlMessage, raw: String)) {
        let register = try await next()
        guard register.message.type == .register else { throw HarnessError("expected register, got \(register.raw)") }
        try await send(.ack(requestID: register.message.requestID, message: TunnelProtocol.AckMessage.registerOK,
                            namespace: register.message.register?.namespace, workerID: workerID, channelID: channelID))
        let sync = try await next()
        guard sync.message.type == .modelsSync else { throw HarnessError("expected models_sync, got \(sync.raw)") }
        try await send(.ack(requestID: sync.message.requestID, message: TunnelProtocol.AckMessage.modelsSyncOK,
                            namespace: register.message.register?.namespace, workerID: workerID, channelID: channelID))
        return (register, sync)
    }

    /// Opens a data stream and writes one request line (no half-close, like the Go hub).
    func open(_ request: TunnelRequest) async throws -> DataExchange {
        let stream = try session.openStream()
        try await stream.write(request.encodedLine())
        return DataExchange(stream: stream)
    }
}

/// A data stream from the hub's side: response lines with their arrival times.
final class DataExchange: Sendable {
    let stream: MuxStream
    let reader: StreamLineReader

    init(stream: MuxStream) {
        self.stream = stream
        self.reader = StreamLineReader(stream, maxLineLength: TunnelProtocol.maxResponseLineLength)
    }

    /// The next response line, or nil at end of stream.
    func next(timeout: Duration = .seconds(30)) async throws -> TunnelResponse? {
        let reader = self.reader
        guard let line = try await withTimeLimit(timeout, { try await reader.nextLine() }) else {
            throw HarnessError("no response line within \(timeout)")
        }
        return try line.map { try TunnelResponse.decodeLine($0) }
    }

    /// Every line until a terminal one or end of stream, with arrival times.
    func collect(timeout: Duration = .seconds(15)) async throws -> [(response: TunnelResponse, at: ContinuousClock.Instant)] {
        var out: [(TunnelResponse, ContinuousClock.Instant)] = []
        while let response = try await next(timeout: timeout) {
            out.append((response, .now))
            if response.isTerminal { break }
        }
        return out
    }
}

/// A TunnelListener on a loopback port; each worker connection's control stream is handed out
/// through `connections`.
final class FakeHub: Sendable {
    let port: Int
    let task: Task<Void, any Error>
    let received: Locked<[HubConnection]>
    let consumed = Locked(0)
    let tokens: Locked<[String?]>

    private init(port: Int, task: Task<Void, any Error>, received: Locked<[HubConnection]>, tokens: Locked<[String?]>) {
        self.port = port
        self.task = task
        self.received = received
        self.tokens = tokens
    }

    static func start() async throws -> FakeHub {
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let received = Locked<[HubConnection]>([])
        let tokens = Locked<[String?]>([])
        var listener = TunnelListener()
        listener.logger.logLevel = .critical
        listener.authorize = { token in
            tokens.withLock { $0.append(token) }
            return true
        }
        let task = Task {
            try await listener.run(onRunning: { portContinuation.yield($0) }) { session, _ in
                guard let control = try? await session.accept() else { return }
                received.withLock { $0.append(HubConnection(session: session, control: control)) }
                // Keep the session until it ends (the worker opens no other stream).
                while (try? await session.accept()) != nil {}
            }
        }
        var ports = portStream.makeAsyncIterator()
        guard let port = await ports.next() else { throw HarnessError("fake hub did not start") }
        return FakeHub(port: port, task: task, received: received, tokens: tokens)
    }

    var url: String { "ws://127.0.0.1:\(port)" }

    /// Connections accepted so far.
    var connectionCount: Int { received.value.count }

    /// The next worker connection (in arrival order).
    func nextConnection(timeout: Duration = .seconds(30)) async throws -> HubConnection {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let index = consumed.value
            if let connection = received.withLock({ $0.count > index ? $0[index] : nil }) {
                consumed.withLock { $0 += 1 }
                return connection
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError("no worker connection within \(timeout)")
    }

    func stop() async {
        for connection in received.value { connection.session.close() }
        task.cancel()
        _ = await task.result
    }
}

/// The stub backend (Tests/StubBackend) as a child process.
final class StubBackend: Sendable {
    let process: ChildProcess
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    private init(process: ChildProcess, port: Int) {
        self.process = process
        self.port = port
    }

    /// Where the built `toki-stub-backend` is: $TOKI_STUB_BACKEND, next to the test binary, or
    /// in a `.build*/debug` folder of the repository.
    static func executable() throws -> String {
        let fm = FileManager.default
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["TOKI_STUB_BACKEND"], !env.isEmpty { candidates.append(env) }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("toki-stub-backend").path)
        candidates.append(URL(fileURLWithPath: CommandLine.arguments.first ?? "").deletingLastPathComponent()
            .appendingPathComponent("toki-stub-backend").path)
        let root = RepoPaths.root
        let builds = ((try? fm.contentsOfDirectory(atPath: root.path)) ?? []).filter { $0.hasPrefix(".build") }.sorted()
        for build in builds {
            candidates.append(root.appendingPathComponent(build).appendingPathComponent("debug/toki-stub-backend").path)
        }
        guard let found = candidates.first(where: { fm.isExecutableFile(atPath: $0) }) else {
            throw HarnessError("toki-stub-backend not built (looked in \(candidates)); run swift build --product toki-stub-backend")
        }
        return found
    }

    static func start(models: [String] = ["m1", "m2"], extra: [String] = []) async throws -> StubBackend {
        let process = try ChildProcess(try executable(), ["--port", "0", "--models", models.joined(separator: ",")] + extra,
                                       name: "toki-stub-backend")
        let line = try await process.waitForLine(prefix: "LISTEN ", timeout: .seconds(20))
        guard let port = Int(line.dropFirst("LISTEN ".count)) else { throw HarnessError("bad LISTEN line \(line)") }
        return StubBackend(process: process, port: port)
    }

    func getJSON(_ path: String) async throws -> [String: Any] {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url + path), timeout: .seconds(20))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (try JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }

    func post(_ path: String, json: String) async throws {
        var request = HTTPClientRequest(url: url + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(20))
        _ = try await response.body.collect(upTo: 1 << 20)
    }

    var cancelledCount: Int {
        get async throws { (try await getJSON("/stub/cancelled")["cancelled"] as? Int) ?? -1 }
    }

    /// Streaming responses the stub finished.
    var completedCount: Int {
        get async throws { (try await getJSON("/stub/cancelled")["completed"] as? Int) ?? -1 }
    }

    /// The requests the stub received, oldest first.
    func requests() async throws -> [[String: Any]] {
        (try await getJSON("/stub/requests")["requests"] as? [[String: Any]]) ?? []
    }

    /// Polls until `condition` holds (or throws after `timeout`).
    func waitUntil(timeout: Duration = .seconds(20), _ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("timed out waiting for: \(what)")
    }

    func stop() async { await process.stop(grace: .seconds(2)) }
}

/// A running WorkerService.
struct RunningWorker {
    let service: WorkerService
    let task: Task<Void, any Error>

    static func start(_ options: WorkerOptions) -> RunningWorker {
        var logger = Logger(label: "test.worker")
        logger.logLevel = ProcessInfo.processInfo.environment["TOKI_TEST_LOG"] != nil ? .debug : .critical
        let service = WorkerService(options: options, logger: logger)
        return RunningWorker(service: service, task: Task { try await service.run() })
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// Worker options for the tests: fast heartbeats and reconnects, discovery from `backend`.
func testOptions(hub: FakeHub, backend: StubBackend?, targets: [String: ModelTargetConfig] = [:]) -> WorkerOptions {
    var config = TokiameConfig()
    config.gatewayURL = hub.url  // no path: /api/tokilake/connect is appended
    config.token = "sk-test"
    config.namespace = "ns-test"
    config.nodeName = "gpu-01"
    config.modelTargets = targets
    config.normalize()
    var options = WorkerOptions(config: config)
    if let backend { options.discoveryBackends = [backend.url] }
    options.heartbeatInterval = .milliseconds(300)
    options.livenessTimeout = .seconds(10)  // the tests do not always ack heartbeats
    options.reconnectDelay = .milliseconds(100)
    options.reconnectDelayCap = .milliseconds(400)
    options.ackTimeout = .seconds(3)
    options.hostname = "test-host"
    return options
}

func chatRequest(id: String, model: String = "m1", body: String, headers: [String: String] = ["Content-Type": "application/json"],
                 path: String = "/v1/chat/completions", stream: Bool = false) -> TunnelRequest {
    TunnelRequest(requestID: id, routeKind: "chat_completions", method: "POST", path: path, model: model,
                  headers: headers, isStream: stream, body: ByteBuffer(string: body))
}

func bodyText(_ lines: [(response: TunnelResponse, at: ContinuousClock.Instant)]) -> String {
    var all = ByteBuffer()
    for (line, _) in lines { if var chunk = line.bodyChunk { all.writeBuffer(&chunk) } }
    return String(buffer: all)
}
