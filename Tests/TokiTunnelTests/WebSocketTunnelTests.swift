import Logging
import NIOCore
import Synchronization
import TestSupport
import Testing
import TokiMux
import TokiProbe

@testable import TokiTunnel
import TokiProtocol

/// A TunnelListener on a free loopback port whose sessions serve the probe protocol.
struct RunningListener {
    let port: Int
    let task: Task<Void, any Error>
    let sessions: Locked<[MuxSession]>
    let lz4Seen: Locked<[Bool]>

    static func start(version: UInt8 = 1, allowLZ4: Bool = true, token: String? = nil,
                      openOnConnect: Int = 0, openResults: Locked<[String]>? = nil) async throws -> RunningListener {
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let sessions = Locked<[MuxSession]>([])
        let lz4Seen = Locked<[Bool]>([])
        var listener = TunnelListener()
        listener.mux.version = version
        listener.allowLZ4 = allowLZ4
        if let token { listener.authorize = { $0 == token } }
        listener.logger.logLevel = .critical  // Hummingbird reports cancelled child channels as errors
        let task = Task {
            try await listener.run(onRunning: { portContinuation.yield($0) }) { session, lz4 in
                sessions.withLock { $0.append(session) }
                lz4Seen.withLock { $0.append(lz4) }
                if openOnConnect > 0 {
                    // Open streams the moment the tunnel is up: their first bytes may arrive in
                    // the same TCP read as the 101 response on the client side.
                    async let opened: Void = {
                        do {
                            try await StreamProbe.run(session, streams: openOnConnect, length: 40_000, mode: .sink)
                            openResults?.withLock { $0.append("ok") }
                        } catch {
                            openResults?.withLock { $0.append("\(error)") }
                        }
                    }()
                    await StreamProbe.serve(session)
                    await opened
                } else {
                    await StreamProbe.serve(session)
                }
            }
        }
        var iterator = portStream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ChildProcessError("listener did not start") }
        return RunningListener(port: port, task: task, sessions: sessions, lz4Seen: lz4Seen)
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// A dialled client session running in the background.
struct RunningClient {
    let tunnel: ClientTunnel
    let session: MuxSession
    let task: Task<Void, any Error>

    static func dial(_ url: String, version: UInt8 = 1, lz4: Bool = false, token: String = "test") async throws -> RunningClient {
        var options = TunnelDialOptions(url: url)
        options.offerLZ4 = lz4
        options.headers = [("Authorization", "Bearer \(token)")]
        let tunnel = try await ClientTunnel.connect(options, logger: Logger(label: "test"))
        var config = SmuxConfiguration()
        config.version = version
        let session = try MuxSession(role: .client, configuration: config)
        let task = Task { try await tunnel.run(session) }
        return RunningClient(tunnel: tunnel, session: session, task: task)
    }

    func stop() async {
        session.close()
        _ = await task.result
    }
}

@Suite("tunnel over real WebSockets (Swift ↔ Swift)")
struct WebSocketTunnelTests {
    @Test("echo and sink through the tunnel", arguments: [(UInt8(1), false, 16), (1, true, 16), (2, false, 16), (2, true, 64), (1, false, 256)])
    func probe(version: UInt8, lz4: Bool, streams: Int) async throws {
        let listener = try await RunningListener.start(version: version)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect", version: version, lz4: lz4)
        #expect(client.tunnel.lz4 == lz4)
        try await StreamProbe.run(client.session, streams: streams, length: 200_000, mode: .echo)
        try await StreamProbe.run(client.session, streams: streams / 4, length: 300_000, mode: .sink)
        #expect(listener.lz4Seen.withLock { $0 } == [lz4])
        await client.stop()
        await listener.stop()
    }

    @Test("the hub can open streams to the worker too")
    func serverOpens() async throws {
        let listener = try await RunningListener.start()
        let client = try await RunningClient.dial("http://127.0.0.1:\(listener.port)/connect")
        let serving = Task { await StreamProbe.serve(client.session) }
        var serverSession: MuxSession?
        while serverSession == nil {
            serverSession = listener.sessions.withLock { $0.first }
            try await Task.sleep(for: .milliseconds(5))
        }
        try await StreamProbe.run(serverSession!, streams: 8, length: 100_000, mode: .echo)
        await client.stop()
        serving.cancel()
        await listener.stop()
    }

    @Test("streams opened by the server right after the upgrade arrive intact", .serialized, arguments: 0..<5)
    func openOnConnect(round: Int) async throws {
        let results = Locked<[String]>([])
        let listener = try await RunningListener.start(openOnConnect: 16, openResults: results)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect")
        let serving = Task { await StreamProbe.serve(client.session) }
        try await StreamProbe.run(client.session, streams: 16, length: 40_000, mode: .echo)
        let deadline = ContinuousClock.now + .seconds(30)
        while results.value.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(results.value == ["ok"], "client session: \(client.session.diagnostics)")
        serving.cancel()
        await client.stop()
        await listener.stop()
    }

    @Test("a wrong token is refused before the upgrade")
    func refusedToken() async throws {
        let listener = try await RunningListener.start(token: "right")
        await #expect(throws: TunnelDialError.self) {
            _ = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect", token: "wrong")
        }
        let client = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect?x=1", token: "right")
        try await StreamProbe.run(client.session, streams: 1, length: 10, mode: .echo)
        await client.stop()
        await listener.stop()
    }

    @Test("a hub that does not allow LZ4 gets plain bytes")
    func lz4Declined() async throws {
        let listener = try await RunningListener.start(allowLZ4: false)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect", lz4: true)
        #expect(client.tunnel.lz4 == false)
        try await StreamProbe.run(client.session, streams: 4, length: 50_000, mode: .echo)
        await client.stop()
        await listener.stop()
    }

    @Test("a peer vanishing mid-stream fails the stream, not silently")
    func peerVanishes() async throws {
        let listener = try await RunningListener.start()
        let client = try await RunningClient.dial("ws://127.0.0.1:\(listener.port)/api/tokilake/connect")
        let stream = try client.session.openStream()
        var header = ByteBuffer()
        header.writeInteger(UInt8(0x45))
        header.writeInteger(UInt64(1 << 30), endianness: .big)
        try await stream.write(header)
        try await stream.write(ByteBuffer(repeating: 0, count: 1000))
        await listener.stop()  // the server goes away with the stream open
        await #expect(throws: MuxError.self) {
            while try await stream.read() != nil {}
        }
        await client.stop()
    }

    @Test("URL normalisation and token extraction follow the Go worker and hub")
    func normalisation() throws {
        #expect(try TunnelDialOptions.normalize("http://h:8080/api/tokilake/connect").url == "ws://h:8080/api/tokilake/connect")
        #expect(try TunnelDialOptions.normalize("https://h/api/tokilake/connect?a=b").url == "wss://h:443/api/tokilake/connect?a=b")
        #expect(throws: TunnelDialError.self) { try TunnelDialOptions.normalize("ftp://h/x") }
        #expect(throws: TunnelDialError.self) { try TunnelDialOptions.normalize("not a url") }
        #expect(TunnelEndpoint.presentedToken(headers: [.authorization: "BEARER sk-abc"], query: nil) == "sk-abc")
        #expect(TunnelEndpoint.presentedToken(headers: [.authorization: "raw"], query: "token=q") == "raw")
        #expect(TunnelEndpoint.presentedToken(headers: [:], query: "token=t&access_token=a") == "a")
        #expect(TunnelEndpoint.presentedToken(headers: [:], query: "token=t") == "t")
        #expect(TunnelEndpoint.presentedToken(headers: [:], query: nil) == nil)
        #expect(TunnelSubprotocol.select(offered: ["tokilake.v1", "toki-lz4"], allowLZ4: true) == "toki-lz4")
        #expect(TunnelSubprotocol.select(offered: ["tokilake.v1", "toki-lz4"], allowLZ4: false) == "tokilake.v1")
        #expect(TunnelSubprotocol.select(offered: [], allowLZ4: true) == nil)
    }

    @Test("frame reader: text skipped, continuations joined, boundaries ignored")
    func frameReader() throws {
        var plain = TunnelFrameReader(lz4: false)
        #expect(try plain.receive(opcode: .text, fin: false, data: ByteBuffer(string: "hi")) == nil)
        #expect(try plain.receive(opcode: .continuation, fin: true, data: ByteBuffer(string: "there")) == nil)
        #expect(try plain.receive(opcode: .binary, fin: false, data: ByteBuffer(string: "ab")) == ByteBuffer(string: "ab"))
        #expect(try plain.receive(opcode: .continuation, fin: false, data: ByteBuffer()) == nil)
        #expect(try plain.receive(opcode: .continuation, fin: true, data: ByteBuffer(string: "c")) == ByteBuffer(string: "c"))
        #expect(throws: TunnelTransportError.unexpectedContinuation) {
            try plain.receive(opcode: .continuation, fin: true, data: ByteBuffer(string: "x"))
        }

        var writer = TunnelMessageWriter(lz4: true)
        var reader = TunnelFrameReader(lz4: true)
        let text = ByteBuffer(string: String(repeating: "data: {\"delta\":\"hello\"}\n\n", count: 50))
        let message = writer.message(for: text)
        #expect(message.readableBytes < text.readableBytes / 4)
        // Split the compressed message across three WebSocket frames.
        var rest = message
        let a = rest.readSlice(length: 3)!
        let b = rest.readSlice(length: 5)!
        #expect(try reader.receive(opcode: .binary, fin: false, data: a) == nil)
        #expect(try reader.receive(opcode: .continuation, fin: false, data: b) == nil)
        #expect(try reader.receive(opcode: .continuation, fin: true, data: rest) == text)

        var limited = TunnelFrameReader(lz4: true, limits: { var l = TunnelLimits(); l.maxMessageSize = 10; return l }())
        _ = try limited.receive(opcode: .binary, fin: false, data: ByteBuffer(repeating: 1, count: 8))
        #expect(throws: TunnelTransportError.messageTooLarge(limit: 10)) {
            try limited.receive(opcode: .continuation, fin: true, data: ByteBuffer(repeating: 1, count: 8))
        }
    }
}

@Suite("interop with the Go reference (xtaci/smux + gorilla/websocket)", .serialized)
struct GoInteropTests {
    static func goServer(version: UInt8, open: Int = 0, bytes: Int = 0, openMode: String = "echo") async throws -> (ChildProcess, Int) {
        var args = ["server", "--listen", "127.0.0.1:0", "--smux-version", "\(version)"]
        if open > 0 { args += ["--open", "\(open)", "--bytes", "\(bytes)", "--mode", openMode] }
        let peer = try ChildProcess(try await GoPeer.path(), args, name: "gopeer server")
        let line = try await peer.waitForLine(prefix: "LISTEN ")
        guard let port = line.split(separator: ":").last.flatMap({ Int($0) }) else { throw ChildProcessError("bad line \(line)") }
        return (peer, port)
    }

    @Test("Swift client ↔ Go server", arguments: [(UInt8(1), 1), (1, 16), (1, 256), (2, 1), (2, 16), (2, 256)])
    func swiftClientGoServer(version: UInt8, streams: Int) async throws {
        let (peer, port) = try await Self.goServer(version: version)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(port)/api/tokilake/connect", version: version)
        let length: UInt64 = streams == 256 ? 20_000 : 300_000
        try await StreamProbe.run(client.session, streams: streams, length: length, mode: .echo)
        try await StreamProbe.run(client.session, streams: max(1, streams / 4), length: length, mode: .sink)
        await client.stop()
        await peer.stop()
    }

    @Test("Go client ↔ Swift server", arguments: [(UInt8(1), 1, "echo"), (1, 16, "echo"), (1, 256, "echo"), (2, 16, "echo"), (2, 256, "sink"), (1, 16, "sink")])
    func goClientSwiftServer(version: UInt8, streams: Int, mode: String) async throws {
        let listener = try await RunningListener.start(version: version)
        let bytes = streams == 256 ? 20_000 : 300_000
        let peer = try ChildProcess(try await GoPeer.path(), [
            "client", "--url", "ws://127.0.0.1:\(listener.port)/api/tokilake/connect", "--smux-version", "\(version)",
            "--streams", "\(streams)", "--bytes", "\(bytes)", "--mode", mode,
        ], name: "gopeer client")
        let status = try await peer.waitForExit(timeout: .seconds(120))
        #expect(status == 0, "gopeer: \(peer.stdoutLines) \(peer.stderr.suffix(2000))")
        #expect(peer.stdoutLines.contains { $0.hasPrefix("RESULT ok") })
        await listener.stop()
    }

    @Test("64 MiB on one stream, both directions of dialling", arguments: [UInt8(1), 2])
    func bigStream(version: UInt8) async throws {
        let (peer, port) = try await Self.goServer(version: version)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(port)/api/tokilake/connect", version: version)
        try await StreamProbe.run(client.session, streams: 1, length: 64 << 20, mode: .sink)
        await client.stop()
        await peer.stop()

        let listener = try await RunningListener.start(version: version)
        let goClient = try ChildProcess(try await GoPeer.path(), [
            "client", "--url", "ws://127.0.0.1:\(listener.port)/api/tokilake/connect", "--smux-version", "\(version)",
            "--streams", "1", "--bytes", "\(64 << 20)", "--mode", "echo",
        ], name: "gopeer client")
        #expect(try await goClient.waitForExit(timeout: .seconds(180)) == 0, "\(goClient.stdoutLines) \(goClient.stderr.suffix(2000))")
        await listener.stop()
    }

    @Test("the Go server opens streams the moment the tunnel is up; the Swift client gets every byte", arguments: ["sink", "echo"])
    func goServerOpensAtOnce(mode: String) async throws {
        let (peer, port) = try await Self.goServer(version: 1, open: 16, bytes: 40_000, openMode: mode)
        let client = try await RunningClient.dial("ws://127.0.0.1:\(port)/api/tokilake/connect")
        let serving = Task { await StreamProbe.serve(client.session) }
        let line: String
        do {
            line = try await peer.waitForLine(prefix: "OPENED-", timeout: .seconds(60))
        } catch {
            Issue.record("Go never finished its streams; Swift session: \(client.session.diagnostics)")
            throw error
        }
        #expect(line.hasPrefix("OPENED-OK"), "\(line) \(peer.stderr.suffix(2000))")
        serving.cancel()
        await client.stop()
        await peer.stop()
    }

    /// Kept well under the 4 MiB session budgets: echo handlers on both ends at once can deadlock
    /// smux v1 when more than a budget is in flight each way (a property of v1 itself, seen with
    /// Go on both ends too; see Tests/Interop/README.md).
    @Test("both sides open streams at once (Go client opens 16, Swift server opens 16)")
    func bothOpen() async throws {
        let results = Locked<[String]>([])
        let listener = try await RunningListener.start(openOnConnect: 16, openResults: results)
        let peer = try ChildProcess(try await GoPeer.path(), [
            "client", "--url", "ws://127.0.0.1:\(listener.port)/api/tokilake/connect", "--smux-version", "1",
            "--streams", "16", "--bytes", "40000", "--mode", "echo", "--accept", "--expect-accepted", "16",
        ], name: "gopeer client")
        let status = try await peer.waitForExit(timeout: .seconds(120))
        #expect(status == 0, "gopeer: \(peer.stdoutLines) \(peer.stderr.suffix(2000))")
        #expect(peer.stdoutLines.contains { $0.hasPrefix("RESULT ok") && $0.contains("accepted=16") })
        let deadline = ContinuousClock.now + .seconds(30)
        while results.value.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(results.value == ["ok"])
        await listener.stop()
    }
}
