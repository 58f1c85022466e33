import CCrypto

/// API-token generation, normalisation and hashing.
///
/// Token format: `sk-toki-` followed by 40 characters of `[0-9A-Za-z]` (about 238 bits of entropy),
/// drawn from OpenSSL's CSPRNG (`RAND_bytes`) with rejection sampling so that every character is
/// uniform over the 62 symbols.
///
/// The database stores only `SHA-256(canonical token)` as 64 lowercase hex characters, plus a
/// short display prefix (`sk-toki-` and the first 4 random characters) that is not enough to
/// guess the rest.
///
/// Normalisation rule (``canonicalize(_:)``): the Go Tokilake hub strips a case-insensitive
/// `Bearer ` and then a leading `sk-` before it looks a key up, so code ported from it may hand us
/// `toki-…`, while clients send `sk-toki-…` or `Bearer sk-toki-…`. We therefore:
///   1. trim whitespace; strip one case-insensitive `Bearer ` prefix; trim again;
///   2. strip one leading `sk-` if present;
///   3. prepend `sk-`.
/// So `sk-toki-X`, `toki-X`, `Bearer sk-toki-X` and `Bearer toki-X` all canonicalise to
/// `sk-toki-X`, and the hash is always computed over that canonical form (which is exactly the
/// plaintext we handed out). Anything whose canonical form is not `sk-toki-` + 40 base62
/// characters is rejected before touching the database.
public enum TokenCrypto {
    public static let prefix = "sk-toki-"
    public static let randomLength = 40
    /// Number of random characters kept in the non-secret display prefix.
    public static let displayRandomCharacters = 4

    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// A fresh plaintext token. Throws ``StoreError/randomFailure`` if the CSPRNG fails.
    public static func generate() throws -> String {
        var out: [UInt8] = []
        out.reserveCapacity(randomLength)
        var buffer = [UInt8](repeating: 0, count: 64)
        // 62 * 4 = 248: bytes >= 248 are rejected so `byte % 62` is uniform.
        while out.count < randomLength {
            let ok = buffer.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
            guard ok == 1 else { throw StoreError.randomFailure }
            for byte in buffer where byte < 248 && out.count < randomLength {
                out.append(alphabet[Int(byte % 62)])
            }
        }
        buffer.withUnsafeMutableBufferPointer { OPENSSL_cleanse($0.baseAddress, $0.count) }
        return prefix + String(decoding: out, as: UTF8.self)
    }

    /// The canonical `sk-toki-…` form of a presented token, or nil if it cannot be one of ours.
    public static func canonicalize(_ presented: String) -> String? {
        var s = Substring(presented).trimmingWhitespace()
        if s.count >= 7, s.prefix(7).lowercased() == "bearer " {
            s = s.dropFirst(7).trimmingWhitespace()
        }
        if s.hasPrefix("sk-") { s = s.dropFirst(3) }
        let canonical = "sk-" + s
        guard isWellFormed(canonical) else { return nil }
        return canonical
    }

    /// True if `token` is `sk-toki-` followed by exactly 40 base62 characters.
    public static func isWellFormed(_ token: String) -> Bool {
        let bytes = Array(token.utf8)
        let p = Array(prefix.utf8)
        guard bytes.count == p.count + randomLength, bytes.starts(with: p) else { return false }
        for b in bytes[p.count...] {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "a")...UInt8(ascii: "z"):
                continue
            default:
                return false
            }
        }
        return true
    }

    /// Lowercase hex SHA-256 of the UTF-8 bytes of `token` (callers pass the canonical form).
    public static func hashHex(_ token: String) -> String {
        var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
        var input = Array(token.utf8)
        input.withUnsafeBufferPointer { inp in
            digest.withUnsafeMutableBufferPointer { out in
                _ = SHA256(inp.baseAddress, inp.count, out.baseAddress)
            }
        }
        input.withUnsafeMutableBufferPointer { OPENSSL_cleanse($0.baseAddress, $0.count) }
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var chars: [UInt8] = []
        chars.reserveCapacity(digest.count * 2)
        for b in digest {
            chars.append(hex[Int(b >> 4)])
            chars.append(hex[Int(b & 0x0f)])
        }
        return String(decoding: chars, as: UTF8.self)
    }

    /// The non-secret display prefix stored beside the hash, e.g. `sk-toki-Ab3x`.
    public static func displayPrefix(_ canonical: String) -> String {
        String(canonical.prefix(prefix.count + displayRandomCharacters))
    }

    /// Constant-time equality of two strings' UTF-8 bytes (via `CRYPTO_memcmp`). Lengths are
    /// compared first; a length mismatch is not secret here (both sides are fixed-size hashes).
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        if x.isEmpty { return true }
        return x.withUnsafeBytes { xp in
            y.withUnsafeBytes { yp in CRYPTO_memcmp(xp.baseAddress, yp.baseAddress, x.count) == 0 }
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return s
    }
}
