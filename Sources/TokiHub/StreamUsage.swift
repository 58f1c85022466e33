import NIOCore
import TokiProtocol

/// Getting `usage` out of streams whose clients did not ask for it.
///
/// Backends report token usage in a stream only when the request sets
/// `stream_options.include_usage` (chat: a separate last chunk with `choices: []`; completions:
/// inside the finish chunk). To bill by what the backend counted, the hub sets it on streamed
/// chat and completion requests that did not (`UsageRequest.inject`), and takes back out what
/// the client did not ask for (`UsageStripper`), so the client sees the stream it would have
/// seen without the hub.
enum UsageRequest {
    /// The body with `"stream_options":{"include_usage":true}` added as its first member, or nil
    /// when it cannot be added without rewriting the client's JSON (it has `stream_options`
    /// already, or is not an object): such a request is billed from an estimate if the
    /// backend reports nothing.
    static func inject(into body: ByteBuffer) -> ByteBuffer? {
        let view = body.readableBytesView
        guard let open = view.firstIndex(where: { !isSpace($0) }), view[open] == UInt8(ascii: "{") else { return nil }
        guard view.firstRange(of: Array(#""stream_options""#.utf8), in: view.startIndex) == nil else { return nil }
        let afterOpen = view.index(after: open)
        let isEmpty = view[afterOpen...].first(where: { !isSpace($0) }) == UInt8(ascii: "}")
        let member = isEmpty ? #""stream_options":{"include_usage":true}"# : #""stream_options":{"include_usage":true},"#
        var out = ByteBuffer()
        out.reserveCapacity(body.readableBytes + member.utf8.count)
        out.writeBytes(view[view.startIndex..<afterOpen])
        out.writeString(member)
        out.writeBytes(view[afterOpen...])
        return out
    }

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }
}

/// Removes from an SSE stream what `include_usage` added: the usage-only chat chunk
/// (`"choices":[]` with a `usage` object), `usage` members of other chunks (the completions
/// finish chunk), and `"usage":null` members. Events without `"usage"` pass through as the
/// same bytes (slices, no copy); an event split across chunks waits for its end.
struct UsageStripper {
    /// The start of an event whose end has not arrived.
    private var partial = ByteBuffer()

    private static let usageKey = Array(#""usage""#.utf8)
    private static let emptyChoices = Array(#""choices":[]"#.utf8)

    /// The bytes to forward for `chunk` (possibly none, while an event is incomplete).
    mutating func filter(_ chunk: ByteBuffer) -> [ByteBuffer] {
        var input = chunk
        if partial.readableBytes > 0 {
            partial.writeImmutableBuffer(chunk)
            input = partial
            partial = ByteBuffer()
        }
        let view = input.readableBytesView
        // Complete events end at the last blank line; the rest waits.
        guard let end = Self.lastEventEnd(in: view) else {
            partial = input
            return []
        }
        let completeLength = end - view.startIndex
        if completeLength < input.readableBytes {
            partial = input.getSlice(at: input.readerIndex + completeLength, length: input.readableBytes - completeLength)!
        }
        let complete = input.getSlice(at: input.readerIndex, length: completeLength)!
        if complete.readableBytesView.firstRange(of: Self.usageKey, in: complete.readableBytesView.startIndex) == nil {
            return [complete]
        }
        return Self.strip(events: complete)
    }

    /// What is left when the stream ends (an unterminated last event, passed on as it is).
    mutating func finish() -> ByteBuffer? {
        defer { partial = ByteBuffer() }
        return partial.readableBytes > 0 ? partial : nil
    }

    /// The index just after the last `\n\n` (or `\n\r\n`), or nil.
    static func lastEventEnd(in view: ByteBufferView) -> ByteBufferView.Index? {
        var i = view.endIndex
        while i > view.startIndex {
            i -= 1
            guard view[i] == 0x0A, i > view.startIndex else { continue }
            var j = i - 1
            if view[j] == 0x0D, j > view.startIndex { j -= 1 }
            if view[j] == 0x0A { return i + 1 }
        }
        return nil
    }

    /// Splits complete events apart and rewrites those that mention `"usage"`.
    static func strip(events: ByteBuffer) -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        let view = events.readableBytesView
        var start = view.startIndex
        var i = view.startIndex
        while i < view.endIndex {
            // An event ends after a newline that follows another newline (CRs ignored).
            if view[i] == 0x0A, Self.isBlankLineEnd(view, at: i) {
                let event = events.getSlice(at: events.readerIndex + (start - view.startIndex), length: i + 1 - start)!
                if let kept = rewrite(event: event) { out.append(kept) }
                start = i + 1
            }
            i += 1
        }
        if start < view.endIndex {
            out.append(events.getSlice(at: events.readerIndex + (start - view.startIndex), length: view.endIndex - start)!)
        }
        return out
    }

    private static func isBlankLineEnd(_ view: ByteBufferView, at i: ByteBufferView.Index) -> Bool {
        guard i > view.startIndex else { return false }
        var j = i - 1
        if view[j] == 0x0D {
            guard j > view.startIndex else { return false }
            j -= 1
        }
        return view[j] == 0x0A
    }

    /// One event without what `include_usage` added; nil when the whole event was added.
    static func rewrite(event: ByteBuffer) -> ByteBuffer? {
        let view = event.readableBytesView
        guard let key = view.firstRange(of: usageKey, in: view.startIndex) else { return event }
        var bytes = Array(view)
        let keyStart = key.lowerBound - view.startIndex
        // The value after the colon.
        var v = keyStart + usageKey.count
        while v < bytes.count, UsageRequest.isSpace(bytes[v]) { v += 1 }
        guard v < bytes.count, bytes[v] == UInt8(ascii: ":") else { return event }
        v += 1
        while v < bytes.count, UsageRequest.isSpace(bytes[v]) { v += 1 }
        guard v < bytes.count else { return event }
        let valueEnd: Int
        if bytes[v] == UInt8(ascii: "n"), bytes[v...].starts(with: Array("null".utf8)) {
            valueEnd = v + 4
        } else if bytes[v] == UInt8(ascii: "{") {
            // The usage-only chat chunk goes entirely.
            if view.firstRange(of: emptyChoices, in: view.startIndex) != nil { return nil }
            guard let close = matchingBrace(bytes, from: v) else { return event }
            valueEnd = close + 1
        } else {
            return event
        }
        // Remove the member with one adjacent comma.
        var removeStart = keyStart
        var removeEnd = valueEnd
        var before = keyStart - 1
        while before >= 0, UsageRequest.isSpace(bytes[before]) { before -= 1 }
        if before >= 0, bytes[before] == UInt8(ascii: ",") {
            removeStart = before
        } else {
            var after = valueEnd
            while after < bytes.count, UsageRequest.isSpace(bytes[after]) { after += 1 }
            if after < bytes.count, bytes[after] == UInt8(ascii: ",") { removeEnd = after + 1 }
        }
        bytes.removeSubrange(removeStart..<removeEnd)
        // A chunk may carry `usage` twice only if the backend is odd; handle the rest the same way.
        return rewrite(event: ByteBuffer(bytes: bytes))
    }

    /// Index of the `}` closing the object that opens at `open`, skipping strings.
    static func matchingBrace(_ bytes: [UInt8], from open: Int) -> Int? {
        var depth = 0
        var inString = false
        var i = open
        while i < bytes.count {
            let b = bytes[i]
            if inString {
                if b == UInt8(ascii: "\\") {
                    i += 1
                } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
            } else if b == UInt8(ascii: "\"") {
                inString = true
            } else if b == UInt8(ascii: "{") {
                depth += 1
            } else if b == UInt8(ascii: "}") {
                depth -= 1
                if depth == 0 { return i }
            }
            i += 1
        }
        return nil
    }
}
