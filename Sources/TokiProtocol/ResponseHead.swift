// A worker's response head (status and headers), checked before any of it reaches a client.
//
// Workers are untrusted: any user may attach one. What they send becomes part of an HTTP/1.1
// response on a client connection that may be kept alive and pooled by proxies, so a bad head
// must not be able to crash the hub (an out-of-range status), end the response early, or smuggle
// a second response onto the connection (a body on 1xx/204/304, CR/LF in a header, framing
// headers of its own).

/// One header to forward.
public struct ResponseHeaderField: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A checked response head: a final status, the headers safe to forward, and whether a body
/// may follow.
public struct ResponseHead: Sendable, Equatable {
    public var status: Int
    /// Sorted by name (the wire map has no order).
    public var headers: [ResponseHeaderField]
    /// False for 204 and 304: whatever body the worker sends is dropped.
    public var allowsBody: Bool
    /// Headers left out (invalid, hop-by-hop, or over a limit), for the log.
    public var droppedHeaders: Int

    /// Limits on what a worker's head may carry.
    public static let maxHeaderCount = 100
    public static let maxHeaderNameLength = 256
    public static let maxHeaderValueLength = 8192
    public static let maxHeaderBytes = 64 * 1024

    /// Headers that describe one connection or the message framing: the hub frames the response
    /// itself, so a worker's are never forwarded (RFC 9110 §7.6.1). `X-Request-Id` is the hub's.
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authenticate", "proxy-authorization", "content-length", "x-request-id",
    ]

    /// Checks a head. A missing or 0 status becomes 502 (as in Go); any other status outside
    /// 200...599 is refused (1xx are interim, 101 would switch protocols). Invalid header names or
    /// values are dropped, not repaired.
    public static func validate(statusCode: Int?, headers: [String: String]?) throws(ResponseHeadError) -> ResponseHead {
        let status = statusCode ?? 0
        let final = status == 0 ? 502 : status
        guard (200...599).contains(final) else { throw .invalidStatus(status) }
        var kept: [ResponseHeaderField] = []
        var dropped = 0
        var bytes = 0
        let raw = headers ?? [:]
        // Names a `Connection` header lists are hop-by-hop too.
        var connectionScoped: Set<String> = []
        for (name, value) in raw where name.lowercased() == "connection" {
            for token in value.split(separator: ",") {
                connectionScoped.insert(token.trimmingASCIISpaces().lowercased())
            }
        }
        for (name, value) in raw.sorted(by: { $0.key < $1.key }) {
            let lower = name.lowercased()
            guard kept.count < maxHeaderCount, !hopByHop.contains(lower), !connectionScoped.contains(lower),
                  isValidName(name), isValidValue(value), bytes + name.utf8.count + value.utf8.count <= maxHeaderBytes
            else {
                dropped += 1
                continue
            }
            bytes += name.utf8.count + value.utf8.count
            kept.append(ResponseHeaderField(name: name, value: value))
        }
        return ResponseHead(status: final, headers: kept, allowsBody: final != 204 && final != 304, droppedHeaders: dropped)
    }

    /// Whether the headers say the body is a server-sent event stream.
    public var isEventStream: Bool {
        headers.contains { ASCII.equalsIgnoringCase($0.name, "content-type") && ASCII.containsIgnoringCase($0.value, "text/event-stream") }
    }

    /// RFC 9110 token: visible ASCII except delimiters.
    static func isValidName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maxHeaderNameLength else { return false }
        return utf8.allSatisfy(TunnelHeaders.isTokenByte)
    }

    /// Field value: HTAB, visible ASCII, space and obs-text; never CR, LF, NUL or other controls.
    static func isValidValue(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard utf8.count <= maxHeaderValueLength else { return false }
        return utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

}

public enum ResponseHeadError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidStatus(Int)

    public var description: String {
        switch self {
        case .invalidStatus(let status): "status \(status) is not a final HTTP status (200-599)"
        }
    }
}

extension Substring {
    fileprivate func trimmingASCIISpaces() -> Substring {
        var s = self
        while let first = s.first, first == " " || first == "\t" { s = s.dropFirst() }
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }
}
