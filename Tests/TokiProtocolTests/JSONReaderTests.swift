import Foundation
import NIOCore
import TestSupport
import Testing

@testable import TokiProtocol

private func decodeControl(_ s: String) throws -> ControlMessage { try ControlMessage.decode(line: Array(s.utf8)) }
private func response(_ s: String) throws -> TunnelResponse { try TunnelResponse.decodeLine(ByteBuffer(string: s)) }
private func request(_ s: String) throws -> TunnelRequest { try TunnelRequest.decode(line: ByteBuffer(string: s)) }
private func json(_ s: String) throws -> JSONValue { try JSONValue(jsonBytes: Array(s.utf8)) }

private func reason(_ body: () throws -> Void) -> JSONReadError.Reason? {
    do {
        try body()
        return nil
    } catch let error as JSONReadError {
        return error.reason
    } catch {
        Issue.record("not a JSONReadError: \(error)")
        return nil
    }
}

/// Exact bytes of every control message and data line (Go field order), and the decoder
/// giving back the same value.
@Suite struct GoldenLineTests {
    static let hw: RawJSON = ["gpus": [["memory_mb": 24564, "name": "RTX 4090"]], "hostname": "gpu-01", "num_cpu": 32]

    static let control: [(ControlMessage, String)] = [
        (.auth(requestID: "ns1:auth:u", token: "sk-abc"),
         #"{"type":"auth","request_id":"ns1:auth:u","auth":{"token":"sk-abc"}}"#),
        (.register(requestID: "ns1:register:u", RegisterPayload(namespace: "ns1", nodeName: "gpu-01", group: "default",
                                                                 models: ["m-a", "m-b"], hardwareInfo: hw, backendType: "openai")),
         #"{"type":"register","request_id":"ns1:register:u","register":{"namespace":"ns1","node_name":"gpu-01","group":"default","models":["m-a","m-b"],"hardware_info":{"gpus":[{"memory_mb":24564,"name":"RTX 4090"}],"hostname":"gpu-01","num_cpu":32},"backend_type":"openai"}}"#),
        (.register(requestID: "r", RegisterPayload(namespace: "")),
         #"{"type":"register","request_id":"r","register":{"namespace":""}}"#),
        (.heartbeat(requestID: "ns1:heartbeat:u", HeartbeatPayload(status: 1, nodeName: "n", hardwareInfo: hw, currentModels: ["m"])),
         #"{"type":"heartbeat","request_id":"ns1:heartbeat:u","heartbeat":{"status":1,"node_name":"n","hardware_info":{"gpus":[{"memory_mb":24564,"name":"RTX 4090"}],"hostname":"gpu-01","num_cpu":32},"current_models":["m"]}}"#),
        (.heartbeat(requestID: "h", HeartbeatPayload()), #"{"type":"heartbeat","request_id":"h","heartbeat":{}}"#),
        (.modelsSync(requestID: "ns1:models:u", ModelsSyncPayload(group: "g", models: ["a"], hardwareInfo: ["k": "v"], backendType: "ollama")),
         #"{"type":"models_sync","request_id":"ns1:models:u","models_sync":{"group":"g","models":["a"],"hardware_info":{"k":"v"},"backend_type":"ollama"}}"#),
        (.cancelRequest(requestID: "ns1:cancel:1", targetRequestID: "ns1:relay:u"),
         #"{"type":"cancel_request","request_id":"ns1:cancel:1","cancel_request":{"target_request_id":"ns1:relay:u","reason":"client_disconnected"}}"#),
        (.ack(requestID: "ns1:heartbeat:u", message: "heartbeat_ok", namespace: "ns1", workerID: 7, channelID: 7),
         #"{"type":"ack","request_id":"ns1:heartbeat:u","ack":{"message":"heartbeat_ok","namespace":"ns1","worker_id":7,"channel_id":7}}"#),
        (.error(requestID: "ns1:register:u", code: "namespace_not_owned", message: "owned by another user"),
         #"{"type":"error","request_id":"ns1:register:u","error":{"code":"namespace_not_owned","message":"owned by another user"}}"#),
        (ControlMessage(type: "future_type"), #"{"type":"future_type"}"#),
    ]

    @Test func controlMessages() throws {
        for (message, text) in Self.control {
            #expect(message.encodedLine() == ByteBuffer(string: text + "\n"))
            #expect(try decodeControl(text) == message)
        }
    }

    static let responses: [(TunnelResponse, String)] = [
        (TunnelResponse(requestID: "ns1:relay:u", statusCode: 200, headers: ["Content-Type": "text/event-stream", "A": "1"]),
         #"{"request_id":"ns1:relay:u","status_code":200,"headers":{"A":"1","Content-Type":"text/event-stream"}}"#),
        (TunnelResponse(requestID: "r", bodyChunk: ByteBuffer(string: "data: {}\n\n")),
         #"{"request_id":"r","body_chunk":"ZGF0YToge30KCg=="}"#),
        (TunnelResponse(requestID: "r", bodyChunk: ByteBuffer()), #"{"request_id":"r","body_chunk":""}"#),
        (TunnelResponse(requestID: "r", eof: true), #"{"request_id":"r","eof":true}"#),
        (TunnelResponse(requestID: "r", error: ErrorPayload(code: "local_request_failed", message: "refused")),
         #"{"request_id":"r","error":{"code":"local_request_failed","message":"refused"}}"#),
        (TunnelResponse(requestID: "r", statusCode: 502, headers: ["X": "y"], bodyChunk: ByteBuffer(string: "hi"), eof: false,
                        error: ErrorPayload(message: "m")),
         #"{"request_id":"r","status_code":502,"headers":{"X":"y"},"body_chunk":"aGk=","eof":false,"error":{"message":"m"}}"#),
    ]

    @Test func responseLines() throws {
        for (frame, text) in Self.responses {
            #expect(frame.encodedLine() == ByteBuffer(string: text + "\n"))
            #expect(try response(text) == frame)
        }
    }

    @Test func requestLines() throws {
        let full = TunnelRequest(requestID: "ns1:relay:u", routeKind: .audioTranscription, path: "/v1/audio/transcriptions",
                                 model: "whisper", headers: ["Content-Type": "multipart/form-data; boundary=x"], isStream: false,
                                 body: ByteBuffer(bytes: [0, 1, 2, 0xFF]))
        let fullText = #"{"request_id":"ns1:relay:u","route_kind":"audio_transcription","method":"POST","path":"/v1/audio/transcriptions","model":"whisper","headers":{"Content-Type":"multipart/form-data; boundary=x"},"is_stream":false,"body":"AAEC/w=="}"#
        let bare = TunnelRequest(requestID: "r", routeKind: .videosGet, path: "/v1/videos/v1")
        let bareText = #"{"request_id":"r","route_kind":"videos_get","method":"GET","path":"/v1/videos/v1"}"#
        for (req, text) in [(full, fullText), (bare, bareText)] {
            #expect(req.encodedLine() == ByteBuffer(string: text + "\n"))
            #expect(try request(text) == req)
        }
    }
}

/// What the decoders accept and refuse beyond the golden lines.
@Suite struct DecoderEdgeTests {
    @Test func everyTruncationIsAnError() throws {
        for (_, text) in GoldenLineTests.control {
            let bytes = Array(text.utf8)
            for n in 0..<bytes.count {
                #expect(throws: JSONReadError.self) { try ControlMessage.decode(line: bytes[0..<n]) }
            }
        }
        for (_, text) in GoldenLineTests.responses {
            let bytes = Array(text.utf8)
            for n in 0..<bytes.count {
                #expect(throws: JSONReadError.self) { try TunnelResponse.decodeLine(ByteBuffer(bytes: bytes[0..<n])) }
            }
        }
    }

    @Test func malformedSyntax() {
        let bad = [
            "", " ", "{", "}", "[]", "null", "\"x\"", "1", "{\"type\":}", "{\"type\" \"x\"}", "{\"type\":\"x\",}",
            "{,\"type\":\"x\"}", "{\"type\":\"x\"\"request_id\":\"y\"}", "{'type':'x'}", "{type:\"x\"}",
            "{\"type\":\"x\"} {}", "{\"type\":\"x\"}x", "{\"a\":tru}", "{\"a\":nul}", "{\"a\":01}", "{\"a\":-}",
            "{\"a\":1.}", "{\"a\":.5}", "{\"a\":1e}", "{\"a\":+1}", "{\"a\":NaN}", "{\"a\":Infinity}",
            "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":\"\u{1}\"}", "{\"a\":\"tab\there\"}", "{\"a\" /*c*/ :1}",
        ]
        for text in bad {
            #expect(throws: JSONReadError.self, "\(text)") { try decodeControl(text) }
        }
    }

    @Test func escapes() throws {
        let m = try decodeControl(#"{"type":"ack","request_id":"\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00"}"#)
        #expect(m.requestID == "\"\\/\u{8}\u{c}\n\r\tAé€😀")
        // Unpaired surrogates become U+FFFD (Go); the next escape is read on its own.
        #expect(try decodeControl(#"{"type":"\ud83d"}"#).type.rawValue == "\u{FFFD}")
        #expect(try decodeControl(#"{"type":"\ude00x"}"#).type.rawValue == "\u{FFFD}x")
        #expect(try decodeControl(#"{"type":"\ud83d\u0041"}"#).type.rawValue == "\u{FFFD}A")
        #expect(try decodeControl(#"{"type":"\ud83d\ud83d\ude00"}"#).type.rawValue == "\u{FFFD}😀")
        // Escaped keys match.
        #expect(try decodeControl(#"{"typ\u0065":"ack"}"#).type == .ack)
        for bad in [#"{"type":"\x"}"#, #"{"type":"\u12"}"#, #"{"type":"\u12g4"}"#, #"{"type":"\"#, #"{"type":"\u"}"#, #"{"type":"\'"}"#] {
            #expect(reason { _ = try decodeControl(bad) } != nil, "\(bad)")
        }
        #expect(reason { _ = try decodeControl(#"{"type":"\q"}"#) } == .invalidEscape)
        // Raw bytes must be valid UTF-8 (overlong, surrogate, truncated sequences).
        for bytes: [UInt8] in [[0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0xFF]] {
            let line = Array(#"{"type":""#.utf8) + bytes + Array(#""}"#.utf8)
            #expect(reason { _ = try ControlMessage.decode(line: line) } == .invalidUTF8)
            let key = Array(#"{""#.utf8) + bytes + Array(#"":1}"#.utf8)
            #expect(reason { _ = try ControlMessage.decode(line: key) } == .invalidUTF8)
        }
        #expect(try decodeControl("{\"type\":\"\u{10FFFF}é\"}").type.rawValue == "\u{10FFFF}é")
    }

    @Test func wrongTypes() {
        let cases = [
            #"{"type":1}"#, #"{"type":["ack"]}"#, #"{"request_id":true}"#, #"{"ack":"x"}"#, #"{"ack":[]}"#,
            #"{"ack":{"worker_id":"1"}}"#, #"{"ack":{"worker_id":1.5}}"#, #"{"ack":{"worker_id":1e2}}"#,
            #"{"heartbeat":{"current_models":"m"}}"#, #"{"heartbeat":{"current_models":[1]}}"#,
            #"{"heartbeat":{"hardware_info":[]}}"#, #"{"heartbeat":{"hardware_info":"x"}}"#, #"{"register":{"models":{}}}"#,
            #"{"heartbeat":{"status":true}}"#, #"{"error":{"message":1}}"#,
        ]
        for text in cases {
            #expect(throws: JSONReadError.self, "\(text)") { try decodeControl(text) }
        }
        #expect(throws: JSONReadError.self) { try response(#"{"request_id":"r","eof":"true"}"#) }
        #expect(throws: JSONReadError.self) { try response(#"{"request_id":"r","status_code":"200"}"#) }
        #expect(throws: JSONReadError.self) { try response(#"{"request_id":"r","headers":{"A":1}}"#) }
        #expect(throws: JSONReadError.self) { try response(#"{"request_id":"r","body_chunk":{}}"#) }
        #expect(throws: JSONReadError.self) { try response(#"{"request_id":"r","body_chunk":[1,-1]}"#) }
        #expect(throws: JSONReadError.self) { try request(#"{"request_id":"r","is_stream":1}"#) }
    }

    @Test func numbers() throws {
        #expect(try decodeControl(#"{"ack":{"worker_id":9223372036854775807}}"#).ack?.workerID == Int.max)
        #expect(try decodeControl(#"{"ack":{"worker_id":-9223372036854775808}}"#).ack?.workerID == Int.min)
        #expect(reason { _ = try decodeControl(#"{"ack":{"worker_id":9223372036854775808}}"#) } == .numberOutOfRange)
        #expect(reason { _ = try decodeControl(#"{"ack":{"worker_id":123456789012345678901234567890}}"#) } == .numberOutOfRange)
        #expect(try decodeControl(#"{"ack":{"worker_id":-0}}"#).ack?.workerID == 0)
        #expect(reason { _ = try json("1e400") } == .numberOutOfRange)
        #expect(reason { _ = try json("-1e400") } == .numberOutOfRange)
        #expect(try json("9223372036854775808") == .double(9_223_372_036_854_775_808))
        #expect(try json("1.5e3") == .int(1500))
        #expect(try json("2.5") == .double(2.5))
        #expect(try json("-0.0") == .int(0))
        #expect(try json("1e-400") == .int(0))
        // Unknown keys may hold any (valid) value, including huge numbers.
        #expect(try decodeControl(#"{"type":"ack","x":123456789012345678901234567890e999}"#).type == .ack)
        #expect(throws: JSONReadError.self) { try decodeControl(#"{"type":"ack","x":1.e5}"#) }
    }

    @Test func nullIsAbsentAndUnknownKeysAreIgnored() throws {
        let m = try decodeControl(#"{"type":"heartbeat","request_id":null,"heartbeat":{"status":null,"node_name":null,"hardware_info":null,"current_models":null},"future":{"deep":[1,{"a":null}]},"ack":null}"#)
        #expect(m == ControlMessage(type: .heartbeat, heartbeat: HeartbeatPayload()))
        #expect(try decodeControl(#"{"type":null}"#).type.rawValue == "")
        #expect(try decodeControl(#"{"heartbeat":{"current_models":["a",null]}}"#).heartbeat?.currentModels == ["a", ""])
        let r = try response(#"{"request_id":"r","status_code":null,"headers":null,"body_chunk":null,"eof":null,"error":null}"#)
        #expect(r == TunnelResponse(requestID: "r"))
        let q = try request(#"{"request_id":"r","model":null,"headers":{"A":null},"is_stream":null,"body":null,"extra":[]}"#)
        #expect(q == TunnelRequest(requestID: "r", routeKind: "", method: "", path: "", headers: ["A": ""]))
    }

    @Test func keysAreCaseSensitive() throws {
        // Go would match these case-insensitively; we keep the exact match (JSONReader.swift).
        let m = try decodeControl(#"{"Type":"ack","REQUEST_ID":"x"}"#)
        #expect(m.type.rawValue == "")
        #expect(m.requestID == nil)
    }

    @Test func duplicateKeysLastWins() throws {
        #expect(try decodeControl(#"{"type":"auth","type":"ack"}"#).type == .ack)
        #expect(try decodeControl(#"{"request_id":"a","request_id":null}"#).requestID == "a")  // null is absent
        // Nested payloads merge, like Go decoding into the existing struct.
        let m = try decodeControl(#"{"register":{"namespace":"a","group":"g"},"register":{"namespace":"b"}}"#)
        #expect(m.register == RegisterPayload(namespace: "b", group: "g"))
        #expect(try decodeControl(#"{"register":{"namespace":"a"},"register":null}"#).register == nil)
        #expect(try decodeControl(#"{"heartbeat":{"current_models":["a"],"current_models":["b","c"]}}"#).heartbeat?.currentModels == ["b", "c"])
        #expect(try response(#"{"request_id":"r","headers":{"A":"1"},"headers":{"B":"2","A":"3"}}"#).headers == ["A": "3", "B": "2"])
        #expect(try response(#"{"request_id":"r","body_chunk":"YQ==","body_chunk":"Yg=="}"#).bodyChunk == ByteBuffer(string: "b"))
        #expect(try json(#"{"a":1,"a":{"b":2}}"#) == ["a": ["b": 2]])
    }

    @Test func depthLimit() throws {
        let ok = String(repeating: "[", count: JSONReader.maxDepth - 2) + String(repeating: "]", count: JSONReader.maxDepth - 2)
        _ = try decodeControl(#"{"x":"# + ok + "}")
        let deep = String(repeating: "[", count: JSONReader.maxDepth + 1) + String(repeating: "]", count: JSONReader.maxDepth + 1)
        #expect(reason { _ = try decodeControl(#"{"x":"# + deep + "}") } == .tooDeep(limit: JSONReader.maxDepth))
        #expect(reason { _ = try json(deep) } == .tooDeep(limit: JSONReader.maxDepth))
        let objects = String(repeating: #"{"a":"#, count: 200) + "1" + String(repeating: "}", count: 200)
        #expect(reason { _ = try decodeControl(#"{"heartbeat":{"hardware_info":"# + objects + "}}") } == .tooDeep(limit: JSONReader.maxDepth))
        // Deep but unclosed input fails without recursing further.
        #expect(throws: JSONReadError.self) { try json(String(repeating: "[", count: 100_000)) }
    }

    @Test func hardwareInfoStaysRaw() throws {
        let text = #"{"type":"heartbeat","heartbeat":{"hardware_info": {"b" : [1, 2.5], "a":"x"} ,"current_models":["m"]}}"#
        let m = try decodeControl(text)
        let raw = try #require(m.heartbeat?.hardwareInfo)
        #expect(raw.jsonString == #"{"b" : [1, 2.5], "a":"x"}"#)
        #expect(try raw.decode() == ["a": "x", "b": [1, 2.5]])
        #expect(raw["a"] == "x")
        #expect(RawJSON(try raw.decode()).jsonString == #"{"a":"x","b":[1,2.5]}"#)
        #expect(throws: JSONReadError.self) { try RawJSON(validating: Array("{".utf8)) }
        #expect(try RawJSON(validating: Array(#"{"a":1}"#.utf8)) == ["a": 1])
    }

    @Test func errorsSayWhere() {
        do {
            _ = try decodeControl(#"{"type":"ack","ack":{"worker_id":"x"}}"#)
            Issue.record("accepted")
        } catch let error as JSONReadError {
            #expect(error.offset == 33)
            #expect(error.description.contains("expected an integer"))
        } catch {
            Issue.record("\(error)")
        }
    }
}

/// Encode → decode over random values gives the value back (seeded, reproducible).
@Suite struct RoundTripPropertyTests {
    struct Gen {
        var rng: SplitMix64
        mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        mutating func bool() -> Bool { rng.next() & 1 == 1 }
        mutating func string() -> String {
            let pool: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{1}", "\u{1F}", "<", ">", "&", "é", "€",
                                  "😀", "\u{2028}", "\u{2029}", "\u{7F}", "\u{FFFD}", "ns1:relay:", "\u{10FFFF}"]
            return (0..<int(12)).map { _ in pool[int(pool.count)] }.joined()
        }
        mutating func opt<T>(_ make: (inout Gen) -> T) -> T? { bool() ? make(&self) : nil }
        mutating func strings() -> [String] { (0..<int(4)).map { _ in string() } }
        mutating func headers() -> [String: String] {
            Dictionary((0..<int(4)).map { _ in (string(), string()) }, uniquingKeysWith: { a, _ in a })
        }
        mutating func bytes() -> ByteBuffer { ByteBuffer(bytes: (0..<int(70)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }) }
        mutating func value(depth: Int = 0) -> JSONValue {
            switch int(depth > 3 ? 5 : 7) {
            case 0: return .null
            case 1: return .bool(bool())
            case 2: return .int(Int64(bitPattern: rng.next()) >> Int64(int(64)))
            case 3: return .double(Double(int(1_000_000)) + 0.25)
            case 4: return .string(string())
            case 5: return .array((0..<int(4)).map { _ in value(depth: depth + 1) })
            default: return .object(Dictionary((0..<int(4)).map { _ in (string(), value(depth: depth + 1)) }, uniquingKeysWith: { a, _ in a }))
            }
        }
        mutating func raw() -> RawJSON { RawJSON(.object(Dictionary((0..<int(4)).map { _ in (string(), value()) }, uniquingKeysWith: { a, _ in a }))) }
        mutating func int() -> Int { Int(bitPattern: UInt(rng.next())) >> int(64) }

        mutating func control() -> ControlMessage {
            var m = ControlMessage(type: ControlMessageType(string()), requestID: opt { $0.string() })
            switch int(7) {
            case 0: m.auth = AuthPayload(token: string())
            case 1: m.register = RegisterPayload(namespace: string(), nodeName: opt { $0.string() }, group: opt { $0.string() },
                                                 models: opt { $0.strings() }, hardwareInfo: opt { $0.raw() }, backendType: opt { $0.string() })
            case 2: m.heartbeat = HeartbeatPayload(status: opt { $0.int() }, nodeName: opt { $0.string() }, hardwareInfo: opt { $0.raw() },
                                                   currentModels: opt { $0.strings() })
            case 3: m.modelsSync = ModelsSyncPayload(group: opt { $0.string() }, models: opt { $0.strings() }, hardwareInfo: opt { $0.raw() },
                                                     backendType: opt { $0.string() })
            case 4: m.cancelRequest = CancelRequestPayload(targetRequestID: string(), reason: opt { $0.string() })
            case 5: m.ack = AckPayload(message: opt { $0.string() }, namespace: opt { $0.string() }, workerID: opt { $0.int() },
                                       channelID: opt { $0.int() })
            default: m.error = ErrorPayload(code: opt { $0.string() }, message: string())
            }
            if m.type == .ack, m.ack == nil { m.ack = AckPayload() }  // the encoder always writes one
            return m
        }
    }

    @Test(arguments: [UInt64(1), 2, 3, 4])
    func controlMessages(seed: UInt64) throws {
        var g = Gen(rng: SplitMix64(seed: seed))
        for _ in 0..<500 {
            let m = g.control()
            let line = m.encodedLine()
            #expect(try ControlMessage.decode(line: line) == m, "\(String(buffer: line))")
            #expect((try? JSONSerialization.jsonObject(with: Data(line.readableBytesView))) is [String: Any])
        }
    }

    @Test(arguments: [UInt64(5), 6])
    func dataLines(seed: UInt64) throws {
        var g = Gen(rng: SplitMix64(seed: seed))
        for _ in 0..<500 {
            let r = TunnelResponse(requestID: g.string(), statusCode: g.opt { $0.int() }, headers: g.opt { $0.headers() },
                                   bodyChunk: g.opt { $0.bytes() }, eof: g.opt { $0.bool() },
                                   error: g.opt { ErrorPayload(code: $0.opt { $0.string() }, message: $0.string()) })
            #expect(try TunnelResponse.decodeLine(r.encodedLine()) == r)
            let q = TunnelRequest(requestID: g.string(), routeKind: g.string(), method: g.string(), path: g.string(),
                                  model: g.opt { $0.string() }, headers: g.opt { $0.headers() }, isStream: g.opt { $0.bool() },
                                  body: g.opt { $0.bytes() })
            #expect(try TunnelRequest.decode(line: q.encodedLine()) == q)
        }
    }

    /// JSONValue: our writer → our reader is the identity, and Foundation reads the same text
    /// to the same structure.
    @Test(arguments: [UInt64(7), 8])
    func jsonValues(seed: UInt64) throws {
        var g = Gen(rng: SplitMix64(seed: seed))
        for _ in 0..<500 {
            let v = g.value()
            let text = v.jsonString
            #expect(try json(text) == v, "\(text)")
            let foundation = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
            #expect(Self.same(v, foundation), "\(text)")
        }
    }

    static func same(_ v: JSONValue, _ f: Any) -> Bool {
        switch v {
        case .null: return f is NSNull
        case .bool(let b): return (f as? NSNumber)?.boolValue == b
        case .int(let i): return (f as? NSNumber)?.int64Value == i
        case .double(let d): return (f as? NSNumber)?.doubleValue == d
        case .string(let s): return f as? String == s
        case .array(let a):
            guard let fa = f as? [Any], fa.count == a.count else { return false }
            return zip(a, fa).allSatisfy { same($0, $1) }
        case .object(let o):
            guard let fo = f as? [String: Any], fo.count == o.count else { return false }
            return o.allSatisfy { k, v in fo[k].map { same(v, $0) } ?? false }
        }
    }
}
