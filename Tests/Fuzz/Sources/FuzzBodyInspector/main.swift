// The hub's request-body inspector (BodyInspector in Sources/TokiHub/OpenAIProxy.swift):
// what it reads out of an untrusted client body decides the routing.
//
// Input: [mode byte][...]. JSON mode: the rest is the body. Multipart mode: the rest is
// "<content type>\0<body>".
// Invariants:
//  - only OpenAIError is thrown;
//  - a routed model is never empty or all-blank;
//  - JSON: re-serialising {"model": m, "stream": s, "stream_options": {"include_usage": u}}
//    (the last only if the body had stream_options) and inspecting it gives the same result;
//  - multipart: the model comes out trimmed, `stream` is false, its text is in the body, and
//    a canonical form-data body carrying the same model routes the same way.
import Foundation
import FuzzSupport
import NIOCore
import TokiHub

func inspect(_ body: () throws -> RoutedBody) -> RoutedBody? {
    do {
        let routed = try body()
        check(!routed.model.trimmingCharacters(in: .whitespaces).isEmpty, "routed to a blank model: \(routed)")
        return routed
    } catch is OpenAIError {
        return nil
    } catch {
        check(false, "BodyInspector threw \(error)")
        return nil
    }
}

func fuzzJSON(_ body: ByteBuffer) {
    guard let routed = inspect({ try BodyInspector.inspectJSON(body) }) else { return }
    var object: [String: Any] = ["model": routed.model, "stream": routed.stream]
    if let includeUsage = routed.includeUsage { object["stream_options"] = ["include_usage": includeUsage] }
    guard let data = try? JSONSerialization.data(withJSONObject: object) else {
        check(false, "routed model cannot be serialised: \(routed)")
        return
    }
    let again = inspect { try BodyInspector.inspectJSON(ByteBuffer(bytes: data)) }
    check(again == routed, "re-serialised body routes differently: \(routed) vs \(String(describing: again))")
}

func fuzzMultipart(contentType: String, _ body: ByteBuffer) {
    guard let routed = inspect({ try BodyInspector.inspectMultipart(body, contentType: contentType) }) else { return }
    check(!routed.stream, "multipart body routed as streaming")
    check(routed.model == routed.model.trimmingCharacters(in: .whitespacesAndNewlines), "multipart model not trimmed: \(routed)")
    check(String(decoding: body.readableBytesView, as: UTF8.self).contains(routed.model), "multipart model not in the body")

    let boundary = "fuzz-boundary-7MA4YWxkTrZu0gW"
    guard !routed.model.contains("\r\n--" + boundary) else { return }
    var canonical = ByteBuffer()
    canonical.writeString("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n")
    canonical.writeString("--\(boundary)\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\(routed.model)\r\n--\(boundary)--\r\n")
    let again = inspect { try BodyInspector.inspectMultipart(canonical, contentType: "multipart/form-data; boundary=\(boundary)") }
    check(again == routed, "canonical multipart body routes differently: \(routed) vs \(String(describing: again))")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    if input.bool() {
        let rest = input.rest()
        let split = rest.firstIndex(of: 0) ?? rest.endIndex
        let contentType = String(decoding: UnsafeBufferPointer(rebasing: rest[..<split]), as: UTF8.self)
        let body = split < rest.endIndex ? UnsafeBufferPointer(rebasing: rest[(split + 1)...]) : UnsafeBufferPointer(rebasing: rest[split...])
        fuzzMultipart(contentType: contentType, ByteBuffer(bytes: body))
    } else {
        fuzzJSON(ByteBuffer(bytes: input.rest()))
    }
    return 0
}

runLibFuzzer(fuzz)
