import Foundation
import NIOCore
import Testing

@testable import TokiProtocol

/// Regressions for what the libFuzzer targets (Tests/Fuzz, docs/fuzzing.md) found.
@Suite("fuzz findings (TokiProtocol)")
struct TunnelFuzzFindingsTests {
    /// FuzzDataLine: an eof (or body_chunk) line whose request_id holds invalid UTF-8 was
    /// accepted by decodeLine's (former) fast path, with the id repaired (U+FFFD), while the
    /// general decoder rejected the line. There is one decoder now; it rejects invalid UTF-8.
    @Test("decodeLine rejects request ids with invalid UTF-8")
    func nonASCIIRequestID() throws {
        for tail in [#"","eof":true}"#, #"","body_chunk":"aGk="}"#] {
            var invalid = ByteBuffer(string: #"{"request_id":"ns1:relay:5b0c"#)
            invalid.writeBytes([0xFF, 0xFE])
            invalid.writeString(tail)
            #expect(throws: JSONReadError.self) { try TunnelResponse.decodeLine(invalid) }

            let valid = ByteBuffer(string: #"{"request_id":"ns1:relay:café"# + tail)
            let decoded = try TunnelResponse.decodeLine(valid)
            #expect(decoded.requestID == "ns1:relay:café")
            #expect(decoded == (try JSONSerialization.jsonObject(with: Data(valid.readableBytesView)) as? [String: Any])
                .map { TunnelResponse(requestID: $0["request_id"] as! String, bodyChunk: ($0["body_chunk"] as? String).flatMap(Base64.decode),
                                      eof: $0["eof"] as? Bool) })
        }
    }

    /// FuzzJSONReader: `11e3082345678901234567890123456789` (too large for a Double) was valid
    /// to `RawJSON(validating:)`, which only checked the syntax, but not to `JSONValue`. Raw
    /// JSON (hardware_info) now checks numbers as `JSONValue` does (and as Go's decoding into
    /// `any` does), so a heartbeat carrying one is refused as before; unknown keys' values are
    /// still only checked for syntax (Go skips them).
    @Test("raw JSON refuses the numbers JSONValue refuses")
    func rawJSONNumbers() throws {
        let huge = "11e3082345678901234567890123456789"
        #expect(throws: JSONReadError.self) { try JSONValue(jsonBytes: Array(huge.utf8)) }
        #expect(throws: JSONReadError.self) { try RawJSON(validating: Array(huge.utf8)) }
        #expect(throws: JSONReadError.self) {
            try ControlMessage.decode(line: Array(#"{"type":"heartbeat","heartbeat":{"hardware_info":{"x":[\#(huge)]}}}"#.utf8))
        }
        #expect(try ControlMessage.decode(line: Array(#"{"type":"heartbeat","future":\#(huge)}"#.utf8)).type == .heartbeat)
        #expect(try RawJSON(validating: Array(#"{"a":1e-400,"b":123456789012345678901234567890}"#.utf8)).value != nil)
    }

    /// FuzzControlLine: hardware_info kept raw with a line break between its tokens was
    /// written back with the line break, splitting the NDJSON line. Raw JSON now drops CR/LF
    /// whitespace (inside strings they are always escaped).
    @Test("raw JSON never carries a line break")
    func rawJSONLineBreaks() throws {
        let line = "{\"type\":\"heartbeat\",\"heartbeat\":{\"hardware_info\":{\"a\":\r\n[1,\n2],\"b\":\"x\\ny\"}}}"
        let m = try ControlMessage.decode(line: Array(line.utf8))
        #expect(m.heartbeat?.hardwareInfo?.jsonString == #"{"a":[1,2],"b":"x\ny"}"#)
        let wire = m.encodedLine()
        #expect(wire.readableBytesView.dropLast().allSatisfy { $0 != 0x0A && $0 != 0x0D })
        #expect(try ControlMessage.decode(line: wire) == m)
        #expect(try RawJSON(validating: Array("{\"a\":\n1}".utf8)).jsonString == #"{"a":1}"#)
    }
}
