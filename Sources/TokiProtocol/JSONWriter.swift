// The JSON writer: Go-compatible compact output (encoding/json's escaping, map keys sorted,
// struct fields in declaration order), straight into a ByteBuffer.

import NIOCore

/// A message that travels as one NDJSON line: compact JSON, then "\n".
/// A line type with a decoder (`ControlChannel.receive(_:)` reads any of them).
public protocol NDJSONDecodable {
    /// Decodes one line; throws `JSONReadError`.
    static func decode(line: ByteBuffer) throws -> Self
}

public protocol NDJSONLine {
    /// The message's one encoder: compact JSON in Go's field order, no newline.
    func writeJSON(into buffer: inout ByteBuffer)
    /// A first guess at the encoded size (for the buffer's initial capacity).
    var encodedLengthHint: Int { get }
}

extension NDJSONLine {
    /// The JSON and a trailing "\n".
    public func writeLine(into buffer: inout ByteBuffer) {
        writeJSON(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// One NDJSON line, "\n" included.
    public func encodedLine(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: encodedLengthHint)
        writeLine(into: &buffer)
        return buffer
    }

    /// Compact JSON without the newline, as a String (handy for logs and tests).
    public var jsonString: String {
        var buffer = ByteBuffer()
        writeJSON(into: &buffer)
        return String(buffer: buffer)
    }
}


extension ByteBuffer {
    /// Writes `value` as a JSON string literal, quotes included, escaped as Go does.
    public mutating func writeJSONString(_ value: String) { JSONOut.writeString(value, into: &self) }

    /// Writes `bytes` (UTF-8) escaped for the inside of a JSON string, as Go does.
    public mutating func writeJSONEscaped(_ bytes: UnsafeRawBufferPointer) { JSONOut.writeEscaped(bytes, into: &self) }
}

enum JSONOut {
    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Writes a JSON string literal with Go's escaping (`<`, `>`, `&`, U+2028, U+2029 as \u).
    static func writeString(_ s: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { utf8 in writeEscaped(UnsafeRawBufferPointer(utf8), into: &buffer) }
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func needsEscape(_ b: UInt8) -> Bool {
        b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") || b == UInt8(ascii: "<")
            || b == UInt8(ascii: ">") || b == UInt8(ascii: "&") || b == 0xE2
    }

    static func writeEscaped(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        var runStart = 0
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            if !needsEscape(b) {
                i += 1
                continue
            }
            if b == 0xE2 {
                // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
                if i + 2 < n, bytes[i + 1] == 0x80, bytes[i + 2] == 0xA8 || bytes[i + 2] == 0xA9 {
                    if runStart < i { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i])) }
                    buffer.writeStaticString(bytes[i + 2] == 0xA8 ? "\\u2028" : "\\u2029")
                    i += 3
                    runStart = i
                } else {
                    i += 1
                }
                continue
            }
            if runStart < i { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<i])) }
            switch b {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            default:
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(b >> 4)])
                buffer.writeInteger(hex[Int(b & 0xF)])
            }
            i += 1
            runStart = i
        }
        if runStart < n { buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[runStart..<n])) }
    }

    static func writeInt<I: BinaryInteger>(_ value: I, into buffer: inout ByteBuffer) {
        buffer.writeString(String(value))
    }

    static func writeDouble(_ d: Double, into buffer: inout ByteBuffer) {
        guard d.isFinite else {
            buffer.writeStaticString("null")
            return
        }
        if d == d.rounded(.towardZero), abs(d) < 1e15 {
            buffer.writeString(String(Int64(d)))
        } else {
            buffer.writeString(d.description)
        }
    }

    static func writeValue(_ v: JSONValue, into buffer: inout ByteBuffer) {
        switch v {
        case .null: buffer.writeStaticString("null")
        case .bool(let b): buffer.writeStaticString(b ? "true" : "false")
        case .int(let i): writeInt(i, into: &buffer)
        case .double(let d): writeDouble(d, into: &buffer)
        case .string(let s): writeString(s, into: &buffer)
        case .array(let a):
            buffer.writeInteger(UInt8(ascii: "["))
            for (i, e) in a.enumerated() {
                if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                writeValue(e, into: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        case .object(let o): writeObject(o, into: &buffer)
        }
    }

    static func writeStrings(_ a: [String], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "["))
        for (i, s) in a.enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            writeString(s, into: &buffer)
        }
        buffer.writeInteger(UInt8(ascii: "]"))
    }

    static func writeObject(_ o: [String: JSONValue], into buffer: inout ByteBuffer) {
        writeSorted(o, into: &buffer, value: writeValue)
    }

    static func writeStringMap(_ m: [String: String], into buffer: inout ByteBuffer) {
        writeSorted(m, into: &buffer, value: writeString)
    }

    /// `{"k":v,...}` with keys sorted, as Go's encoder writes maps.
    static func writeSorted<V>(_ map: [String: V], into buffer: inout ByteBuffer, value: (V, inout ByteBuffer) -> Void) {
        buffer.writeInteger(UInt8(ascii: "{"))
        for (i, k) in map.keys.sorted().enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            writeString(k, into: &buffer)
            buffer.writeInteger(UInt8(ascii: ":"))
            value(map[k]!, &buffer)
        }
        buffer.writeInteger(UInt8(ascii: "}"))
    }

    /// Writes `{"k":v,...}` with keys in call order: `var o = ObjectWriter(&buffer)`, then fields,
    /// then `o.close(&buffer)` (the wire objects' `FieldWriter` is built on it).
    struct ObjectWriter {
        private var first = true

        init(_ buffer: inout ByteBuffer) {
            buffer.writeInteger(UInt8(ascii: "{"))
        }

        mutating func key(_ k: StaticString, _ buffer: inout ByteBuffer) {
            if first { first = false } else { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeInteger(UInt8(ascii: "\""))
            buffer.writeStaticString(k)
            buffer.writeStaticString("\":")
        }
        mutating func string(_ k: StaticString, _ v: String, _ buffer: inout ByteBuffer) {
            key(k, &buffer)
            JSONOut.writeString(v, into: &buffer)
        }
        /// `"k":v` when `v` is present, the value written by `write`.
        mutating func opt<V>(_ k: StaticString, _ v: V?, _ buffer: inout ByteBuffer, _ write: (V, inout ByteBuffer) -> Void) {
            if let v {
                key(k, &buffer)
                write(v, &buffer)
            }
        }
        func close(_ buffer: inout ByteBuffer) {
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }
}
