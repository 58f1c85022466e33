import NIOCore

/// The top-level fields of an OpenAI request body that decide its routing, read in one pass
/// that validates the whole body (the same strict grammar as every tunnel line) and keeps only
/// these: nothing else of the body (messages, tools, …) is materialised.
public struct RoutingFields: Sendable, Equatable {
    /// `model` if it is a string.
    public var model: String?
    /// `stream` if it is a boolean.
    public var stream: Bool?
    /// `stream_options`: nil when absent; otherwise whether it is an object, and its
    /// `include_usage` if that is a boolean.
    public var streamOptions: StreamOptions?

    public enum StreamOptions: Sendable, Equatable {
        case notAnObject
        case object(includeUsage: Bool?)
    }

    public init(model: String? = nil, stream: Bool? = nil, streamOptions: StreamOptions? = nil) {
        self.model = model
        self.stream = stream
        self.streamOptions = streamOptions
    }

    /// Reads `body`, which must be one JSON object. A repeated key counts as its last value.
    /// Throws `JSONReadError` (including `typeMismatch` when the body is not an object).
    public static func read(_ body: ByteBuffer) throws -> RoutingFields {
        try body.withUnsafeReadableBytes { raw in
            try JSONReader.read(raw) { reader in
                var fields = RoutingFields()
                var object = try reader.beginObject()
                while let key = try reader.nextKey(&object) {
                    if key == "model" {
                        fields.model = try reader.peek() == UInt8(ascii: "\"") ? try reader.readString() : nil
                        if fields.model == nil { try reader.skipValue() }
                    } else if key == "stream" {
                        let next = try reader.peek()
                        if next == UInt8(ascii: "t") || next == UInt8(ascii: "f") {
                            fields.stream = try reader.readBool()
                        } else {
                            fields.stream = nil
                            try reader.skipValue()
                        }
                    } else if key == "stream_options" {
                        fields.streamOptions = try reader.peek() == UInt8(ascii: "{") ? .object(includeUsage: try readIncludeUsage(&reader)) : .notAnObject
                        if fields.streamOptions == .notAnObject { try reader.skipValue() }
                    } else {
                        try reader.skipValue()
                    }
                }
                return fields
            }
        }
    }

    private static func readIncludeUsage(_ reader: inout JSONReader) throws -> Bool? {
        var includeUsage: Bool?
        var object = try reader.beginObject()
        while let key = try reader.nextKey(&object) {
            let next = try reader.peek()
            if key == "include_usage", next == UInt8(ascii: "t") || next == UInt8(ascii: "f") {
                includeUsage = try reader.readBool()
            } else {
                if key == "include_usage" { includeUsage = nil }
                try reader.skipValue()
            }
        }
        return includeUsage
    }
}
