// One field list per wire object, walked by the encoder and by the decoder.
//
// A message or payload says once, in `fields`, which fields it has, their JSON names and their
// order (Go's declaration order). `FieldWriter` walks that list to encode (compact JSON, absent
// optionals omitted like Go's `omitempty`); `FieldReader` walks it to decode the value of one key
// (the one-pass JSONReader: unknown keys skipped, null = absent, a repeated key's last value
// wins, a repeated nested payload merges into the earlier one as Go decodes into an existing
// struct). Both are specialised per message: no key paths, no closures, nothing allocated per
// field beyond the values themselves.

import NIOCore

/// A JSON object of the tunnel protocol, described by its field list.
protocol WireObject {
    /// What decoding starts from: every field absent (required strings empty).
    static var absent: Self { get }

    /// Hands each field to `coder`, in Go's declaration order.
    static func fields<Coder: WireFieldCoder>(_ coder: inout Coder, _ value: inout Self) throws(Coder.Failure)
}

/// Something that visits a wire object's fields: the encoder or the decoder. What a field means
/// on the wire depends only on its type (see `FieldWriter` and `FieldReader`).
protocol WireFieldCoder {
    associatedtype Failure: Error
    mutating func field(_ key: StaticString, _ value: inout String) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout ControlMessageType) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout String?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout Int?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout Bool?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout [String]?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout [String: String]?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout RawJSON?) throws(Failure)
    mutating func field(_ key: StaticString, _ value: inout ByteBuffer?) throws(Failure)
    mutating func field<Payload: WireObject>(_ key: StaticString, _ value: inout Payload?) throws(Failure)
}

extension WireObject {
    /// The encoder: `{"key":value,...}` in field order, absent optionals omitted.
    func writeFields(into buffer: inout ByteBuffer) {
        var value = self
        withUnsafeMutablePointer(to: &buffer) { buffer in
            var writer = FieldWriter(buffer)
            Self.fields(&writer, &value)
            writer.close()
        }
    }

    /// The decoder: one JSON text holding this object (surrounding whitespace allowed).
    static func decodeFields(_ bytes: UnsafeRawBufferPointer) throws -> Self {
        try JSONReader.read(bytes) { r in
            var value = Self.absent
            try r.readFields(of: &value)
            return value
        }
    }
}

// MARK: - Encoder

/// Writes each field it is handed as `"key":value` (nothing for an absent optional).
struct FieldWriter: WireFieldCoder {
    typealias Failure = Never
    private let buffer: UnsafeMutablePointer<ByteBuffer>
    private var object: JSONOut.ObjectWriter

    /// Opens the object in `buffer`, which must outlive the writer.
    init(_ buffer: UnsafeMutablePointer<ByteBuffer>) {
        self.buffer = buffer
        object = JSONOut.ObjectWriter(&buffer.pointee)
    }

    func close() { object.close(&buffer.pointee) }

    mutating func field(_ key: StaticString, _ value: inout String) {
        object.string(key, value, &buffer.pointee)
    }
    mutating func field(_ key: StaticString, _ value: inout ControlMessageType) {
        object.string(key, value.rawValue, &buffer.pointee)
    }
    mutating func field(_ key: StaticString, _ value: inout String?) {
        object.opt(key, value, &buffer.pointee, JSONOut.writeString)
    }
    mutating func field(_ key: StaticString, _ value: inout Int?) {
        object.opt(key, value, &buffer.pointee, JSONOut.writeInt)
    }
    mutating func field(_ key: StaticString, _ value: inout Bool?) {
        object.opt(key, value, &buffer.pointee) { v, buffer in buffer.writeStaticString(v ? "true" : "false") }
    }
    mutating func field(_ key: StaticString, _ value: inout [String]?) {
        object.opt(key, value, &buffer.pointee, JSONOut.writeStrings)
    }
    mutating func field(_ key: StaticString, _ value: inout [String: String]?) {
        object.opt(key, value, &buffer.pointee, JSONOut.writeStringMap)
    }
    mutating func field(_ key: StaticString, _ value: inout RawJSON?) {
        object.opt(key, value, &buffer.pointee) { v, buffer in buffer.writeBytes(v.bytes) }
    }
    /// Go `[]byte`: standard padded base64 in a string.
    mutating func field(_ key: StaticString, _ value: inout ByteBuffer?) {
        object.opt(key, value, &buffer.pointee) { v, buffer in
            buffer.writeInteger(UInt8(ascii: "\""))
            Base64.encode(v, into: &buffer)
            buffer.writeInteger(UInt8(ascii: "\""))
        }
    }
    mutating func field<Payload: WireObject>(_ key: StaticString, _ value: inout Payload?) {
        object.opt(key, value, &buffer.pointee) { v, buffer in v.writeFields(into: &buffer) }
    }
}

// MARK: - Decoder

/// Reads the value of one key into the field of that name, if the object has one.
struct FieldReader: WireFieldCoder {
    typealias Failure = any Error
    var reader: JSONReader
    let key: JSONKey
    /// Whether a field had the key (otherwise its value is still to be skipped).
    private(set) var matched = false

    init(_ reader: JSONReader, key: JSONKey) {
        self.reader = reader
        self.key = key
    }

    /// True (once) for the field named `name` when it is the key being read.
    @inline(__always)
    private mutating func wants(_ name: StaticString) -> Bool {
        guard !matched, key == name else { return false }
        matched = true
        return true
    }

    /// A required string: null leaves it as it is (Go's decoding of null into a string).
    mutating func field(_ key: StaticString, _ value: inout String) throws {
        if wants(key) { try reader.read(&value) }
    }
    mutating func field(_ key: StaticString, _ value: inout ControlMessageType) throws {
        if wants(key), let v = try reader.readOptionalString() { value = ControlMessageType(v) }
    }
    mutating func field(_ key: StaticString, _ value: inout String?) throws {
        if wants(key) { try reader.read(&value) }
    }
    mutating func field(_ key: StaticString, _ value: inout Int?) throws {
        if wants(key) { try reader.read(&value) }
    }
    mutating func field(_ key: StaticString, _ value: inout Bool?) throws {
        if wants(key) { try reader.read(&value) }
    }
    mutating func field(_ key: StaticString, _ value: inout [String]?) throws {
        if wants(key) { value = try reader.readStrings() }
    }
    mutating func field(_ key: StaticString, _ value: inout [String: String]?) throws {
        if wants(key) { value = try reader.readStringMap(into: value) }
    }
    mutating func field(_ key: StaticString, _ value: inout RawJSON?) throws {
        if wants(key) { value = try reader.readRawObject() }
    }
    mutating func field(_ key: StaticString, _ value: inout ByteBuffer?) throws {
        if wants(key) { value = try reader.readBytes() }
    }
    /// A nested payload: nil for null; a repeated key merges into the earlier value.
    mutating func field<Payload: WireObject>(_ key: StaticString, _ value: inout Payload?) throws {
        guard wants(key) else { return }
        if try reader.readNull() {
            value = nil
        } else {
            var payload = value ?? Payload.absent
            try reader.readFields(of: &payload)
            value = payload
        }
    }
}

extension JSONReader {
    /// Reads an object's members into `value` through its field list; unknown keys' values are
    /// skipped.
    mutating func readFields<Object: WireObject>(of value: inout Object) throws {
        var c = try beginObject()
        while let key = try nextKey(&c) {
            var field = FieldReader(self, key: key)
            try Object.fields(&field, &value)
            self = field.reader
            if !field.matched { try skipValue() }
        }
    }
}
