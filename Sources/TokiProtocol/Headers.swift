// The tunnel's header maps: one value per canonical name (Go's `map[string]string`).

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

/// Case-insensitive ASCII comparisons on UTF-8 bytes, without lowercasing copies (header names
/// and media types are matched per response on the hot path).
public enum ASCII {
    @inline(__always) static func lower(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

    /// `text` equals `lowercase` (which must be lower-case ASCII), ignoring ASCII case.
    public static func equalsIgnoringCase(_ text: String, _ lowercase: StaticString) -> Bool {
        let needle = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return text.utf8.count == needle.count && zip(text.utf8, needle).allSatisfy { lower($0) == $1 }
    }

    /// `text` starts with `lowercase` (lower-case ASCII), ignoring ASCII case.
    public static func hasPrefixIgnoringCase(_ text: String, _ lowercase: StaticString) -> Bool {
        let needle = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        return text.utf8.count >= needle.count && zip(text.utf8, needle).allSatisfy { lower($0) == $1 }
    }

    /// Neither end is whitespace or a control (both ends are visible ASCII): such a string needs
    /// no trimming, which saves Foundation's Unicode-aware `trimmingCharacters` on the hot path.
    public static func hasVisibleEnds(_ text: String) -> Bool {
        guard let first = text.utf8.first, let last = text.utf8.last else { return false }
        return first > 0x20 && first < 0x7F && last > 0x20 && last < 0x7F
    }

    /// `text` contains `lowercase` (lower-case ASCII), ignoring ASCII case.
    public static func containsIgnoringCase(_ text: String, _ lowercase: StaticString) -> Bool {
        let needle = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        var text = text
        return text.withUTF8 { hay in
            guard hay.count >= needle.count else { return false }
            if needle.isEmpty { return true }
            for start in 0...(hay.count - needle.count) where (0..<needle.count).allSatisfy({ lower(hay[start + $0]) == needle[$0] }) {
                return true
            }
            return false
        }
    }
}
