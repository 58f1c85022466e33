import NIOCore

/// Keeps the tail of a response body to read the `usage` the backend reported (for SSE, the
/// last chunk carries it) without parsing every chunk, and counts what the usage estimate needs.
struct UsageSniffer: Sendable {
    private var tail = ByteBuffer()
    private static let keep = 8192
    /// Response bytes seen.
    private(set) var bytes = 0
    /// SSE events seen (blank lines), when counting.
    private(set) var events = 0
    private let countEvents: Bool
    private var lastByte: UInt8 = 0

    init(countEvents: Bool = false) {
        self.countEvents = countEvents
    }

    mutating func observe(_ chunk: ByteBuffer) {
        bytes += chunk.readableBytes
        if countEvents {
            var previous = lastByte
            for byte in chunk.readableBytesView where byte != 0x0D {
                if byte == 0x0A, previous == 0x0A {
                    events += 1
                    previous = 0  // a third newline does not end another event
                } else {
                    previous = byte
                }
            }
            lastByte = previous
        }
        if chunk.readableBytes >= Self.keep {
            tail = chunk.getSlice(at: chunk.readerIndex + chunk.readableBytes - Self.keep, length: Self.keep)!
            return
        }
        tail.writeImmutableBuffer(chunk)
        if tail.readableBytes > 2 * Self.keep {
            tail.moveReaderIndex(forwardBy: tail.readableBytes - Self.keep)
            tail.discardReadBytes()
        }
    }

    /// The last `prompt_tokens` / `completion_tokens` values in the tail. Scanned as bytes:
    /// this runs once per response on the hub's hot path.
    var usage: (prompt: Int?, completion: Int?) {
        tail.withUnsafeReadableBytes { bytes in
            (Self.lastValue(of: Self.promptKey, in: bytes), Self.lastValue(of: Self.completionKey, in: bytes))
        }
    }

    private static let promptKey = Array(#""prompt_tokens":"#.utf8)
    private static let completionKey = Array(#""completion_tokens":"#.utf8)

    /// The decimal integer after the last `key` (spaces skipped); nil if absent, not a number or
    /// too large for `Int`.
    static func lastValue(of key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= key.count else { return nil }
        var start = bytes.count - key.count
        while start >= 0 {
            if bytes[start] == key[0], (1..<key.count).allSatisfy({ bytes[start + $0] == key[$0] }) {
                var i = start + key.count
                while i < bytes.count, bytes[i] == 0x20 { i += 1 }
                var value = 0
                var digits = 0
                while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
                    let (times, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(Int(bytes[i] - 0x30))
                    if o1 || o2 { return nil }
                    value = sum
                    digits += 1
                    i += 1
                }
                return digits > 0 ? value : nil
            }
            start -= 1
        }
        return nil
    }

    /// Events carrying data, without the `[DONE]` that ends an OpenAI stream.
    var dataEvents: Int { max(0, events - 1) }
}
