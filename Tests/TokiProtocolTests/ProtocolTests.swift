import Foundation
import NIOCore
import TestSupport
import Testing
@testable import TokiProtocol

private func json(_ m: ControlMessage) -> String { m.jsonString }

/// Decodes JSON text into a JSONValue for semantic comparisons.
private func value(_ s: String) throws -> JSONValue { try JSONValue(jsonBytes: Array(s.utf8)) }

@Suite struct ControlMessageTests {
    let hw: RawJSON = ["hostname": "gpu-01", "num_cpu": 32]

    @Test func registerExact() throws {
        let m = ControlMessage.register(requestID: "ns1:register:u", RegisterPayload(
            namespace: "ns1", nodeName: "gpu-01", group: "default", models: ["m-a", "m-b"],
            hardwareInfo: hw, backendType: "openai"))
        #expect(json(m) == #"{"type":"register","request_id":"ns1:register:u","register":{"namespace":"ns1","node_name":"gpu-01","group":"default","models":["m-a","m-b"],"hardware_info":{"hostname":"gpu-01","num_cpu":32},"backend_type":"openai"}}"#)
    }

    @Test func acksExact() {
        #expect(json(.ack(requestID: "ns1:register:u", message: TunnelProtocol.AckMessage.registerOK,
                          namespace: "ns1", workerID: 12, channelID: 345))
            == #"{"type":"ack","request_id":"ns1:register:u","ack":{"message":"register_ok","namespace":"ns1","worker_id":12,"channel_id":345}}"#)
        #expect(json(.ack(requestID: "ns1:cancel:1", message: "cancel_noop", namespace: "ns1", workerID: 0))
            == #"{"type":"ack","request_id":"ns1:cancel:1","ack":{"message":"cancel_noop","namespace":"ns1"}}"#)
        #expect(json(.ack(requestID: "ns1:auth:u", message: "auth_ok"))
            == #"{"type":"ack","request_id":"ns1:auth:u","ack":{"message":"auth_ok"}}"#)
    }

    @Test func ackAlwaysHasObject() throws {
        let bare = ControlMessage(type: .ack, requestID: "x")
        #expect(json(bare) == #"{"type":"ack","request_id":"x","ack":{}}"#)
        #expect(try value(bare.jsonString)["ack"] == .object([:]))
        // Decoding a bare ack keeps nil, re-encoding restores the object.
        let decoded = try ControlMessage.decode(line: Array(#"{"type":"ack"}"#.utf8))
        #expect(decoded.ack == nil)
        #expect(json(decoded) == #"{"type":"ack","ack":{}}"#)
    }

    @Test func otherTypesExact() {
        #expect(json(.modelsSync(requestID: "ns1:models:u", ModelsSyncPayload(
            group: "default", models: ["m-a", "m-b"], hardwareInfo: hw, backendType: "openai")))
            == #"{"type":"models_sync","request_id":"ns1:models:u","models_sync":{"group":"default","models":["m-a","m-b"],"hardware_info":{"hostname":"gpu-01","num_cpu":32},"backend_type":"openai"}}"#)
        #expect(json(.heartbeat(requestID: "ns1:heartbeat:u", HeartbeatPayload(
            nodeName: "gpu-01", hardwareInfo: hw, currentModels: ["m-a", "m-b"])))
            == #"{"type":"heartbeat","request_id":"ns1:heartbeat:u","heartbeat":{"node_name":"gpu-01","hardware_info":{"hostname":"gpu-01","num_cpu":32},"current_models":["m-a","m-b"]}}"#)
        #expect(json(.heartbeat(requestID: "h", HeartbeatPayload(currentModels: []))) ==
            #"{"type":"heartbeat","request_id":"h","heartbeat":{"current_models":[]}}"#)
        #expect(json(.cancelRequest(requestID: "ns1:cancel:123", targetRequestID: "ns1:relay:u"))
            == #"{"type":"cancel_request","request_id":"ns1:cancel:123","cancel_request":{"target_request_id":"ns1:relay:u","reason":"client_disconnected"}}"#)
        #expect(json(.auth(requestID: "ns1:auth:u", token: "sk-abc"))
            == #"{"type":"auth","request_id":"ns1:auth:u","auth":{"token":"sk-abc"}}"#)
        #expect(json(.error(requestID: "r", code: TunnelProtocol.HubErrorCode.registerFailed,
                            message: "namespace already connected"))
            == #"{"type":"error","request_id":"r","error":{"code":"register_failed","message":"namespace already connected"}}"#)
        #expect(json(.error(requestID: nil, code: nil, message: "x")) == #"{"type":"error","error":{"message":"x"}}"#)
    }

    @Test func escaping() {
        let m = ControlMessage.error(requestID: "a\"b\\c\n\u{1}<>&\u{2028}é", code: nil, message: "")
        #expect(json(m) == #"{"type":"error","request_id":"a\"b\\c\n\u0001\u003c\u003e\u0026\u2028é","error":{"message":""}}"#)
    }

    @Test(arguments: [
        ControlMessage.register(requestID: "r", RegisterPayload(namespace: "ns", models: ["a"], hardwareInfo: [
            "nested": ["x": [1, 2.5, "s", true, nil]], "neg": -3,
        ])),
        .heartbeat(requestID: "h", HeartbeatPayload(status: 2, nodeName: "n")),
        .modelsSync(requestID: "m", ModelsSyncPayload(models: ["a", "b"])),
        .cancelRequest(requestID: "c", targetRequestID: "t", reason: nil),
        .ack(requestID: "a", message: "heartbeat_ok", namespace: "ns", workerID: 1, channelID: 2),
        .error(requestID: "e", code: "c", message: "m"),
        .auth(requestID: "x", token: "Bearer sk-1"),
    ])
    func roundTrip(_ m: ControlMessage) throws {
        // Encoder → decoder, and the decoded message encodes to the same bytes.
        var buf = ByteBuffer()
        m.writeLine(into: &buf)
        #expect(buf.readableBytesView.last == UInt8(ascii: "\n"))
        #expect(try ControlMessage.decode(line: buf) == m)
        #expect(try ControlMessage.decode(line: buf).encodedLine() == buf)
    }

    @Test func decodeIgnoresUnknownAndGoShapes() throws {
        let line = #"  {"type":"ack","request_id":"ns1:heartbeat:1","ack":{"message":"heartbeat_ok","namespace":"ns1","worker_id":12,"channel_id":345,"extra":1},"future":{"a":[1]}}  "#
        let m = try ControlMessage.decode(line: Array(line.utf8))
        #expect(m.type == .ack)
        #expect(m.ack == AckPayload(message: "heartbeat_ok", namespace: "ns1", workerID: 12, channelID: 345))
        let unknown = try ControlMessage.decode(line: Array(#"{"type":"bogus","ack":null}"#.utf8))
        #expect(unknown.type.rawValue == "bogus")
        #expect(unknown.ack == nil)
        #expect(throws: (any Error).self) { try ControlMessage.decode(line: Array("{not json".utf8)) }
    }

    @Test func jsonValueRoundTrip() throws {
        let v: JSONValue = ["a": [1, -2, 3.25, "x", false, nil, ["k": "v"]], "big": 9_007_199_254_740_993]
        let text = v.jsonString
        #expect(text == #"{"a":[1,-2,3.25,"x",false,null,{"k":"v"}],"big":9007199254740993}"#)
        #expect(try JSONValue(jsonBytes: Array(text.utf8)) == v)
        let viaCodable = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(v))
        #expect(viaCodable == v)
    }

    @Test func requestIDs() {
        let id = TunnelProtocol.makeRequestID(namespace: "ns1", prefix: TunnelProtocol.RequestIDPrefix.modelsSync)
        #expect(id.hasPrefix("ns1:models:"))
        #expect(id == id.lowercased())
        #expect(TunnelProtocol.makeRelayRequestID(namespace: "").hasPrefix("tokiame:relay:"))
        #expect(TunnelProtocol.makeCancelRequestID(namespace: "n", date: Date(timeIntervalSince1970: 2))
            == "n:cancel:2000000000")
    }
}

@Suite struct DataMessageTests {
    @Test func requestGoExample() throws {
        let req = TunnelRequest(requestID: "ns1:relay:5b0c", routeKind: .chatCompletions, path: "/v1/chat/completions",
                                model: "m", headers: ["Content-Type": "application/json", "Accept": "text/event-stream"],
                                isStream: true, body: ByteBuffer(string: #"{"model":"m"}"#))
        var buf = ByteBuffer()
        req.writeLine(into: &buf)
        #expect(String(buffer: buf) == #"{"request_id":"ns1:relay:5b0c","route_kind":"chat_completions","method":"POST","path":"/v1/chat/completions","model":"m","headers":{"Accept":"text/event-stream","Content-Type":"application/json"},"is_stream":true,"body":"eyJtb2RlbCI6Im0ifQ=="}"# + "\n")
        #expect(try TunnelRequest.decode(line: buf) == req)
        #expect(try TunnelRequest.decode(line: buf).encodedLine() == buf)
    }

    @Test func requestBodyIntegerArray() throws {
        let line = #"{"request_id":"r","route_kind":"embeddings","method":"POST","path":"/v1/embeddings","model":"e","body":[123,125,0,255]}"#
        let req = try TunnelRequest.decode(line: ByteBuffer(string: line))
        #expect(req.body == ByteBuffer(bytes: [123, 125, 0, 255]))
        #expect(req.route == .embeddings)
        #expect(throws: (any Error).self) {
            try TunnelRequest.decode(line: ByteBuffer(string: #"{"request_id":"r","body":[256]}"#))
        }
        #expect(throws: (any Error).self) {
            try TunnelRequest.decode(line: ByteBuffer(string: #"{"request_id":"r","body":"@@@"}"#))
        }
    }

    @Test func responseIntegerArrayAndHeadWithBody() throws {
        let r = try TunnelResponse.decodeLine(ByteBuffer(string: #"{"request_id":"r","status_code":200,"headers":{"A":"b"},"body_chunk":[104,105],"eof":true}"#))
        #expect(r == TunnelResponse(requestID: "r", statusCode: 200, headers: ["A": "b"],
                                    bodyChunk: ByteBuffer(string: "hi"), eof: true))
        #expect(r.isTerminal)
    }

    @Test func fastEncodersMatchReference() throws {
        var rng = SplitMix64(seed: 7)
        for size in [0, 1, 2, 3, 4, 5, 31, 32, 33, 1000, 32 * 1024] {
            let chunk = ByteBuffer(bytes: (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
            for id in ["ns1:relay:5b0c-aa", "we\"ird\\id\n<&>é"] {
                var fast = ByteBuffer()
                TunnelResponse.writeBodyChunkLine(requestID: id, chunk: chunk, into: &fast)
                let ref = TunnelResponse(requestID: id, bodyChunk: chunk)
                #expect(fast == ref.encodedLine())
                // Base64 equals Foundation's.
                if id.hasPrefix("ns1") {
                    let expected = #"{"request_id":"\#(id)","body_chunk":"\#(Data(chunk.readableBytesView).base64EncodedString())"}"# + "\n"
                    #expect(String(buffer: fast) == expected)
                }
                // The decoder gives the frame back.
                var line = fast
                line.moveWriterIndex(to: line.writerIndex - 1)
                let decodedFast = try TunnelResponse.decodeLine(line)
                #expect(decodedFast == ref)
            }
        }
        for id in ["r1", "x\"y"] {
            var a = ByteBuffer()
            TunnelResponse.writeEOFLine(requestID: id, into: &a)
            #expect(a == TunnelResponse(requestID: id, eof: true).encodedLine())
            var b = ByteBuffer()
            TunnelResponse.writeErrorLine(requestID: id, code: "read_local_response_failed", message: "boom \"x\"", into: &b)
            #expect(b == TunnelResponse(requestID: id, error: ErrorPayload(code: "read_local_response_failed",
                                                                           message: "boom \"x\"")).encodedLine())
            var c = ByteBuffer()
            TunnelResponse.writeErrorLine(requestID: id, code: nil, message: "m", into: &c)
            #expect(c == TunnelResponse(requestID: id, error: ErrorPayload(message: "m")).encodedLine())
            var d = ByteBuffer()
            TunnelResponse.writeHeadLine(requestID: id, statusCode: 200,
                                         headers: ["Content-Type": "text/event-stream", "X-A": "1, 2"], into: &d)
            let headRef = TunnelResponse(requestID: id, statusCode: 200,
                                         headers: ["Content-Type": "text/event-stream", "X-A": "1, 2"])
            #expect(d == headRef.encodedLine())
            var e = ByteBuffer()
            TunnelResponse.writeHeadLine(requestID: id, statusCode: 404, headers: [:], into: &e)
            #expect(e == TunnelResponse(requestID: id, statusCode: 404).encodedLine())
            for line in [a, b, c, d, e] {
                var l = line
                l.moveWriterIndex(to: l.writerIndex - 1)
                let decoded = try TunnelResponse.decodeLine(l)
                #expect(decoded.encodedLine() == line)
            }
        }
        var eof = ByteBuffer()
        TunnelResponse.writeEOFLine(requestID: "q", into: &eof)
        #expect(String(buffer: eof) == #"{"request_id":"q","eof":true}"# + "\n")
    }

    @Test func fastDecodeFallbacks() throws {
        // Unpadded, CR/LF-escaped and spaced variants still decode.
        let variants = [
            #"{"request_id":"r","body_chunk":"aGk"}"#,
            #"{ "request_id" : "r", "body_chunk" : "aGk=" }"#,
            #"{"body_chunk":"aGk=","request_id":"r"}"#,
            #"{"request_id":"r","body_chunk":"aG\nk="}"#,
        ]
        for v in variants {
            #expect(try TunnelResponse.decodeLine(ByteBuffer(string: v)) ==
                TunnelResponse(requestID: "r", bodyChunk: ByteBuffer(string: "hi")))
        }
        #expect(throws: (any Error).self) { try TunnelResponse.decodeLine(ByteBuffer(string: #"{"request_id":"r","body_chunk":"a"}"#)) }
    }

    @Test func base64MatchesFoundation() {
        var rng = SplitMix64(seed: 99)
        for n in 0..<300 {
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let s = Base64.encodeToString(bytes)
            #expect(s == Data(bytes).base64EncodedString())
            #expect(Base64.decode(s).map { Array($0.readableBytesView) } == bytes)
        }
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("a===") == nil)
        #expect(Base64.decode("") == ByteBuffer())
    }

    @Test func headerFlatten() {
        let pairs: [(name: String, value: String)] = [("content-type", "text/plain"), ("set-cookie", "a"),
                                                      ("Set-Cookie", "b"), ("x-request-id", "1")]
        let h = TunnelHeaders.flatten(pairs)
        #expect(h == ["Content-Type": "text/plain", "Set-Cookie": "a, b", "X-Request-Id": "1"])
        #expect(TunnelHeaders.canonicalKey("bad key") == "bad key")
        #expect(TunnelHeaders.value(["content-TYPE": "x"], "Content-Type") == "x")
    }
}

@Suite struct LineFramerTests {
    static let lines = [#"{"type":"ack","ack":{}}"#, #"{"a":"b c"}"#, "x", #"{"request_id":"r","eof":true}"#]
    static var stream: [UInt8] {
        Array(("  \(lines[0])\r\n\n\n\t\(lines[1]) \n\(lines[2])\n   \n" + lines[3] + "\n").utf8)
    }

    @Test func splitAtEveryPosition() throws {
        let bytes = Self.stream
        for cut in 0...bytes.count {
            for cut2 in cut...bytes.count {
                var f = NDJSONLineFramer(maxLineLength: 64)
                var got: [String] = []
                for part in [bytes[..<cut], bytes[cut..<cut2], bytes[cut2...]] {
                    try f.append(contentsOf: part)
                    got += try f.drainLines().map { String(buffer: $0) }
                }
                #expect(got == Self.lines)
                #expect(f.finish() == nil)
            }
        }
    }

    @Test func byteAtATime() throws {
        var f = NDJSONLineFramer(maxLineLength: 64)
        var got: [String] = []
        for b in Self.stream {
            try f.append(ByteBuffer(bytes: [b]))
            while let l = try f.nextLine() { got.append(String(buffer: l)) }
        }
        #expect(got == Self.lines)
    }

    @Test func tooLong() throws {
        // Exactly the limit is fine; one more throws, whether or not the newline has arrived.
        var ok = NDJSONLineFramer(maxLineLength: 8)
        try ok.append(ByteBuffer(string: "12345678\n"))
        #expect(try ok.nextLine().map { String(buffer: $0) } == "12345678")

        var pending = NDJSONLineFramer(maxLineLength: 8)
        try pending.append(ByteBuffer(string: "1234"))
        #expect(throws: LineTooLong(8)) { try pending.append(ByteBuffer(string: "56789")) }

        var complete = NDJSONLineFramer(maxLineLength: 8)
        #expect(throws: LineTooLong(8)) {
            try complete.append(ByteBuffer(string: "ok\n123456789\n"))
            while try complete.nextLine() != nil {}
        }
        // Limits are parameters (control vs data).
        #expect(NDJSONLineFramer(maxLineLength: TunnelProtocol.maxControlLineLength).maxLineLength == 1 << 20)
        #expect(NDJSONLineFramer(maxLineLength: TunnelProtocol.maxResponseLineLength).maxLineLength == 4 << 20)
    }

    /// Whatever body a hub forwards, the worker's request-line limit admits (base64 + fields).
    @Test func requestLineLimitAdmitsTheLargestBody() throws {
        let body = ByteBuffer(repeating: 0xFF, count: TunnelProtocol.maxRequestBodyBytes)
        let headers = (0..<64).reduce(into: [String: String]()) { $0["X-Header-\($1)"] = String(repeating: "v", count: 1000) }
        let line = TunnelRequest(requestID: String(repeating: "r", count: 200), routeKind: .chatCompletions, path: "/v1/chat/completions",
                                 model: String(repeating: "m", count: 256), headers: headers, isStream: true, body: body).encodedLine()
        #expect(line.readableBytes <= TunnelProtocol.maxRequestLineLength)
        var framer = NDJSONLineFramer(maxLineLength: TunnelProtocol.maxRequestLineLength)
        try framer.append(line)
        let decoded = try TunnelRequest.decode(line: try #require(try framer.nextLine()))
        #expect(decoded.body?.readableBytes == TunnelProtocol.maxRequestBodyBytes)
    }

    @Test func finishReturnsTail() throws {
        var f = NDJSONLineFramer(maxLineLength: 100)
        try f.append(ByteBuffer(string: "a\n  tail  "))
        #expect(try f.nextLine().map { String(buffer: $0) } == "a")
        #expect(try f.nextLine() == nil)
        #expect(f.finish().map { String(buffer: $0) } == "tail")
    }

    @Test func seededFuzz() throws {
        var rng = SplitMix64(seed: 0x70C1)
        for _ in 0..<300 {
            let limit = Int(rng.next() % 40) + 1
            var lines: [[UInt8]] = []
            var stream: [UInt8] = []
            for _ in 0..<Int(rng.next() % 12) {
                let len = Int(rng.next() % UInt64(limit + 6))
                let line = (0..<len).map { _ -> UInt8 in
                    let r = rng.next() % 10
                    return r == 0 ? UInt8(ascii: " ") : (r == 1 ? UInt8(ascii: "\r") : UInt8(ascii: "a") + UInt8(r))
                }
                lines.append(line)
                stream += line + [UInt8(ascii: "\n")]
            }
            // Expected: first overlong line throws; otherwise trimmed non-blank lines.
            var expected: [String] = []
            var expectThrow = false
            for l in lines {
                if l.count > limit { expectThrow = true; break }
                let t = String(decoding: l, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if !t.isEmpty { expected.append(t) }
            }
            var f = NDJSONLineFramer(maxLineLength: limit)
            var got: [String] = []
            var threw = false
            var i = 0
            do {
                while i < stream.count {
                    let n = min(Int(rng.next() % 16) + 1, stream.count - i)
                    try f.append(contentsOf: stream[i..<(i + n)])
                    i += n
                    got += try f.drainLines().map { String(buffer: $0) }
                    #expect(f.bufferedByteCount <= limit + 16)
                }
            } catch is LineTooLong {
                threw = true
            }
            #expect(threw == expectThrow)
            if expectThrow {
                #expect(expected.starts(with: got) || got.starts(with: expected))
            } else {
                #expect(got == expected)
            }
        }
    }
}

