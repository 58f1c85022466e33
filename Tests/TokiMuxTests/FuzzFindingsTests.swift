import NIOCore
import Testing

@testable import TokiMux

/// Regressions for what the libFuzzer targets (Tests/Fuzz, docs/fuzzing.md) found.
@Suite("fuzz findings (TokiMux)")
struct FuzzFindingsTests {
    /// FuzzSmuxSession, seed v1-peer-uses-our-parity: a peer opened stream 3 (the client's own
    /// parity) and sent data; the client's next openStream() also returned 3, replacing the
    /// peer's stream: its 50 buffered bytes were lost but still counted against the receive
    /// budget, for good (a hostile peer could repeat it until the session stopped reading).
    @Test("openStream skips an id the peer already opened", arguments: [UInt8(1), 2])
    func openStreamSkipsPeerID(version: UInt8) throws {
        var config = SmuxConfiguration()
        config.version = version
        var machine = try SmuxSessionMachine(role: .client, configuration: config)
        _ = try machine.receive(SmuxFrame(version: version, command: .syn, streamID: 3))
        _ = try machine.receive(SmuxFrame(version: version, command: .psh, streamID: 3,
                                          payload: ByteBuffer(repeating: 7, count: 50)))
        let opened = try machine.openStream()
        #expect(opened == 5)
        #expect(machine.accept() == 3)
        #expect(machine.read(streamID: 3) == .data(ByteBuffer(repeating: 7, count: 50)))
        #expect(machine.unreadBytes == 0)
        #expect(try machine.openStream() == 7)
        machine.close(streamID: 3)
        machine.close(streamID: opened)
        #expect(machine.openStreamCount == 1)
        #expect(machine.unreadBytes == 0)
    }

    /// FuzzSmuxSession: version 2, maxFrameSize 1, maxBatchSize 12 passed validation, but a
    /// UPD frame is 16 bytes: once one was queued, takeOutbound wrote nothing, ever.
    @Test("maxBatchSize must hold a UPD frame")
    func batchHoldsUPD() throws {
        var config = SmuxConfiguration()
        config.version = 2
        config.maxFrameSize = 1
        config.maxBatchSize = 12
        #expect(throws: SmuxConfigurationError.self) { try config.validated() }
        config.maxBatchSize = 16
        var machine = try SmuxSessionMachine(role: .server, configuration: config)
        _ = try machine.receive(SmuxFrame(version: 2, command: .syn, streamID: 3))
        _ = try machine.receive(SmuxFrame(version: 2, command: .psh, streamID: 3, payload: ByteBuffer(string: "hi")))
        #expect(machine.accept() == 3)
        #expect(machine.read(streamID: 3) == .data(ByteBuffer(string: "hi")))  // queues a UPD
        var batch = ByteBuffer()
        #expect(machine.takeOutbound(into: &batch) == 1)
        #expect(batch.readableBytes == 16)
    }
}
