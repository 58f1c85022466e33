// A strict one-pass JSON reader over bytes (RFC 8259), for the tunnel's decoders.
//
// Pull style: the message decoders walk their object with `beginObject` / `nextKey` and read
// each field with a typed reader (`readString`, `readInt`, …) or `skipValue`, so a line is
// scanned once, nothing is materialised that a decoder does not keep, and byte payloads
// (base64) are decoded straight from the input. No Foundation.
//
// Semantics (what the Go originals and the previous JSONDecoder-based decoders agree on):
//  - strict grammar: no comments, no trailing commas, no NaN/Infinity, no leading zeros,
//    no control bytes inside strings; only whitespace may follow the top-level value;
//  - strings: every JSON escape, `\u` surrogate pairs combined; a lone or unpaired
//    surrogate becomes U+FFFD (as Go's decoder does); raw bytes must be valid UTF-8
//    (JSONDecoder rejected invalid UTF-8, and so do we — Go would substitute U+FFFD);
//  - integers: digits only (`1.0`, `1e2` are not integers, as in Go), range-checked;
//  - nesting deeper than `maxDepth` is an error (bounded recursion on hostile input);
//  - object keys are compared byte for byte, so matching is case-sensitive. Go's
//    encoding/json also accepts keys differing only in case; the previous (Codable) decoders
//    did not, no known peer sends such keys, and accepting them would let one line carry two
//    spellings of a field. We keep the exact match.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// What was wrong with a JSON text, and where (byte offset into the decoded line).
public struct JSONReadError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        case unexpectedEnd
        case unexpectedByte(UInt8)
        case invalidEscape
        case invalidUTF8
        case controlCharacterInString
        case invalidNumber
        case numberOutOfRange
        case typeMismatch(expected: String)
        case tooDeep(limit: Int)
        case trailingData
        case invalidBase64
    }

    public var reason: Reason
    public var offset: Int

    public init(_ reason: Reason, offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String {
        let what: String
        switch reason {
        case .unexpectedEnd: what = "unexpected end of JSON input"
        case .unexpectedByte(let b):
            what = b >= 0x20 && b < 0x7F ? "unexpected character '\(Character(Unicode.Scalar(b)))'" : "unexpected byte 0x\(String(b, radix: 16))"
        case .invalidEscape: what = "invalid escape in string"
        case .invalidUTF8: what = "invalid UTF-8 in string"
        case .controlCharacterInString: what = "control character in string"
        case .invalidNumber: what = "invalid number"
        case .numberOutOfRange: what = "number out of range"
        case .typeMismatch(let expected): what = "expected \(expected)"
        case .tooDeep(let limit): what = "nesting deeper than \(limit)"
        case .trailingData: what = "data after the JSON value"
        case .invalidBase64: what = "invalid base64"
        }
        return "JSON: \(what) at offset \(offset)"
    }
}

/// An object key as read: a slice of the input, or (when it contained escapes) its decoded bytes.
struct JSONKey {
    let raw: UnsafeRawBufferPointer
    let decoded: [UInt8]?

    @inline(__always)
    static func == (key: JSONKey, literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        if let decoded = key.decoded {
            return decoded.count == n && decoded.withUnsafeBytes { JSONKey.equal($0, literal.utf8Start, n) }
        }
        return key.raw.count == n && equal(key.raw, literal.utf8Start, n)
    }

    @inline(__always)
    private static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        var k = 0
        while k < n {
            if a[k] != b[k] { return false }
            k += 1
        }
        return true
    }

    var string: String {
        if let decoded { return String(decoding: decoded, as: UTF8.self) }
        return String(decoding: raw, as: UTF8.self)
    }
}

/// A JSON value type that JSONReader can build, for callers with their own idea of a value (the
/// admin client keeps key order and numbers' literal text): one grammar, one set of checks.
/// Enum cases of the same names satisfy the requirements.
public protocol JSONTreeBuilding {
    static var null: Self { get }
    static func bool(_ value: Bool) -> Self
    /// A number from its literal text (already checked against the JSON grammar); nil refuses
    /// it as out of range.
    static func number(literal: String) -> Self?
    static func string(_ value: String) -> Self
    static func array(_ items: [Self]) -> Self
    /// Members in document order, a repeated key as often as it appears.
    static func object(members: [(key: String, value: Self)]) -> Self
}

extension JSONTreeBuilding {
    /// Reads one JSON document; whitespace around it is allowed, anything else after it is not.
    /// Throws `JSONReadError`.
    public static func readJSON(_ bytes: [UInt8]) throws -> Self {
        try bytes.withUnsafeBytes { raw in try JSONReader.read(raw) { try $0.readTree(Self.self) } }
    }
}

/// Reads one JSON text held in `bytes` (valid for the reader's lifetime).
struct JSONReader {
    static let allocator = ByteBufferAllocator()

    /// Deepest nesting of arrays and objects accepted (hardware_info is a few levels deep).
    static let maxDepth = 128

    let bytes: UnsafeRawBufferPointer
    private(set) var index = 0
    private var depth = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// Runs `body` on a reader over `bytes`, then requires that only whitespace is left.
    static func read<T>(_ bytes: UnsafeRawBufferPointer, _ body: (inout JSONReader) throws -> T) throws -> T {
        var reader = JSONReader(bytes)
        let value = try body(&reader)
        try reader.finish()
        return value
    }

    func error(_ reason: JSONReadError.Reason) -> JSONReadError { JSONReadError(reason, offset: index) }

    // MARK: Tokens

    @inline(__always)
    mutating func skipSpace() {
        while index < bytes.count {
            let b = bytes[index]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            index += 1
        }
    }

    /// The next non-space byte (not consumed).
    @inline(__always)
    mutating func peek() throws -> UInt8 {
        skipSpace()
        guard index < bytes.count else { throw error(.unexpectedEnd) }
        return bytes[index]
    }

    @inline(__always)
    private mutating func expect(_ b: UInt8) throws {
        let next = try peek()
        guard next == b else { throw error(.unexpectedByte(next)) }
        index += 1
    }

    private mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard index + n <= bytes.count else { throw error(.unexpectedEnd) }
        for k in 0..<n where bytes[index + k] != word.utf8Start[k] {
            index += k
            throw error(.unexpectedByte(bytes[index]))
        }
        index += n
    }

    /// Only whitespace may follow the value.
    mutating func finish() throws {
        skipSpace()
        guard index == bytes.count else { throw error(.trailingData) }
    }

    /// Consumes `null` if it comes next.
    @inline(__always)
    mutating func readNull() throws -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    // MARK: Objects and arrays

    struct Cursor {
        fileprivate var first = true
    }

    /// Consumes `{`; then call `nextKey` until it returns nil.
    mutating func beginObject() throws -> Cursor {
        let next = try peek()
        guard next == UInt8(ascii: "{") else { throw error(.typeMismatch(expected: "an object")) }
        try enter()
        index += 1
        return Cursor()
    }

    /// The next member's key (its value comes next and must be read or skipped), or nil at `}`.
    mutating func nextKey(_ cursor: inout Cursor) throws -> JSONKey? {
        var next = try peek()
        if next == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return nil
        }
        if cursor.first {
            cursor.first = false
        } else {
            guard next == UInt8(ascii: ",") else { throw error(.unexpectedByte(next)) }
            index += 1
            next = try peek()
        }
        guard next == UInt8(ascii: "\"") else { throw error(.unexpectedByte(next)) }
        let key = try readKey()
        try expect(UInt8(ascii: ":"))
        return key
    }

    /// Consumes `[`; then call `nextElement` until it returns false.
    mutating func beginArray() throws -> Cursor {
        let next = try peek()
        guard next == UInt8(ascii: "[") else { throw error(.typeMismatch(expected: "an array")) }
        try enter()
        index += 1
        return Cursor()
    }

    /// True if another element follows (read or skip it), false at `]`.
    mutating func nextElement(_ cursor: inout Cursor) throws -> Bool {
        let next = try peek()
        if next == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return false
        }
        if cursor.first {
            cursor.first = false
        } else {
            guard next == UInt8(ascii: ",") else { throw error(.unexpectedByte(next)) }
            index += 1
        }
        return true
    }

    private mutating func enter() throws {
        depth += 1
        guard depth <= Self.maxDepth else { throw error(.tooDeep(limit: Self.maxDepth)) }
    }

    // MARK: Strings

    /// The string at `index` (its opening quote): a slice of the input, or its decoded bytes
    /// when it holds escapes. Validates escapes and UTF-8.
    private mutating func readKey() throws -> JSONKey {
        index += 1  // opening quote
        let start = index
        var ascii = true
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
                if !ascii, !Self.isValidUTF8(raw) { throw JSONReadError(.invalidUTF8, offset: start) }
                index += 1
                return JSONKey(raw: raw, decoded: nil)
            }
            if b == UInt8(ascii: "\\") {
                index = start - 1
                return JSONKey(raw: UnsafeRawBufferPointer(rebasing: bytes[start..<start]), decoded: try readStringBytes())
            }
            if b < 0x20 { throw error(.controlCharacterInString) }
            if b >= 0x80 { ascii = false }
            index += 1
        }
        throw error(.unexpectedEnd)
    }

    /// A string value.
    mutating func readString() throws -> String {
        guard try peek() == UInt8(ascii: "\"") else { throw error(.typeMismatch(expected: "a string")) }
        return try readKey().string
    }

    /// A string or null (nil).
    @inline(__always)
    mutating func readOptionalString() throws -> String? {
        try readNull() ? nil : readString()
    }

    /// The decoded bytes of the string at `index` (its opening quote), escapes resolved,
    /// validated as UTF-8.
    private mutating func readStringBytes() throws -> [UInt8] {
        index += 1
        let start = index
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var runStart = index
        func flush(_ out: inout [UInt8], _ end: Int) {
            if runStart < end { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<end])) }
        }
        while index < bytes.count {
            let b = bytes[index]
            if b == UInt8(ascii: "\"") {
                flush(&out, index)
                index += 1
                guard Self.isValidUTF8(out) else { throw JSONReadError(.invalidUTF8, offset: start) }
                return out
            }
            if b < 0x20 { throw error(.controlCharacterInString) }
            guard b == UInt8(ascii: "\\") else {
                index += 1
                continue
            }
            flush(&out, index)
            guard index + 1 < bytes.count else { throw error(.unexpectedEnd) }
            let e = bytes[index + 1]
            index += 2
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard let unit = hex4(at: index) else { throw error(.invalidEscape) }
                index += 4
                var scalar = unit
                if (0xD800..<0xDC00).contains(unit) {
                    // A high surrogate pairs with an immediately following \u low surrogate;
                    // otherwise it becomes U+FFFD and what follows is read on its own (Go).
                    if index + 6 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u"),
                       let low = hex4(at: index + 2), (0xDC00..<0xE000).contains(low) {
                        scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    } else {
                        scalar = 0xFFFD
                    }
                } else if (0xDC00..<0xE000).contains(unit) {
                    scalar = 0xFFFD
                }
                Self.appendUTF8(scalar, to: &out)
            default:
                index -= 2
                throw error(.invalidEscape)
            }
            runStart = index
        }
        throw error(.unexpectedEnd)
    }

    private func hex4(at offset: Int) -> UInt32? {
        guard offset + 4 <= bytes.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = bytes[offset + k]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            v = v << 4 | UInt32(d)
        }
        return v
    }

    static func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0..<0x80:
            out.append(UInt8(scalar))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | scalar >> 6))
            out.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | scalar >> 12))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        default:
            out.append(UInt8(0xF0 | scalar >> 18))
            out.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
    static func isValidUTF8(_ s: some Collection<UInt8>) -> Bool {
        var it = s.makeIterator()
        while let b0 = it.next() {
            if b0 < 0x80 { continue }
            let need: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED: need = 2; hi = 0x9F
            case 0xF0: need = 3; lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; hi = 0x8F
            default: return false
            }
            guard let b1 = it.next(), b1 >= lo, b1 <= hi else { return false }
            if need >= 2 {
                guard let b2 = it.next(), b2 & 0xC0 == 0x80 else { return false }
            }
            if need == 3 {
                guard let b3 = it.next(), b3 & 0xC0 == 0x80 else { return false }
            }
        }
        return true
    }

    // MARK: Scalars

    /// `true` or `false`.
    mutating func readBool() throws -> Bool {
        switch try peek() {
        case UInt8(ascii: "t"):
            try literal("true")
            return true
        case UInt8(ascii: "f"):
            try literal("false")
            return false
        default:
            throw error(.typeMismatch(expected: "a boolean"))
        }
    }

    /// A JSON integer (no fraction, no exponent) that fits in Int.
    mutating func readInt() throws -> Int {
        let next = try peek()
        guard next == UInt8(ascii: "-") || (next >= UInt8(ascii: "0") && next <= UInt8(ascii: "9")) else {
            throw error(.typeMismatch(expected: "an integer"))
        }
        let start = index
        let number = try scanNumber()
        guard number.isInteger else {
            index = start
            throw error(.typeMismatch(expected: "an integer"))
        }
        guard let value = Self.parseInteger(UnsafeRawBufferPointer(rebasing: bytes[start..<index])) else {
            index = start
            throw error(.numberOutOfRange)
        }
        return value
    }

    /// Digits with an optional leading minus, already checked against the grammar.
    private static func parseInteger(_ s: UnsafeRawBufferPointer) -> Int? {
        var k = 0
        let negative = s[0] == UInt8(ascii: "-")
        if negative { k = 1 }
        var value = 0
        while k < s.count {
            let d = Int(s[k] &- UInt8(ascii: "0"))
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
            if o1 || o2 { return nil }
            value = a
            k += 1
        }
        return value
    }

    /// Consumes one number per the JSON grammar; reports whether it had no fraction or exponent.
    private mutating func scanNumber() throws -> (isInteger: Bool, Void) {
        var integer = true
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count else { throw error(.unexpectedEnd) }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else if isDigit(bytes[index]) {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        } else {
            throw error(.invalidNumber)
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            integer = false
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error(.invalidNumber) }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            integer = false
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error(.invalidNumber) }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        return (integer, ())
    }

    @inline(__always)
    private func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    // MARK: Whole values

    /// Validates and skips any value.
    /// Validates and skips any value. `checkingNumbers`: numbers must also be representable
    /// (what `JSONValue` accepts: an Int64 or a finite Double), as Go checks them when it
    /// decodes into `any`; unknown keys' values are only checked for syntax, as Go skips them.
    mutating func skipValue(checkingNumbers: Bool = false) throws {
        switch try peek() {
        case UInt8(ascii: "{"):
            var c = try beginObject()
            while try nextKey(&c) != nil { try skipValue(checkingNumbers: checkingNumbers) }
        case UInt8(ascii: "["):
            var c = try beginArray()
            while try nextElement(&c) { try skipValue(checkingNumbers: checkingNumbers) }
        case UInt8(ascii: "\""):
            _ = try readKey()  // same scan as a key: validates escapes and UTF-8, no allocation unless escaped
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            _ = try readBool()
        case UInt8(ascii: "n"):
            try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            if checkingNumbers {
                _ = try readNumber(JSONValue.self)
            } else {
                _ = try scanNumber()
            }
        case let b:
            throw error(.unexpectedByte(b))
        }
    }

    /// Skips a value and returns its bytes (leading whitespace excluded).
    mutating func rawValue() throws -> UnsafeRawBufferPointer {
        skipSpace()
        let start = index
        try skipValue(checkingNumbers: true)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<index])
    }

    /// Any value as a `Tree`: objects keep their members in document order (duplicates too),
    /// numbers their literal text; otherwise the same grammar and checks as every other read.
    mutating func readTree<Tree: JSONTreeBuilding>(_ tree: Tree.Type) throws -> Tree {
        switch try peek() {
        case UInt8(ascii: "{"):
            var members: [(key: String, value: Tree)] = []
            var c = try beginObject()
            while let key = try nextKey(&c) { members.append((key.string, try readTree(tree))) }
            return .object(members: members)
        case UInt8(ascii: "["):
            var items: [Tree] = []
            var c = try beginArray()
            while try nextElement(&c) { items.append(try readTree(tree)) }
            return .array(items)
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            return .bool(try readBool())
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try readNumber(tree)
        case let b:
            throw error(.unexpectedByte(b))
        }
    }

    /// A number, as `Tree` makes it of its literal text; one it refuses is out of range.
    private mutating func readNumber<Tree: JSONTreeBuilding>(_ tree: Tree.Type) throws -> Tree {
        let start = index
        _ = try scanNumber()
        guard let number = Tree.number(literal: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)) else {
            index = start
            throw error(.numberOutOfRange)
        }
        return number
    }

    // MARK: Typed helpers for the message decoders

    /// A string field: null leaves it as it is (Go's decoding of null into a string).
    mutating func read(_ target: inout String) throws {
        if let v = try readOptionalString() { target = v }
    }

    mutating func read(_ target: inout String?) throws {
        if let v = try readOptionalString() { target = v }
    }

    mutating func read(_ target: inout Int?) throws {
        if !(try readNull()) { target = try readInt() }
    }

    mutating func read(_ target: inout Bool?) throws {
        if !(try readNull()) { target = try readBool() }
    }

    /// An array of strings, or nil for null. A null element is "" (Go's zero value).
    mutating func readStrings() throws -> [String]? {
        if try readNull() { return nil }
        var out: [String] = []
        var c = try beginArray()
        while try nextElement(&c) { out.append(try readOptionalString() ?? "") }
        return out
    }

    /// A string → string object into `map` (Go decodes into an existing map, so a repeated key
    /// adds to it), or nil for null. A null value is "" (Go's zero value).
    mutating func readStringMap(into map: [String: String]?) throws -> [String: String]? {
        if try readNull() { return nil }
        var out = map ?? [:]
        var c = try beginObject()
        while let key = try nextKey(&c) { out[key.string] = try readOptionalString() ?? "" }
        return out
    }

    /// Go `[]byte`: a standard base64 string (CR/LF ignored, padding optional) decoded straight
    /// from the input, or an array of 0...255 integers; nil for null.
    mutating func readBytes() throws -> ByteBuffer? {
        switch try peek() {
        case UInt8(ascii: "n"):
            try literal("null")
            return nil
        case UInt8(ascii: "\""):
            let start = index
            // Fast path (every line a worker or hub writes): the span up to the next quote is
            // plain base64, decoded straight from the line. Base64 has no quote or backslash,
            // so a span the strict decoder accepts is the whole string.
            if let base = bytes.baseAddress, let quote = memchr(base + start + 1, 0x22, bytes.count - start - 1) {
                let end = base.distance(to: UnsafeRawPointer(quote))
                var out = Self.allocator.buffer(capacity: (end - start) / 4 * 3 + 3)
                if Base64.decodeStrict(UnsafeRawBufferPointer(rebasing: bytes[(start + 1)..<end]), into: &out) {
                    index = end + 1
                    return out
                }
            }
            // Escapes (e.g. `\n` line breaks Go's decoder skips), or an error to report.
            let key = try readKey()
            let ok: Bool
            var out = ByteBuffer()
            if let decoded = key.decoded {
                ok = decoded.withUnsafeBytes { Base64.decodeLenient($0, into: &out) }
            } else {
                ok = Base64.decodeLenient(key.raw, into: &out)
            }
            guard ok else { throw JSONReadError(.invalidBase64, offset: start) }
            return out
        case UInt8(ascii: "["):
            var out = ByteBuffer()
            var c = try beginArray()
            while try nextElement(&c) {
                let at = index
                let v = try readInt()
                guard (0...255).contains(v) else { throw JSONReadError(.numberOutOfRange, offset: at) }
                out.writeInteger(UInt8(v))
            }
            return out
        default:
            throw error(.typeMismatch(expected: "a base64 string"))
        }
    }

    /// An object kept as its raw bytes (e.g. `hardware_info`), validated; nil for null.
    mutating func readRawObject() throws -> RawJSON? {
        if try readNull() { return nil }
        guard try peek() == UInt8(ascii: "{") else { throw error(.typeMismatch(expected: "an object")) }
        return RawJSON(unchecked: Self.withoutLineBreaks(try rawValue()))
    }

    /// The bytes of a valid JSON value with CR and LF whitespace removed, so that writing
    /// them back keeps an NDJSON line one line (inside strings they are always escaped).
    static func withoutLineBreaks(_ raw: some Collection<UInt8>) -> [UInt8] {
        guard raw.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return Array(raw) }
        return raw.filter { $0 != 0x0A && $0 != 0x0D }
    }
}
