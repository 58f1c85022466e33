// Data-stream line decoders on arbitrary bytes: TunnelRequest.decode(line:) (hub -> worker)
// and TunnelResponse.decodeLine (worker -> hub), plus Base64.
//
// Invariants:
//  - decoding throws only JSONReadError;
//  - a line the decoder accepts is JSON that JSONSerialization accepts too, with the same
//    request_id;
//  - round trip: writeLine -> decode gives the same value, for requests and responses, and the
//    line is one NDJSON line;
//  - the frame helpers (writeHeadLine, writeBodyChunkLine, writeEOFLine,
//    writeErrorLine) write the same bytes as writeLine for the frames they cover;
//  - Base64: decode(encode(x)) == x for the input bytes, and a lenient decode re-encodes
//    to a string that decodes to the same bytes.
import Foundation
import FuzzSupport
import NIOCore
import TokiProtocol

func checkOneLine(_ wire: ByteBuffer, _ what: String) {
    let view = wire.readableBytesView
    check(view.last == 0x0A && view.dropLast().allSatisfy { $0 != 0x0A && $0 != 0x0D },
          "encoded \(what) is not one line: \(String(buffer: wire))")
}

func checkRequest(_ line: ByteBuffer) {
    let request: TunnelRequest
    do {
        request = try TunnelRequest.decode(line: line)
    } catch is JSONReadError {
        return
    } catch {
        check(false, "TunnelRequest.decode threw \(error)")
        return
    }
    let wire = request.encodedLine()
    checkOneLine(wire, "request")
    do {
        let again = try TunnelRequest.decode(line: wire)
        check(again == request, "request round trip changed the value:\n\(request)\n\(again)")
    } catch {
        check(false, "re-encoded request does not decode: \(error)\n\(String(buffer: wire))")
    }
}

func checkResponse(_ line: ByteBuffer) {
    let response: TunnelResponse
    do {
        response = try TunnelResponse.decodeLine(line)
    } catch {
        check(error is JSONReadError, "response decoding threw \(error)")
        return
    }
    // Foundation agrees that this is a JSON object (lone \u surrogates aside: we map them to
    // U+FFFD like Go, Foundation may refuse them), and on its request_id when it is plain.
    let text = String(decoding: line.readableBytesView, as: UTF8.self)
    // Numbers out of range are only refused where Go refuses them (not in unknown keys), so
    // the comparison is for lines our full reader (JSONValue) accepts too.
    if !hasSurrogateEscape(text.utf8), (try? JSONValue(jsonBuffer: line)) != nil {
        let object = (try? JSONSerialization.jsonObject(with: Data(line.readableBytesView))) as? [String: Any]
        check(object != nil, "decodeLine accepted what JSONSerialization rejects: \(text)")
        if let id = object?["request_id"] as? String {
            check(id == response.requestID, "request_id differs from JSONSerialization's: \(id) vs \(response.requestID)")
        }
    }

    var wire = ByteBuffer()
    response.writeLine(into: &wire)
    checkOneLine(wire, "response")
    do {
        let again = try TunnelResponse.decodeLine(wire)
        check(again == response, "response round trip changed the value:\n\(response)\n\(again)")
    } catch {
        check(false, "re-encoded response does not decode: \(error)\n\(String(buffer: wire))")
    }

    // The fast encoders, for the frame shapes they write.
    var fast = ByteBuffer()
    let id = response.requestID
    switch (response.statusCode, response.headers, response.bodyChunk, response.eof, response.error) {
    case (let status?, let headers, nil, nil, nil) where headers.map({ !$0.isEmpty }) ?? true:
        TunnelResponse.writeHeadLine(requestID: id, statusCode: status, headers: headers ?? [:], into: &fast)
    case (nil, nil, let chunk?, nil, nil):
        TunnelResponse.writeBodyChunkLine(requestID: id, chunk: chunk, into: &fast)
    case (nil, nil, nil, true?, nil):
        TunnelResponse.writeEOFLine(requestID: id, into: &fast)
    case (nil, nil, nil, nil, let error?):
        TunnelResponse.writeErrorLine(requestID: id, code: error.code, message: error.message, into: &fast)
    default:
        return
    }
    check(fast == wire, "fast encoder differs from writeLine:\n\(String(buffer: fast))\(String(buffer: wire))")
}

func checkBase64(_ bytes: UnsafeBufferPointer<UInt8>) {
    let encoded = Base64.encodeToString(bytes)
    check(encoded.utf8.count == Base64.encodedLength(bytes.count), "Base64 length")
    check(Base64.decode(encoded).map { $0.readableBytesView.elementsEqual(bytes) } ?? false, "Base64 round trip failed")
    // The input as base64 text, decoded leniently (as body fields are).
    if let decoded = Base64.decode(String(decoding: bytes, as: UTF8.self)) {
        let canonical = Base64.encodeToString(decoded.readableBytesView)
        check(Base64.decode(canonical) == decoded, "lenient Base64 decode is not stable")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let line = ByteBuffer(bytes: bytes)
    checkRequest(line)
    checkResponse(line)
    checkBase64(bytes)
    return 0
}

runLibFuzzer(fuzz)
