import Foundation
import NIOCore
import TokiMux
import TokiProtocol

/// What the two ends of a tunnel agreed on at the WebSocket upgrade.
///
/// The client offers `Sec-WebSocket-Protocol: tokilake.v1` (what the Go Tokiame sends) and, if it
/// wants compression, `toki-lz4` after it. A server that agrees selects `toki-lz4`; the Go
/// Tokilake hub only knows `tokilake.v1` and selects that, so both sides fall back to plain bytes.
/// What a tunnel speaks beyond the original protocol, agreed at the upgrade.
public struct TunnelFeatures: Sendable, Equatable {
    /// Each direction is one LZ4 stream (docs/protocol.md).
    public var lz4: Bool
    /// smux version: 2 gives every stream its own window, so one stalled stream (a slow client,
    /// a slow backend) cannot hold up the others through the session-wide budget of v1.
    public var smuxVersion: UInt8

    public init(lz4: Bool = false, smuxVersion: UInt8 = 1) {
        self.lz4 = lz4
        self.smuxVersion = smuxVersion
    }

    /// The original protocol: smux v1, no compression.
    public static let original = TunnelFeatures()
}

/// WebSocket subprotocols: the client offers what it supports, the server selects one, and the
/// selected name alone decides the tunnel's features. A peer that offers nothing (original Go
/// workers) or selects nothing (the original Go hub) gets the original protocol.
/// (The names themselves are TokiProtocol's `TunnelSubprotocol` constants.)
extension TunnelSubprotocol {
    /// The value a client sends in `Sec-WebSocket-Protocol`, most wanted first.
    public static func offer(lz4: Bool, smux2: Bool = false) -> String {
        var names: [String] = []
        if lz4, smux2 { names.append(smux2LZ4) }
        if lz4 { names.append(self.lz4) }
        if smux2 { names.append(self.smux2) }
        names.append(tokilake)
        return names.joined(separator: ", ")
    }

    /// The subprotocols a client offered, in order.
    public static func parseOffer(_ header: String?) -> [String] {
        guard let header else { return [] }
        return header.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The server's choice, by its own preference (v2 with LZ4, LZ4, v2, original), among what
    /// was offered and is allowed; nil if the client offered none of ours (it still gets the
    /// tunnel, as gorilla allows).
    public static func select(offered: [String], allowLZ4: Bool, allowSmux2: Bool = true) -> String? {
        var preference: [String] = []
        if allowLZ4, allowSmux2 { preference.append(smux2LZ4) }
        if allowLZ4 { preference.append(lz4) }
        if allowSmux2 { preference.append(smux2) }
        preference.append(tokilake)
        return preference.first { offered.contains($0) }
    }

    /// The features a selected subprotocol stands for.
    public static func features(of selected: String?) -> TunnelFeatures {
        switch selected?.trimmingCharacters(in: .whitespaces) {
        case smux2LZ4: TunnelFeatures(lz4: true, smuxVersion: 2)
        case lz4: TunnelFeatures(lz4: true, smuxVersion: 1)
        case smux2: TunnelFeatures(lz4: false, smuxVersion: 2)
        default: .original
        }
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
