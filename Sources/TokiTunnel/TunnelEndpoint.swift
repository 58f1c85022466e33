import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import TokiMux

/// Request context of the tunnel's WebSocket router: keeps the connection's channel so the
/// upgraded pipeline can be tuned (fast unmasking).
public struct TunnelRequestContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<Self>
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }

    /// Called first thing in a tunnel's `onUpgrade`: unmask inbound frames 8 bytes at a time,
    /// and record inbound activity in `activity` if given.
    public func optimizeTunnelPipeline(activity: LinkActivity? = nil) {
        TunnelEndpoint.optimizePipeline(of: channel, activity: activity)
    }
}

/// The server end of the tunnel as Hummingbird pieces: the upgrade decision and the WebSocket
/// configuration. The hub mounts it next to its HTTP API; tests and benchmarks use `TunnelListener`.
public enum TunnelEndpoint {
    /// Paths the Go hubs serve; `/api/tokilake/connect` is what Tokiame configs point at.
    public static let paths: Set<Substring> = ["/api/tokilake/connect", "/connect"]

    /// A request's path and query (nil without a target).
    public static func target(of request: HTTPRequest) -> (path: Substring, query: String?)? {
        guard let target = request.path else { return nil }
        guard let mark = target.firstIndex(of: "?") else { return (target[...], nil) }
        return (target[..<mark], String(target[target.index(after: mark)...]))
    }

    /// Called first thing once a connection is upgraded: unmask inbound frames 8 bytes at a time,
    /// and record inbound activity in `activity` if given.
    public static func optimizePipeline(of channel: any Channel, activity: LinkActivity? = nil) {
        FastUnmaskingHandler.install(on: channel, activity: activity)
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

    static func selectedSubprotocol(_ headers: HTTPFields, allowLZ4: Bool, allowSmux2: Bool) -> String? {
        TunnelSubprotocol.select(offered: TunnelSubprotocol.parseOffer(headers[.secWebSocketProtocol]), allowLZ4: allowLZ4, allowSmux2: allowSmux2)
    }

    /// WebSocket settings for the tunnel: frames up to the message limit; with `autoPingInterval`
    /// the library pings every link on its own timer (a silently dead link is noticed within two
    /// periods). The hub passes nil and pings only silent links itself (`LinkWatch`).
    public static func webSocketConfiguration(limits: TunnelLimits = .init(), autoPingInterval: Duration? = .seconds(10)) -> WebSocketServerConfiguration {
        WebSocketServerConfiguration(
            maxFrameSize: limits.maxMessageSize + LZ4Link.maxHeaderSize,
            autoPing: autoPingInterval.map { .enabled(timePeriod: $0) } ?? .disabled,
            closeTimeout: .seconds(2)
        )
    }
}

/// A standalone tunnel server: accepts workers (or test peers) on the Tokilake paths and hands
/// each authorised connection's mux session to `onSession`.
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
        let router = Router()
        let authorize = self.authorize
        for path in TunnelEndpoint.paths {
            // Reached when the upgrade was refused: say why, in the shape Tokilake uses.
            router.get(RouterPath(String(path))) { request, _ -> Response in
                Response(
                    status: .unauthorized,
                    headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"success":false,"message":"invalid or missing token"}"#))
                )
            }
        }
        let wsRouter = Router(context: TunnelRequestContext.self)
        let allowLZ4 = self.allowLZ4
        let mux = self.mux
        let limits = self.limits
        let logger = self.logger
        for path in TunnelEndpoint.paths {
            wsRouter.ws(RouterPath(String(path))) { request, _ in
                let token = TunnelEndpoint.presentedToken(headers: request.headers, query: request.uri.query)
                guard await authorize(token) else { return .dontUpgrade }
                return .upgrade(TunnelEndpoint.upgradeHeaders(request.headers, allowLZ4: allowLZ4))
            } onUpgrade: { inbound, outbound, context in
                context.requestContext.optimizeTunnelPipeline()
                let features = TunnelEndpoint.negotiated(context.request.headers, allowLZ4: allowLZ4)
                // A listener configured for v2 (tests and benchmarks against Go peers set it
                // out of band) stays v2; otherwise the negotiation decides.
                var configuration = mux
                configuration.version = max(mux.version, features.smuxVersion)
                let session = try MuxSession(role: .server, configuration: configuration, logger: logger)
                async let handled: Void = onSession(session, features.lz4)
                do {
                    try await session.run(inbound: ServerTunnelInbound(inbound, lz4: features.lz4, limits: limits),
                                          outbound: ServerTunnelOutbound(outbound, lz4: features.lz4, limits: limits))
                } catch {
                    logger.debug("tunnel session ended", metadata: ["error": "\(error)"])
                }
                session.close()
                await handled
            }
        }
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: wsRouter, configuration: .init(ws: TunnelEndpoint.webSocketConfiguration(limits: limits))),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        try await app.runService(gracefulShutdownSignals: [])
    }
}
