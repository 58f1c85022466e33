// Sans-IO NDJSON splitter with a line-length cap (spec §4.1, §5.5).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Thrown when a line (bytes before its "\n") exceeds the framer's limit. The framer must not be
/// used afterwards: drop the stream.
public struct LineTooLong: Error, Equatable, Sendable, CustomStringConvertible {
    public let limit: Int
    public init(_ limit: Int) { self.limit = limit }
    public var description: String { "NDJSON line longer than \(limit) bytes" }
}

/// Splits a byte stream into NDJSON lines.
///
/// `append` bytes as they arrive, then call `nextLine()` until it returns nil. Lines come back
/// without the "\n", with ASCII whitespace trimmed; blank lines are skipped. A line whose raw
/// length (excluding "\n") exceeds `maxLineLength` throws `LineTooLong` — as soon as the pending
/// partial line is known to be too long, so memory stays bounded. Returned lines are slices that
/// share storage with the input where possible (no copy when whole lines arrive in one buffer).
public struct NDJSONLineFramer: Sendable {
    public let maxLineLength: Int
    private var buffer: ByteBuffer
    /// Bytes of `buffer` (from its reader index) already known to contain no "\n".
    private var scanned: Int = 0

    /// - Parameter maxLineLength: e.g. `TunnelProtocol.maxControlLineLength` (1 MiB) for control
    ///   streams, `TunnelProtocol.maxRequestLineLength` / `maxResponseLineLength` for data streams.
    public init(maxLineLength: Int) {
        precondition(maxLineLength > 0)
        self.maxLineLength = maxLineLength
        self.buffer = ByteBuffer()
    }

    /// Bytes held that do not yet form a complete line.
    public var bufferedByteCount: Int { buffer.readableBytes }

    /// Appends bytes. Throws `LineTooLong` if the pending (newline-less) tail already exceeds the limit.
    public mutating func append(_ bytes: ByteBuffer) throws {
        if buffer.readableBytes == 0 {
            buffer = bytes  // no copy
            scanned = 0
        } else {
            var bytes = bytes
            if buffer.readerIndex > 0, buffer.readerIndex >= buffer.readableBytes {
                buffer.discardReadBytes()
            }
            buffer.writeBuffer(&bytes)
        }
        try checkPendingTail()
    }

    public mutating func append(contentsOf bytes: some Sequence<UInt8>) throws {
        try append(ByteBuffer(bytes: bytes))
    }

    /// The next complete, non-blank line, or nil if more bytes are needed.
    public mutating func nextLine() throws -> ByteBuffer? {
        while true {
            guard let nl = findNewline() else {
                try checkPendingTail()
                return nil
            }
            // nl is relative to the reader index.
            if nl > maxLineLength { throw LineTooLong(maxLineLength) }
            var line = buffer.readSlice(length: nl)!
            buffer.moveReaderIndex(forwardBy: 1)
            scanned = 0
            if buffer.readableBytes == 0 { buffer.clear() }
            Self.trim(&line)
            if line.readableBytes > 0 { return line }
        }
    }

    /// All complete lines currently available.
    public mutating func drainLines() throws -> [ByteBuffer] {
        var lines: [ByteBuffer] = []
        while let line = try nextLine() { lines.append(line) }
        return lines
    }

    /// At end of stream: the trailing bytes without a "\n", trimmed (nil if blank). Go's
    /// `ReadBytes('\n')` returns such a tail together with io.EOF; callers may decide to use or
    /// ignore it.
    public mutating func finish() -> ByteBuffer? {
        guard buffer.readableBytes > 0 else { return nil }
        var rest = buffer.readSlice(length: buffer.readableBytes)!
        buffer.clear()
        scanned = 0
        Self.trim(&rest)
        return rest.readableBytes > 0 ? rest : nil
    }

    /// The bytes buffered after the last line taken, untouched (a stream that switches from
    /// lines to raw bytes: a relay's data stream after its `route` line).
    public mutating func takeRemainder() -> ByteBuffer? {
        guard buffer.readableBytes > 0 else { return nil }
        let rest = buffer.readSlice(length: buffer.readableBytes)!
        buffer.clear()
        scanned = 0
        return rest
    }

    private mutating func checkPendingTail() throws {
        guard buffer.readableBytes > maxLineLength else { return }
        if let nl = findNewline() {
            if nl > maxLineLength { throw LineTooLong(maxLineLength) }
        } else {
            throw LineTooLong(maxLineLength)
        }
    }

    private mutating func findNewline() -> Int? {
        let total = buffer.readableBytes
        guard scanned < total else { return nil }
        let from = scanned
        let found: Int? = buffer.withUnsafeReadableBytes { raw -> Int? in
            guard let base = raw.baseAddress else { return nil }
            guard let p = memchr(base + from, 0x0A, total - from) else { return nil }
            return base.distance(to: UnsafeRawPointer(p))
        }
        if let found {
            scanned = found
            return found
        }
        scanned = total
        return nil
    }

    static func trim(_ line: inout ByteBuffer) {
        var lead = 0
        var trail = 0
        let n = line.readableBytes
        line.withUnsafeReadableBytes { raw in
            while lead < n, isSpace(raw[lead]) { lead += 1 }
            while trail < n - lead, isSpace(raw[n - 1 - trail]) { trail += 1 }
        }
        if lead > 0 { line.moveReaderIndex(forwardBy: lead) }
        if trail > 0 { line.moveWriterIndex(to: line.writerIndex - trail) }
    }

    @inline(__always)
    static func isSpace(_ b: UInt8) -> Bool {
        // Go bytes.TrimSpace ASCII set: \t \n \v \f \r space.
        b == 0x20 || (b >= 0x09 && b <= 0x0D)
    }
}
