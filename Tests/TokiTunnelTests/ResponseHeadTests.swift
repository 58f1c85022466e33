import Testing
@testable import TokiTunnel
import TokiProtocol

/// A worker's head is untrusted: these are the rules that keep it from crashing the hub or
/// smuggling bytes onto a client's connection.
@Suite struct ResponseHeadTests {
    @Test(arguments: [1000, -1, 99, 100, 101, 103, 199, 600, Int.max, Int.min])
    func nonFinalStatusesAreRefused(status: Int) {
        #expect(throws: ResponseHeadError.invalidStatus(status)) {
            try ResponseHead.validate(statusCode: status, headers: nil)
        }
    }

    @Test func missingOrZeroStatusIsBadGateway() throws {
        #expect(try ResponseHead.validate(statusCode: nil, headers: nil).status == 502)
        #expect(try ResponseHead.validate(statusCode: 0, headers: nil).status == 502)
    }

    @Test(arguments: [200, 201, 204, 304, 404, 429, 500, 599])
    func finalStatusesPass(status: Int) throws {
        let head = try ResponseHead.validate(statusCode: status, headers: ["Content-Type": "application/json"])
        #expect(head.status == status)
        #expect(head.allowsBody == (status != 204 && status != 304))
    }

    @Test func invalidAndHopByHopHeadersAreDropped() throws {
        let head = try ResponseHead.validate(statusCode: 200, headers: [
            "Content-Type": "text/event-stream",
            "X-Ok": "a\tb c",
            "X-Split": "a\r\nX-Smuggled: 1",
            "X-Lf": "a\nb",
            "X-Nul": "a\u{0}b",
            "X-Del": "a\u{7F}",
            "Bad Name": "v",
            "Bad:Name": "v",
            "": "v",
            "X-Crlf\r\nInjected": "v",
            "Connection": "close, X-Private",
            "X-Private": "scoped by Connection",
            "Keep-Alive": "timeout=5",
            "Transfer-Encoding": "chunked",
            "Content-Length": "5",
            "Upgrade": "h2c",
            "TE": "trailers",
            "Trailer": "X-Ok",
            "Proxy-Authenticate": "Basic",
            "X-Request-Id": "worker-chosen",
        ])
        #expect(head.headers == [
            ResponseHeaderField(name: "Content-Type", value: "text/event-stream"),
            ResponseHeaderField(name: "X-Ok", value: "a\tb c"),
        ])
        #expect(head.droppedHeaders == 18)
        #expect(head.isEventStream)
    }

    @Test func headerCountAndSizeAreBounded() throws {
        var many: [String: String] = [:]
        for i in 0..<500 { many["X-H\(i)"] = "v" }
        #expect(try ResponseHead.validate(statusCode: 200, headers: many).headers.count == ResponseHead.maxHeaderCount)
        let big = String(repeating: "v", count: ResponseHead.maxHeaderValueLength)
        var large: [String: String] = [:]
        for i in 0..<20 { large["X-Big\(i)"] = big }
        let kept = try ResponseHead.validate(statusCode: 200, headers: large).headers
        #expect(kept.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count } <= ResponseHead.maxHeaderBytes)
        #expect(try ResponseHead.validate(statusCode: 200, headers: ["X-Long": big + "v"]).headers.isEmpty)
        #expect(try ResponseHead.validate(statusCode: 200, headers: [String(repeating: "n", count: 257): "v"]).headers.isEmpty)
    }

    @Test func nonASCIIValuesPassAsObsText() throws {
        #expect(try ResponseHead.validate(statusCode: 200, headers: ["X-Name": "café"]).headers.count == 1)
    }

    @Test func subprotocolNegotiation() {
        #expect(TunnelSubprotocol.offer(lz4: true, smux2: true) == "toki-smux2-lz4, toki-lz4, toki-smux2, tokilake.v1")
        let all = TunnelSubprotocol.parseOffer(TunnelSubprotocol.offer(lz4: true, smux2: true))
        #expect(TunnelSubprotocol.features(of: TunnelSubprotocol.select(offered: all, allowLZ4: true)) == TunnelFeatures(lz4: true, smuxVersion: 2))
        #expect(TunnelSubprotocol.features(of: TunnelSubprotocol.select(offered: all, allowLZ4: false)) == TunnelFeatures(lz4: false, smuxVersion: 2))
        #expect(TunnelSubprotocol.features(of: TunnelSubprotocol.select(offered: all, allowLZ4: true, allowSmux2: false)) == TunnelFeatures(lz4: true, smuxVersion: 1))
        // An older toki worker (LZ4 only) and an original worker.
        #expect(TunnelSubprotocol.features(of: TunnelSubprotocol.select(offered: ["tokilake.v1", "toki-lz4"], allowLZ4: true)) == TunnelFeatures(lz4: true, smuxVersion: 1))
        #expect(TunnelSubprotocol.features(of: TunnelSubprotocol.select(offered: [], allowLZ4: true)) == .original)
        #expect(TunnelSubprotocol.features(of: "tokilake.v1") == .original)
    }
}
