// Base64, RFC 4648 standard alphabet, padded (Go's StdEncoding: what `[]byte` fields use).

import NIOCore


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

    /// Strict: alphabet characters and at most two trailing '=' only (no whitespace).
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
