// A scripted malicious worker: dials a real `toki hub` like a worker (WebSocket, smux v1,
// register/models_sync on the first stream, heartbeats), then answers the hub's request streams
// with whatever a test scripts, including lines and bytes a well-behaved worker never sends.
// It records what the hub sends back: control messages (cancel_request, acks, errors) and the
// hub closing data streams.

import Foundation
import Logging
import NIOCore
import NIOWebSocket
import TestSupport
import TokiMux
@testable import TokiTunnel  // the tunnel's WebSocket channel, to write bytes past the mux and LZ4
import TokiProtocol

/// One request the hub sent to a hostile worker, with the tools to answer it.
final class HostileCall: Sendable {
    let request: TunnelRequest
    let stream: MuxStream
    /// Set when the hub closed (FIN) this stream; smux v1 has no RST, FIN is all a hub can send.
    let hubClosed = Locked(false)

    init(request: TunnelRequest, stream: MuxStream) {
        self.request = request
        self.stream = stream
    }

    var id: String { request.requestID }

    /// Bytes on the stream exactly as given.
    func write(_ bytes: ByteBuffer) async throws { try await stream.write(bytes) }
    func write(_ text: String) async throws { try await write(ByteBuffer(string: text)) }

    /// A response line built from the real message type: only the values are hostile.
    func send(_ response: TunnelResponse) async throws { try await stream.write(response.encodedLine()) }

    func head(_ status: Int, headers: [String: String] = ["Content-Type": "application/json"], chunk: String? = nil, eof: Bool? = nil) async throws {
        try await send(TunnelResponse(requestID: id, statusCode: status, headers: headers, bodyChunk: chunk.map { ByteBuffer(string: $0) }, eof: eof))
    }

    func chunk(_ text: String) async throws { try await chunk(ByteBuffer(string: text)) }
    func chunk(_ bytes: ByteBuffer) async throws { try await send(TunnelResponse(requestID: id, bodyChunk: bytes)) }
    func eof() async throws { try await send(TunnelResponse(requestID: id, eof: true)) }

    /// FIN on the data stream (the worker's side only).
    func finish() { stream.closeWrite() }

    /// Waits until the hub has closed this stream.
    func waitForHubClose(timeout: Duration = .seconds(30)) async throws {
        try await poll("the hub to close stream \(id)", timeout: timeout) { hubClosed.value }
    }
}

/// What a hostile worker does with each request the hub sends it.
typealias HostileScript = @Sendable (HostileCall) async throws -> Void

final class HostileWorker: Sendable {
    let namespace: String
    let session: MuxSession
    let control: MuxStream
    /// Whether the hub selected `toki-lz4`.
    let lz4: Bool
    /// Every control message the hub sent, in order.
    let controlReceived = Locked<[ControlMessage]>([])
    /// Every request the hub sent, in order.
    let calls = Locked<[HostileCall]>([])
    /// Why the tunnel ended (nil while it runs).
    let ended = Locked<String?>(nil)
    private let script: HostileScript
    private let link = Locked<Link?>(nil)
    private let tasks = Locked<[Task<Void, Never>]>([])

    /// The session's two ways out: through the mux writer, or one WebSocket message as is.
    private struct Link: Sendable {
        let mux: ClientTunnelOutbound
        let messages: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    }

    private init(namespace: String, session: MuxSession, control: MuxStream, lz4: Bool, script: @escaping HostileScript) {
        self.namespace = namespace
        self.session = session
        self.control = control
        self.lz4 = lz4
        self.script = script
    }

    /// A well-behaved answer: 200, `{"served_by":"<namespace>"}`, eof.
    static func polite(_ namespace: String) -> HostileScript {
        { call in try await call.head(200, chunk: #"{"served_by":"\#(namespace)"}"#, eof: true) }
    }

    /// Dials the hub and opens the control stream; nothing registered yet. `smux2`: offer smux
    /// v2 (as toki workers do; the Go Tokiame speaks v1). `acceptStreams: false`: never accept
    /// the hub's request streams, so their bytes pile up unread in the session.
    static func dial(_ hub: HubProcess, token: String, namespace: String, offerLZ4: Bool = false, smux2: Bool = false,
                     acceptStreams: Bool = true, script: @escaping HostileScript = { _ in }) async throws -> HostileWorker {
        var options = TunnelDialOptions(url: hub.tunnelURL)
        options.headers = [("Authorization", "Bearer \(token)")]
        options.offerLZ4 = offerLZ4
        options.offerSmux2 = smux2
        var logger = Logger(label: "hostile-worker")
        logger.logLevel = .critical
        let tunnel = try await ClientTunnel.connect(options, logger: logger)
        var configuration = SmuxConfiguration.tokilake
        configuration.version = UInt8(tunnel.features.smuxVersion)
        let session = try MuxSession(role: .client, configuration: configuration, logger: logger)
        let control = try session.openStream()
        let worker = HostileWorker(namespace: namespace, session: session, control: control, lz4: tunnel.lz4, script: script)
        worker.spawn {
            do {
                try await tunnel.channel.executeThenClose { inbound, outbound in
                    let input = ClientTunnelInbound(base: inbound, outbound: outbound, reader: TunnelFrameReader(lz4: tunnel.lz4, limits: tunnel.limits))
                    let output = ClientTunnelOutbound(outbound, lz4: tunnel.lz4, limits: tunnel.limits)
                    worker.link.withLock { $0 = Link(mux: output, messages: outbound) }
                    try await session.run(inbound: input, outbound: output)
                }
                worker.ended.withLock { $0 = $0 ?? "closed by the test" }
            } catch {
                worker.ended.withLock { $0 = $0 ?? "\(error)" }
            }
            session.close()  // the streams' waiters fail at once instead of hanging
        }
        worker.spawn { await worker.readControl() }
        if acceptStreams { worker.spawn { await worker.acceptRequests() } }
        try await poll("the tunnel to start", timeout: .seconds(10)) { worker.link.value != nil || worker.ended.value != nil }
        return worker
    }

    /// Dials, registers `models` and starts heartbeats: a worker the hub routes to.
    static func connect(_ hub: HubProcess, token: String, namespace: String, models: [String], offerLZ4: Bool = false,
                        smux2: Bool = false, acceptStreams: Bool = true, script: @escaping HostileScript) async throws -> HostileWorker {
        let worker = try await dial(hub, token: token, namespace: namespace, offerLZ4: offerLZ4, smux2: smux2,
                                    acceptStreams: acceptStreams, script: script)
        let reply = try await worker.register(models: models)
        guard reply.type == .ack else { throw ChildProcessError("register refused: \(reply)") }
        worker.spawn {
            // Tokilake's deadline is 45 s without a message; a few tests run longer than that.
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(10))
                try? await worker.sendControl(.heartbeat(requestID: "heartbeat-\(UUID())", HeartbeatPayload(status: WorkerStatus.online)))
            }
        }
        return worker
    }

    /// register, then (if acked) models_sync, as a real worker does. Returns the hub's reply to
    /// the register (an ack, or the error line that refused it).
    @discardableResult
    func register(models: [String]) async throws -> ControlMessage {
        let registerID = "register-\(UUID())"
        try await sendControl(.register(requestID: registerID, RegisterPayload(namespace: namespace, nodeName: namespace, models: models)))
        let reply = try await reply(to: registerID)
        guard reply.type == .ack else { return reply }
        let syncID = "models-\(UUID())"
        try await sendControl(.modelsSync(requestID: syncID, ModelsSyncPayload(models: models)))
        let synced = try await self.reply(to: syncID)
        guard synced.type == .ack else { throw ChildProcessError("models_sync refused: \(synced)") }
        return reply
    }

    func sendControl(_ message: ControlMessage) async throws {
        try await control.write(message.encodedLine())
    }

    /// The hub's reply (ack or error) to the control message `requestID`.
    func reply(to requestID: String, timeout: Duration = .seconds(15)) async throws -> ControlMessage {
        var found: ControlMessage?
        try await poll("a reply to \(requestID)", timeout: timeout) {
            found = controlReceived.value.first { $0.requestID == requestID && ($0.type == .ack || $0.type == .error) }
            return found != nil
        }
        return found!
    }

    /// Waits for the hub's `cancel_request` naming `requestID`.
    func waitForCancel(of requestID: String, timeout: Duration = .seconds(30)) async throws {
        try await poll("cancel_request for \(requestID)", timeout: timeout) {
            controlReceived.value.contains { $0.type == .cancelRequest && $0.cancelRequest?.targetRequestID == requestID }
        }
    }

    /// Waits until the hub has sent `count` requests in all.
    func waitForCalls(_ count: Int, timeout: Duration = .seconds(30)) async throws -> [HostileCall] {
        try await poll("\(count) request(s) to reach \(namespace)", timeout: timeout) { calls.value.count >= count }
        return calls.value
    }

    /// Waits until the tunnel has ended (e.g. the hub closed the session).
    func waitUntilClosed(timeout: Duration = .seconds(30)) async throws {
        try await poll("the hub to close \(namespace)'s session", timeout: timeout) { ended.value != nil || session.closedError != nil }
    }

    /// Bytes into the mux byte stream, between the session's own batches (LZ4-framed if negotiated).
    func sendRawMux(_ bytes: ByteBuffer) async throws {
        guard let link = link.value else { throw ChildProcessError("the tunnel is not running") }
        try await link.mux.write(bytes)
    }

    /// One binary WebSocket message exactly as given: past the mux and past LZ4.
    func sendRawMessage(_ payload: ByteBuffer) async throws {
        guard let link = link.value else { throw ChildProcessError("the tunnel is not running") }
        try await link.messages.write(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: payload))
    }

    /// An smux frame with any header values (the payload length field is `length ?? payload size`).
    static func rawFrame(version: UInt8 = 1, command: UInt8, streamID: UInt32, length: Int? = nil, payload: [UInt8] = []) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(version)
        buffer.writeInteger(command)
        buffer.writeInteger(UInt16(length ?? payload.count), endianness: .little)
        buffer.writeInteger(streamID, endianness: .little)
        buffer.writeBytes(payload)
        return buffer
    }

    func stop() async {
        session.close()
        let running = tasks.withLock { tasks in defer { tasks = [] }; return tasks }
        for task in running { task.cancel() }
        for task in running { await task.value }
    }

    // MARK: Internals

    private func spawn(_ body: @escaping @Sendable () async -> Void) {
        let task = Task { await body() }
        tasks.withLock { $0.append(task) }
    }

    private func readControl() async {
        var framer = NDJSONLineFramer(maxLineLength: TunnelProtocol.maxControlLineLength)
        do {
            while true {
                if let line = try framer.nextLine() {
                    if let message = try? ControlMessage.decode(line: line) { controlReceived.withLock { $0.append(message) } }
                    continue
                }
                guard let chunk = try await control.read() else { return }
                try framer.append(chunk)
            }
        } catch {}
    }

    private func acceptRequests() async {
        while let stream = try? await session.accept() {
            spawn { await self.serve(stream) }
        }
    }

    /// Reads the request line, records the call, then runs the script while watching for the
    /// hub's FIN.
    private func serve(_ stream: MuxStream) async {
        // A request body may be 32 MiB, a third more in base64.
        var framer = NDJSONLineFramer(maxLineLength: 64 << 20)
        var requestLine: ByteBuffer?
        do {
            while requestLine == nil {
                if let line = try framer.nextLine() { requestLine = line; break }
                guard let chunk = try await stream.read() else { return }
                try framer.append(chunk)
            }
        } catch { return }
        guard let line = requestLine, let request = try? TunnelRequest.decode(line: line) else { return }
        let call = HostileCall(request: request, stream: stream)
        calls.withLock { $0.append(call) }
        let script = self.script
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // The hub writes nothing after its request line: reads end with its FIN (nil);
                // a session that ends makes them throw instead.
                do {
                    while try await stream.read() != nil {}
                    call.hubClosed.withLock { $0 = true }
                } catch {}
            }
            group.addTask { try? await script(call) }
        }
    }
}

/// Polls `condition` every 20 ms; throws after `timeout` naming `what`.
func poll(_ what: String, timeout: Duration, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw ChildProcessError("timed out after \(timeout) waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}
