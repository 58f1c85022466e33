import Foundation
import NIOCore
import TokiMux

/// What the two ends of a tunnel agreed on at the WebSocket upgrade.
///
/// The client offers `Sec-WebSocket-Protocol: tokilake.v1` (what the Go Tokiame sends) and, if it
/// wants compression, `toki-lz4` after it. A server that agrees selects `toki-lz4`; the Go
/// Tokilake hub only knows `tokilake.v1` and selects that, so both sides fall back to plain bytes.
public enum TunnelSubprotocol {
    public static let tokilake = "tokilake.v1"
    public static let lz4 = LZ4Link.extensionName

    /// The value a client sends in `Sec-WebSocket-Protocol`.
    public static func offer(lz4: Bool) -> String {
        lz4 ? "\(tokilake), \(self.lz4)" : tokilake
    }

    /// The subprotocols a client offered, in order.
    public static func parseOffer(_ header: String?) -> [String] {
        guard let header else { return [] }
        return header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The server's choice: `toki-lz4` when offered and allowed, else `tokilake.v1` if offered,
    /// else nil (a client that asks for no subprotocol still gets the tunnel, like gorilla allows).
    public static func select(offered: [String], allowLZ4: Bool) -> String? {
        if allowLZ4, offered.contains(lz4) { return lz4 }
        return offered.contains(tokilake) ? tokilake : nil
    }
}

/// Limits of the WebSocket layer under the mux.
public struct TunnelLimits: Sendable {
    /// Largest WebSocket message (and frame) accepted. Go peers send at most 8 + 32768 bytes per
    /// message; our own batches are bounded by `SmuxConfiguration.maxBatchSize`.
    public var maxMessageSize: Int = 1 << 20
    /// With LZ4: largest decompressed message.
    public var maxDecompressedSize: Int = 1 << 20

    public init() {}
}

public enum TunnelTransportError: Error, Equatable, Sendable, CustomStringConvertible {
    case messageTooLarge(limit: Int)
    case unexpectedContinuation
    case compression(LZ4LinkError)

    public var description: String {
        switch self {
        case .messageTooLarge(let limit): "tunnel: WebSocket message larger than \(limit) bytes"
        case .unexpectedContinuation: "tunnel: WebSocket continuation frame without a message to continue"
        case .compression(let error): "tunnel: \(error)"
        }
    }
}

/// Turns WebSocket data frames into the mux's byte stream (sans-IO).
///
/// Plain mode follows Tokilake's adapter: binary payloads (and their continuations) are stream
/// bytes, message boundaries mean nothing, text messages are skipped. Nothing is buffered: each
/// frame's payload goes on at once. LZ4 mode needs whole messages, so continuations are collected
/// (up to the limit) and each complete message is decompressed.
public struct TunnelFrameReader: Sendable {
    public enum Opcode: Sendable {
        case binary
        case text
        case continuation
    }

    private var decoder: LZ4LinkDecoder?
    private var inTextMessage = false
    private var inBinaryMessage = false
    private var partial: ByteBuffer?
    private let limits: TunnelLimits
    private let allocator = ByteBufferAllocator()

    public init(lz4: Bool, limits: TunnelLimits = .init()) {
        self.limits = limits
        self.decoder = lz4 ? LZ4LinkDecoder(maxDecompressedSize: limits.maxDecompressedSize) : nil
    }

    /// Returns the stream bytes this frame completes, or nil.
    public mutating func receive(opcode: Opcode, fin: Bool, data: ByteBuffer) throws -> ByteBuffer? {
        switch opcode {
        case .text:
            inTextMessage = !fin
            return nil
        case .binary:
            inTextMessage = false
            inBinaryMessage = !fin
            return try deliver(data, fin: fin, first: true)
        case .continuation:
            if inTextMessage {
                if fin { inTextMessage = false }
                return nil
            }
            guard inBinaryMessage else { throw TunnelTransportError.unexpectedContinuation }
            if fin { inBinaryMessage = false }
            return try deliver(data, fin: fin, first: false)
        }
    }

    private mutating func deliver(_ data: ByteBuffer, fin: Bool, first: Bool) throws -> ByteBuffer? {
        guard decoder != nil else {
            return data.readableBytes > 0 ? data : nil
        }
        var message: ByteBuffer
        if first {
            partial = nil
            message = data
        } else {
            message = partial ?? ByteBuffer()
            guard message.readableBytes + data.readableBytes <= limits.maxMessageSize else {
                throw TunnelTransportError.messageTooLarge(limit: limits.maxMessageSize)
            }
            message.writeImmutableBuffer(data)
        }
        guard fin else {
            partial = message
            return nil
        }
        partial = nil
        do {
            let plain = try decoder!.decode(message, allocator: allocator)
            return plain.readableBytes > 0 ? plain : nil
        } catch let error as LZ4LinkError {
            throw TunnelTransportError.compression(error)
        }
    }
}

/// Turns mux batches into WebSocket message payloads: as is, or LZ4-compressed against the
/// previous 64 KiB of this direction.
public struct TunnelMessageWriter: Sendable {
    private var encoder: LZ4LinkEncoder?
    private let allocator = ByteBufferAllocator()

    public init(lz4: Bool, limits: TunnelLimits = .init()) {
        encoder = lz4 ? LZ4LinkEncoder(maxMessageSize: LZ4Link.maxMessageSize(forBatchSize: limits.maxDecompressedSize)) : nil
    }

    public var isCompressing: Bool { encoder != nil }

    public mutating func message(for batch: ByteBuffer) -> ByteBuffer {
        guard encoder != nil else { return batch }
        return encoder!.encode(batch, allocator: allocator)
    }
}
