import HTTPTypes
import NIOCore
import NIOSSL
import NIOHTTP1

/// Why the guard answers a connection itself and closes it.
enum HTTPRejection: Equatable, Sendable {
    /// The request line and headers did not all arrive within the header timeout.
    case headerTimeout(seconds: Int64)
    /// No request-body bytes arrived for the body timeout while the server waited for them.
    case bodyTimeout(seconds: Int64)
    /// The bytes are not an HTTP/1.1 request NIO's parser accepts.
    case malformed(HTTPParserError)
    /// The hub is at its connection limit.
    case tooManyConnections

    var status: HTTPResponse.Status {
        switch self {
        case .headerTimeout, .bodyTimeout: .requestTimeout
        case .malformed(.headerOverflow): .requestHeaderFieldsTooLarge
        case .malformed: .badRequest
        case .tooManyConnections: .serviceUnavailable
        }
    }

    var error: OpenAIError {
        switch self {
        case .headerTimeout(let seconds):
            OpenAIError(status, "The request line and headers did not arrive within \(seconds) s.", type: "invalid_request_error", code: "request_timeout")
        case .bodyTimeout(let seconds):
            OpenAIError(status, "No request body bytes arrived for \(seconds) s.", type: "invalid_request_error", code: "request_timeout")
        case .malformed(.headerOverflow):
            // NIO reports too many bytes and too many fields alike.
            OpenAIError(status, "The request line and headers are larger than this server accepts.", type: "invalid_request_error", code: "headers_too_large")
        case .malformed(.invalidMethod):
            OpenAIError(status, "Unknown HTTP method.", type: "invalid_request_error", code: "invalid_method")
        case .malformed(.invalidContentLength), .malformed(.unexpectedContentLength):
            OpenAIError(status, "Invalid Content-Length (or Content-Length together with Transfer-Encoding).", type: "invalid_request_error", code: "invalid_content_length")
        case .malformed(.paused):
            // llhttp pauses on the HTTP/2 connection preface.
            OpenAIError(status, "Only HTTP/1.1 is served here.", type: "invalid_request_error", code: "unsupported_protocol")
        case .malformed:
            OpenAIError(status, "The request is not valid HTTP/1.1.", type: "invalid_request_error", code: "malformed_request")
        case .tooManyConnections:
            OpenAIError(status, "The server has too many open connections; retry shortly.", type: "server_error", code: "too_many_connections")
        }
    }

    /// The whole response as bytes: written below the HTTP encoder, whose state may be broken.
    func responseBytes(allocator: ByteBufferAllocator) -> ByteBuffer {
        let body = error.json
        var out = allocator.buffer(capacity: 160 + body.readableBytes)
        out.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nContent-Type: application/json\r\nContent-Length: \(body.readableBytes)\r\nConnection: close\r\n\r\n")
        out.writeImmutableBuffer(body)
        return out
    }
}

/// Raised into the pipeline when the guard gives up on a request whose body the handler may be
/// reading, so the read fails instead of ending as if the body were complete.
struct HTTPGuardError: Error, CustomStringConvertible {
    let rejection: HTTPRejection
    var description: String { rejection.error.message }
}

/// The first handler of an HTTP connection (next to the socket). It enforces the header, idle and
/// body-progress timeouts and answers rejections with raw bytes, so it works whatever state the
/// HTTP decoder and encoder are in. `HTTPMessageObserver`, after the decoder, tells it where the
/// connection is in the request/response cycle. Once the connection upgrades to WebSocket, both
/// leave the pipeline: tunnels have their own pings.
final class HTTPConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    /// Written parts pass through untouched (IOData from the encoder, ByteBuffers after upgrade).
    typealias OutboundIn = Any
    typealias OutboundOut = ByteBuffer

    enum Phase: Equatable {
        /// Not started (the channel is not active yet).
        case new
        /// A request head is expected by `deadline`; `sawBytes` tells a silent peer from a slow one.
        case awaitingHead(deadline: NIODeadline, sawBytes: Bool)
        /// Between requests: the keep-alive clock runs until the next byte.
        case idle
        /// Head received, body not finished: the body-progress clock runs while a read is pending.
        case inRequest
        /// Request complete, response not: the handler's own deadlines apply.
        case responding
        /// Answered (or giving up): input is discarded until the close.
        case closing
        /// WebSocket: the guard is out of the pipeline.
        case upgraded
    }

    let limits: HTTPServerLimits
    private(set) var phase = Phase.new
    private var context: ChannelHandlerContext?
    private var timer: Scheduled<Void>?
    /// Request heads whose response end has not been written.
    private var pendingResponses = 0
    /// A response head was written and its end not yet.
    private var responseOpen = false
    /// Bytes arrived after the last complete request (the next one may be under way).
    private var bytesAfterRequest = false
    /// A read was requested and no bytes came since: the server is waiting for the peer.
    private var readPending = false
    /// When the body clock last restarted (a byte arrived, or a read was requested).
    private var bodyClock = NIODeadline.uptimeNanoseconds(0)

    init(limits: HTTPServerLimits) {
        self.limits = limits
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        readPending = false
        switch phase {
        case .closing:
            return  // whatever follows a rejection is not parsed
        case .awaitingHead(let deadline, false):
            phase = .awaitingHead(deadline: deadline, sawBytes: true)  // a trickle does not move the deadline
        case .idle:
            awaitHead(context, from: context.eventLoop.now, sawBytes: true)
        case .inRequest:
            bodyClock = context.eventLoop.now
        case .responding:
            bytesAfterRequest = true
        case .new, .awaitingHead, .upgraded:
            break
        }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        if !readPending, phase == .inRequest { bodyClock = context.eventLoop.now }
        readPending = true
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard phase != .closing else {
            // The guard answered this connection; what the handler writes now would follow it.
            promise?.fail(ChannelError.outputClosed)
            return
        }
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if phase == .closing, case .inputClosed? = event as? ChannelEvent {
            context.close(promise: nil)  // the peer read our answer and is done: no need to linger
            return
        }
        if event is ChannelShouldQuiesceEvent {
            // Shutting down: a connection between requests has nothing to finish. (Hummingbird
            // handles the others, but not a connection that has not sent its first request.)
            switch phase {
            case .new, .awaitingHead(_, false), .idle:
                phase = .closing
                cancelTimer()
                context.close(promise: nil)
                return
            default:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Reports from HTTPMessageObserver

    func requestHeadReceived() {
        guard let context, phase != .closing else { return }
        pendingResponses += 1
        phase = .inRequest
        bodyClock = context.eventLoop.now
        arm(context, at: bodyClock + .init(limits.bodyTimeout))
    }

    func requestEndReceived() {
        guard let context, phase == .inRequest else { return }
        bytesAfterRequest = false
        if pendingResponses > 0 {
            phase = .responding
            cancelTimer()
        } else {
            quiesce(context)
        }
    }

    func responseHeadWritten(status: HTTPResponseStatus) {
        guard phase != .closing, status.code >= 200 else { return }
        responseOpen = true
    }

    func responseEndWritten() {
        guard let context, phase != .closing, responseOpen else { return }
        responseOpen = false
        pendingResponses -= 1
        if phase == .responding, pendingResponses == 0 { quiesce(context) }
    }

    /// Answers `rejection` (unless a response is already under way), then closes: first the
    /// output, so the answer is not lost to a reset while the peer is still sending; input is
    /// discarded until the peer closes or `lingerTimeout` passes.
    func reject(_ rejection: HTTPRejection) {
        guard let context, phase != .closing, phase != .upgraded else { return }
        let wasInRequest = phase == .inRequest
        phase = .closing
        cancelTimer()
        if !responseOpen {
            context.writeAndFlush(wrapOutboundOut(rejection.responseBytes(allocator: context.channel.allocator)), promise: nil)
        }
        if wasInRequest { context.fireErrorCaught(HTTPGuardError(rejection: rejection)) }
        let halfClosed = context.eventLoop.makePromise(of: Void.self)
        context.close(mode: .output, promise: halfClosed)
        halfClosed.futureResult.assumeIsolated().whenComplete { [self] result in
            guard case .success = result, let context = self.context else {
                self.context?.close(promise: nil)
                return
            }
            self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: .init(limits.lingerTimeout)) { [self] in
                self.context?.close(promise: nil)
            }
        }
    }

    // MARK: Clocks

    private func start(_ context: ChannelHandlerContext) {
        guard phase == .new else { return }
        // A new connection gets the header timeout from its accept: it has not been served yet.
        awaitHead(context, from: context.eventLoop.now, sawBytes: false)
    }

    private func awaitHead(_ context: ChannelHandlerContext, from start: NIODeadline, sawBytes: Bool) {
        let deadline = start + .init(limits.headerTimeout)
        phase = .awaitingHead(deadline: deadline, sawBytes: sawBytes)
        arm(context, at: deadline)
    }

    /// Nothing outstanding: wait for the next request (its head clock starts now if bytes of it
    /// already arrived while the previous response was being written).
    private func quiesce(_ context: ChannelHandlerContext) {
        if bytesAfterRequest {
            awaitHead(context, from: context.eventLoop.now, sawBytes: true)
        } else {
            phase = .idle
            arm(context, at: context.eventLoop.now + .init(limits.idleTimeout))
        }
    }

    /// The 101 went out: the connection is a tunnel now.
    func upgraded() {
        phase = .upgraded
        cancelTimer()
        if let context { context.pipeline.syncOperations.removeHandler(context: context, promise: nil) }
    }

    private func arm(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        cancelTimer()
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            self.timer = nil
            self.expired()
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func expired() {
        guard let context else { return }
        switch phase {
        case .awaitingHead(_, let sawBytes):
            if sawBytes {
                reject(.headerTimeout(seconds: limits.headerTimeout.components.seconds))
            } else {
                phase = .closing
                context.close(promise: nil)  // a silent connection gets no answer
            }
        case .idle:
            phase = .closing
            context.close(promise: nil)
        case .inRequest:
            let due = bodyClock + .init(limits.bodyTimeout)
            if readPending, context.eventLoop.now >= due {
                reject(.bodyTimeout(seconds: limits.bodyTimeout.components.seconds))
            } else {
                // Not waiting on the peer (the handler is not reading yet), or the clock restarted.
                arm(context, at: readPending ? due : context.eventLoop.now + .init(limits.bodyTimeout))
            }
        case .new, .responding, .closing, .upgraded:
            break
        }
    }
}

/// Sits after the HTTP request decoder and reports the request/response cycle to the guard;
/// turns parser errors into answered rejections. Typed `Any` because after a WebSocket upgrade
/// decision the decoder leaves and raw bytes flow past before this handler is removed.
final class HTTPMessageObserver: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = Any
    typealias InboundOut = Any
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    let connectionGuard: HTTPConnectionGuard
    /// A 101 was written; both handlers leave once it is flushed (leaving in `write` would drop
    /// the flush of a `writeAndFlush`, which NIO delivers to the same handler right after).
    private var switching = false

    init(_ connectionGuard: HTTPConnectionGuard) {
        self.connectionGuard = connectionGuard
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let part = unwrapInboundIn(data) as? HTTPServerRequestPart {
            switch part {
            case .head: connectionGuard.requestHeadReceived()
            case .body: break
            case .end: connectionGuard.requestEndReceived()
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data) as? HTTPServerResponsePart
        context.write(data, promise: promise)
        switch part {
        case .head(let head) where head.status == .switchingProtocols:
            switching = true
        case .head(let head):
            connectionGuard.responseHeadWritten(status: head.status)
        case .end:
            connectionGuard.responseEndWritten()
        case .body, nil:
            break
        }
    }

    func flush(context: ChannelHandlerContext) {
        context.flush()
        guard switching else { return }
        connectionGuard.upgraded()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // Answered here; Hummingbird would otherwise answer a bare 400 only after the first
        // request, and before it nobody answers and the connection stays open.
        connectionGuard.reject(.malformed(parserError))
    }
}

extension HTTPConnectionGuard {
    /// Puts the guard first in `channel`'s pipeline (right after TLS, whose plaintext it must
    /// see and write) and its observer right after the HTTP request decoder (which must already
    /// be there). Call on the channel's event loop.
    static func install(on channel: any Channel, limits: HTTPServerLimits) throws {
        let pipeline = channel.pipeline.syncOperations
        let decoder = try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let connectionGuard = HTTPConnectionGuard(limits: limits)
        if let tls = try? pipeline.handler(type: NIOSSLServerHandler.self) {
            try pipeline.addHandler(connectionGuard, position: .after(tls))
        } else {
            try pipeline.addHandler(connectionGuard, position: .first)
        }
        try pipeline.addHandler(HTTPMessageObserver(connectionGuard), position: .after(decoder))
    }
}
