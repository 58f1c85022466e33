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

    /// The last `prompt_tokens` / `completion_tokens` values in the tail.
    var usage: (prompt: Int?, completion: Int?) {
        let text = String(decoding: tail.readableBytesView, as: UTF8.self)
        func last(_ key: String) -> Int? {
            guard let range = text.range(of: "\"\(key)\":", options: .backwards) else { return nil }
            let digits = text[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
            return Int(digits)
        }
        return (last("prompt_tokens"), last("completion_tokens"))
    }

    /// Events carrying data, without the `[DONE]` that ends an OpenAI stream.
    var dataEvents: Int { max(0, events - 1) }
}
