// The hub's check of a worker's response head (ResponseHead.validate), on response lines
// decoded from arbitrary bytes: what a hostile worker controls.
//
// Invariants, when the head is accepted:
//  - the status is final (200...599);
//  - every forwarded header has an RFC 9110 token name of at most 256 bytes and a value of at
//    most 8 KiB without CR, LF, NUL or other controls (so it cannot end the head or split the
//    response), and none is hop-by-hop, named by `Connection`, or `X-Request-Id`;
//  - at most 100 headers and 64 KiB forwarded; kept + dropped = the headers sent; sorted by name;
//  - no body is allowed on 204 and 304, and one is on every other status.
// When refused, the status was not 0/missing and outside 200...599.
import FuzzSupport
import NIOCore
import TokiProtocol

func isToken(_ name: String) -> Bool {
    !name.utf8.isEmpty && name.utf8.allSatisfy { b in
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let line = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    guard let response = try? TunnelResponse.decodeLine(line) else { return 0 }
    let sent = response.headers ?? [:]
    let head: ResponseHead
    do {
        head = try ResponseHead.validate(statusCode: response.statusCode, headers: response.headers)
    } catch {
        let status = response.statusCode ?? 0
        check(status != 0 && !(200...599).contains(status), "refused a valid status \(status)")
        return 0
    }
    check((200...599).contains(head.status), "accepted status \(head.status)")
    check(head.allowsBody == (head.status != 204 && head.status != 304), "allowsBody wrong for \(head.status)")
    check(head.headers.count <= ResponseHead.maxHeaderCount, "too many headers kept")
    check(head.headers.count + head.droppedHeaders == sent.count, "kept + dropped != sent")
    check(head.headers.map(\.name) == head.headers.map(\.name).sorted(), "headers not sorted")
    var total = 0
    // Names listed by any Connection header (tokens trimmed of spaces and tabs, as the hub does).
    let scoped = Set(sent.filter { $0.key.lowercased() == "connection" }.flatMap { $0.value.split(separator: ",") }.map {
        String($0.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed()).lowercased()
    })
    for field in head.headers {
        total += field.name.utf8.count + field.value.utf8.count
        check(isToken(field.name) && field.name.utf8.count <= ResponseHead.maxHeaderNameLength, "bad name kept: \(field.name.debugDescription)")
        check(field.value.utf8.count <= ResponseHead.maxHeaderValueLength, "long value kept")
        check(field.value.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }, "control byte kept in \(field.value.debugDescription)")
        let lower = field.name.lowercased()
        check(!ResponseHead.hopByHop.contains(lower), "hop-by-hop header kept: \(field.name)")
        check(!scoped.contains(lower), "Connection-scoped header kept: \(field.name)")
        check(sent[field.name] == field.value, "header changed: \(field.name)")
    }
    check(total <= ResponseHead.maxHeaderBytes, "more than 64 KiB of headers kept")
    return 0
}

runLibFuzzer(fuzz)
