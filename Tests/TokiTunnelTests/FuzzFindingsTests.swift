import Foundation
import NIOCore
import Testing

@testable import TokiTunnel

/// Regressions for what the libFuzzer targets (Tests/Fuzz, docs/fuzzing.md) found.
@Suite("fuzz findings (TokiTunnel)")
struct TunnelFuzzFindingsTests {
    /// FuzzDataLine: an eof (or body_chunk) line whose request_id holds invalid UTF-8 was
    /// accepted by decodeLine's fast path, with the id repaired (U+FFFD), while JSONDecoder
    /// rejects the line: the two paths must agree.
    @Test("decodeLine's fast path leaves non-ASCII request ids to JSONDecoder")
    func nonASCIIRequestID() throws {
        for tail in [#"","eof":true}"#, #"","body_chunk":"aGk="}"#] {
            var invalid = ByteBuffer(string: #"{"request_id":"ns1:relay:5b0c"#)
            invalid.writeBytes([0xFF, 0xFE])
            invalid.writeString(tail)
            #expect(throws: DecodingError.self) { try TunnelResponse.decodeLine(invalid) }
            #expect(throws: DecodingError.self) { try JSONDecoder().decode(TunnelResponse.self, from: Data(invalid.readableBytesView)) }

            let valid = ByteBuffer(string: #"{"request_id":"ns1:relay:café"# + tail)
            let decoded = try TunnelResponse.decodeLine(valid)
            #expect(decoded.requestID == "ns1:relay:café")
            #expect(decoded == (try JSONDecoder().decode(TunnelResponse.self, from: Data(valid.readableBytesView))))
        }
    }
}
