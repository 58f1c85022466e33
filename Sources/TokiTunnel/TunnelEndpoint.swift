import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
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
}

/// The server end of the tunnel, the one code path for the hub and for tests and benchmarks
/// (`TunnelListener`): the token is checked once, before the upgrade; a refused upgrade is
/// answered by `refusalRoutes` (401 in Tokilake's shape); an accepted one runs a mux session
/// over the WebSocket and hands it to `onSession`.
///
/// The upgrade is decided by a closure (`shouldUpgrade`), not Hummingbird's WebSocket router:
/// the router keeps each upgrade's request context in a reference the context itself holds, a
/// cycle that leaked every tunnel connection (its channel, pipeline and buffers) for the life
/// of the process.
public struct TunnelServer<Identity: Sendable>: Sendable {
    public typealias Authenticate = @Sendable (_ token: String?) async -> Identity?
    public typealias SessionHandler = @Sendable (TunnelConnection<Identity>) async -> Void

    /// Session settings; the version is raised to what the worker negotiated (never lowered).
    public var mux = SmuxConfiguration.tokilake
    public var limits = TunnelLimits()
    public var allowLZ4 = true
    public var allowSmux2 = true
    /// The WebSocket library's ping timer on every link; nil: none (the hub uses `LinkWatch`).
    public var pingInterval: Duration? = .seconds(10)
    public var logger: Logger
    let authenticate: Authenticate
    let onSession: SessionHandler

    /// `authenticate` gets the presented token (nil: none) and returns who it stands for, or nil
    /// to refuse the upgrade.
    public init(logger: Logger, authenticate: @escaping Authenticate, onSession: @escaping SessionHandler) {
        self.logger = logger
        self.authenticate = authenticate
        self.onSession = onSession
    }

    public var webSocketConfiguration: WebSocketServerConfiguration {
        TunnelEndpoint.webSocketConfiguration(limits: limits, autoPingInterval: pingInterval)
    }

    /// The upgrade decision for `HTTP1WebSocketUpgradeChannel`: a GET on one of
    /// `TunnelEndpoint.paths` whose token authenticates; anything else goes on to the HTTP router.
    @Sendable
    public func shouldUpgrade(_ request: HTTPRequest, channel: any Channel, logger: Logger) async
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>
    {
        guard request.method == .get, let (path, query) = TunnelEndpoint.target(of: request), TunnelEndpoint.paths.contains(path),
              let identity = await authenticate(TunnelEndpoint.presentedToken(headers: request.headerFields, query: query))
        else { return .dontUpgrade }
        let headers = request.headerFields
        return .upgrade(TunnelEndpoint.upgradeHeaders(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2)) { inbound, outbound, _ in
            await self.serve(inbound: inbound, outbound: outbound, channel: channel, headers: headers, identity: identity)
        }
    }

    /// GET on the tunnel paths without a successful upgrade (a refused token, or no upgrade at
    /// all): 401 `{"success":false,"message":…}`, as Tokilake answers. Mount on the HTTP router.
    public static func refusalRoutes<Context: RequestContext>(context: Context.Type) -> RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        for path in TunnelEndpoint.paths {
            routes.get(RouterPath(String(path))) { request, _ -> Response in
                let token = TunnelEndpoint.presentedToken(headers: request.headers, query: request.uri.query)
                let message = token == nil ? "missing authorization token" : "invalid token"
                var body = ByteBuffer(string: #"{"success":false,"message":""#)
                body.writeString(message)
                body.writeString(#""}"#)
                return Response(status: .unauthorized, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
            }
        }
        return routes
    }

    func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel, headers: HTTPFields,
               identity: Identity) async {
        let activity = LinkActivity()
        TunnelEndpoint.optimizePipeline(of: channel, activity: activity)
        let features = TunnelEndpoint.negotiated(headers, allowLZ4: allowLZ4, allowSmux2: allowSmux2)
        var configuration = mux
        configuration.version = max(mux.version, features.smuxVersion)
        let session: MuxSession
        do {
            session = try MuxSession(role: .server, configuration: configuration, logger: logger)
        } catch {
            logger.error("cannot start tunnel session", metadata: ["error": "\(error)"])
            return
        }
        let tunnelOutbound = ServerTunnelOutbound(outbound, lz4: features.lz4, limits: limits)
        let connection = TunnelConnection(session: session, identity: identity, features: features, activity: activity, headers: headers,
                                          ping: { try await tunnelOutbound.ping() })
        // The session runs in this task, the handler in one child (each task of an idle session
        // costs its stack). When either ends the session closes, which ends the other.
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await onSession(connection)
                session.close()
            }
            do {
                try await session.run(inbound: ServerTunnelInbound(inbound, lz4: features.lz4, limits: limits), outbound: tunnelOutbound)
            } catch {
                logger.debug("tunnel session ended", metadata: ["error": "\(error)"])
            }
            session.close()
        }
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
            server: .http1WebSocketUpgrade(configuration: .init(ws: server.webSocketConfiguration), shouldUpgrade: server.shouldUpgrade),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        try await app.runService(gracefulShutdownSignals: [])
    }
}
