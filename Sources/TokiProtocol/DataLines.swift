// Data-stream lines of the Tokilake/Tokiame tunnel (spec §5.2, §5.3, §6.6).
//
// One `TunnelRequest` line hub→worker, then `TunnelResponse` lines worker→hub: a head frame
// (status + headers), zero or more `body_chunk` frames, then `eof` or `error`.
// Bytes fields are standard padded base64 on the wire (Go `[]byte`); decoding also accepts a
// JSON array of 0-255 integers (what the Rust prototype emits).
//
// Each line type lists its fields once (`fields`, Go's order; see WireFields.swift): that list is
// its one encoder (header maps sorted) and its one decoder (the one-pass JSONReader; base64
// payloads decoded straight from the line).

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
public struct TunnelRequest: NDJSONLine, WireObject, Sendable, Equatable {
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
    public func writeJSON(into buffer: inout ByteBuffer) { writeFields(into: &buffer) }

    static let absent = TunnelRequest(requestID: "", routeKind: "", method: "", path: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ m: inout Self) throws(Coder.Failure) {
        try c.field("request_id", &m.requestID)
        try c.field("route_kind", &m.routeKind)
        try c.field("method", &m.method)
        try c.field("path", &m.path)
        try c.field("model", &m.model)
        try c.field("headers", &m.headers)
        try c.field("is_stream", &m.isStream)
        try c.field("body", &m.body)
    }

    // MARK: Decoding

    /// The decoder: one line (surrounding whitespace allowed). Unknown keys are ignored, null
    /// is absent, a repeated key's last value wins; throws `JSONReadError`.
    public static func decode(line: ByteBuffer) throws -> TunnelRequest {
        try line.withUnsafeReadableBytes { try decode(bytes: $0) }
    }

    public static func decode(bytes: UnsafeRawBufferPointer) throws -> TunnelRequest {
        try decodeFields(bytes)
    }
}

// MARK: - TunnelResponse

/// Worker → hub NDJSON frames.
public struct TunnelResponse: NDJSONLine, WireObject, Sendable, Equatable {
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

    /// The encoder: `{"request_id","status_code"?,"headers"?,"body_chunk"?,"eof"?,"error"?}` (Go field order).
    public func writeJSON(into buffer: inout ByteBuffer) { writeFields(into: &buffer) }

    static let absent = TunnelResponse(requestID: "")

    static func fields<Coder: WireFieldCoder>(_ c: inout Coder, _ m: inout Self) throws(Coder.Failure) {
        try c.field("request_id", &m.requestID)
        try c.field("status_code", &m.statusCode)
        try c.field("headers", &m.headers)
        try c.field("body_chunk", &m.bodyChunk)
        try c.field("eof", &m.eof)
        try c.field("error", &m.error)
    }

    // MARK: Frame helpers for the worker's hot path (the body is never copied, only referenced)

    /// `{"request_id":…,"status_code":S,"headers":{…}}\n`; `headers` omitted when empty.
    public static func writeHeadLine(requestID: String, statusCode: Int, headers: [String: String],
                                     into buffer: inout ByteBuffer) {
        TunnelResponse(requestID: requestID, statusCode: statusCode, headers: headers.isEmpty ? nil : headers)
            .writeLine(into: &buffer)
    }

    /// `{"request_id":…,"body_chunk":"<base64>"}\n`, base64 written straight into `buffer`.
    public static func writeBodyChunkLine(requestID: String, chunk: ByteBuffer, into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: requestID.utf8.count + 36 + Base64.encodedLength(chunk.readableBytes))
        TunnelResponse(requestID: requestID, bodyChunk: chunk).writeLine(into: &buffer)
    }

    /// `{"request_id":…,"eof":true}\n`
    public static func writeEOFLine(requestID: String, into buffer: inout ByteBuffer) {
        TunnelResponse(requestID: requestID, eof: true).writeLine(into: &buffer)
    }

    /// `{"request_id":…,"error":{"code":…,"message":…}}\n` (`code` omitted when nil).
    public static func writeErrorLine(requestID: String, code: String?, message: String,
                                      into buffer: inout ByteBuffer) {
        TunnelResponse(requestID: requestID, error: ErrorPayload(code: code, message: message)).writeLine(into: &buffer)
    }

    // MARK: Decoding

    /// The decoder: one response line (surrounding whitespace allowed). Unknown keys are
    /// ignored, null is absent, a repeated key's last value wins; throws `JSONReadError`.
    /// A `body_chunk` is decoded from the line's base64 straight into its own buffer.
    public static func decodeLine(_ line: ByteBuffer) throws -> TunnelResponse {
        try line.withUnsafeReadableBytes { try decode(bytes: $0) }
    }

    public static func decode(bytes: UnsafeRawBufferPointer) throws -> TunnelResponse {
        try decodeFields(bytes)
    }
}
