import NIOCore
import TokiMux

/// The stream test protocol shared with the Go reference peer (`Tests/Interop/gopeer`), used by
/// the interop tests and the benchmarks.
///
/// The opener writes a 9-byte header, `mode` ('E' echo, 'S' sink) and a big-endian UInt64 length
/// L, then L bytes where byte i is `UInt8((7 * i + L % 251) & 0xff)`. The handler echoes the L
/// bytes back as they arrive, or (sink) verifies them and answers the big-endian count of
/// verified bytes (all ones on a mismatch). Then both close.
public enum StreamProbe {
    public enum Mode: UInt8, Sendable {
        case echo = 0x45  // "E"
        case sink = 0x53  // "S"
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    static let chunkSize = 64 * 1024

    static func seed(_ length: UInt64) -> UInt8 { UInt8(length % 251) }

    /// Byte `index` of a payload of `length` bytes.
    @inline(__always)
    static func byte(_ index: UInt64, seed: UInt8) -> UInt8 { UInt8(truncatingIfNeeded: index &* 7) &+ seed }

    /// A buffer of `chunkSize + 256` pattern bytes: any chunk starting at offset o is the slice at
    /// `o % 256` (the pattern repeats every 256 bytes since 7 × 256 ≡ 0 mod 256).
    static func patternBuffer(seed: UInt8) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(chunkSize + 256)
        for i in 0..<(chunkSize + 256) { buffer.writeInteger(byte(UInt64(i), seed: seed)) }
        return buffer
    }

    /// Checks received bytes against the pattern, tracking the offset.
    struct Verifier {
        let seed: UInt8
        var offset: UInt64 = 0
        var ok = true

        mutating func check(_ chunk: ByteBuffer) {
            chunk.withUnsafeReadableBytes { raw in
                var i = offset
                for b in raw {
                    if b != StreamProbe.byte(i, seed: seed) { ok = false; break }
                    i &+= 1
                }
            }
            offset += UInt64(chunk.readableBytes)
        }
    }

    /// Opener role: sends `length` bytes in `mode` and checks the answer. Throws `Failure`.
    ///
    /// In sink mode the opener half-closes after its payload (the handler answers after reading
    /// FIN). In echo mode it closes only after the whole echo arrived: Go smux 1.5.16 (v2) makes a
    /// writer waiting for window give up once the peer's FIN is in, which would cut the echo short.
    public static func open(_ stream: MuxStream, mode: Mode, length: UInt64) async throws {
        let halfClose = mode == .sink
        var header = ByteBuffer()
        header.writeInteger(mode.rawValue)
        header.writeInteger(length, endianness: .big)
        try await stream.write(header)
        let seed = seed(length)
        let pattern = patternBuffer(seed: seed)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var sent: UInt64 = 0
                while sent < length {
                    let n = Int(min(UInt64(chunkSize), length - sent))
                    try await stream.write(pattern.getSlice(at: Int(sent % 256), length: n)!)
                    sent += UInt64(n)
                }
                if halfClose { stream.closeWrite() }
            }
            group.addTask {
                switch mode {
                case .echo:
                    var verifier = Verifier(seed: seed)
                    while verifier.offset < length, let chunk = try await stream.read() {
                        verifier.check(chunk)
                        guard verifier.ok else { throw Failure("echo mismatch near byte \(verifier.offset) of stream \(stream.id)") }
                    }
                    guard verifier.offset == length else {
                        throw Failure("stream \(stream.id): echo ended after \(verifier.offset) of \(length) bytes")
                    }
                case .sink:
                    var answer = ByteBuffer()
                    while answer.readableBytes < 8, let chunk = try await stream.read() { answer.writeImmutableBuffer(chunk) }
                    guard let count = answer.readInteger(endianness: .big, as: UInt64.self) else {
                        throw Failure("stream \(stream.id): sink closed without an answer")
                    }
                    guard count == length else { throw Failure("stream \(stream.id): sink verified \(count) of \(length) bytes") }
                }
            }
            try await group.waitForAll()
        }
        stream.close()
    }

    /// Handler role: serves one stream opened by the peer.
    public static func handle(_ stream: MuxStream) async throws {
        var header = ByteBuffer()
        var carry = ByteBuffer()
        while header.readableBytes < 9 {
            guard var chunk = try await stream.read() else { throw Failure("stream \(stream.id) ended inside the probe header") }
            let need = 9 - header.readableBytes
            header.writeImmutableBuffer(chunk.readSlice(length: min(need, chunk.readableBytes))!)
            carry = chunk
        }
        guard let mode = Mode(rawValue: header.readInteger()!) else { throw Failure("stream \(stream.id): unknown probe mode") }
        let length: UInt64 = header.readInteger(endianness: .big)!
        var verifier = Verifier(seed: seed(length))
        var pending: ByteBuffer? = carry.readableBytes > 0 ? carry : nil
        while verifier.offset < length {
            var next = pending
            pending = nil
            if next == nil { next = try await stream.read() }
            guard var chunk = next else { break }
            if UInt64(chunk.readableBytes) > length - verifier.offset {
                chunk = chunk.getSlice(at: chunk.readerIndex, length: Int(length - verifier.offset))!
            }
            switch mode {
            case .echo:
                verifier.offset += UInt64(chunk.readableBytes)
                try await stream.write(chunk)
            case .sink:
                verifier.check(chunk)
            }
        }
        if mode == .sink {
            var answer = ByteBuffer()
            answer.writeInteger(verifier.ok && verifier.offset == length ? length : UInt64.max, endianness: .big)
            try await stream.write(answer)
        }
        stream.closeWrite()
        stream.close()
    }

    /// Accepts streams until the session ends, handling each concurrently.
    public static func serve(_ session: MuxSession) async {
        await withTaskGroup(of: Void.self) { group in
            while let stream = try? await session.accept() {
                group.addTask { try? await handle(stream) }
            }
        }
    }

    /// Opens `streams` concurrent streams of `length` bytes each.
    public static func run(_ session: MuxSession, streams: Int, length: UInt64, mode: Mode) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<streams {
                let stream = try session.openStream()
                group.addTask { try await open(stream, mode: mode, length: length) }
            }
            try await group.waitForAll()
        }
    }
}
