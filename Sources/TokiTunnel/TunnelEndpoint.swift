import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import Logging
import ServiceLifecycle
import NIOCore
import TokiMux
import TokiProtocol

/// The server end of the tunnel as Hummingbird pieces: the upgrade decision and the WebSocket
/// configuration. `TunnelServer` builds the routes from them.
public enum TunnelEndpoint {
    /// Paths the Go hubs serve; `/api/tokilake/connect` is what Tokiame configs point at.
    public static let paths: Set<Substring> = ["/api/tokilake/connect", "/connect"]

    /// A request's path and query (nil without a target).
    public static func target(of request: HTTPRequest) -> (path: Substring, query: String?)? {
        guard let target = request.path else { return nil }
        guard let mark = target.firstIndex(of: "?") else { return (target[...], nil) }
        return (target[..<mark], String(target[target.index(after: mark)...]))
    }

    /// The token a worker presented: `Authorization` (a case-insensitive `Bearer ` prefix
    /// removed), else the `access_token`, else the `token` query parameter; as in Go.
    public static func presentedToken(headers: HTTPFields, query: String?) -> String? {
        if let header = headers[.authorization]?.trimmingCharacters(in: .whitespaces), !header.isEmpty {
            if header.lowercased().hasPrefix("bearer ") {
                return String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            }
            return header
        }
        guard let query else { return nil }
        let items = URLComponents(string: "/?" + query)?.queryItems ?? []
        for name in ["access_token", "token"] {
            if let value = items.first(where: { $0.name == name })?.value, !value.isEmpty { return value }
        }
        return nil
    }

    /// What this connection speaks: derived from the request alone, so the upgrade response and
    /// the connection handler always agree.
    public static func negotiated(_ headers: HTTPFields, allowLZ4: Bool, allowSmux2: Bool = true) -> TunnelFeatures {
        TunnelSubprotocol.features(of: selectedSubprotocol(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2))
    }

    /// Headers of the 101 response: the selected subprotocol, if the client offered one.
    public static func upgradeHeaders(_ headers: HTTPFields, allowLZ4: Bool, allowSmux2: Bool = true) -> HTTPFields {
        var fields = HTTPFields()
        if let selected = selectedSubprotocol(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2) {
            fields[.secWebSocketProtocol] = selected
        }
        return fields
    }

    /// The relay role header (`TunnelProtocol.relayHeader`).
    public static let relayField = HTTPField.Name(TunnelProtocol.relayHeader)!

    /// The node id a child relay sent, if any (trimmed, at most 128 bytes, else ignored).
    public static func relayNodeID(_ headers: HTTPFields) -> String? {
        guard let value = headers[relayField]?.trimmingCharacters(in: .whitespaces), !value.isEmpty, value.utf8.count <= 128 else { return nil }
        return value
    }

    static func selectedSubprotocol(_ headers: HTTPFields, allowLZ4: Bool, allowSmux2: Bool) -> String? {
        TunnelSubprotocol.select(offered: TunnelSubprotocol.parseOffer(headers[.secWebSocketProtocol]), allowLZ4: allowLZ4, allowSmux2: allowSmux2)
    }
}

/// One accepted tunnel, handed to `TunnelServer`'s session handler while its session runs.
public struct TunnelConnection<Identity: Sendable>: Sendable {
    /// The mux session (already running; closed when the handler returns).
    public let session: MuxSession
    /// Who the presented token stands for.
    public let identity: Identity
    public let features: TunnelFeatures
    /// When the link last received anything (pongs included): liveness probes read it.
    public let activity: LinkActivity
    /// The upgrade request's headers.
    public let headers: HTTPFields
    /// Sends a WebSocket ping on the link.
    public let ping: @Sendable () async throws -> Void
    /// The link's event loop: a session handler isolated to it (`EventLoopIsolation`) reads
    /// its streams without a thread switch per message.
    public let eventLoop: any EventLoop
    /// The child relay's node id when the peer is a relay (relay role agreed at the upgrade);
    /// nil for a worker.
    public let relayNodeID: String?
}

/// The server end of the tunnel, the one code path for the hub and for tests and benchmarks
/// (`TunnelListener`): the token is checked once, before the upgrade; a refused upgrade goes on
/// to the HTTP routes (`refusalRoutes` answer 401 in Tokilake's shape); an accepted one runs a
/// mux session driven by a `MuxChannelHandler` and hands it to `onSession`.
///
/// Served by `TunnelHTTPChannel`, not Hummingbird's WebSocket channel: that one runs several
/// tasks per connection (and its router kept each upgrade's request context in a cycle that
/// leaked every connection); here an idle tunnel is a few NIO handlers and the one task of
/// `onSession`.
/// What a tunnel server's token check says.
public enum TunnelAuthentication<Identity: Sendable>: Sendable {
    case accepted(Identity)
    /// A bad or missing token: Tokilake's 401.
    case refused
    /// The token cannot be checked now (a relay without its parent): 503 with a JSON body
    /// naming `code` and `message`, so the worker does not take it for a bad token.
    case unavailable(code: String, message: String)
}

public struct TunnelServer<Identity: Sendable>: Sendable {
    public typealias Authenticate = @Sendable (_ token: String?) async -> Identity?
    public typealias Check = @Sendable (_ token: String?) async -> TunnelAuthentication<Identity>
    public typealias SessionHandler = @Sendable (TunnelConnection<Identity>) async -> Void

    /// Session settings; the version is raised to what the worker negotiated (never lowered).
    public var mux = SmuxConfiguration.tokilake
    public var limits = TunnelLimits()
    public var allowLZ4 = true
    public var allowSmux2 = true
    /// This node's id, answered to a child relay's `X-Toki-Relay` request header; nil: the
    /// relay role is not offered (the child then refuses the link).
    public var relayNodeID: String?
    /// smux keepalive on relay links (toki peers only): a NOP every interval whatever the
    /// traffic, and the link closed when nothing arrived for two of them.
    public var relayKeepAlive: Duration = .seconds(5)
    /// Where accepted links count their bytes, by kind (nil: not counted).
    public var traffic: TunnelTraffic?
    public var logger: Logger
    let authenticate: Check
    let onSession: SessionHandler

    /// `authenticate` gets the presented token (nil: none) and returns who it stands for, or nil
    /// to refuse the upgrade.
    public init(logger: Logger, authenticate: @escaping Authenticate, onSession: @escaping SessionHandler) {
        self.init(logger: logger, check: { token in await authenticate(token).map { .accepted($0) } ?? .refused }, onSession: onSession)
    }

    /// `check` may also answer that the token cannot be checked now.
    public init(logger: Logger, check: @escaping Check, onSession: @escaping SessionHandler) {
        self.logger = logger
        self.authenticate = check
        self.onSession = onSession
    }

    /// The largest WebSocket frame accepted: a whole message (LZ4 adds its header).
    public var maxFrameSize: Int { limits.maxMessageSize + LZ4Link.maxHeaderSize }

    /// An upgrade the server agreed to: who it is for and what the link speaks.
    struct Acceptance: Sendable {
        var identity: Identity
        var headers: HTTPFields
        var features: TunnelFeatures
        var responseHeaders: HTTPFields
        /// The peer is a child relay and this server agreed to be its parent.
        var relay: Bool
    }

    /// What becomes of an upgrade request.
    enum Decision: Sendable {
        case accept(Acceptance)
        /// Answered with this status and body, then closed (NIO has consumed the request).
        case refuse(HTTPResponse.Status, ByteBuffer)
    }

    /// The upgrade decision: a GET on one of `TunnelEndpoint.paths` whose token authenticates.
    /// A bad or missing token gets Tokilake's 401; an upgrade anywhere else a 400.
    func decide(_ request: HTTPRequest) async -> Decision {
        guard request.method == .get, let (path, query) = TunnelEndpoint.target(of: request), TunnelEndpoint.paths.contains(path) else {
            return .refuse(.badRequest, ByteBuffer())
        }
        let token = TunnelEndpoint.presentedToken(headers: request.headerFields, query: query)
        let identity: Identity
        switch await authenticate(token) {
        case .accepted(let accepted): identity = accepted
        case .refused: return .refuse(.unauthorized, Self.refusalBody(token: token))
        case .unavailable(let code, let message): return .refuse(.serviceUnavailable, Self.unavailableBody(code: code, message: message))
        }
        let headers = request.headerFields
        var responseHeaders = TunnelEndpoint.upgradeHeaders(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2)
        let relay = relayNodeID != nil && TunnelEndpoint.relayNodeID(headers) != nil
        if relay, let relayNodeID { responseHeaders[TunnelEndpoint.relayField] = relayNodeID }
        return .accept(Acceptance(identity: identity, headers: headers,
                                  features: TunnelEndpoint.negotiated(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2),
                                  responseHeaders: responseHeaders, relay: relay))
    }

    /// Tokilake's 401 body: `{"success":false,"message":…}`.
    static func refusalBody(token: String?) -> ByteBuffer {
        var body = ByteBuffer(string: #"{"success":false,"message":""#)
        body.writeString(token == nil ? "missing authorization token" : "invalid token")
        body.writeString(#""}"#)
        return body
    }

    /// The 503 body: Tokilake's shape plus the code, `{"success":false,"code":…,"message":…}`.
    static func unavailableBody(code: String, message: String) -> ByteBuffer {
        var body = ByteBuffer(string: #"{"success":false,"code":"#)
        body.writeJSONString(code)
        body.writeString(#","message":"#)
        body.writeJSONString(message)
        body.writeString("}")
        return body
    }

    /// Puts the mux session on an upgraded channel (on its event loop, right after the 101).
    func start(on channel: any Channel, _ accepted: Acceptance) throws -> TunnelConnection<Identity> {
        var configuration = mux
        configuration.version = max(mux.version, accepted.features.smuxVersion)
        if accepted.relay {
            configuration.keepAliveInterval = relayKeepAlive
            configuration.keepAliveTimeout = relayKeepAlive * 2
        }
        let session = try MuxSession(role: .server, configuration: configuration, logger: logger)
        let activity = LinkActivity()
        let handler = MuxChannelHandler(session: session, features: accepted.features, limits: limits, activity: activity,
                                        traffic: accepted.relay ? traffic?.relay : traffic?.worker, eventLoop: channel.eventLoop, logger: logger)
        try channel.pipeline.syncOperations.addHandler(handler)
        return TunnelConnection(session: session, identity: accepted.identity, features: accepted.features, activity: activity,
                                headers: accepted.headers, ping: { handler.ping() }, eventLoop: channel.eventLoop,
                                relayNodeID: accepted.relay ? TunnelEndpoint.relayNodeID(accepted.headers) : nil)
    }

    /// Runs `onSession` for an accepted tunnel; the session (and so the link) ends with it, or
    /// when the server shuts down gracefully (after the hub's drain).
    func serve(_ connection: TunnelConnection<Identity>) async {
        let session = connection.session
        await withGracefulShutdownHandler {
            await onSession(connection)
        } onGracefulShutdown: {
            session.close()
        }
        session.close()
    }

    /// GET on the tunnel paths without an upgrade: 401 `{"success":false,"message":…}`, as Tokilake answers. Mount on the HTTP router.
    public static func refusalRoutes<Context: RequestContext>(context: Context.Type) -> RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        for path in TunnelEndpoint.paths {
            routes.get(RouterPath(String(path))) { request, _ -> Response in
                let body = refusalBody(token: TunnelEndpoint.presentedToken(headers: request.headers, query: request.uri.query))
                return Response(status: .unauthorized, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
            }
        }
        return routes
    }
}

/// A Hummingbird server child channel: HTTP/1.1, where a GET that `TunnelServer` accepts is
/// upgraded to a tunnel, a refused upgrade is answered (401 in Tokilake's shape, or 400) and
/// closed, and everything else goes to the responder.
public struct TunnelHTTPChannel<Identity: Sendable>: ServerChildChannel, HTTPChannelHandler {
    public enum Upgrade: Sendable {
        case tunnel(TunnelConnection<Identity>)
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, HTTPResponse.Status, ByteBuffer)
    }

    public struct Value: ServerChildChannelValue {
        let upgrade: EventLoopFuture<Upgrade>
        public let channel: any Channel
    }

    public let responder: HTTPChannelHandler.Responder
    let tunnel: TunnelServer<Identity>
    let http1: HTTP1Channel.Configuration

    public init(responder: @escaping HTTPChannelHandler.Responder, tunnel: TunnelServer<Identity>,
                http1: HTTP1Channel.Configuration = .init()) {
        self.responder = responder
        self.tunnel = tunnel
        self.http1 = http1
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let (tunnel, http1) = (self.tunnel, self.http1)
            // The decision, from `shouldUpgrade` to the pipeline step that follows it.
            let decision = NIOLoopBoundBox<TunnelServer<Identity>.Decision?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                maxFrameSize: tunnel.maxFrameSize,
                enableAutomaticErrorHandling: true,
                shouldUpgrade: { channel, head in
                    let promise = channel.eventLoop.makePromise(of: TunnelServer<Identity>.Decision.self)
                    promise.completeWithTask {
                        guard let request = try? HTTPRequest(head, secure: false, splitCookie: false) else { return .refuse(.badRequest, ByteBuffer()) }
                        return await tunnel.decide(request)
                    }
                    return promise.futureResult.map { decided in
                        decision.value = decided
                        guard case .accept(let acceptance) = decided else { return nil }
                        return HTTPHeaders(acceptance.responseHeaders)
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard case .accept(let acceptance)? = decision.value else { throw ChannelError.inappropriateOperationForState }
                        decision.value = nil
                        return .tunnel(try tunnel.start(on: channel, acceptance))
                    }
                }
            )
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Upgrade>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try pipeline.addHandlers(http1.additionalChannelHandlers())
                        try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if case .refuse(let status, let body)? = decision.value { return .refused(http, status, body) }
                        return .http(http)
                    }
                }
            )
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Upgrade>(upgradeConfiguration: upgrades)
            configuration.enablePipelining = false  // HTTP is pipelined by NIOAsyncChannel
            configuration.enableErrorHandling = false  // Hummingbird answers errors
            configuration.enableResponseHeaderValidation = false  // HTTPTypes validated them
            configuration.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
            configuration.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
            configuration.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
            let upgrade = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            // NIO consumes a request that asks for any upgrade, even one no upgrader considers
            // (another protocol, missing WebSocket headers): such a request is refused with a
            // 400 unless `shouldUpgrade` decides otherwise, or it would wait for an answer forever.
            let decoder = try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(UpgradeRequestMarker {
                decision.value = .refuse(.badRequest, ByteBuffer())
            }, position: .after(decoder))
            return Value(upgrade: upgrade, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgrade.get() {
            case .http(let http): await handleHTTP(asyncChannel: http, logger: logger)
            case .tunnel(let connection): await tunnel.serve(connection)
            case .refused(let http, let status, let body): await Self.answer(http, status: status, body: body)
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// A refused upgrade: its answer, then the connection closes.
    static func answer(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, status: HTTPResponse.Status, body: ByteBuffer) async {
        var fields: HTTPFields = [.connection: "close", .contentLength: "\(body.readableBytes)"]
        if body.readableBytes > 0 { fields[.contentType] = "application/json" }
        try? await http.executeThenClose { _, outbound in
            try await outbound.write(contentsOf: [.head(HTTPResponse(status: status, headerFields: fields))] + (body.readableBytes > 0 ? [.body(body)] : []) + [.end(nil)])
        }
    }
}

/// Calls `marked` if the connection's first request asks for an upgrade; then leaves the pipeline.
final class UpgradeRequestMarker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    let marked: () -> Void

    init(_ marked: @escaping () -> Void) { self.marked = marked }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return context.fireChannelRead(data) }
        if head.headers.contains(name: "upgrade") { marked() }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 with the tunnel endpoint of `tunnel` on the same port.
    public static func http1Tunnel<Identity: Sendable>(_ tunnel: TunnelServer<Identity>, http1: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in TunnelHTTPChannel(responder: responder, tunnel: tunnel, http1: http1) }
    }
}

/// A standalone tunnel server (tests and benchmarks): `TunnelServer` on its own port; each
/// authorised connection's mux session goes to `onSession`.
public struct TunnelListener: Sendable {
    public typealias Authorizer = @Sendable (_ token: String?) async -> Bool
    public typealias SessionHandler = @Sendable (_ session: MuxSession, _ lz4: Bool) async -> Void

    public var host = "127.0.0.1"
    public var port = 0
    public var mux = SmuxConfiguration.tokilake
    public var limits = TunnelLimits()
    public var allowLZ4 = true
    public var authorize: Authorizer = { _ in true }
    public var logger = Logger(label: "toki.tunnel")

    public init() {}

    /// Serves until cancelled. `onRunning` gets the bound port.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }, onSession: @escaping SessionHandler) async throws {
        let authorize = self.authorize
        var server = TunnelServer<Void>(logger: logger, authenticate: { await authorize($0) ? () : nil }) { connection in
            await onSession(connection.session, connection.features.lz4)
        }
        server.mux = mux
        server.limits = limits
        server.allowLZ4 = allowLZ4
        let router = Router()
        router.addRoutes(TunnelServer<Void>.refusalRoutes(context: BasicRequestContext.self))
        let app = Application(
            router: router,
            server: .http1Tunnel(server),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        try await app.runService(gracefulShutdownSignals: [])
    }
}
