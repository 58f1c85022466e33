// Any JSON value, and raw JSON kept as bytes until someone asks for its value.

import NIOCore


/// Any JSON value (used for `hardware_info`). Integers that fit in Int64 stay exact.
public enum JSONValue: Sendable, Equatable, Hashable, Codable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else if let o = try? c.decode([String: JSONValue].self) {
            self = .object(o)
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses any JSON text (top level may be any value) with the strict reader (JSONReader.swift).
    public init(jsonBytes: some Collection<UInt8>) throws {
        if let value = try jsonBytes.withContiguousStorageIfAvailable({ try Self.parse(UnsafeRawBufferPointer($0)) }) {
            self = value
        } else {
            self = try Array(jsonBytes).withUnsafeBytes { try Self.parse($0) }
        }
    }

    public init(jsonBuffer: ByteBuffer) throws {
        self = try jsonBuffer.withUnsafeReadableBytes { try Self.parse($0) }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        try JSONReader.read(bytes) { try $0.readTree(JSONValue.self) }
    }

    /// Compact JSON, object keys sorted (Go's `map[string]any` order).
    public var jsonString: String {
        var buffer = ByteBuffer()
        JSONOut.writeValue(self, into: &buffer)
        return String(buffer: buffer)
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(nilLiteral: ()) { self = .null }
}

/// One JSON object kept as the bytes it arrived as (or was encoded to), decoded only on demand.
///
/// `hardware_info` rides on every heartbeat (10,000 workers every 15 s); the hub only stores it
/// and shows it to admins, so decoding it into a `JSONValue` tree per heartbeat would be waste.
/// Equality is byte equality (the compact encoding of equal values is equal).
public struct RawJSON: Sendable, Hashable, CustomStringConvertible, ExpressibleByDictionaryLiteral {
    /// One complete, valid JSON value (an object when it came from a control message).
    public let bytes: [UInt8]

    /// Bytes already validated by the reader.
    init(unchecked bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Validates `bytes` as one JSON value.
    public init(validating bytes: some Collection<UInt8>) throws {
        let array = Array(bytes)
        try array.withUnsafeBytes { raw in try JSONReader.read(raw) { try $0.skipValue(checkingNumbers: true) } }
        self.bytes = JSONReader.withoutLineBreaks(array)
    }

    /// The compact (Go-order) encoding of `value`.
    public init(_ value: JSONValue) {
        var buffer = ByteBuffer()
        JSONOut.writeValue(value, into: &buffer)
        self.bytes = Array(buffer.readableBytesView)
    }

    public init(_ object: [String: JSONValue]) {
        self.init(.object(object))
    }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(.object(Dictionary(elements, uniquingKeysWith: { _, last in last })))
    }

    /// Decodes the value (for the admin API, tests).
    public func decode() throws -> JSONValue {
        try bytes.withUnsafeBytes { try JSONValue.parse($0) }
    }

    /// The decoded value, nil if it does not decode (it always does when built by this module).
    public var value: JSONValue? { try? decode() }

    /// The decoded object's member `key`.
    public subscript(key: String) -> JSONValue? { value?[key] }

    public var jsonString: String { String(decoding: bytes, as: UTF8.self) }
    public var description: String { jsonString }
}

extension JSONValue: JSONTreeBuilding {
    /// Integers that fit Int64 (and integral numbers up to 2^53 written with a fraction or
    /// exponent) become `.int`, other numbers `.double`; one too large for a Double is refused.
    public static func number(literal: String) -> JSONValue? {
        if !literal.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let integer = Int64(literal) { return .int(integer) }
        guard let double = Double(literal), double.isFinite else { return nil }
        if double == double.rounded(.towardZero), abs(double) <= 9_007_199_254_740_992 { return .int(Int64(double)) }
        return .double(double)
    }

    /// A repeated key: the last one wins (Go).
    public static func object(members: [(key: String, value: JSONValue)]) -> JSONValue {
        .object(Dictionary(members, uniquingKeysWith: { _, last in last }))
    }
}
