import NIOCore
import Testing
import TokiMux
import TokiProtocol

@testable import TokiTunnel

@Suite("control channel")
struct ControlChannelTests {
    @Test("lines go straight into the stream when they can, and never overtake queued ones")
    func order() async throws {
        var configuration = SmuxConfiguration()
        configuration.maxOutboundQueue = 64  // one control line fills it
        let session = try MuxSession(role: .client, configuration: configuration)
        let channel = ControlChannel(try session.openStream())
        let messages = (1...3).map { ControlMessage.error(requestID: "r\($0)", code: "c", message: String(repeating: "x", count: 40)) }
        for message in messages { #expect(channel.send(message)) }
        let writer = Task { try await channel.runWriter() }
        var payload = ByteBuffer()
        var decoder = SmuxFrameDecoder(version: 1)
        while payload.readableBytes < messages.map({ $0.encodedLine().readableBytes }).reduce(0, +) {
            guard var batch = session.takeOutbound() else {
                await Task.yield()
                continue
            }
            while let frame = try decoder.decode(buffer: &batch) {
                if frame.command == .psh { payload.writeImmutableBuffer(frame.payload) }
            }
        }
        var expected = ByteBuffer()
        for message in messages { expected.writeImmutableBuffer(message.encodedLine()) }
        #expect(payload == expected)
        channel.finish()
        try await writer.value
        #expect(!channel.send(messages[0]), "nothing is sent after finish()")
    }
}
