// The strict JSON reader (TokiProtocol/JSONReader.swift) through JSONValue(jsonBytes:),
// differential against Foundation's JSONSerialization, plus the message decoders on the same
// bytes.
//
// Invariants:
//  - the reader throws only JSONReadError, and so do ControlMessage.decode, TunnelRequest.decode
//    and TunnelResponse.decodeLine on any input;
//  - whatever the reader accepts, JSONSerialization accepts too (fragments allowed), unless the
//    text has a `\u` surrogate escape (we map unpaired ones to U+FFFD like Go; Foundation
//    differs) — the reader is not more permissive than the standard;
//  - when both accept, they read the same structure: same strings, same keys (last duplicate
//    wins in both), same array lengths, numbers equal (relative 1e-12);
//  - RawJSON(validating:) agrees with the reader, and decoding it gives the same value.
import Foundation
import FuzzSupport
import NIOCore
import TokiProtocol

func number(_ f: Any) -> Double? {
    guard let n = f as? NSNumber else { return nil }
    return n.doubleValue
}

func same(_ v: JSONValue, _ f: Any) -> Bool {
    switch v {
    case .null: return f is NSNull
    case .bool(let b): return (f as? NSNumber)?.boolValue == b
    case .int(let i): return near(Double(i), number(f))
    case .double(let d): return near(d, number(f))
    case .string(let s): return (f as? String) == s
    case .array(let a):
        guard let fa = f as? [Any], fa.count == a.count else { return false }
        return zip(a, fa).allSatisfy { same($0, $1) }
    case .object(let o):
        guard let fo = f as? [String: Any], fo.count == o.count else { return false }
        return o.allSatisfy { k, v in fo[k].map { same(v, $0) } ?? false }
    }
}

func near(_ a: Double, _ b: Double?) -> Bool {
    guard let b else { return false }
    if a == b { return true }
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let line = ByteBuffer(bytes: bytes)

    for decode in [{ _ = try ControlMessage.decode(line: line) }, { _ = try TunnelRequest.decode(line: line) },
                   { _ = try TunnelResponse.decodeLine(line) }] as [() throws -> Void] {
        do { try decode() } catch { check(error is JSONReadError, "a decoder threw \(error)") }
    }

    let ours: JSONValue?
    do {
        ours = try JSONValue(jsonBytes: bytes)
    } catch {
        check(error is JSONReadError, "JSONValue threw \(error)")
        ours = nil
    }
    let raw = try? RawJSON(validating: bytes)
    check((raw != nil) == (ours != nil), "RawJSON(validating:) and JSONValue disagree on acceptance")
    if let raw, let ours {
        check((try? raw.decode()) == ours, "RawJSON.decode differs from JSONValue")
    }
    guard let ours, !hasSurrogateEscape(bytes) else { return 0 }
    let theirs: Any
    do {
        theirs = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    } catch {
        check(false, "the reader accepted what JSONSerialization rejects (\(error)): \(String(decoding: bytes, as: UTF8.self))")
        return 0
    }
    check(same(ours, theirs), "the reader and JSONSerialization disagree:\n\(ours)\n\(theirs)")
    return 0
}

runLibFuzzer(fuzz)
