import NIOCore
import NIOEmbedded
import NIOWebSocket
import TestSupport
import Testing

@testable import TokiTunnel

@Suite("fast WebSocket masking")
struct WebSocketMaskingTests {
    @Test("writeMasked equals NIO's byte-at-a-time masking at every length and key offset")
    func kernel() {
        var rng = SplitMix64(seed: 11)
        for length in [0, 1, 3, 7, 8, 9, 15, 16, 17, 100, 4096, 65537] {
            for offset in 0..<4 {
                let key = WebSocketMaskingKey([UInt8.random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng), .random(in: 0...255, using: &rng)])!
                let source = ByteBuffer(bytes: (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
                var expected = source
                expected.webSocketMask(key, indexOffset: offset)
                var actual = ByteBuffer()
                actual.writeMasked(source, key: key, keyOffset: offset)
                #expect(actual == expected, "length \(length) offset \(offset)")
            }
        }
    }

    @Test("frames encoded by MaskingFrameEncoder decode (NIO's decoder) to the same frames")
    func encoderRoundTrip() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(MaskingFrameEncoder())
        var rng = SplitMix64(seed: 12)
        let sizes = [0, 1, 125, 126, 127, 65535, 65536, 65552, 70000] + (0..<40).map { _ in Int.random(in: 0...300_000, using: &rng) }
        let receiver = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        for (i, size) in sizes.enumerated() {
            let payload = ByteBuffer(bytes: (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) })
            let opcode: WebSocketOpcode = i % 7 == 3 ? .text : .binary
            try channel.writeOutbound(WebSocketFrame(fin: i % 5 != 1, opcode: opcode, data: payload))
            while let chunk = try channel.readOutbound(as: ByteBuffer.self) { try receiver.writeInbound(chunk) }
            let frame = try #require(try receiver.readInbound(as: WebSocketFrame.self))
            #expect(frame.maskKey != nil, "client frames must be masked")
            #expect(frame.fin == (i % 5 != 1))
            #expect(frame.opcode == opcode)
            #expect(frame.unmaskedData == payload, "frame \(i) of \(size) bytes")
        }
        #expect(try receiver.readInbound(as: WebSocketFrame.self) == nil)
        _ = try channel.finish()
        _ = try receiver.finish()
    }
}
