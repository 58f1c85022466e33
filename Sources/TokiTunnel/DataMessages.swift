// Data-stream vocabulary of the Tokilake/Tokiame tunnel (spec §5.2, §5.3, §6.6).
//
// One `TunnelRequest` line hub→worker, then `TunnelResponse` lines worker→hub: a head frame
// (status + headers), zero or more `body_chunk` frames, then `eof` or `error`.
// Bytes fields are standard padded base64 on the wire (Go `[]byte`); decoding also accepts a
// JSON array of 0-255 integers (what the Rust prototype emits).

import Foundation
import NIOCore

// MARK: - Route kinds

/// `TunnelRequest.route_kind` values and the OpenAI paths they come from (spec §5.2, §6.6).
public enum RouteKind: String, Sendable, CaseIterable, Codable {
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

    /// Fixed-path routes: OpenAI path → route kind (all POST).
    public static let pathTable: [(path: String, kind: RouteKind)] = [
        ("/v1/chat/completions", .chatCompletions),
        ("/v1/completions", .completions),
        ("/v1/responses", .responses),
        ("/v1/embeddings", .embeddings),
        ("/v1/rerank", .rerank),
        ("/v1/audio/speech", .audioSpeech),
        ("/v1/audio/transcriptions", .audioTranscription),
        ("/v1/audio/translations", .audioTranslation),
        ("/v1/images/generations", .imagesGenerations),
        ("/v1/images/edits", .imagesEdits),
        ("/v1/images/variations", .imagesVariations),
        ("/v1/videos", .videosCreate),
    ]

    /// The route kind of an OpenAI request, or nil when the path is not tunnelled
    /// (e.g. `/v1/models`). The query string is ignored. Video ids: `GET /v1/videos/<id>` →
    /// `videos_get`, `GET /v1/videos/<id>/content` → `videos_content`.
    public init?(path rawPath: String, method: String = "POST") {
        var path = Substring(rawPath)
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        while path.count > 1, path.hasSuffix("/") { path = path.dropLast() }
        let m = method.uppercased()
        if m == "GET" {
            let segments = path.split(separator: "/", omittingEmptySubsequences: true)
            if segments.count == 3, segments[0] == "v1", segments[1] == "videos" {
                self = .videosGet
                return
            }
            if segments.count == 4, segments[0] == "v1", segments[1] == "videos", segments[3] == "content" {
                self = .videosContent
                return
            }
            return nil
        }
        guard m == "POST", let hit = RouteKind.pathTable.first(where: { $0.path == path }) else { return nil }
        self = hit.kind
    }

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
public struct TunnelRequest: Codable, Sendable, Equatable {
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

    enum CodingKeys: String, CodingKey {
        case method, path, model, headers, body
        case requestID = "request_id"
        case routeKind = "route_kind"
        case isStream = "is_stream"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requestID = try c.decodeIfPresent(String.self, forKey: .requestID) ?? ""
        routeKind = try c.decodeIfPresent(String.self, forKey: .routeKind) ?? ""
        method = try c.decodeIfPresent(String.self, forKey: .method) ?? ""
        path = try c.decodeIfPresent(String.self, forKey: .path) ?? ""
        model = try c.decodeIfPresent(String.self, forKey: .model)
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers)
        isStream = try c.decodeIfPresent(Bool.self, forKey: .isStream)
        body = try c.decodeIfPresent(JSONBytes.self, forKey: .body)?.buffer
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(requestID, forKey: .requestID)
        try c.encode(routeKind, forKey: .routeKind)
        try c.encode(method, forKey: .method)
        try c.encode(path, forKey: .path)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encodeIfPresent(headers, forKey: .headers)
        try c.encodeIfPresent(isStream, forKey: .isStream)
        try c.encodeIfPresent(body.map(JSONBytes.init), forKey: .body)
    }

    /// Compact JSON in Go field order (headers sorted), body as base64, plus "\n".
    public func writeLine(into buffer: inout ByteBuffer) {
        writeJSON(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    public func encodedLine(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 256 + Base64.encodedLength(body?.readableBytes ?? 0))
        writeLine(into: &buffer)
        return buffer
    }

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

    public static func decode(line: ByteBuffer) throws -> TunnelRequest {
        try JSONDecoder().decode(TunnelRequest.self, from: Data(line.readableBytesView))
    }
}

// MARK: - TunnelResponse

/// Worker → hub NDJSON frames.
public struct TunnelResponse: Codable, Sendable, Equatable {
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

    enum CodingKeys: String, CodingKey {
        case headers, eof, error
        case requestID = "request_id"
        case statusCode = "status_code"
        case bodyChunk = "body_chunk"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requestID = try c.decodeIfPresent(String.self, forKey: .requestID) ?? ""
        statusCode = try c.decodeIfPresent(Int.self, forKey: .statusCode)
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers)
        bodyChunk = try c.decodeIfPresent(JSONBytes.self, forKey: .bodyChunk)?.buffer
        eof = try c.decodeIfPresent(Bool.self, forKey: .eof)
        error = try c.decodeIfPresent(ErrorPayload.self, forKey: .error)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(requestID, forKey: .requestID)
        try c.encodeIfPresent(statusCode, forKey: .statusCode)
        try c.encodeIfPresent(headers, forKey: .headers)
        try c.encodeIfPresent(bodyChunk.map(JSONBytes.init), forKey: .bodyChunk)
        try c.encodeIfPresent(eof, forKey: .eof)
        try c.encodeIfPresent(error, forKey: .error)
    }

    /// General hand-written encoder (Go field order, headers sorted), plus "\n".
    public func writeLine(into buffer: inout ByteBuffer) {
        writeJSON(into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
    }

    public func encodedLine(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 128 + Base64.encodedLength(bodyChunk?.readableBytes ?? 0))
        writeLine(into: &buffer)
        return buffer
    }

    public func writeJSON(into buffer: inout ByteBuffer) {
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
            JSONOut.writeError(error, into: &buffer)
        }
        o.close(&buffer)
    }

    // MARK: Fast encoders for the hot frames (byte-equal to `writeLine` of the same frame)

    /// `{"request_id":…,"status_code":S,"headers":{…}}\n`; `headers` omitted when empty
    /// (equivalent to `TunnelResponse(requestID:statusCode:headers: h.isEmpty ? nil : h)`).
    public static func writeHeadLine(requestID: String, statusCode: Int, headers: [String: String],
                                     into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"request_id\":")
        JSONOut.writeString(requestID, into: &buffer)
        buffer.writeStaticString(",\"status_code\":")
        JSONOut.writeInt(statusCode, into: &buffer)
        if !headers.isEmpty {
            buffer.writeStaticString(",\"headers\":")
            JSONOut.writeStringMap(headers, into: &buffer)
        }
        buffer.writeStaticString("}\n")
    }

    /// `{"request_id":…,"body_chunk":"<base64>"}\n`, base64 written straight into `buffer`.
    public static func writeBodyChunkLine(requestID: String, chunk: ByteBuffer, into buffer: inout ByteBuffer) {
        chunk.withUnsafeReadableBytes { writeBodyChunkLine(requestID: requestID, bytes: $0, into: &buffer) }
    }

    public static func writeBodyChunkLine(requestID: String, bytes: UnsafeRawBufferPointer,
                                          into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: requestID.utf8.count + 36 + Base64.encodedLength(bytes.count))
        buffer.writeStaticString("{\"request_id\":")
        JSONOut.writeString(requestID, into: &buffer)
        buffer.writeStaticString(",\"body_chunk\":\"")
        Base64.encode(bytes, into: &buffer)
        buffer.writeStaticString("\"}\n")
    }

    /// `{"request_id":…,"eof":true}\n`
    public static func writeEOFLine(requestID: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"request_id\":")
        JSONOut.writeString(requestID, into: &buffer)
        buffer.writeStaticString(",\"eof\":true}\n")
    }

    /// `{"request_id":…,"error":{"code":…,"message":…}}\n` (`code` omitted when nil).
    public static func writeErrorLine(requestID: String, code: String?, message: String,
                                      into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"request_id\":")
        JSONOut.writeString(requestID, into: &buffer)
        buffer.writeStaticString(",\"error\":{")
        if let code {
            buffer.writeStaticString("\"code\":")
            JSONOut.writeString(code, into: &buffer)
            buffer.writeInteger(UInt8(ascii: ","))
        }
        buffer.writeStaticString("\"message\":")
        JSONOut.writeString(message, into: &buffer)
        buffer.writeStaticString("}}\n")
    }

    // MARK: Decoding

    /// Decodes one response line. Plain `{"request_id":"…","body_chunk":"…"}` and
    /// `{"request_id":"…","eof":true}` lines (what Go and toki workers emit) are parsed directly;
    /// anything else goes through JSONDecoder. Both paths give the same value.
    public static func decodeLine(_ line: ByteBuffer) throws -> TunnelResponse {
        if let fast = fastDecode(line) { return fast }
        return try JSONDecoder().decode(TunnelResponse.self, from: Data(line.readableBytesView))
    }

    /// Same as `decodeLine` but reports whether the fast path was used (for tests/metrics).
    static func fastDecode(_ line: ByteBuffer) -> TunnelResponse? {
        line.withUnsafeReadableBytes { raw -> TunnelResponse? in
            // Trim ASCII whitespace.
            var start = 0
            var end = raw.count
            while start < end, isJSONSpace(raw[start]) { start += 1 }
            while end > start, isJSONSpace(raw[end - 1]) { end -= 1 }
            let prefix: StaticString = "{\"request_id\":\""
            guard matches(raw, at: start, prefix) else { return nil }
            let idStart = start + prefix.utf8CodeUnitCount
            var i = idStart
            while i < end {
                let b = raw[i]
                if b == UInt8(ascii: "\"") { break }
                // Escapes, control bytes and non-ASCII (which JSONDecoder validates as UTF-8)
                // take the JSONDecoder path.
                if b == UInt8(ascii: "\\") || b < 0x20 || b >= 0x80 { return nil }
                i += 1
            }
            guard i < end else { return nil }
            let idEnd = i
            let chunkKey: StaticString = "\",\"body_chunk\":\""
            let eofTail: StaticString = "\",\"eof\":true}"
            if matches(raw, at: idEnd, chunkKey) {
                let b64Start = idEnd + chunkKey.utf8CodeUnitCount
                // Expect `"}` at the end and no other quote in between.
                guard end - b64Start >= 2, raw[end - 1] == UInt8(ascii: "}"), raw[end - 2] == UInt8(ascii: "\"")
                else { return nil }
                let b64End = end - 2
                let b64 = UnsafeRawBufferPointer(rebasing: raw[b64Start..<b64End])
                var out = ByteBuffer()
                out.reserveCapacity(b64.count / 4 * 3 + 3)
                guard Base64.decodeStrict(b64, into: &out) else { return nil }
                let id = String(decoding: UnsafeRawBufferPointer(rebasing: raw[idStart..<idEnd]), as: UTF8.self)
                return TunnelResponse(requestID: id, bodyChunk: out)
            }
            if end - idEnd == eofTail.utf8CodeUnitCount, matches(raw, at: idEnd, eofTail) {
                let id = String(decoding: UnsafeRawBufferPointer(rebasing: raw[idStart..<idEnd]), as: UTF8.self)
                return TunnelResponse(requestID: id, eof: true)
            }
            return nil
        }
    }

    @inline(__always)
    static func isJSONSpace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D
    }

    static func matches(_ raw: UnsafeRawBufferPointer, at offset: Int, _ literal: StaticString) -> Bool {
        let n = literal.utf8CodeUnitCount
        guard offset + n <= raw.count else { return false }
        let lit = literal.utf8Start
        for k in 0..<n where raw[offset + k] != lit[k] { return false }
        return true
    }
}

// MARK: - Header helpers

public enum TunnelHeaders {
    /// Go's `textproto.CanonicalMIMEHeaderKey`: "content-type" → "Content-Type". Keys with
    /// characters outside the token set are returned unchanged (as Go does).
    public static func canonicalKey(_ key: String) -> String {
        var bytes = Array(key.utf8)
        for b in bytes where !isTokenByte(b) { return key }
        var upper = true
        for i in bytes.indices {
            let b = bytes[i]
            if upper, b >= UInt8(ascii: "a"), b <= UInt8(ascii: "z") {
                bytes[i] = b - 32
            } else if !upper, b >= UInt8(ascii: "A"), b <= UInt8(ascii: "Z") {
                bytes[i] = b + 32
            }
            upper = b == UInt8(ascii: "-")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// Flattens HTTP header pairs into the tunnel's one-value-per-name map, like the Go worker
    /// (`flattenHTTPHeaders`): names canonicalised, repeated values joined with ", ".
    public static func flatten(_ pairs: some Sequence<(name: String, value: String)>) -> [String: String] {
        var out: [String: String] = [:]
        for (name, value) in pairs {
            let key = canonicalKey(name)
            if let existing = out[key] {
                out[key] = existing + ", " + value
            } else {
                out[key] = value
            }
        }
        return out
    }

    /// Case-insensitive lookup in a tunnel header map.
    public static func value(_ headers: [String: String]?, _ name: String) -> String? {
        guard let headers else { return nil }
        if let v = headers[name] { return v }
        let lower = name.lowercased()
        return headers.first(where: { $0.key.lowercased() == lower })?.value
    }
}

// MARK: - Bytes as JSON (base64 string or integer array)

/// Codable wrapper for Go `[]byte`: encodes standard padded base64; decodes a base64 string or
/// a JSON array of 0-255 integers.
struct JSONBytes: Codable {
    var buffer: ByteBuffer
    init(_ buffer: ByteBuffer) { self.buffer = buffer }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            var out = ByteBuffer()
            var s = s
            let ok = s.withUTF8 { Base64.decodeLenient(UnsafeRawBufferPointer($0), into: &out) }
            guard ok else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "invalid base64") }
            buffer = out
        } else {
            let bytes = try c.decode([UInt8].self)
            buffer = ByteBuffer(bytes: bytes)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var tmp = ByteBuffer()
        Base64.encode(buffer, into: &tmp)
        var c = encoder.singleValueContainer()
        try c.encode(String(buffer: tmp))
    }
}

// MARK: - Base64 (RFC 4648 standard alphabet, padded)

public enum Base64 {
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let invalid: UInt8 = 0xFF
    static let skip: UInt8 = 0xFE
    static let decodeTable: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        t[Int(UInt8(ascii: "\r"))] = 0xFE
        t[Int(UInt8(ascii: "\n"))] = 0xFE
        return t
    }()

    public static func encodedLength(_ byteCount: Int) -> Int { (byteCount + 2) / 3 * 4 }

    public static func encode(_ source: ByteBuffer, into buffer: inout ByteBuffer) {
        source.withUnsafeReadableBytes { encode($0, into: &buffer) }
    }

    public static func encode(_ src: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        let outLen = encodedLength(src.count)
        guard outLen > 0 else { return }
        alphabet.withUnsafeBufferPointer { abc in
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: outLen) { dst in
                var i = 0
                var o = 0
                let n = src.count
                let full = n - n % 3
                while i < full {
                    let v = UInt32(src[i]) << 16 | UInt32(src[i + 1]) << 8 | UInt32(src[i + 2])
                    dst[o] = abc[Int(v >> 18)]
                    dst[o + 1] = abc[Int(v >> 12 & 63)]
                    dst[o + 2] = abc[Int(v >> 6 & 63)]
                    dst[o + 3] = abc[Int(v & 63)]
                    i += 3
                    o += 4
                }
                let rem = n - full
                if rem == 1 {
                    let v = UInt32(src[i]) << 16
                    dst[o] = abc[Int(v >> 18)]
                    dst[o + 1] = abc[Int(v >> 12 & 63)]
                    dst[o + 2] = UInt8(ascii: "=")
                    dst[o + 3] = UInt8(ascii: "=")
                } else if rem == 2 {
                    let v = UInt32(src[i]) << 16 | UInt32(src[i + 1]) << 8
                    dst[o] = abc[Int(v >> 18)]
                    dst[o + 1] = abc[Int(v >> 12 & 63)]
                    dst[o + 2] = abc[Int(v >> 6 & 63)]
                    dst[o + 3] = UInt8(ascii: "=")
                }
                return outLen
            }
        }
    }

    public static func encodeToString(_ bytes: some Collection<UInt8>) -> String {
        var out = ByteBuffer()
        Array(bytes).withUnsafeBytes { encode($0, into: &out) }
        return String(buffer: out)
    }

    /// Strict: alphabet characters and at most two trailing '=' only (no whitespace). Used by
    /// the fast path; anything unusual falls back to the lenient path via JSONDecoder.
    static func decodeStrict(_ src: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) -> Bool {
        decode(src, allowSkip: false, into: &buffer)
    }

    /// Lenient like Go's StdEncoding: ignores CR/LF; padding optional.
    public static func decodeLenient(_ src: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) -> Bool {
        decode(src, allowSkip: true, into: &buffer)
    }

    public static func decode(_ string: String) -> ByteBuffer? {
        var out = ByteBuffer()
        var s = string
        let ok = s.withUTF8 { decodeLenient(UnsafeRawBufferPointer($0), into: &out) }
        return ok ? out : nil
    }

    static func decode(_ src: UnsafeRawBufferPointer, allowSkip: Bool, into buffer: inout ByteBuffer) -> Bool {
        var end = src.count
        var pad = 0
        while end > 0, pad < 2, src[end - 1] == UInt8(ascii: "=") {
            end -= 1
            pad += 1
        }
        if end == 0 { return pad == 0 }
        var ok = true
        let maxOut = end / 4 * 3 + 3
        decodeTable.withUnsafeBufferPointer { table in
            let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: maxOut) { dst -> Int in
                var quad: UInt32 = 0
                var q = 0
                var o = 0
                var i = 0
                // Fast 4-at-a-time loop for runs without skips.
                while i + 4 <= end {
                    let a = table[Int(src[i])], b = table[Int(src[i + 1])]
                    let c = table[Int(src[i + 2])], d = table[Int(src[i + 3])]
                    if q != 0 || (a | b | c | d) & 0xC0 != 0 { break }
                    let v = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                    dst[o] = UInt8(truncatingIfNeeded: v >> 16)
                    dst[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                    dst[o + 2] = UInt8(truncatingIfNeeded: v)
                    o += 3
                    i += 4
                }
                while i < end {
                    let v = table[Int(src[i])]
                    i += 1
                    if v < 64 {
                        quad = quad << 6 | UInt32(v)
                        q += 1
                        if q == 4 {
                            dst[o] = UInt8(truncatingIfNeeded: quad >> 16)
                            dst[o + 1] = UInt8(truncatingIfNeeded: quad >> 8)
                            dst[o + 2] = UInt8(truncatingIfNeeded: quad)
                            o += 3
                            q = 0
                            quad = 0
                        }
                    } else if v == skip, allowSkip {
                        continue
                    } else {
                        ok = false
                        return 0
                    }
                }
                switch q {
                case 0:
                    if pad != 0 { ok = false; return 0 }
                case 1:
                    ok = false
                    return 0
                case 2:
                    if pad != 0 && pad != 2 { ok = false; return 0 }
                    dst[o] = UInt8(truncatingIfNeeded: quad >> 4)
                    o += 1
                default:
                    if pad > 1 { ok = false; return 0 }
                    dst[o] = UInt8(truncatingIfNeeded: quad >> 10)
                    dst[o + 1] = UInt8(truncatingIfNeeded: quad >> 2)
                    o += 2
                }
                return o
            }
            _ = written
        }
        return ok
    }
}
