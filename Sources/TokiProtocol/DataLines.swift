// Data-stream lines of the Tokilake/Tokiame tunnel (spec §5.2, §5.3, §6.6).
//
// One `TunnelRequest` line hub→worker, then `TunnelResponse` lines worker→hub: a head frame
// (status + headers), zero or more `body_chunk` frames, then `eof` or `error`.
// Bytes fields are standard padded base64 on the wire (Go `[]byte`); decoding also accepts a
// JSON array of 0-255 integers (what the Rust prototype emits).
//
// Each line type has exactly one encoder (Go field order, header maps sorted) and one decoder
// (the one-pass JSONReader; base64 payloads decoded straight from the line).

import NIOCore

// MARK: - Route kinds

/// `TunnelRequest.route_kind` values (spec §5.2, §6.6). The OpenAI paths they come from are the
/// hub's business (TokiHub/OpenAIRoutes.swift).
public enum RouteKind: String, Sendable, CaseIterable {
    case chatCompletions = "chat_completions"
    case completions = "completions"
    case responses = "responses"
    case embeddings = "embeddings"
    case rerank = "rerank"
    case audioSpeech = "audio_speech"
    case audioTranscription = "audio_transcription"
    case audioTranslation = "audio_translation"
    case imagesGenerations = "images_generations"
    case imagesEdits = "images_edits"
    case imagesVariations = "images_variations"
    case videosCreate = "videos_create"
    case videosGet = "videos_get"
    case videosContent = "videos_content"

    /// HTTP method the hub uses for this route.
    public var method: String {
        switch self {
        case .videosGet, .videosContent: return "GET"
        default: return "POST"
        }
    }

    /// Whether the client body is multipart for this route (spec §6.6).
    public var isMultipart: Bool {
        switch self {
        case .audioTranscription, .audioTranslation, .imagesEdits, .imagesVariations: return true
        default: return false
        }
    }
}

// MARK: - TunnelRequest

/// Hub → worker, exactly one NDJSON line per data stream.
public struct TunnelRequest: NDJSONLine, Sendable, Equatable {
    public var requestID: String
    public var routeKind: String
    public var method: String
    public var path: String
    /// The public model name; the worker routes on this.
    public var model: String?
    public var headers: [String: String]?
    public var isStream: Bool?
    /// The whole request body.
    public var body: ByteBuffer?

    public init(requestID: String, routeKind: String, method: String, path: String, model: String? = nil,
                headers: [String: String]? = nil, isStream: Bool? = nil, body: ByteBuffer? = nil) {
        self.requestID = requestID
        self.routeKind = routeKind
        self.method = method
        self.path = path
        self.model = model
        self.headers = headers
        self.isStream = isStream
        self.body = body
    }

    public init(requestID: String, routeKind: RouteKind, path: String, model: String? = nil,
                headers: [String: String]? = nil, isStream: Bool? = nil, body: ByteBuffer? = nil) {
        self.init(requestID: requestID, routeKind: routeKind.rawValue, method: routeKind.method, path: path,
                  model: model, headers: headers, isStream: isStream, body: body)
    }

    /// Typed route kind, nil if unknown.
    public var route: RouteKind? { RouteKind(rawValue: routeKind) }

    // MARK: Encoding

    public var encodedLengthHint: Int { 256 + Base64.encodedLength(body?.readableBytes ?? 0) }

    /// The encoder: `{"request_id","route_kind","method","path","model"?,"headers"?,"is_stream"?,"body"?}`.
    public func writeJSON(into buffer: inout ByteBuffer) {
        var o = JSONOut.ObjectWriter(&buffer)
        o.string("request_id", requestID, &buffer)
        o.string("route_kind", routeKind, &buffer)
        o.string("method", method, &buffer)
        o.string("path", path, &buffer)
        o.optString("model", model, &buffer)
        o.optStringMap("headers", headers, &buffer)
        o.optBool("is_stream", isStream, &buffer)
        if let body {
            o.key("body", &buffer)
            buffer.writeInteger(UInt8(ascii: "\""))
            Base64.encode(body, into: &buffer)
            buffer.writeInteger(UInt8(ascii: "\""))
        }
        o.close(&buffer)
    }

    // MARK: Decoding

    /// The decoder: one line (surrounding whitespace allowed). Unknown keys are ignored, null
    /// is absent, a repeated key's last value wins; throws `JSONReadError`.
    public static func decode(line: ByteBuffer) throws -> TunnelRequest {
        try line.withUnsafeReadableBytes { try decode(bytes: $0) }
    }

    public static func decode(bytes: UnsafeRawBufferPointer) throws -> TunnelRequest {
        try JSONReader.read(bytes) { r in
            var m = TunnelRequest(requestID: "", routeKind: "", method: "", path: "")
            try r.readFields(of: &m) { r, m, key in
                if key == "request_id" {
                    try r.read(&m.requestID)
                } else if key == "route_kind" {
                    try r.read(&m.routeKind)
                } else if key == "method" {
                    try r.read(&m.method)
                } else if key == "path" {
                    try r.read(&m.path)
                } else if key == "model" {
                    try r.read(&m.model)
                } else if key == "headers" {
                    m.headers = try r.readStringMap(into: m.headers)
                } else if key == "is_stream" {
                    try r.read(&m.isStream)
                } else if key == "body" {
                    m.body = try r.readBytes()
                } else {
                    return false
                }
                return true
            }
            return m
        }
    }
}

// MARK: - TunnelResponse

/// Worker → hub NDJSON frames.
public struct TunnelResponse: NDJSONLine, Sendable, Equatable {
    public var requestID: String
    public var statusCode: Int?
    public var headers: [String: String]?
    public var bodyChunk: ByteBuffer?
    public var eof: Bool?
    public var error: ErrorPayload?

    public init(requestID: String, statusCode: Int? = nil, headers: [String: String]? = nil,
                bodyChunk: ByteBuffer? = nil, eof: Bool? = nil, error: ErrorPayload? = nil) {
        self.requestID = requestID
        self.statusCode = statusCode
        self.headers = headers
        self.bodyChunk = bodyChunk
        self.eof = eof
        self.error = error
    }

    /// True for `eof` or `error` frames.
    public var isTerminal: Bool { eof == true || error != nil }

    // MARK: Encoding

    public var encodedLengthHint: Int { 128 + Base64.encodedLength(bodyChunk?.readableBytes ?? 0) }

    /// The encoder (see `write(requestID:…)`).
    public func writeJSON(into buffer: inout ByteBuffer) {
        if let bodyChunk {
            bodyChunk.withUnsafeReadableBytes { chunk in
                Self.write(requestID: requestID, statusCode: statusCode, headers: headers, bodyChunk: chunk, eof: eof,
                           error: error, into: &buffer)
            }
        } else {
            Self.write(requestID: requestID, statusCode: statusCode, headers: headers, bodyChunk: nil, eof: eof,
                       error: error, into: &buffer)
        }
    }

    /// The encoder, shared by `writeLine` and the per-frame helpers below:
    /// `{"request_id","status_code"?,"headers"?,"body_chunk"?,"eof"?,"error"?}` (Go field order).
    static func write(requestID: String, statusCode: Int?, headers: [String: String]?, bodyChunk: UnsafeRawBufferPointer?,
                      eof: Bool?, error: ErrorPayload?, into buffer: inout ByteBuffer) {
        var o = JSONOut.ObjectWriter(&buffer)
        o.string("request_id", requestID, &buffer)
        o.optInt("status_code", statusCode, &buffer)
        o.optStringMap("headers", headers, &buffer)
        if let bodyChunk {
            o.key("body_chunk", &buffer)
            buffer.writeInteger(UInt8(ascii: "\""))
            Base64.encode(bodyChunk, into: &buffer)
            buffer.writeInteger(UInt8(ascii: "\""))
        }
        o.optBool("eof", eof, &buffer)
        if let error {
            o.key("error", &buffer)
            error.writeJSON(into: &buffer)
        }
        o.close(&buffer)
    }

    // MARK: Frame helpers for the worker's hot path (no TunnelResponse value, no body copy)

    /// `{"request_id":…,"status_code":S,"headers":{…}}\n`; `headers` omitted when empty.
    public static func writeHeadLine(requestID: String, statusCode: Int, headers: [String: String],
                                     into buffer: inout ByteBuffer) {
        write(requestID: requestID, statusCode: statusCode, headers: headers.isEmpty ? nil : headers, bodyChunk: nil,
              eof: nil, error: nil, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// `{"request_id":…,"body_chunk":"<base64>"}\n`, base64 written straight into `buffer`.
    public static func writeBodyChunkLine(requestID: String, chunk: ByteBuffer, into buffer: inout ByteBuffer) {
        chunk.withUnsafeReadableBytes { writeBodyChunkLine(requestID: requestID, bytes: $0, into: &buffer) }
    }

    public static func writeBodyChunkLine(requestID: String, bytes: UnsafeRawBufferPointer,
                                          into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: requestID.utf8.count + 36 + Base64.encodedLength(bytes.count))
        write(requestID: requestID, statusCode: nil, headers: nil, bodyChunk: bytes, eof: nil, error: nil, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// `{"request_id":…,"eof":true}\n`
    public static func writeEOFLine(requestID: String, into buffer: inout ByteBuffer) {
        write(requestID: requestID, statusCode: nil, headers: nil, bodyChunk: nil, eof: true, error: nil, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    /// `{"request_id":…,"error":{"code":…,"message":…}}\n` (`code` omitted when nil).
    public static func writeErrorLine(requestID: String, code: String?, message: String,
                                      into buffer: inout ByteBuffer) {
        write(requestID: requestID, statusCode: nil, headers: nil, bodyChunk: nil, eof: nil,
              error: ErrorPayload(code: code, message: message), into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    // MARK: Decoding

    /// The decoder: one response line (surrounding whitespace allowed). Unknown keys are
    /// ignored, null is absent, a repeated key's last value wins; throws `JSONReadError`.
    /// A `body_chunk` is decoded from the line's base64 straight into its own buffer.
    public static func decodeLine(_ line: ByteBuffer) throws -> TunnelResponse {
        try line.withUnsafeReadableBytes { try decode(bytes: $0) }
    }

    public static func decode(bytes: UnsafeRawBufferPointer) throws -> TunnelResponse {
        try JSONReader.read(bytes) { r in
            var m = TunnelResponse(requestID: "")
            try r.readFields(of: &m) { r, m, key in
                if key == "request_id" {
                    try r.read(&m.requestID)
                } else if key == "body_chunk" {
                    m.bodyChunk = try r.readBytes()
                } else if key == "eof" {
                    try r.read(&m.eof)
                } else if key == "status_code" {
                    try r.read(&m.statusCode)
                } else if key == "headers" {
                    m.headers = try r.readStringMap(into: m.headers)
                } else if key == "error" {
                    m.error = try ErrorPayload.read(&r, into: m.error)
                } else {
                    return false
                }
                return true
            }
            return m
        }
    }
}
