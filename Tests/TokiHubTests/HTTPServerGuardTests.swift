import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import TokiHub

/// The guard and its observer in NIO's HTTP server pipeline, on an EmbeddedChannel: virtual time,
/// no sockets.
struct HTTPServerGuardTests {
    static let limits: HTTPServerLimits = {
        var limits = HTTPServerLimits()
        limits.headerTimeout = .seconds(10)
        limits.idleTimeout = .seconds(60)
        limits.bodyTimeout = .seconds(30)
        limits.maxHeaderBytes = 1024
        limits.maxHeaderFields = 8
        return limits
    }()

    /// A connected channel with the pipeline Hummingbird builds for HTTP/1.1, plus the guard.
    func makeChannel(_ limits: HTTPServerLimits = limits) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldCount = limits.maxHeaderFields
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
        try HTTPConnectionGuard.install(on: channel, limits: limits)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        return channel
    }

    func send(_ channel: EmbeddedChannel, _ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    /// Everything the channel wrote to the "socket", as text.
    func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { continue }
            text += String(buffer: buffer)
        }
        return text
    }

    func respond(_ channel: EmbeddedChannel, status: HTTPResponseStatus = .ok) throws {
        try channel.writeOutbound(HTTPServerResponsePart.head(.init(version: .http1_1, status: status, headers: ["Content-Length": "0"])))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
    }

    func drainInbound(_ channel: EmbeddedChannel) throws {
        while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
    }

    /// One GET answered 200: the connection is between requests afterwards.
    func serveOneRequest(_ channel: EmbeddedChannel) throws {
        try send(channel, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try drainInbound(channel)
        try respond(channel)
        _ = try written(channel)
    }

    /// The channel is still open `after` from now, and closed a second later.
    func expectCloses(_ channel: EmbeddedChannel, after: Int64, sourceLocation: SourceLocation = #_sourceLocation) {
        channel.embeddedEventLoop.advanceTime(by: .seconds(after - 1))
        #expect(channel.isActive, sourceLocation: sourceLocation)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(!channel.isActive, sourceLocation: sourceLocation)
    }

    @Test("a connection that sends nothing is closed at the header timeout, without an answer")
    func silentConnection() throws {
        let channel = try makeChannel()
        expectCloses(channel, after: 10)
        #expect(try written(channel) == "")
    }

    @Test("a head trickling in is answered 408 at the header timeout; the trickle does not extend it")
    func trickledHead() throws {
        let channel = try makeChannel()
        for byte in "GET /healthz HTTP/1.1\r\nHost: x\r\n" {
            try send(channel, String(byte))
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
            if !channel.isActive { break }
        }
        #expect(!channel.isActive)
        let answer = try written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(answer)")
        #expect(answer.contains(#""code":"request_timeout""#))
        #expect(answer.contains("Connection: close"))
    }

    @Test("a kept-alive connection is closed after the idle timeout, not the header timeout")
    func keepAliveIdle() throws {
        let channel = try makeChannel()
        try serveOneRequest(channel)
        expectCloses(channel, after: 60)
    }

    @Test("the next request's head clock starts at its first byte")
    func secondRequestHeaderTimeout() throws {
        let channel = try makeChannel()
        try serveOneRequest(channel)
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        try send(channel, "GET /heal")
        expectCloses(channel, after: 10)
        #expect(try written(channel).hasPrefix("HTTP/1.1 408 "))
    }

    @Test("a stalled body while the handler reads gives 408 and an error to the reader")
    func stalledBody() throws {
        let channel = try makeChannel()
        try send(channel, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"model\":")
        try drainInbound(channel)
        channel.read()  // the handler waits for more body
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(channel.isActive)
        try send(channel, "\"x\"")  // progress restarts the clock
        channel.read()
        expectCloses(channel, after: 30)
        #expect(try written(channel).hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
        #expect(throws: HTTPGuardError.self) { try channel.throwIfErrorCaught() }
    }

    @Test("no body clock while the handler is not reading (back-pressure is not the client's fault)")
    func bodyNotRead() throws {
        let channel = try makeChannel()
        try send(channel, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        channel.embeddedEventLoop.advanceTime(by: .seconds(90))
        #expect(channel.isActive)
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .seconds(31))
        #expect(!channel.isActive)
    }

    @Test("no timeout while the response is being produced")
    func longResponse() throws {
        let channel = try makeChannel()
        try send(channel, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        try drainInbound(channel)
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .seconds(600))
        #expect(channel.isActive)
        try respond(channel)
        #expect(try written(channel).hasPrefix("HTTP/1.1 200 OK"))
    }

    @Test("parser errors are answered and closed", arguments: [
        ("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request", "invalid_method"),
        ("\u{1}\u{2}garbage\r\n\r\n", "400 Bad Request", "invalid_method"),
        ("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400 Bad Request", "invalid_content_length"),
        ("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "400 Bad Request", ""),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400 Bad Request", ""),
        ("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 2000) + "\r\n\r\n", "431 Request Header Fields Too Large", "headers_too_large"),
        ("GET / HTTP/1.1\r\n" + (0..<20).map { "X-\($0): y\r\n" }.joined() + "\r\n", "431 Request Header Fields Too Large", "headers_too_large"),
    ])
    func parserErrors(request: String, status: String, code: String) throws {
        let channel = try makeChannel()
        try send(channel, request)
        let answer = try written(channel)
        #expect(answer.hasPrefix("HTTP/1.1 \(status)\r\n"), "\(answer)")
        #expect(code.isEmpty || answer.contains(#""code":"\#(code)""#), "\(answer)")
        #expect(answer.contains(#"{"error":{"message":"#))
        #expect(!channel.isActive)
        // Nothing reached the application, and later bytes are discarded, not parsed.
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil)
    }

    @Test("a response the handler writes after a rejection is dropped")
    func writesAfterRejectionDropped() throws {
        let channel = try makeChannel()
        try send(channel, "BREW / HTTP/1.1\r\n\r\n")
        _ = try written(channel)
        #expect(throws: (any Error).self) { try respond(channel) }
        #expect(try written(channel) == "")
    }

    @Test("after a 101 both handlers leave the pipeline: no HTTP timeouts on the upgraded connection")
    func upgradeRemovesGuard() throws {
        let channel = try makeChannel()
        try send(channel, "GET /api/tokilake/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
        try drainInbound(channel)
        try channel.writeOutbound(HTTPServerResponsePart.head(.init(version: .http1_1, status: .switchingProtocols)))
        #expect(try written(channel).hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HTTPConnectionGuard.self) }
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: HTTPMessageObserver.self) }
        channel.embeddedEventLoop.advanceTime(by: .seconds(3600))
        #expect(channel.isActive)
    }

    @Test("on shutdown a connection between requests closes at once; one mid-request is left to finish")
    func quiesce() throws {
        let idle = try makeChannel()
        idle.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!idle.isActive)
        let busy = try makeChannel()
        try send(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        try drainInbound(busy)
        busy.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(busy.isActive)
    }

    @Test("connection limit: admits up to the limit, refuses beyond, frees slots on release")
    func limiter() {
        let limiter = ConnectionLimiter(limit: 2, logger: .init(label: "test"))
        #expect(limiter.admit())
        #expect(limiter.admit())
        #expect(!limiter.admit())
        #expect(limiter.openConnections == 2)
        limiter.release()
        #expect(limiter.admit())
    }

    @Test("the connection limit follows the descriptor limit unless a lower one is configured")
    func effectiveLimit() {
        var limits = HTTPServerLimits()
        #expect(limits.effectiveMaxConnections(fileDescriptorLimit: 20000) == 19744)
        limits.maxConnections = 50
        #expect(limits.effectiveMaxConnections(fileDescriptorLimit: 20000) == 50)
        limits.maxConnections = 1_000_000
        #expect(limits.effectiveMaxConnections(fileDescriptorLimit: 1024) == 768)
    }
}
