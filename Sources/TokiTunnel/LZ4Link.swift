// LZ4 link compression for the worker <-> hub WebSocket (see docs/protocol.md, "LZ4 link
// compression"; negotiated as the `toki-lz4` / `toki-smux2-lz4` subprotocols).
//
// Each direction of a link is ONE LZ4 stream in linked-block mode: every WebSocket
// message is compressed against the previous 64 KiB of plaintext sent in the same
// direction. Both codecs are sans-IO: they turn one batch of smux bytes into one
// WebSocket message payload and back.
//
// Message format (all messages, both directions):
//
//     byte 0      flags   bit0 (0x01) COMPRESSED: the payload is an LZ4 block
//                         bit1 (0x02) RESET: drop the stream history before this message
//                         bits 2-7    must be zero (a decoder rejects anything else)
//     stored      (bit0 = 0): bytes 1... are the plaintext itself (possibly empty)
//     compressed  (bit0 = 1): bytes 1... are
//                   size   the plaintext size as an unsigned LEB128 varint, 1-5 bytes,
//                          shortest form, value 1 ... 2^32-1 (and <= the receiver's limit)
//                   block  one raw LZ4 block (no frame header, no checksum) that may
//                          reference up to 64 KiB of earlier plaintext of this stream
//
// History rule: the plaintext of EVERY message of a stream, stored or compressed, is
// appended to the stream history, in order. A RESET message empties the history first.
// The encoder sets RESET on the first message of each stream (the first one of the link
// and the first one after `releaseState()`).

import CLZ4
import NIOCore
import Synchronization

/// Constants of the LZ4 link format.
public enum LZ4Link {
    /// Flag bit: the payload is an LZ4 block preceded by the varint plaintext size.
    public static let flagCompressed: UInt8 = 0x01
    /// Flag bit: the receiver drops its stream history before decoding this message.
    public static let flagReset: UInt8 = 0x02
    /// All flag bits defined by this version of the format.
    public static let knownFlags: UInt8 = flagCompressed | flagReset
    /// How far back an LZ4 block may reference earlier plaintext (LZ4's window).
    public static let historySize = 64 * 1024
    /// Largest header: 1 flag byte plus a 5-byte varint.
    public static let maxHeaderSize = 6
    /// Largest plaintext liblz4 accepts in one block (LZ4_MAX_INPUT_SIZE).
    public static let maxBlockInput = 0x7E00_0000

    /// The message that resets a stream and carries no data: just the RESET flag.
    /// A decoder that receives it frees its history memory.
    public static let resetMessageByte: UInt8 = flagReset

    /// Upper bound of the WebSocket message produced for a batch of `batchSize` bytes.
    /// (Compressed output is only used when it is shorter than storing, so it is `1 + batchSize`.)
    @inlinable
    public static func maxMessageSize(forBatchSize batchSize: Int) -> Int { 1 + batchSize }
}

/// What was wrong with a received message. Any error leaves the decoder unusable until a
/// message with the RESET flag arrives; the link should be closed.
public enum LZ4LinkError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The WebSocket message had zero bytes (not even the flag byte).
    case emptyMessage
    /// The flag byte has bits set that this version does not define.
    case unknownFlags(UInt8)
    /// A compressed message ended inside its size varint.
    case truncatedHeader
    /// The size varint is longer than 5 bytes, over 2^32-1, not in shortest form, or zero.
    case invalidSizeField
    /// The plaintext (declared, or stored) is larger than the decoder accepts.
    case sizeOverLimit(size: Int, limit: Int)
    /// The declared size cannot come out of a block this short (LZ4 expands at most 255x),
    /// or the block is longer than any LZ4 block of that size.
    case implausibleSize(declared: Int, blockBytes: Int)
    /// liblz4 rejected the block (corrupt, truncated, or referencing missing history).
    case corruptData(declared: Int, blockBytes: Int)
    /// The block decoded to a different size than declared.
    case sizeMismatch(declared: Int, actual: Int)
    /// An earlier message failed to decode; only a RESET message can restart the stream.
    case streamBroken

    public var description: String {
        switch self {
        case .emptyMessage:
            return "LZ4 link: empty WebSocket message (missing flag byte)"
        case .unknownFlags(let flags):
            let hex = String(flags, radix: 16)
            return "LZ4 link: unknown flag bits in flag byte 0x\(hex.count < 2 ? "0" + hex : hex) (only 0x01 and 0x02 are defined)"
        case .truncatedHeader:
            return "LZ4 link: compressed message truncated inside its size field"
        case .invalidSizeField:
            return "LZ4 link: invalid size field (zero, over 2^32-1, longer than 5 bytes or not in shortest form)"
        case .sizeOverLimit(let size, let limit):
            return "LZ4 link: message of \(size) plaintext bytes exceeds the limit of \(limit) bytes"
        case .implausibleSize(let declared, let blockBytes):
            return "LZ4 link: declared size \(declared) is impossible for an LZ4 block of \(blockBytes) bytes"
        case .corruptData(let declared, let blockBytes):
            return "LZ4 link: corrupt LZ4 block (\(blockBytes) bytes, declared \(declared) bytes of plaintext)"
        case .sizeMismatch(let declared, let actual):
            return "LZ4 link: LZ4 block decoded to \(actual) bytes, but \(declared) were declared"
        case .streamBroken:
            return "LZ4 link: stream broken by an earlier decode error (waiting for a RESET message)"
        }
    }
}

// MARK: - Encoder

/// Compresses the outbound direction of a link: one call to `encode` per WebSocket message.
///
/// Value semantics (copy-on-write): an LZ4 stream state cannot be duplicated, so when a
/// copied encoder encodes while its state is still shared, it starts a fresh stream (its
/// message carries RESET) and the other copy keeps the old one. Normally there is exactly
/// one encoder per link direction and this never happens.
public struct LZ4LinkEncoder: Sendable {
    /// liblz4 acceleration (1 = best ratio; higher is faster and compresses less).
    public let acceleration: Int32
    /// Largest batch `encode` accepts. Must not exceed the peer decoder's `maxDecompressedSize`.
    public let maxMessageSize: Int

    @usableFromInline
    var state: LZ4EncoderState?
    /// The next message starts a new stream and carries the RESET flag.
    @usableFromInline
    var startsNewStream = true

    public init(acceleration: Int32 = 1, maxMessageSize: Int) {
        precondition(maxMessageSize >= 0 && maxMessageSize <= LZ4Link.maxBlockInput,
                     "LZ4LinkEncoder: maxMessageSize must be in 0...\(LZ4Link.maxBlockInput)")
        self.acceleration = max(1, acceleration)
        self.maxMessageSize = maxMessageSize
    }

    /// Bytes of memory held by the compression state (0 after `releaseState()`):
    /// the LZ4 stream state (16 KiB) plus the 128 KiB plaintext window.
    public var memoryInUse: Int { state?.memoryInUse ?? 0 }

    /// Whether the next message will start a new stream (carry the RESET flag). A copy of an
    /// encoder that still shares its state with the original also starts a new stream with its
    /// next non-empty message, though this says false (see the type's comment).
    public var nextMessageResetsStream: Bool { startsNewStream || state == nil }

    /// Compresses `batch` (all its readable bytes) into one complete WebSocket message
    /// (flag byte + payload). `batch` must not be larger than `maxMessageSize`.
    /// The result is at most `1 + batch.readableBytes` bytes long.
    public mutating func encode(_ batch: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        let n = batch.readableBytes
        precondition(n <= maxMessageSize, "LZ4LinkEncoder: batch of \(n) bytes exceeds maxMessageSize \(maxMessageSize)")
        if n == 0 {
            // Nothing enters the history; no need to touch (or allocate) the LZ4 state.
            var out = allocator.buffer(capacity: 1)
            out.writeInteger(nextMessageResetsStream ? LZ4Link.flagReset : 0)
            startsNewStream = false
            return out
        }
        if state == nil || !isKnownUniquelyReferenced(&state) {
            state = LZ4EncoderState()
            startsNewStream = true
        }
        let st = state!
        let flags: UInt8 = startsNewStream ? LZ4Link.flagReset : 0
        let capacity = LZ4Link.maxHeaderSize + Int(LZ4_compressBound(Int32(n)))
        var out = allocator.buffer(capacity: capacity)
        _ = batch.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { dst in
                st.encode(src, into: dst, flags: flags, acceleration: acceleration)
            }
        }
        startsNewStream = false
        return out
    }

    /// Frees the LZ4 state and window (for an idle link). The next `encode` starts a new
    /// stream and marks its message with the RESET flag. The peer keeps its decoder history
    /// until that message arrives; use `encodeReset` to let the peer free it now.
    public mutating func releaseState() {
        state = nil
        startsNewStream = true
    }

    /// Frees the compression state like `releaseState()` and returns the 1-byte RESET
    /// message (`0x02`) to send, so that the peer's decoder frees its history too.
    /// The next data message starts a new stream (and carries RESET again, which is harmless).
    public mutating func encodeReset(allocator: ByteBufferAllocator) -> ByteBuffer {
        releaseState()
        var out = allocator.buffer(capacity: 1)
        out.writeInteger(LZ4Link.resetMessageByte)
        return out
    }
}

/// Owns the liblz4 stream state and the plaintext window it points into.
///
/// `@unchecked Sendable`: it holds raw pointers, but it is only reachable through one
/// `LZ4LinkEncoder` value, which mutates it only after `isKnownUniquelyReferenced`
/// (copy-on-write, like Array), so at most one task ever touches it at a time.
@usableFromInline
final class LZ4EncoderState: @unchecked Sendable {
    /// Plaintext window: the last <= 64 KiB of history followed by room for messages of
    /// up to 64 KiB, which are copied here so the LZ4 stream sees contiguous data
    /// (prefix mode). Larger messages are compressed in place (external-dictionary mode)
    /// and their last 64 KiB are then saved here with LZ4_saveDict.
    static let windowCapacity = 2 * LZ4Link.historySize
    static let stagingLimit = LZ4Link.historySize

    let stream: UnsafeMutablePointer<LZ4_stream_t>
    let window: UnsafeMutableRawPointer
    /// window[0..<end] is contiguous history; the LZ4 dictionary always ends at window+end.
    var end = 0

    init() {
        guard let s = LZ4_createStream() else { fatalError("LZ4_createStream: out of memory") }
        stream = s
        window = UnsafeMutableRawPointer.allocate(byteCount: Self.windowCapacity, alignment: 16)
    }

    deinit {
        LZ4_freeStream(stream)
        window.deallocate()
    }

    var memoryInUse: Int { Int(LZ4_sizeofState()) + Self.windowCapacity }

    /// Writes one message for `src` (count >= 1) into `dst` (>= maxHeaderSize + compressBound),
    /// returns the bytes written.
    func encode(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer,
                flags: UInt8, acceleration: Int32) -> Int {
        let n = src.count
        let out = dst.baseAddress!
        let sizeLen = writeVarint(UInt32(n), to: out + 1)
        let headerLen = 1 + sizeLen
        let blockCapacity = Int32(clamping: dst.count - headerLen)
        let block = (out + headerLen).assumingMemoryBound(to: CChar.self)
        let plaintext: UnsafeRawPointer
        let compressed: Int32
        if n <= Self.stagingLimit {
            if end + n > Self.windowCapacity {
                // Keep the last 64 KiB at the start of the window; LZ4 re-points its dictionary.
                end = Int(LZ4_saveDict(stream, window.assumingMemoryBound(to: CChar.self), Int32(LZ4Link.historySize)))
            }
            let input = window + end
            input.copyMemory(from: src.baseAddress!, byteCount: n)
            compressed = LZ4_compress_fast_continue(
                stream, input.assumingMemoryBound(to: CChar.self), block, Int32(n), blockCapacity, acceleration)
            end += n
            plaintext = UnsafeRawPointer(input)
        } else {
            // n > 64 KiB: compress straight from the caller's buffer against the window,
            // then move its last 64 KiB into the window before the buffer goes away.
            compressed = LZ4_compress_fast_continue(
                stream, src.baseAddress!.assumingMemoryBound(to: CChar.self), block, Int32(n), blockCapacity, acceleration)
            end = Int(LZ4_saveDict(stream, window.assumingMemoryBound(to: CChar.self), Int32(LZ4Link.historySize)))
            plaintext = src.baseAddress!
        }
        // Cannot fail: dst holds LZ4_compressBound(n) bytes after the header.
        precondition(compressed > 0, "LZ4_compress_fast_continue failed")
        if sizeLen + Int(compressed) < n {
            out.storeBytes(of: flags | LZ4Link.flagCompressed, as: UInt8.self)
            return headerLen + Int(compressed)
        }
        // Not worth it: store. The plaintext is in the history on both sides all the same.
        out.storeBytes(of: flags, as: UInt8.self)
        (out + 1).copyMemory(from: plaintext, byteCount: n)
        return 1 + n
    }
}

/// Writes `value` as an unsigned LEB128 varint (1-5 bytes), returns its length.
@inline(__always)
private func writeVarint(_ value: UInt32, to p: UnsafeMutableRawPointer) -> Int {
    var v = value
    var i = 0
    while v >= 0x80 {
        p.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: i, as: UInt8.self)
        v >>= 7
        i += 1
    }
    p.storeBytes(of: UInt8(v), toByteOffset: i, as: UInt8.self)
    return i + 1
}

// MARK: - Decoder

/// Decompresses the inbound direction of a link: one call to `decode` per WebSocket message.
///
/// Never allocates more than `maxDecompressedSize` bytes for a message (checked before
/// allocating), plus its fixed 128 KiB history window; only the bounds-checked
/// LZ4_decompress_safe_usingDict is used. Copies of a decoder are independent.
public struct LZ4LinkDecoder: Sendable {
    /// Largest plaintext a message may carry (stored or compressed).
    public let maxDecompressedSize: Int

    @usableFromInline
    var state: LZ4DecoderState?
    @usableFromInline
    var broken = false

    public init(maxDecompressedSize: Int) {
        precondition(maxDecompressedSize >= 0, "LZ4LinkDecoder: maxDecompressedSize must be >= 0")
        self.maxDecompressedSize = min(maxDecompressedSize, LZ4Link.maxBlockInput)
    }

    /// Bytes of memory held for the stream history (0 before the first data and after a reset).
    public var memoryInUse: Int { state == nil ? 0 : LZ4DecoderState.windowCapacity }

    /// Frees the history. Only safe when the peer's next message starts a new stream
    /// (carries RESET); otherwise that message fails with `corruptData`.
    public mutating func releaseState() {
        state = nil
    }

    /// Decodes one WebSocket message into the plaintext batch it carries (possibly empty).
    /// A stored message is returned as a slice of `message` (no copy).
    /// After any thrown error the decoder rejects all messages until one with RESET arrives.
    public mutating func decode(_ message: ByteBuffer, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var msg = message
        guard let flags = msg.readInteger(as: UInt8.self) else {
            broken = true
            throw LZ4LinkError.emptyMessage
        }
        guard flags & ~LZ4Link.knownFlags == 0 else {
            broken = true
            throw LZ4LinkError.unknownFlags(flags)
        }
        if flags & LZ4Link.flagReset != 0 {
            state = nil  // frees the window; reallocated lazily when data arrives
            broken = false
        } else if broken {
            throw LZ4LinkError.streamBroken
        }
        do {
            if flags & LZ4Link.flagCompressed == 0 {
                return try decodeStored(msg)
            }
            return try decodeCompressed(&msg, allocator: allocator)
        } catch {
            broken = true
            throw error
        }
    }

    /// The history to decode into, copied first only if another decoder value shares it.
    /// (The check must see `state` alone: a reference bound before it, even a local `let`,
    /// makes it fail, and the 128 KiB window was copied for every message received.)
    private mutating func uniqueState() -> LZ4DecoderState {
        guard state != nil else {
            let st = LZ4DecoderState()
            state = st
            return st
        }
        if !isKnownUniquelyReferenced(&state) { state = state!.copy() }
        return state!
    }

    private mutating func decodeStored(_ msg: ByteBuffer) throws -> ByteBuffer {
        let n = msg.readableBytes
        guard n <= maxDecompressedSize else {
            throw LZ4LinkError.sizeOverLimit(size: n, limit: maxDecompressedSize)
        }
        if n > 0 {
            let st = uniqueState()
            msg.withUnsafeReadableBytes { st.append($0) }
        }
        return msg
    }

    private mutating func decodeCompressed(_ msg: inout ByteBuffer, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        // Size varint: LEB128, 1-5 bytes, shortest form, 1 ... 2^32-1.
        var value: UInt64 = 0
        var index = 0
        while true {
            guard let byte = msg.readInteger(as: UInt8.self) else { throw LZ4LinkError.truncatedHeader }
            if index == 4 && byte > 0x0F { throw LZ4LinkError.invalidSizeField }  // > 32 bits or a 6th byte
            value |= UInt64(byte & 0x7F) << (7 * index)
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 { throw LZ4LinkError.invalidSizeField }  // not shortest form
                break
            }
            index += 1
        }
        guard value > 0 else { throw LZ4LinkError.invalidSizeField }
        guard value <= UInt64(maxDecompressedSize) else {
            throw LZ4LinkError.sizeOverLimit(size: Int(value), limit: maxDecompressedSize)
        }
        let declared = Int(value)
        let blockBytes = msg.readableBytes
        // LZ4 expands at most 255x, and never needs more than compressBound(declared) bytes:
        // reject before allocating anything for the output.
        guard blockBytes > 0, declared <= blockBytes * 255,
              blockBytes <= Int(LZ4_compressBound(Int32(declared))) else {
            throw LZ4LinkError.implausibleSize(declared: declared, blockBytes: blockBytes)
        }
        let st = uniqueState()
        var out = allocator.buffer(capacity: declared)
        _ = try msg.withUnsafeReadableBytes { src in
            try out.writeWithUnsafeMutableBytes(minimumWritableBytes: declared) { dst in
                let dict = st.dictionary
                let result = LZ4_decompress_safe_usingDict(
                    src.baseAddress!.assumingMemoryBound(to: CChar.self),
                    dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(blockBytes), Int32(declared),
                    dict.pointer, dict.size)
                guard result >= 0 else {
                    throw LZ4LinkError.corruptData(declared: declared, blockBytes: blockBytes)
                }
                guard Int(result) == declared else {
                    throw LZ4LinkError.sizeMismatch(declared: declared, actual: Int(result))
                }
                st.append(UnsafeRawBufferPointer(start: dst.baseAddress!, count: declared))
                return declared
            }
        }
        return out
    }
}

/// The decoder's copy of the stream history: window[0..<end], of which the last
/// <= 64 KiB are the LZ4 dictionary.
///
/// `@unchecked Sendable`: raw memory, but only reachable through one `LZ4LinkDecoder`
/// value, which copies it before mutating when it is shared (copy-on-write), so at most
/// one task touches it at a time.
@usableFromInline
final class LZ4DecoderState: @unchecked Sendable {
    static let windowCapacity = 2 * LZ4Link.historySize

    let window: UnsafeMutableRawPointer
    var end = 0

    init() {
        window = UnsafeMutableRawPointer.allocate(byteCount: Self.windowCapacity, alignment: 16)
    }

    deinit { window.deallocate() }

    /// Windows copied so far, process-wide (tests: a decoder used alone never copies).
    static let copies = Atomic<Int>(0)

    func copy() -> LZ4DecoderState {
        Self.copies.wrappingAdd(1, ordering: .relaxed)
        let c = LZ4DecoderState()
        c.window.copyMemory(from: window, byteCount: end)
        c.end = end
        return c
    }

    var dictionary: (pointer: UnsafePointer<CChar>, size: Int32) {
        let size = min(end, LZ4Link.historySize)
        return (UnsafePointer((window + (end - size)).assumingMemoryBound(to: CChar.self)), Int32(size))
    }

    /// Appends plaintext to the history, keeping at least the last 64 KiB.
    func append(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0, let base = bytes.baseAddress else { return }
        let h = LZ4Link.historySize
        if n >= h {
            window.copyMemory(from: base + (n - h), byteCount: h)
            end = h
            return
        }
        if end + n > Self.windowCapacity {
            let keep = min(end, h - n)
            window.copyMemory(from: window + (end - keep), byteCount: keep)  // memmove semantics
            end = keep
        }
        (window + end).copyMemory(from: base, byteCount: n)
        end += n
    }
}
