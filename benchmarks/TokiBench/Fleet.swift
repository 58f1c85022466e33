// toki-bench fleet: N simulated workers in one process, each behaving like the original Go
// Tokiame (one WebSocket + smux v1 session, register then models_sync, a heartbeat with
// hardware_info every --heartbeat seconds, WebSocket pongs, and a small JSON answer to every
// request), so a hub's cost per worker can be measured without N processes.
//
//   toki-bench fleet --hub ws://127.0.0.1:PORT/api/tokilake/connect --token T --workers N
//                    [--model fleet-model] [--heartbeat 15] [--dial-concurrency 64]
//
// Prints `REGISTERED workers=N seconds=S` once every worker is registered, then serves until its
// standard input closes (or SIGTERM), then closes every session and prints `LEFT workers=N`.

import Foundation
import Logging
import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

enum Fleet {
    static func run(_ args: Arguments) async throws {
        guard let hub = args.values["hub"], let token = args.values["token"] else {
            throw UsageError(description: "fleet needs --hub URL and --token T")
        }
        let count = try args.int("workers", default: 100)
        let model = args.values["model"] ?? "fleet-model"
        let heartbeat = Duration.seconds(try args.int("heartbeat", default: 15))
        let dialConcurrency = max(1, try args.int("dial-concurrency", default: 64))
        let logger = { var l = Logger(label: "toki-bench.fleet"); l.logLevel = .critical; return l }()
        let dials = DialLimiter(dialConcurrency)

        let clock = ContinuousClock()
        let start = clock.now
        let state = FleetState()
        let (allRegistered, signalRegistered) = AsyncStream<Void>.makeStream()

        let fleet = Task {
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    group.addTask {
                        // At most `dialConcurrency` workers between dialling and registered.
                        await dials.acquire()
                        let worker = SimulatedWorker(index: index, hub: hub, token: token, model: model, heartbeat: heartbeat, logger: logger)
                        do {
                            try await worker.run(onSession: { session in state.sessions.withLock { $0.append(session) } }) {
                                Task { await dials.release() }
                                if state.registered.wrappingAdd(1, ordering: .relaxed).newValue == count { signalRegistered.yield() }
                            }
                        } catch {
                            FileHandle.standardError.write(Data("worker \(index): \(error)\n".utf8))
                            if state.registered.load(ordering: .relaxed) < count { await dials.release() }
                        }
                    }
                }
            }
        }
        var waiter = allRegistered.makeAsyncIterator()
        _ = await waiter.next()
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        FileHandle.standardOutput.write(Data("REGISTERED workers=\(count) seconds=\(String(format: "%.3f", seconds))\n".utf8))

        // Serve until stdin closes (the script's way of saying "leave now").
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                while let _ = readLine() {}
                continuation.resume()
            }
        }
        // Leaving: every session closed at once (as when a fleet goes away), then exit: waiting
        // for thousands of tasks to wind down measures nothing about the hub.
        for session in state.sessions.withLock({ $0 }) { session.close() }
        fleet.cancel()
        FileHandle.standardOutput.write(Data("LEFT workers=\(count)\n".utf8))
        exit(0)
    }
}

/// A counting semaphore for dials.
actor DialLimiter {
    private var available: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { available = count }

    func acquire() async {
        if available > 0 {
            available -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { available += 1 } else { waiting.removeFirst().resume() }
    }
}

final class FleetState: Sendable {
    let registered = Atomic<Int>(0)
    let sessions = Mutex<[MuxSession]>([])
}

/// One Tokiame-like worker on its own tunnel.
struct SimulatedWorker: Sendable {
    let index: Int
    let hub: String
    let token: String
    let model: String
    let heartbeat: Duration
    let logger: Logger

    var namespace: String { "fleet-\(index)" }

    /// What a Go Tokiame sends: a few keys, some nested.
    var hardwareInfo: RawJSON {
        ["hostname": .string(namespace), "os": "linux", "arch": "amd64", "num_cpu": 16,
         "gpus": [["name": "NVIDIA RTX 4090", "memory_mb": 24564]]]
    }

    func run(onSession: @Sendable (MuxSession) -> Void, onRegistered: @escaping @Sendable () -> Void) async throws {
        var options = TunnelDialOptions(url: hub)
        options.headers = [("Authorization", "Bearer \(token)")]
        options.connectTimeout = .seconds(60)
        let tunnel = try await ClientTunnel.connect(options, logger: logger)
        let session = try MuxSession(role: .client, configuration: .tokilake, logger: logger)
        onSession(session)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await tunnel.run(session) }
            group.addTask { try await self.serve(session, onRegistered: onRegistered) }
            try await group.next()
            session.close()
            group.cancelAll()
        }
    }

    func serve(_ session: MuxSession, onRegistered: @escaping @Sendable () -> Void) async throws {
        let control = try session.openStream()
        var reader = LineReader(stream: control)
        func send(_ message: ControlMessage) async throws { try await control.write(message.encodedLine()) }
        func awaitAck(_ id: String) async throws {
            while let line = try await reader.next() {
                let message = try ControlMessage.decode(line: line)
                if message.type == .error { throw UsageError(description: "hub refused: \(message.error?.message ?? "?")") }
                if message.type == .ack, message.requestID == id { return }
            }
            throw UsageError(description: "control stream closed")
        }
        let registerID = TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.register)
        try await send(.register(requestID: registerID, RegisterPayload(namespace: namespace, models: [model], hardwareInfo: hardwareInfo)))
        try await awaitAck(registerID)
        let syncID = TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.modelsSync)
        try await send(.modelsSync(requestID: syncID, ModelsSyncPayload(models: [model], hardwareInfo: hardwareInfo)))
        try await awaitAck(syncID)
        onRegistered()

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Heartbeats, spread over the period so the fleet does not beat in step.
            let first = Duration.milliseconds(Int64.random(in: 0..<max(1, Int64(heartbeat.components.seconds) * 1000)))
            group.addTask {
                try await Task.sleep(for: first)
                while true {
                    let id = TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.heartbeat)
                    try await send(.heartbeat(requestID: id, HeartbeatPayload(hardwareInfo: hardwareInfo, currentModels: [model])))
                    try await Task.sleep(for: heartbeat)
                }
            }
            // Acks and cancels from the hub: read and dropped.
            group.addTask { [reader] in
                var reader = reader
                while try await reader.next() != nil {}
                throw UsageError(description: "control stream closed")
            }
            // Requests: one small JSON answer each.
            group.addTask {
                while true {
                    let stream = try await session.accept()
                    Task { await Self.answer(stream) }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    static let answerBody = ByteBuffer(string: #"{"id":"chatcmpl-fleet","object":"chat.completion","model":"fleet-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#)

    static func answer(_ stream: MuxStream) async {
        defer { stream.close() }
        var reader = LineReader(stream: stream)
        guard let line = try? await reader.next(), let request = try? TunnelRequest.decode(line: line) else { return }
        var out = ByteBuffer()
        TunnelResponse(requestID: request.requestID, statusCode: 200, headers: ["Content-Type": "application/json"]).writeLine(into: &out)
        TunnelResponse(requestID: request.requestID, bodyChunk: answerBody).writeLine(into: &out)
        TunnelResponse(requestID: request.requestID, eof: true).writeLine(into: &out)
        try? await stream.write(out)
    }
}

/// NDJSON lines from a mux stream.
struct LineReader: Sendable {
    let stream: MuxStream
    var framer = NDJSONLineFramer(maxLineLength: TunnelProtocol.maxRequestLineLength)

    init(stream: MuxStream) { self.stream = stream }

    mutating func next() async throws -> ByteBuffer? {
        while true {
            if let line = try framer.nextLine() { return line }
            guard let chunk = try await stream.read() else { return framer.finish() }
            try framer.append(chunk)
        }
    }
}
