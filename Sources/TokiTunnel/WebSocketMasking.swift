import NIOCore
import NIOHTTP1
import NIOWebSocket

// WebSocket masking done 8 bytes at a time. Client→server frames must be masked (RFC 6455; the Go
// hub rejects unmasked ones), and that is the bulky direction of a tunnel (worker responses).
// NIO masks a byte at a time and copies once more on the way; profiling the tunnel showed about
// half of all CPU time there, on both ends. These replace it on both ends of the tunnel.

extension ByteBuffer {
    /// Appends `source` XOR-ed with `key` (starting at key offset `keyOffset`): masking and
    /// unmasking are the same operation, done while copying.
    mutating func writeMasked(_ source: ByteBuffer, key: WebSocketMaskingKey, keyOffset: Int = 0) {
        var k32: UInt32 = 0
        for j in 0..<4 { k32 |= UInt32(key[(j + keyOffset) & 3]) << (8 * j) }  // little-endian lanes
        let k64 = UInt64(k32) | UInt64(k32) << 32
        let count = source.readableBytes
        writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in
            source.withUnsafeReadableBytes { input in
                guard let src = input.baseAddress, let dst = out.baseAddress else { return }
                var i = 0
                while i + 8 <= count {
                    dst.storeBytes(of: src.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ k64, toByteOffset: i, as: UInt64.self)
                    i += 8
                }
                while i < count {
                    dst.storeBytes(of: src.load(fromByteOffset: i, as: UInt8.self) ^ key[(i + keyOffset) & 3], toByteOffset: i, as: UInt8.self)
                    i += 1
                }
            }
            return count
        }
    }
}

/// Client side: encodes frames with a fresh random mask, header and masked payload in one buffer
/// and one pass (gorilla does the same). Replaces NIO's `WebSocketFrameEncoder`.
final class MaskingFrameEncoder: ChannelOutboundHandler {
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        let key = WebSocketMaskingKey.random()
        let length = frame.data.readableBytes
        var out = context.channel.allocator.buffer(capacity: 14 + length)
        out.writeInteger(UInt8(frame.fin ? 0x80 : 0) | UInt8(webSocketOpcode: frame.opcode))
        switch length {
        case ..<126:
            out.writeInteger(UInt8(0x80 | length))
        case ..<65536:
            out.writeInteger(UInt8(0x80 | 126))
            out.writeInteger(UInt16(length))
        default:
            out.writeInteger(UInt8(0x80 | 127))
            out.writeInteger(UInt64(length))
        }
        out.writeBytes(key)
        out.writeMasked(frame.data, key: key)
        context.write(wrapOutboundOut(out), promise: promise)
    }

}

/// The client's upgrade: NIO's handshake (key, accept check) with our encoder in the pipeline.
struct TunnelClientUpgrader<Result: Sendable>: NIOTypedHTTPClientProtocolUpgrader {
    typealias UpgradeResult = Result
    let handshake: NIOTypedWebSocketClientUpgrader<Result>
    let maxFrameSize: Int
    let onUpgrade: @Sendable (any Channel, HTTPResponseHead) -> EventLoopFuture<Result>

    init(maxFrameSize: Int, onUpgrade: @escaping @Sendable (any Channel, HTTPResponseHead) -> EventLoopFuture<Result>) {
        self.maxFrameSize = maxFrameSize
        self.onUpgrade = onUpgrade
        // Only used for the header dance; its own pipeline setup is never run.
        self.handshake = NIOTypedWebSocketClientUpgrader(maxFrameSize: maxFrameSize) { channel, _ in
            channel.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
        }
    }

    var supportedProtocol: String { handshake.supportedProtocol }
    var requiredUpgradeHeaders: [String] { handshake.requiredUpgradeHeaders }

    func addCustom(upgradeRequestHeaders: inout HTTPHeaders) {
        handshake.addCustom(upgradeRequestHeaders: &upgradeRequestHeaders)
    }

    func shouldAllowUpgrade(upgradeResponse: HTTPResponseHead) -> Bool {
        handshake.shouldAllowUpgrade(upgradeResponse: upgradeResponse)
    }

    func upgrade(channel: any Channel, upgradeResponse: HTTPResponseHead) -> EventLoopFuture<Result> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(MaskingFrameEncoder())
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrameSize)))
            try pipeline.addHandler(WebSocketProtocolErrorHandler(isServer: false))
        }.flatMap {
            onUpgrade(channel, upgradeResponse)
        }
    }
}
