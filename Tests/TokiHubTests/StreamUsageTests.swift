import NIOCore
import TestSupport
import Testing
import TokiProtocol
@testable import TokiHub

@Suite struct StreamUsageTests {
    static func text(_ buffers: [ByteBuffer]) -> String {
        buffers.map { String(buffer: $0) }.joined()
    }

    @Test func includeUsageIsAddedOnlyWhereItCanBeWithoutRewritingTheBody() throws {
        let body = ByteBuffer(string: #" {"model":"m","stream":true}"#)
        let injected = try #require(UsageRequest.inject(into: body))
        #expect(String(buffer: injected) == #" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#)
        #expect(String(buffer: try #require(UsageRequest.inject(into: ByteBuffer(string: "{ }")))) == #"{"stream_options":{"include_usage":true} }"#)
        #expect(UsageRequest.inject(into: ByteBuffer(string: #"{"stream_options":{},"model":"m"}"#)) == nil)
        #expect(UsageRequest.inject(into: ByteBuffer(string: "[1]")) == nil)
    }

    static let chatWithUsage = """
        data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}

        data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}

        data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}

        data: [DONE]


        """
    static let chatWithout = """
        data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}

        data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

        data: [DONE]


        """

    @Test func theUsageChunkAndNullUsageMembersAreTakenOut() {
        var stripper = UsageStripper()
        var out = stripper.filter(ByteBuffer(string: Self.chatWithUsage))
        if let rest = stripper.finish() { out.append(rest) }
        #expect(Self.text(out) == Self.chatWithout)
    }

    @Test func theCompletionsFinishChunkLosesOnlyItsUsageMember() {
        let backend = """
            data: {"id":"x","choices":[{"text":" a","index":0,"finish_reason":null}],"model":"m"}

            data: {"id":"x","choices":[{"text":"","index":0,"finish_reason":"length"}],"model":"m","usage":{"completion_tokens":8,"prompt_tokens":3,"total_tokens":11},"timings":{"n":1}}

            data: [DONE]


            """
        let client = """
            data: {"id":"x","choices":[{"text":" a","index":0,"finish_reason":null}],"model":"m"}

            data: {"id":"x","choices":[{"text":"","index":0,"finish_reason":"length"}],"model":"m","timings":{"n":1}}

            data: [DONE]


            """
        var stripper = UsageStripper()
        var out = stripper.filter(ByteBuffer(string: backend))
        if let rest = stripper.finish() { out.append(rest) }
        #expect(Self.text(out) == client)
    }

    @Test func eventsWithoutUsagePassAsTheSameBytes() {
        var stripper = UsageStripper()
        let chunk = ByteBuffer(string: "data: {\"content\":\"the word \\\"usage\\\" is here\"}\n\n")
        let out = stripper.filter(chunk)
        #expect(out == [chunk])
    }

    /// However the backend's stream is cut into chunks, the client gets the same bytes.
    @Test(arguments: 0..<200)
    func anySplitGivesTheSameStream(seed: Int) {
        var random = SplitMix64(seed: UInt64(seed))
        let bytes = Array(Self.chatWithUsage.utf8)
        var stripper = UsageStripper()
        var out: [ByteBuffer] = []
        var i = 0
        while i < bytes.count {
            let n = min(bytes.count - i, Int(random.next() % 40) + 1)
            out += stripper.filter(ByteBuffer(bytes: bytes[i..<(i + n)]))
            i += n
        }
        if let rest = stripper.finish() { out.append(rest) }
        #expect(Self.text(out) == Self.chatWithout)
    }

    static func head(_ headers: [String: String]) -> ResponseHead {
        try! ResponseHead.validate(statusCode: 200, headers: headers)
    }

    @Test func theDoneEventWaitsForTheCharge() {
        var output = HeldOutput(head: Self.head(["Content-Type": "text/event-stream"]), stripUsage: false)
        let content = ByteBuffer(string: "data: {\"a\":1}\n\n")
        let done = ByteBuffer(string: "data: [DONE]\n\n")
        #expect(output.pieces(for: content) == [content])
        #expect(output.pieces(for: done).isEmpty)
        #expect(output.finish() == [done])
    }

    @Test func aJSONBodyPassesAsItComes() {
        // Its end is the chunked body's terminator, which the streamer writes after the commit.
        var output = HeldOutput(head: Self.head(["Content-Type": "application/json", "Content-Length": "7"]), stripUsage: true)
        let body = ByteBuffer(string: #"{"usage":{"prompt_tokens":1}}"#)
        #expect(output.pieces(for: body) == [body])
        #expect(output.finish().isEmpty)
    }

    @Test("the sniffer takes the last reported value, spaces allowed, and nothing that is not a number", arguments: [
        (#"{"usage":{"prompt_tokens": 12,"completion_tokens":  7}}"#, 12, 7),
        (#"{"prompt_tokens":1} {"prompt_tokens":2,"completion_tokens":3}"#, 2, 3),
        (#"{"prompt_tokens":"5","completion_tokens":null}"#, nil, nil),
        (#"{"prompt_tokens":99999999999999999999999,"completion_tokens":-1}"#, nil, nil),
        (#"{"prompt_tokens":"#, nil, nil),
    ] as [(String, Int?, Int?)])
    func theSnifferReadsTheLastValue(_ body: String, _ prompt: Int?, _ completion: Int?) {
        var sniffer = UsageSniffer()
        sniffer.observe(ByteBuffer(string: body))
        #expect(sniffer.usage.prompt == prompt)
        #expect(sniffer.usage.completion == completion)
    }

    @Test func theSnifferReadsReportedUsageAndCountsEvents() {
        var sniffer = UsageSniffer(countEvents: true)
        for line in Self.chatWithUsage.split(separator: "\n", omittingEmptySubsequences: false) {
            sniffer.observe(ByteBuffer(string: line + "\n"))
        }
        #expect(sniffer.usage.prompt == 5)
        #expect(sniffer.usage.completion == 2)
        #expect(sniffer.dataEvents == 3)
    }
}
