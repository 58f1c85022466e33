// Rewrites the request body's `model` when `mapped_name` differs from the public name
// (spec §7.4 step 4, Go `prepareRequestForTarget`).
//
// - application/json: the top-level "model" value is replaced in place (every other byte kept,
//   so unknown fields, key order and number formatting survive); inserted if absent; an empty
//   body becomes {"model":…}. Falls back to JSONSerialization if the in-place scan fails.
// - application/x-www-form-urlencoded: `model` set, re-encoded like Go's url.Values.Encode
//   (keys sorted).
// - multipart/form-data: NOT rewritten (passed through unchanged) — not implemented yet.
// - anything else: untouched.
// The video-specific conversions (vllm_omni JSON→multipart, sglang image_url→reference_url) are
// not implemented here either.

import Foundation
import NIOCore
import TokiProtocol
import TokiTunnel

public enum RequestRewriter {
    /// Returns the body to send to the backend. `headers` is the merged local header map
    /// (its Content-Type decides the format). Throws `rewrite_request_failed`.
    public static func prepareBody(_ body: ByteBuffer?, headers: [String: String],
                                   target: ResolvedTarget) throws(WorkerRequestError) -> ByteBuffer? {
        guard target.needsModelRewrite else { return body }
        let contentType = (TunnelHeaders.value(headers, "Content-Type") ?? "").lowercased()
        let fail = { (why: String) in
            WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.rewriteRequestFailed, message: why)
        }
        if contentType.hasPrefix("application/json") {
            let bytes = body.map { Array($0.readableBytesView) } ?? []
            do {
                return ByteBuffer(bytes: try rewriteJSONModel(bytes, model: target.upstreamModel))
            } catch {
                throw fail("rewrite json model: \(error)")
            }
        }
        if contentType.hasPrefix("application/x-www-form-urlencoded") {
            let text = body.map { String(buffer: $0) } ?? ""
            guard let rewritten = rewriteFormModel(text, model: target.upstreamModel) else {
                throw fail("rewrite form model: invalid urlencoded body")
            }
            return ByteBuffer(string: rewritten)
        }
        return body
    }

    // MARK: JSON

    public struct JSONRewriteError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Sets the top-level "model" of a JSON object to `model`.
    public static func rewriteJSONModel(_ body: [UInt8], model: String) throws -> [UInt8] {
        var encodedModel = ByteBuffer()
        encodedModel.writeInteger(UInt8(ascii: "\""))
        var m = model
        m.withUTF8 { encodedModel.writeJSONEscaped(UnsafeRawBufferPointer($0)) }
        encodedModel.writeInteger(UInt8(ascii: "\""))
        let modelLiteral = Array(encodedModel.readableBytesView)

        if body.allSatisfy({ isSpace($0) }) {
            return Array("{\"model\":".utf8) + modelLiteral + [UInt8(ascii: "}")]
        }
        if let plan = scanTopLevel(body) {
            var out: [UInt8] = []
            out.reserveCapacity(body.count + modelLiteral.count + 12)
            if plan.modelValues.isEmpty {
                out += body[..<(plan.openBrace + 1)]
                out += Array("\"model\":".utf8) + modelLiteral
                if !plan.isEmptyObject { out.append(UInt8(ascii: ",")) }
                out += body[(plan.openBrace + 1)...]
            } else {
                var cursor = 0
                for r in plan.modelValues {
                    out += body[cursor..<r.lowerBound]
                    out += modelLiteral
                    cursor = r.upperBound
                }
                out += body[cursor...]
            }
            return out
        }
        // Fallback: full decode / re-encode.
        guard var object = try JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
            as? [String: Any]
        else { throw JSONRewriteError(description: "body is not a JSON object") }
        object["model"] = model
        return Array(try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes]))
    }

    struct ScanPlan {
        var openBrace: Int
        var isEmptyObject: Bool
        var modelValues: [Range<Int>]
    }

    /// Scans a JSON object, returning the byte ranges of every top-level "model" value.
    /// Returns nil on anything it does not understand (caller falls back).
    static func scanTopLevel(_ b: [UInt8]) -> ScanPlan? {
        var i = 0
        let n = b.count
        func skipWS() { while i < n, isSpace(b[i]) { i += 1 } }
        /// Skips a string starting at b[i] == '"'; returns (contentRange, hasEscapes).
        func skipString() -> (Range<Int>, Bool)? {
            guard i < n, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            var escaped = false
            while i < n {
                let c = b[i]
                if c == UInt8(ascii: "\\") {
                    escaped = true
                    i += 2
                    continue
                }
                if c == UInt8(ascii: "\"") {
                    let r = start..<i
                    i += 1
                    return (r, escaped)
                }
                if c < 0x20 { return nil }
                i += 1
            }
            return nil
        }
        func skipValue() -> Bool {
            skipWS()
            guard i < n else { return false }
            switch b[i] {
            case UInt8(ascii: "\""):
                return skipString() != nil
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while i < n {
                    let c = b[i]
                    if c == UInt8(ascii: "\"") {
                        guard skipString() != nil else { return false }
                        continue
                    }
                    if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
                    if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                        depth -= 1
                        if depth == 0 {
                            i += 1
                            return true
                        }
                    }
                    i += 1
                }
                return false
            default:
                let start = i
                while i < n {
                    let c = b[i]
                    if c == UInt8(ascii: ",") || c == UInt8(ascii: "}") || c == UInt8(ascii: "]") || isSpace(c) { break }
                    guard (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-")
                        || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z"))
                        || c == UInt8(ascii: "E")
                    else { return false }
                    i += 1
                }
                return i > start
            }
        }

        skipWS()
        guard i < n, b[i] == UInt8(ascii: "{") else { return nil }
        let open = i
        i += 1
        skipWS()
        var plan = ScanPlan(openBrace: open, isEmptyObject: false, modelValues: [])
        if i < n, b[i] == UInt8(ascii: "}") {
            plan.isEmptyObject = true
            i += 1
        } else {
            while true {
                skipWS()
                guard let (keyRange, keyEscaped) = skipString() else { return nil }
                if keyEscaped { return nil }  // let the fallback handle escaped keys
                skipWS()
                guard i < n, b[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipWS()
                let valueStart = i
                guard skipValue() else { return nil }
                if b[keyRange].elementsEqual("model".utf8) { plan.modelValues.append(valueStart..<i) }
                skipWS()
                guard i < n else { return nil }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    break
                }
                return nil
            }
        }
        skipWS()
        return i == n ? plan : nil
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }

    // MARK: urlencoded

    /// Go `url.ParseQuery` + `Set("model", …)` + `Encode()` (keys sorted, values in order).
    /// Returns nil on an invalid escape or a `;` (Go rejects both).
    public static func rewriteFormModel(_ body: String, model: String) -> String? {
        var values: [String: [String]] = [:]
        for pair in body.split(separator: "&", omittingEmptySubsequences: true) {
            if pair.contains(";") { return nil }
            let key: Substring, value: Substring
            if let eq = pair.firstIndex(of: "=") {
                key = pair[..<eq]
                value = pair[pair.index(after: eq)...]
            } else {
                key = pair
                value = ""
            }
            guard let k = queryUnescape(key), let v = queryUnescape(value) else { return nil }
            values[k, default: []].append(v)
        }
        values["model"] = [model]
        var parts: [String] = []
        for k in values.keys.sorted() {
            let ek = queryEscape(k)
            for v in values[k]! { parts.append(ek + "=" + queryEscape(v)) }
        }
        return parts.joined(separator: "&")
    }

    static func queryUnescape(_ s: Substring) -> String? {
        var out: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            let c = u[i]
            if c == UInt8(ascii: "+") {
                out.append(0x20)
                i += 1
            } else if c == UInt8(ascii: "%") {
                guard i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(c)
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Go `url.QueryEscape`.
    static func queryEscape(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: "~"):
                out.append(c)
            case UInt8(ascii: " "):
                out.append(UInt8(ascii: "+"))
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(c >> 4)])
                out.append(hex[Int(c & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
