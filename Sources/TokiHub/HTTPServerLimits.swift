import Hummingbird
import HummingbirdCore
import CMalloc
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import TokiTunnel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bounds on what one HTTP client can hold of the hub: time, header bytes, connections.
/// docs/security.md explains each; `toki hub` flags set them.
public struct HTTPServerLimits: Sendable, Equatable {
    /// The request line and headers must all arrive within this, counted from the accept (first
    /// request) or from the first byte after a response (later ones). Bytes trickling in do not
    /// extend it. 408 and close after (a connection that sent nothing is just closed).
    public var headerTimeout: Duration = .seconds(10)
    /// A kept-alive connection with no new request for this long is closed.
    public var idleTimeout: Duration = .seconds(75)
    /// While a request body is being read, this long without a byte gives 408 and close.
    public var bodyTimeout: Duration = .seconds(30)
    /// Request line plus headers, in bytes, and the number of header fields (431 above either).
    public var maxHeaderBytes = 64 * 1024
    public var maxHeaderFields = 128
    /// Open connections (API clients and worker tunnels together); nil: the file-descriptor soft
    /// limit minus `reservedFileDescriptors`. Connections beyond it get 503 and are closed.
    public var maxConnections: Int?
    /// File descriptors kept for the database, logs and accepting (to refuse) at the limit.
    public var reservedFileDescriptors = 256
    /// After a rejection the hub reads and discards for at most this long before closing, so the
    /// answer is not lost to a TCP reset while the client is still sending.
    public var lingerTimeout: Duration = .seconds(2)

    public init() {}

    /// The connection limit in force given the process's file-descriptor soft limit.
    public func effectiveMaxConnections(fileDescriptorLimit: Int) -> Int {
        let byDescriptors = max(fileDescriptorLimit - reservedFileDescriptors, 16)
        return min(maxConnections ?? byDescriptors, byDescriptors)
    }
}

/// The process's open-file limit.
public enum FileDescriptorLimit {
    /// The current soft limit.
    public static var soft: Int { Int(clamping: read().rlim_cur) }

    /// Raises the soft limit to the hard one (as the Go hub does); returns (soft, hard) after.
    @discardableResult
    public static func raiseToHard() -> (soft: Int, hard: Int) {
        var limit = read()
        if limit.rlim_cur < limit.rlim_max {
            // An unlimited hard limit is refused as a soft one (macOS); ask for a large finite one.
            limit.rlim_cur = limit.rlim_max == infinity ? 1 << 20 : limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
        let now = read()
        return (Int(clamping: now.rlim_cur), Int(clamping: now.rlim_max))
    }

    #if canImport(Glibc)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    private static let infinity = rlim_t.max
    #else
    private static let resource = RLIMIT_NOFILE
    private static let infinity = rlim_t(Int64.max)
    #endif

    private static func read() -> rlimit {
        var limit = rlimit()
        _ = getrlimit(resource, &limit)
        return limit
    }
}

/// Counts open connections and refuses those over the limit with one log line per interval.
/// After a burst of closes it hands freed heap back to the OS (glibc keeps it otherwise).
final class ConnectionLimiter: Sendable {
    let limit: Int
    let logger: Logger
    private let open = Atomic<Int>(0)
    private struct State {
        var lastRefusalLog: ContinuousClock.Instant?
        var refusedSinceLog = 0
        /// Most connections open since the last trim.
        var peak = 0
        var lastTrim = ContinuousClock.now
        var trimScheduled = false
    }
    private let state = Mutex(State())
    static let logInterval: Duration = .seconds(10)
    /// A trim is worth it once this many connections have gone since the peak...
    static let trimAfterCloses = 1000
    /// ...and is done once the burst of closes has settled, at most once per `trimInterval`.
    static let trimDelay: Duration = .seconds(2)
    static let trimInterval: Duration = .seconds(10)

    /// Called (off the event loops) before the heap is trimmed: other caches to give back.
    let beforeTrim: @Sendable () -> Void

    init(limit: Int, logger: Logger, beforeTrim: @escaping @Sendable () -> Void = {}) {
        self.limit = limit
        self.logger = logger
        self.beforeTrim = beforeTrim
    }

    var openConnections: Int { open.load(ordering: .relaxed) }

    /// Takes a slot for a new connection; false (and logged, rate-limited) at the limit.
    func admit() -> Bool {
        let count = open.wrappingAdd(1, ordering: .relaxed).newValue
        if count <= limit {
            state.withLock { $0.peak = max($0.peak, count) }
            return true
        }
        open.wrappingSubtract(1, ordering: .relaxed)
        let report: Int? = state.withLock { state in
            state.refusedSinceLog += 1
            let now = ContinuousClock.now
            if let last = state.lastRefusalLog, now - last < Self.logInterval { return nil }
            state.lastRefusalLog = now
            defer { state.refusedSinceLog = 0 }
            return state.refusedSinceLog
        }
        if let report {
            logger.warning("connection limit reached: refusing new connections (503 and close) until some close", metadata: [
                "open": "\(openConnections)", "max_connections": "\(limit)", "refused": "\(report)",
                "hint": "raise --max-connections or the open-file limit (ulimit -n / LimitNOFILE)",
            ])
        }
        return false
    }

    func release() {
        let count = open.wrappingSubtract(1, ordering: .relaxed).newValue
        let wait: Duration? = state.withLock { state in
            guard !state.trimScheduled, state.peak - count >= Self.trimAfterCloses else { return nil }
            state.trimScheduled = true
            return max(Self.trimDelay, state.lastTrim + Self.trimInterval - ContinuousClock.now)
        }
        guard let wait else { return }
        // Off the event loop: trimming a large heap takes a few milliseconds.
        Task.detached(priority: .background) {
            try? await Task.sleep(for: wait)
            self.trim()
        }
    }

    private func trim() {
        state.withLock { state in
            state.trimScheduled = false
            state.peak = openConnections
            state.lastTrim = .now
        }
        beforeTrim()
        _ = toki_malloc_trim()
    }
}

/// Hummingbird's HTTP/1.1 + WebSocket child channel with the hub's guards: the connection limit
/// at accept, and `HTTPConnectionGuard` in every connection's pipeline.
struct GuardedHTTPChannel<Base: ServerChildChannel>: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        /// nil: refused at the connection limit (already answered and closing).
        let base: Base.Value?
        let channel: any Channel
    }

    let base: Base
    let limits: HTTPServerLimits
    let limiter: ConnectionLimiter

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard limiter.admit() else {
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(RefusingHandler())
                return Value(base: nil, channel: channel)
            }
        }
        let limiter = self.limiter
        channel.closeFuture.whenComplete { _ in limiter.release() }
        let limits = self.limits
        return base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            try HTTPConnectionGuard.install(on: channel, limits: limits)
            return Value(base: value, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        guard let baseValue = value.base else { return }
        var quiet = logger
        quiet.handler = QuietClosingLogHandler(logger.handler)
        await base.handle(value: baseValue, logger: quiet)
    }
}

/// A connection over the limit: accepted only to be told why (503), then closed at once, without
/// lingering, so its descriptor is back before the next one arrives.
final class RefusingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        let answer = HTTPRejection.tooManyConnections.responseBytes(allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(answer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // the request is not read
}

/// Hummingbird logs at error level whenever a connection closes before its first request head
/// (the upgrade handler's promise fails with `inappropriateOperationForState`). The guard closes
/// such connections on purpose, and so do port scanners: that line goes to debug, so an idle flood
/// cannot flood the log too.
struct QuietClosingLogHandler: LogHandler {
    var wrapped: any LogHandler
    static let closedEarly = "\(ChannelError.inappropriateOperationForState)"

    init(_ wrapped: any LogHandler) { self.wrapped = wrapped }

    var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }
    var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        if event.level == .error, case .string(Self.closedEarly)? = event.metadata?["error.type"] { event.level = .debug }
        guard event.level >= wrapped.logLevel else { return }
        wrapped.log(event: event)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the tunnel endpoint of `tunnel` (`TunnelHTTPChannel`), under the hub's HTTP limits.
    /// `beforeTrim` runs when memory is given back after many connections closed.
    /// With `tls`, connections are HTTPS/WSS (the TLS handler first, the guard right after it).
    static func guardedHTTP1Tunnel<Identity: Sendable>(_ tunnel: TunnelServer<Identity>, limits: HTTPServerLimits, tls: ServerCertificate? = nil, logger: Logger,
                                                       beforeTrim: @escaping @Sendable () -> Void = {}) -> HTTPServerBuilder {
        let maxConnections = limits.effectiveMaxConnections(fileDescriptorLimit: FileDescriptorLimit.soft)
        logger.info("HTTP server limits", metadata: [
            "max_connections": "\(maxConnections)", "header_timeout": "\(limits.headerTimeout)",
            "idle_timeout": "\(limits.idleTimeout)", "body_timeout": "\(limits.bodyTimeout)",
            "max_header_bytes": "\(limits.maxHeaderBytes)", "max_header_fields": "\(limits.maxHeaderFields)",
        ])
        let limiter = ConnectionLimiter(limit: maxConnections, logger: logger, beforeTrim: beforeTrim)
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration(
            maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes, maxHeaderFieldCount: limits.maxHeaderFields)
        // No Hummingbird idle timeout: the guard's clocks cover every phase, the first request too.
        let http1 = HTTP1Channel.Configuration(httpDecoderConfiguration: decoder)
        return HTTPServerBuilder { responder -> any ServerChildChannel in
            let guarded = GuardedHTTPChannel(base: TunnelHTTPChannel(responder: responder, tunnel: tunnel, http1: http1), limits: limits, limiter: limiter)
            guard let tls else { return guarded }
            return TLSServerChildChannel(base: guarded, certificate: tls)
        }
    }
}
