import NIOCore
import Testing
import TokiProtocol

@Suite("routing fields of a request body")
struct RoutingFieldsTests {
    func read(_ text: String) throws -> RoutingFields { try RoutingFields.read(ByteBuffer(string: text)) }

    @Test func theRoutingFieldsAreReadAndTheRestSkipped() throws {
        let fields = try read(#"{"messages":[{"role":"user","content":"a \"model\": \u00e9"}],"model":"llama","stream":true,"stream_options":{"x":[1,2],"include_usage":true},"tools":{"model":"not this"}}"#)
        #expect(fields == RoutingFields(model: "llama", stream: true, streamOptions: .object(includeUsage: true)))
    }

    @Test func absentAndOtherTypes() throws {
        #expect(try read(#"{}"#) == RoutingFields())
        #expect(try read(#"{"model":5,"stream":"yes","stream_options":null}"#) == RoutingFields(model: nil, stream: nil, streamOptions: .notAnObject))
        #expect(try read(#"{"stream_options":{"include_usage":1}}"#).streamOptions == .object(includeUsage: nil))
        #expect(try read(#"{"stream_options":{}}"#).streamOptions == .object(includeUsage: nil))
    }

    @Test func aRepeatedKeyCountsAsItsLastValue() throws {
        #expect(try read(#"{"model":"a","model":"b"}"#).model == "b")
        #expect(try read(#"{"model":"a","model":null}"#).model == nil)
        #expect(try read(#"{"stream":true,"stream":false}"#).stream == false)
    }

    @Test func escapedModelNamesAreDecoded() throws {
        #expect(try read(#"{"model":"a\/b\u0041"}"#).model == "a/bA")
    }

    @Test("the whole body is validated, not only up to the routing fields", arguments: [
        #"{"model":"a"} x"#, #"{"model":"a","messages":[1,]}"#, #"{"model":"a","n":01}"#, #"["model"]"#, #""model""#,
        "{\"model\":\"a\",\"s\":\"\u{01}\"}", #"{"model":"a""#, "",
    ])
    func malformedBodiesAreRefused(_ text: String) {
        #expect(throws: JSONReadError.self) { try read(text) }
    }

    @Test func invalidUTF8IsRefused() {
        var body = ByteBuffer(string: #"{"model":"a","x":""#)
        body.writeBytes([0xC3, 0x28])
        body.writeString(#""}"#)
        #expect(throws: JSONReadError.self) { try RoutingFields.read(body) }
    }

    @Test func asciiCaseInsensitiveMatching() {
        #expect(ASCII.equalsIgnoringCase("Content-Type", "content-type"))
        #expect(!ASCII.equalsIgnoringCase("Content-Types", "content-type"))
        #expect(ASCII.containsIgnoringCase("Text/Event-Stream; charset=utf-8", "text/event-stream"))
        #expect(!ASCII.containsIgnoringCase("text/event", "text/event-stream"))
        #expect(!ASCII.containsIgnoringCase("application/json", "text/event-stream"))
    }
}
