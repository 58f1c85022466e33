import Foundation

/// The HTTP methods the management API uses.
public enum AdminMethod: String, Sendable {
    case get = "GET", post = "POST", put = "PUT", patch = "PATCH", delete = "DELETE"
}

/// One request as the transport sends it.
public struct AdminRequest: Equatable, Sendable {
    public var method: AdminMethod
    /// Absolute URL, query included.
    public var url: String
    public var headers: [(String, String)]
    /// Compact JSON, or nil for no body.
    public var body: String?

    public static func == (a: AdminRequest, b: AdminRequest) -> Bool {
        a.method == b.method && a.url == b.url && a.body == b.body
            && a.headers.map { "\($0.0): \($0.1)" } == b.headers.map { "\($0.0): \($0.1)" }
    }
}

/// What came back: the status and the body's bytes.
public struct AdminResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }
}

/// Everything that can go wrong talking to the hub, each with the line the CLI prints.
public enum AdminError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The hub answered with a failure: non-2xx or `success:false`. `data` is the envelope's
    /// `data` when it carried one (the ledger check's report on an inconsistent ledger).
    case api(status: Int, message: String, data: JSONValue?)
    /// Nothing answered (connection refused, DNS, timeout, TLS).
    case unreachable(url: String, reason: String)
    /// Something answered, but not with the envelope.
    case badReply(status: Int, excerpt: String)

    public var description: String {
        switch self {
        case .api(let status, let message, _):
            "error: \(message.isEmpty ? "request failed" : message) (HTTP \(status))"
        case .unreachable(let url, let reason):
            "error: cannot reach the hub at \(url): \(reason) (is it running? pass --hub URL)"
        case .badReply(let status, let excerpt):
            "error: the hub's reply is not the API envelope (HTTP \(status)): \(excerpt)"
        }
    }
}

/// The management API's envelope, `{"success":bool,"message":string,"data":…}`.
public enum Envelope {
    /// The `data` of a successful reply, or the error the reply stands for.
    public static func decode(status: Int, body: [UInt8]) throws(AdminError) -> JSONValue {
        let excerpt = String(decoding: body.prefix(300), as: UTF8.self)
        guard let document = try? JSONValue.parse(body), case .object = document else {
            if (200..<300).contains(status) { throw .badReply(status: status, excerpt: excerpt) }
            // A proxy's or the router's own page: the status is what matters.
            let text = excerpt.trimmingCharacters(in: .whitespacesAndNewlines)
            throw .api(status: status, message: text.isEmpty ? "the hub answered without a body" : text, data: nil)
        }
        let success = document["success"]?.boolValue
        let message = document["message"]?.stringValue ?? document["error"]?["message"]?.stringValue ?? ""
        let data = document["data"]
        guard (200..<300).contains(status), success == true else {
            if success == nil, (200..<300).contains(status) { throw .badReply(status: status, excerpt: excerpt) }
            throw .api(status: status, message: message, data: data.flatMap { $0.isNull ? nil : $0 })
        }
        return data ?? .null
    }
}

/// The management API over any transport: builds the URL (query percent-encoded), sets the bearer
/// token and JSON body, and turns the envelope into `data` or an ``AdminError``.
public struct AdminClient: Sendable {
    public typealias Transport = @Sendable (AdminRequest) async throws(AdminError) -> AdminResponse

    public let base: String
    public let token: String
    let transport: Transport

    /// `base` without its trailing slashes.
    public init(base: String, token: String, transport: @escaping Transport) {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        self.base = base
        self.token = token
        self.transport = transport
    }

    /// The request for `path` (segments already encoded with ``Query/segment(_:)``) and `query`.
    public func request(_ method: AdminMethod, _ path: String, query: [(String, String?)] = [], body: JSONValue? = nil) -> AdminRequest {
        var headers = [("Authorization", "Bearer \(token)"), ("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        return AdminRequest(method: method, url: base + path + Query.string(query), headers: headers, body: body?.compact)
    }

    public func send(_ method: AdminMethod, _ path: String, query: [(String, String?)] = [], body: JSONValue? = nil) async throws(AdminError) -> JSONValue {
        let response = try await transport(request(method, path, query: query, body: body))
        return try Envelope.decode(status: response.status, body: response.body)
    }

    public func get(_ path: String, query: [(String, String?)] = []) async throws(AdminError) -> JSONValue {
        try await send(.get, path, query: query)
    }

    public func post(_ path: String, _ body: JSONValue = .object([])) async throws(AdminError) -> JSONValue {
        try await send(.post, path, body: body)
    }

    public func put(_ path: String, _ body: JSONValue) async throws(AdminError) -> JSONValue {
        try await send(.put, path, body: body)
    }

    public func patch(_ path: String, _ body: JSONValue) async throws(AdminError) -> JSONValue {
        try await send(.patch, path, body: body)
    }

    public func delete(_ path: String, query: [(String, String?)] = []) async throws(AdminError) -> JSONValue {
        try await send(.delete, path, query: query)
    }
}

/// Percent-encoding for paths and queries (RFC 3986: only unreserved characters stay as they are,
/// so `+`, `&`, `=`, `#`, `%`, `/` and spaces in a model name cannot change the request).
public enum Query {
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    public static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if isUnreserved(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return out
    }

    /// One path segment (an id or a code typed by the user), encoded so it stays one segment.
    public static func segment(_ text: String) -> String { encode(text) }

    /// `?a=1&b=x%20y`, skipping nil values; empty when nothing is left.
    public static func string(_ items: [(String, String?)]) -> String {
        let pairs = items.compactMap { key, value in value.map { encode(key) + "=" + encode($0) } }
        return pairs.isEmpty ? "" : "?" + pairs.joined(separator: "&")
    }
}
