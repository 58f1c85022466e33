import Logging
import NIOCore
import NIOWebSocket
import TokiMux

/// The server end of an upgraded tunnel as one NIO handler: WebSocket frames in (unmasked 8 bytes
/// at a time, LZ4-decoded if negotiated) feed the mux session directly on the event loop, and the
/// session's batches go out as binary frames. No task per connection and no hop per message: an
/// idle worker costs its buffers and nothing else.
///
/// Back-pressure both ways: when the session's receive budget is full the handler stops asking
/// the socket for reads until the session says it has room (`resumeReading`); while the channel
/// is not writable it leaves frames queued in the session, whose bounded queue then makes stream
/// writers wait.
///
/// Pings are answered with pongs; a close frame is answered and the connection closed. Every
/// inbound frame, pongs included, is recorded in `activity` (the hub's frozen-link probe reads it).
///
/// Threading: the session calls the driver methods from any thread with its lock held; they only
/// schedule work on the event loop, where all of this handler's state lives.
extension TunnelFrameReader.Opcode {
    /// The opcodes that carry tunnel bytes; nil for control frames (ping, pong, close) and
    /// reserved ones.
    init?(_ opcode: WebSocketOpcode) {
        switch opcode {
        case .binary: self = .binary
        case .text: self = .text
        case .continuation: self = .continuation
        default: return nil
        }
    }
}

final class MuxChannelHandler: ChannelDuplexHandler, MuxTransportDriver, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let session: MuxSession
    let activity: LinkActivity
    /// Where this link's bytes are counted (nil: not counted).
    let traffic: LinkTraffic?
    let eventLoop: any EventLoop
    let logger: Logger
    /// How long a close frame may take to go out before the connection is closed anyway.
    static let closeTimeout: TimeAmount = .seconds(2)

    // Event-loop state.
    private var reader: TunnelFrameReader
    private var writer: TunnelMessageWriter
    private var context: ChannelHandlerContext?
    private var readingPaused = false
    private var readPending = false
    private var closing = false
    private var keepAlive: RepeatedTask?

    init(session: MuxSession, features: TunnelFeatures, limits: TunnelLimits, activity: LinkActivity, traffic: LinkTraffic? = nil,
         eventLoop: any EventLoop, logger: Logger) {
        self.session = session
        self.activity = activity
        self.traffic = traffic
        self.eventLoop = eventLoop
        self.logger = logger
        self.reader = TunnelFrameReader(lz4: features.lz4, limits: limits)
        self.writer = TunnelMessageWriter(lz4: features.lz4, limits: limits)
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        session.attach(self)
        if let interval = session.configuration.keepAliveInterval {
            let period = TimeAmount(interval)
            let session = self.session
            keepAlive = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in session.keepAlive() }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        keepAlive?.cancel()
        keepAlive = nil
        self.context = nil
        session.transportEnded()
    }

    func channelInactive(context: ChannelHandlerContext) {
        session.transportEnded()
        context.fireChannelInactive()
    }

    /// The server allows half-closure (for HTTP), so a peer that hangs up shows as end of input
    /// rather than an inactive channel: the link is over either way.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            session.transportEnded()
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("tunnel link error", metadata: ["error": "\(error)"])
        session.transportEnded()
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        activity.touch()
        var frame = unwrapInboundIn(data)
        if let key = frame.maskKey {
            var plain = context.channel.allocator.buffer(capacity: frame.data.readableBytes)
            plain.writeMasked(frame.data, key: key)
            frame.data = plain
            frame.maskKey = nil
        }
        guard let opcode = TunnelFrameReader.Opcode(frame.opcode) else {
            switch frame.opcode {
            case .ping:
                guard !closing else { return }
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.data)), promise: nil)
            case .connectionClose:
                // Answer with the peer's code (RFC 6455 §5.5.1) and hang up.
                var code = frame.data
                close(context, code: code.readWebSocketErrorCode() ?? .normalClosure)
            default:
                break  // pongs and reserved opcodes carry nothing for the mux
            }
            return
        }
        guard !closing else { return }
        do {
            let wire = frame.data.readableBytes
            guard let bytes = try reader.receive(opcode: opcode, fin: frame.fin, data: frame.data) else {
                traffic?.received(wire: wire, plain: 0)
                return
            }
            traffic?.received(wire: wire, plain: bytes.readableBytes)
            if !session.receive(bytes) { readingPaused = true }
        } catch {
            logger.info("closing tunnel: malformed WebSocket message", metadata: ["error": "\(error)"])
            session.transportEnded()
            if case .messageTooLarge? = error as? TunnelTransportError {
                close(context, code: .messageTooLarge)
            } else {
                close(context, code: .protocolError)
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if readingPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drainOutbound(context) }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Driver (called by the session from any thread)

    func outboundPending() {
        eventLoop.execute {
            if let context = self.context { self.drainOutbound(context) }
        }
    }

    func resumeReading() {
        eventLoop.execute {
            self.readingPaused = false
            if self.readPending, let context = self.context {
                self.readPending = false
                context.read()
            }
        }
    }

    func sessionEnded(_ error: MuxError) {
        eventLoop.execute {
            guard let context = self.context else { return }
            self.close(context, code: error == .sessionClosed || error == .transportEnded ? .normalClosure : .protocolError)
        }
    }

    /// Sends a WebSocket ping (any live peer answers; the pong is recorded in `activity`).
    func ping() {
        eventLoop.execute {
            guard let context = self.context, !self.closing else { return }
            let frame = WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer(string: "toki-probe"))
            context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        }
    }

    // MARK: Output

    /// Hands the session's queued frames to the channel while it is writable, one binary
    /// message per batch, and flushes once.
    private func drainOutbound(_ context: ChannelHandlerContext) {
        guard !closing else { return }
        var wrote = false
        while context.channel.isWritable, let batch = session.takeOutbound() {
            let message = writer.message(for: batch)
            traffic?.sent(wire: message.readableBytes, plain: batch.readableBytes)
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: message)), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
    }

    /// Sends a close frame with `code` (after everything already written), then closes the
    /// connection once it is out, or after `closeTimeout` if the peer does not take it.
    private func close(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !closing else { return }
        drainOutbound(context)
        closing = true
        keepAlive?.cancel()
        keepAlive = nil
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let sent = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: sent)
        let loop = context.eventLoop.assumeIsolated()
        let timeout = loop.scheduleTask(in: Self.closeTimeout) { context.close(promise: nil) }
        sent.futureResult.assumeIsolated().whenComplete { _ in
            timeout.cancel()
            context.close(promise: nil)
        }
    }
}
