import NIOCore
import Testing
@testable import TokiHub

@Suite struct ResponseBufferTests {
    @Test func chunksComeOutInOrderThenTheEnd() async {
        let buffer = ResponseBuffer(limit: 100, overflow: .cut)
        #expect(await buffer.push(ByteBuffer(string: "a")) == .accepted)
        #expect(await buffer.push(ByteBuffer(string: "bc")) == .accepted)
        buffer.finish(.end)
        var seen = ""
        loop: while true {
            switch await buffer.next() {
            case .chunk(let chunk): seen += String(buffer: chunk)
            case .end: break loop
            default: Issue.record("unexpected event")
            }
        }
        #expect(seen == "abc")
        #expect(buffer.bufferedBytes == 0)
    }

    /// v1 links: the client holds at most `limit` bytes; beyond it the request is cut.
    @Test func cutModeReportsOverflowWithoutWaiting() async {
        let buffer = ResponseBuffer(limit: 10, overflow: .cut)
        #expect(await buffer.push(ByteBuffer(repeating: 1, count: 10)) == .accepted)
        #expect(await buffer.push(ByteBuffer(repeating: 1, count: 1)) == .overflow)
    }

    /// v2 links: the pusher waits until the writer side takes bytes out.
    @Test func waitModeBlocksThePusherUntilThereIsRoom() async {
        let buffer = ResponseBuffer(limit: 10, overflow: .wait)
        let pushed = await withTaskGroup(of: Bool.self) { group -> Bool in
            group.addTask {
                _ = await buffer.push(ByteBuffer(repeating: 1, count: 8))
                return await buffer.push(ByteBuffer(repeating: 2, count: 8)) == .accepted  // over the limit: waits
            }
            // The second push cannot return before the first chunk is taken.
            while buffer.bufferedBytes < 16 { await Task.yield() }
            guard case .chunk(let first) = await buffer.next() else { return false }
            #expect(first.readableBytes == 8)
            return await group.next() ?? false
        }
        #expect(pushed)
    }

    @Test func closingWakesAWaitingPusherAndRefusesMore() async {
        let buffer = ResponseBuffer(limit: 1, overflow: .wait)
        async let result = buffer.push(ByteBuffer(repeating: 1, count: 5))
        while buffer.bufferedBytes == 0 { await Task.yield() }
        buffer.close()
        #expect(await result == .closed)
        #expect(await buffer.push(ByteBuffer(string: "x")) == .closed)
        guard case .cancelled = await buffer.next() else {
            Issue.record("a closed buffer must say so")
            return
        }
    }

    @Test func tickWakesAnIdleReaderOnce() async {
        let buffer = ResponseBuffer(limit: 10, overflow: .cut)
        buffer.tick()
        buffer.tick()
        guard case .tick = await buffer.next() else {
            Issue.record("expected a tick")
            return
        }
        _ = await buffer.push(ByteBuffer(string: "x"))
        guard case .chunk = await buffer.next() else {
            Issue.record("ticks are coalesced; the chunk comes next")
            return
        }
    }

    @Test func failureComesAfterTheBufferedChunks() async {
        let buffer = ResponseBuffer(limit: 10, overflow: .cut)
        _ = await buffer.push(ByteBuffer(string: "x"))
        buffer.finish(.failed(UpstreamFailure.truncated))
        guard case .chunk = await buffer.next(), case .failed = await buffer.next() else {
            Issue.record("chunk, then the failure")
            return
        }
    }

    @Test func cancellationEndsAWaitingReader() async {
        let buffer = ResponseBuffer(limit: 10, overflow: .cut)
        let task = Task { await buffer.next() }
        task.cancel()
        guard case .cancelled = await task.value else {
            Issue.record("expected cancelled")
            return
        }
    }
}

@Suite struct EventBoundaryTests {
    @Test func commentsGoOnlyBetweenEvents() {
        var boundary = EventBoundary()
        #expect(boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "data: {\"a\":"))
        #expect(!boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "1}\n"))
        #expect(!boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "\n"))
        #expect(boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "data: x\r\n\r\n"))
        #expect(boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "data: x\r\n"))
        #expect(!boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "\r"))
        #expect(!boundary.atBoundary)
        boundary.observe(ByteBuffer(string: "\n"))
        #expect(boundary.atBoundary)
        boundary.observe(ByteBuffer())
        #expect(boundary.atBoundary)
    }
}
