import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing
import TokiMux

@testable import TokiTunnel

/// `MuxChannelHandler`, the server end of a tunnel as one NIO handler, on an `EmbeddedChannel`:
/// WebSocket frames in and out, no socket, no task of its own.
@Suite("mux channel handler")
struct MuxChannelHandlerTests {
    /// Counts the reads the handler lets through to the socket.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    struct Link {
        let channel: EmbeddedChannel
        let session: MuxSession
        let handler: MuxChannelHandler
        let counter: ReadCounter
        let activity: LinkActivity

        init(features: TunnelFeatures = .original, configure: (inout SmuxConfiguration) -> Void = { _ in }) throws {
            var configuration = SmuxConfiguration.tokilake
            configuration.version = features.smuxVersion
            configure(&configuration)
            channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            counter = ReadCounter()
            try channel.pipeline.syncOperations.addHandler(counter)
            session = try MuxSession(role: .server, configuration: configuration)
            activity = LinkActivity()
            handler = MuxChannelHandler(session: session, features: features, limits: TunnelLimits(), activity: activity,
                                        eventLoop: channel.eventLoop, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
            try channel.pipeline.syncOperations.addHandler(handler)
        }

        /// A client frame: masked, as RFC 6455 requires of clients.
        func send(_ bytes: ByteBuffer, opcode: WebSocketOpcode = .binary, fin: Bool = true) throws {
            let key: WebSocketMaskingKey = [9, 8, 7, 6]
            var masked = bytes
            masked.webSocketMask(key)
            try channel.writeInbound(WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: masked))
        }

        func sendFrames(_ frames: [SmuxFrame]) throws {
            var bytes = ByteBuffer()
            for frame in frames { bytes.writeSmuxFrame(frame) }
            try send(bytes)
        }

        /// Everything the handler wrote, after running what the session scheduled.
        func written() throws -> [WebSocketFrame] {
            channel.embeddedEventLoop.run()
            var frames: [WebSocketFrame] = []
            while let frame = try channel.readOutbound(as: WebSocketFrame.self) { frames.append(frame) }
            return frames
        }

        /// The smux frames in the binary messages written so far.
        func writtenSmux(version: UInt8 = 1) throws -> [SmuxFrame] {
            var decoder = SmuxFrameDecoder(version: version)
            var out: [SmuxFrame] = []
            for frame in try written() where frame.opcode == .binary {
                var data = frame.data
                while let smux = try decoder.decode(buffer: &data) { out.append(smux) }
                #expect(data.readableBytes == 0, "a batch holds whole smux frames")
            }
            return out
        }
    }

    static func psh(_ id: UInt32, _ text: String, version: UInt8 = 1) -> SmuxFrame {
        SmuxFrame(version: version, command: .psh, streamID: id, payload: ByteBuffer(string: text))
    }

    @Test("masked binary frames reach the session as smux frames; the stream's data reads back")
    func inbound() async throws {
        let link = try Link()
        try link.sendFrames([SmuxFrame(version: 1, command: .syn, streamID: 3), Self.psh(3, "hello")])
        let stream = try await link.session.accept()
        #expect(stream.id == 3)
        let chunk = try #require(try await stream.read())
        #expect(String(buffer: chunk) == "hello")
        // A message may end mid-frame: the rest arrives in the next one.
        var bytes = ByteBuffer()
        bytes.writeSmuxFrame(Self.psh(3, "split across messages"))
        try link.send(bytes.readSlice(length: 11)!)
        try link.send(bytes)
        #expect(String(buffer: try #require(try await stream.read())) == "split across messages")
        _ = try link.channel.finish()
    }

    @Test("frames the session queues go out as one binary message per batch")
    func outbound() async throws {
        let link = try Link()
        let stream = try link.session.openStream()
        try await stream.write(ByteBuffer(string: "one"))
        try await stream.write(ByteBuffer(string: "two"))
        let frames = try link.writtenSmux()
        #expect(frames.map(\.command) == [.syn, .psh, .psh])
        #expect(frames.filter { $0.command == .psh }.map { String(buffer: $0.payload) } == ["one", "two"])
        #expect(try link.written().isEmpty, "nothing more")
        _ = try link.channel.finish()
    }

    @Test("with LZ4 negotiated, each direction is one LZ4 stream of whole batches")
    func lz4() async throws {
        let link = try Link(features: TunnelFeatures(lz4: true))
        var encoder = LZ4LinkEncoder(maxMessageSize: LZ4Link.maxMessageSize(forBatchSize: 1 << 20))
        var plain = ByteBuffer()
        plain.writeSmuxFrame(SmuxFrame(version: 1, command: .syn, streamID: 3))
        plain.writeSmuxFrame(Self.psh(3, String(repeating: "compressible ", count: 200)))
        try link.send(encoder.encode(plain, allocator: ByteBufferAllocator()))
        let stream = try await link.session.accept()
        #expect(String(buffer: try #require(try await stream.read())) == String(repeating: "compressible ", count: 200))

        try await stream.write(ByteBuffer(string: String(repeating: "answer ", count: 300)))
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
        var payload = ""
        for frame in try link.written() {
            var bytes = try decoder.decode(frame.data, allocator: ByteBufferAllocator())
            var smux = SmuxFrameDecoder(version: 1)
            while let decoded = try smux.decode(buffer: &bytes) {
                if decoded.command == .psh { payload += String(buffer: decoded.payload) }
            }
        }
        #expect(payload == String(repeating: "answer ", count: 300))
        _ = try link.channel.finish()
    }

    @Test("pings are answered with their data; every frame, pongs included, counts as activity")
    func pingPong() throws {
        let link = try Link()
        let before = link.activity.lastReceived
        try link.send(ByteBuffer(string: "are you there"), opcode: .ping)
        let answers = try link.written()
        #expect(answers.count == 1)
        #expect(answers.first?.opcode == .pong)
        #expect(answers.first.map { String(buffer: $0.data) } == "are you there")
        #expect(link.activity.lastReceived >= before)
        let afterPing = link.activity.lastReceived
        try link.send(ByteBuffer(), opcode: .pong)
        #expect(link.activity.lastReceived >= afterPing)
        #expect(try link.written().isEmpty, "a pong is not answered")

        link.handler.ping()
        let probe = try link.written()
        #expect(probe.map(\.opcode) == [.ping])
        _ = try link.channel.finish()
    }

    @Test("the peer's close frame is answered with its code, the connection closes and the session ends")
    func peerCloses() async throws {
        let link = try Link()
        var code = ByteBuffer()
        code.write(webSocketErrorCode: .goingAway)
        try link.send(code, opcode: .connectionClose)
        let frames = try link.written()
        #expect(frames.map(\.opcode) == [.connectionClose])
        var answer = try #require(frames.first).data
        #expect(answer.readWebSocketErrorCode() == .goingAway)
        #expect(!link.channel.isActive)
        #expect(link.session.closedError == .transportEnded)
    }

    @Test("closing the session sends a normal close frame after what was queued, then closes the connection")
    func sessionCloses() async throws {
        let link = try Link()
        let stream = try link.session.openStream()
        try await stream.write(ByteBuffer(string: "last words"))
        var frames = try link.written()  // the event loop hands the queued frames to the channel
        await link.session.flush()  // so this returns at once
        link.session.close()
        frames += try link.written()
        #expect(frames.map(\.opcode) == [.binary, .connectionClose])
        var code = try #require(frames.last).data
        #expect(code.readWebSocketErrorCode() == .normalClosure)
        #expect(!link.channel.isActive)
    }

    @Test("a malformed message (continuation without a start) ends the link with a protocol error")
    func malformed() throws {
        let link = try Link()
        try link.send(ByteBuffer(string: "x"), opcode: .continuation)
        let frames = try link.written()
        var code = try #require(frames.last).data
        #expect(frames.last?.opcode == .connectionClose)
        #expect(code.readWebSocketErrorCode() == .protocolError)
        #expect(link.session.closedError == .transportEnded)
    }

    @Test("a peer that breaks smux ends the session and the link")
    func smuxViolation() throws {
        let link = try Link()
        try link.send(ByteBuffer(bytes: [9, 9, 9, 9, 9, 9, 9, 9]))  // version 9
        #expect(link.session.closedError.map { if case .protocolViolation = $0 { true } else { false } } == true)
        #expect(try link.written().last?.opcode == .connectionClose)
    }

    @Test("over the receive budget reads stop reaching the socket, and resume once the application reads")
    func readBackPressure() async throws {
        let link = try Link { $0.maxReceiveBuffer = 1000; $0.maxStreamBuffer = 1000 }
        try link.sendFrames([SmuxFrame(version: 1, command: .syn, streamID: 3), Self.psh(3, String(repeating: "a", count: 1500))])
        let stream = try await link.session.accept()
        let before = link.counter.reads
        link.channel.read()
        #expect(link.counter.reads == before, "paused: the read is held back")
        _ = try await stream.read()
        link.channel.embeddedEventLoop.run()
        #expect(link.counter.reads == before + 1, "the held read goes through once there is room")
        link.channel.read()
        #expect(link.counter.reads == before + 2)
        _ = try link.channel.finish()
    }

    @Test("while the channel is not writable frames stay queued in the session; they go once it is")
    func writeBackPressure() async throws {
        let link = try Link()
        link.channel.isWritable = false
        let stream = try link.session.openStream()
        try await stream.write(ByteBuffer(string: "waiting"))
        #expect(try link.written().isEmpty)
        #expect(link.session.isSending)
        link.channel.isWritable = true
        link.channel.pipeline.fireChannelWritabilityChanged()
        let frames = try link.writtenSmux()
        #expect(frames.map(\.command) == [.syn, .psh])
        #expect(!link.session.isSending)
        _ = try link.channel.finish()
    }

    @Test("a peer that hangs up (end of input on a half-closable channel) ends the session and the connection")
    func inputClosed() throws {
        let link = try Link()
        link.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(link.session.closedError == .transportEnded)
        #expect(!link.channel.isActive)
    }

    @Test("the connection going away ends the session: pending reads fail, never a clean end")
    func transportGone() async throws {
        let link = try Link()
        try link.sendFrames([SmuxFrame(version: 1, command: .syn, streamID: 3)])
        let stream = try await link.session.accept()
        let reading = Task { try await stream.read() }
        try await Task.sleep(for: .milliseconds(20))
        link.channel.pipeline.fireChannelInactive()
        await #expect(throws: MuxError.transportEnded) { _ = try await reading.value }
    }
}
