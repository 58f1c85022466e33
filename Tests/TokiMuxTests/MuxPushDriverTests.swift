import NIOCore
import Testing

@testable import TokiMux

/// A session driven without `run`: bytes pushed in with `receive`, batches taken out with
/// `takeOutbound` (what `MuxChannelHandler` does on an event loop), and `tryWrite`.
@Suite("smux session: push driver and tryWrite")
struct MuxPushDriverTests {
    static func frames(_ batches: [ByteBuffer], version: UInt8 = 1) throws -> [SmuxFrame] {
        var decoder = SmuxFrameDecoder(version: version)
        var out: [SmuxFrame] = []
        for var batch in batches {
            while let frame = try decoder.decode(buffer: &batch) { out.append(frame) }
        }
        return out
    }

    static func drain(_ session: MuxSession) -> [ByteBuffer] {
        var batches: [ByteBuffer] = []
        while let batch = session.takeOutbound() { batches.append(batch) }
        return batches
    }

    @Test("tryWrite queues a message that fits at once, and nothing otherwise")
    func tryWrite() throws {
        var configuration = SmuxConfiguration()
        configuration.maxOutboundQueue = 100
        let session = try MuxSession(role: .client, configuration: configuration)
        let stream = try session.openStream()
        #expect(!stream.tryWrite(ByteBuffer(repeating: 1, count: configuration.maxFrameSize + 1)), "more than one frame")
        #expect(stream.tryWrite(ByteBuffer(repeating: 2, count: 100)))
        #expect(!stream.tryWrite(ByteBuffer(repeating: 3, count: 1)), "the outbound queue is full")
        let sent = try Self.frames(Self.drain(session))
        #expect(sent.map(\.command) == [.syn, .psh])
        #expect(sent.last?.payload == ByteBuffer(repeating: 2, count: 100))
        #expect(stream.tryWrite(ByteBuffer(repeating: 4, count: 1)), "room again once the batch was taken")
        stream.closeWrite()
        #expect(!stream.tryWrite(ByteBuffer(repeating: 5, count: 1)), "after FIN")
        session.close()
        #expect(!stream.tryWrite(ByteBuffer(repeating: 6, count: 1)), "after the session ended")
    }

    @Test("v2: tryWrite needs the whole message inside the peer's window")
    func window() throws {
        var configuration = SmuxConfiguration()
        configuration.version = 2
        configuration.initialPeerWindow = 10
        let session = try MuxSession(role: .client, configuration: configuration)
        let stream = try session.openStream()
        #expect(!stream.tryWrite(ByteBuffer(repeating: 1, count: 11)))
        #expect(stream.tryWrite(ByteBuffer(repeating: 1, count: 10)))
        #expect(!stream.tryWrite(ByteBuffer(repeating: 1, count: 1)), "window used up")
    }

    @Test("receive feeds frames split anywhere; false (pause) over the budget until the application reads")
    func receive() async throws {
        var configuration = SmuxConfiguration()
        configuration.maxReceiveBuffer = 100
        configuration.maxStreamBuffer = 100
        let session = try MuxSession(role: .server, configuration: configuration)
        var bytes = ByteBuffer()
        bytes.writeSmuxFrame(SmuxFrame(version: 1, command: .syn, streamID: 3))
        bytes.writeSmuxFrame(SmuxFrame(version: 1, command: .psh, streamID: 3, payload: ByteBuffer(repeating: 7, count: 150)))
        #expect(session.receive(bytes.readSlice(length: 13)!), "under the budget: go on")
        #expect(!session.receive(bytes), "150 unread bytes > 100: pause")
        let stream = try await session.accept()
        let chunk = try #require(try await stream.read())
        #expect(chunk.readableBytes == 150)
        #expect(session.receive(ByteBuffer()), "read: room again")
    }

    @Test("a protocol violation pushed in ends the session")
    func violation() throws {
        let session = try MuxSession(role: .server)
        #expect(!session.receive(ByteBuffer(bytes: [7, 0, 0, 0, 0, 0, 0, 0])))
        guard case .protocolViolation? = session.closedError else {
            Issue.record("expected a protocol violation, got \(String(describing: session.closedError))")
            return
        }
    }
}

@Suite("smux session: refusing streams")
struct MuxRefuseStreamsTests {
    @Test("after refuseIncomingStreams, streams the peer opens are closed at once (FIN) and take no budget")
    func refuse() async throws {
        var configuration = SmuxConfiguration()
        configuration.acceptBacklog = 2
        let session = try MuxSession(role: .server, configuration: configuration)
        var first = ByteBuffer()
        first.writeSmuxFrame(SmuxFrame(version: 1, command: .syn, streamID: 3))
        #expect(session.receive(first))
        let control = try await session.accept()
        #expect(control.id == 3)
        session.refuseIncomingStreams()
        var strays = ByteBuffer()
        for id in stride(from: UInt32(5), through: 21, by: 2) {
            strays.writeSmuxFrame(SmuxFrame(version: 1, command: .syn, streamID: id))
            strays.writeSmuxFrame(SmuxFrame(version: 1, command: .psh, streamID: id, payload: ByteBuffer(string: "stray")))
        }
        #expect(session.receive(strays), "nine strays never fill a backlog of two")
        let sent = try MuxPushDriverTests.frames(MuxPushDriverTests.drain(session))
        #expect(Set(sent.filter { $0.command == .fin }.map(\.streamID)) == Set(stride(from: UInt32(5), through: 21, by: 2)))
        #expect(session.state.withLock { $0.machine.openStreamCount } == 1, "only the control stream is left")
        #expect(control.tryWrite(ByteBuffer(string: "still works")))
    }
}
