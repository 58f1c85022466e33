import CMalloc
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals
import TokiMux
import TokiStore
import TokiTunnel

/// `toki hub`: the OpenAI API for users, the tunnel endpoint for workers, on one port.
public final class Hub: Sendable {
    public let configuration: HubConfiguration
    public let store: HubStore
    public let registry = WorkerRegistry()
    let logger: Logger
    let tokens: TokenCache
    let usage: UsageRecorder
    let presence: PresenceRecorder
    let draining = Locked(false)
    let deadlines = DeadlineSweeper()
    let streamer: ResponseStreamer

    public init(configuration: HubConfiguration, store: HubStore, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.tokens = TokenCache(store: store, ttl: configuration.tokenCacheTTL)
        self.usage = UsageRecorder(store: store, logger: logger)
        self.presence = PresenceRecorder(store: store, logger: logger)
        self.streamer = ResponseStreamer(usage: usage, deadlines: deadlines, slowClientTimeout: configuration.slowClientTimeout,
                                         idleTimeout: configuration.streamIdleTimeout, keepAliveInterval: configuration.sseKeepAliveInterval,
                                         bufferLimit: configuration.responseBufferBytes)
    }

    // MARK: Routes

    /// The HTTP router (OpenAI API, admin, health). Also usable in-process with HummingbirdTesting.
    public func makeRouter() -> Router<HubRequestContext> {
        let router = Router(context: HubRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { [draining] _, _ -> Response in
            draining.value ? Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "draining\n")))
                : Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        }
        router.get("/v1/models") { request, context in try await self.listModels(request, context: context) }
        for route in RouteKind.allCases where route.method == "POST" && !route.rawValue.hasPrefix("videos") {
            guard let path = RouteKind.pathTable.first(where: { $0.kind == route })?.path else { continue }
            router.post(RouterPath(path)) { request, context in try await self.proxy(request, context: context, route: route) }
        }
        router.post("/admin/tokens") { request, context in try await self.adminCreateToken(request, context: context) }
        router.get("/admin/workers") { request, context in try await self.adminWorkers(request, context: context) }
        router.get("/admin/runtime") { request, context in try await self.adminRuntime(request, context: context) }
        // Reached when a worker's upgrade was refused (bad token): Tokilake's 401 shape.
        for path in TunnelEndpoint.paths {
            router.get(RouterPath(String(path))) { request, _ -> Response in
                let token = TunnelEndpoint.presentedToken(headers: request.headers, query: request.uri.query)
                let message = token == nil ? "missing authorization token" : "invalid token"
                var body = ByteBuffer(string: #"{"success":false,"message":"#)
                body.writeJSONString(message)
                body.writeString("}")
                return Response(status: .unauthorized, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
            }
        }
        return router
    }

    /// The WebSocket router for worker tunnels: the token is checked before the upgrade.
    /// The tunnel endpoint's upgrade decision: a Tokilake path and a valid token (checked once),
    /// else no upgrade and the request goes on to the HTTP router, which answers 401.
    @Sendable
    func shouldUpgradeTunnel(_ request: HTTPRequest, channel: any Channel, logger: Logger) async
        -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>>
    {
        guard request.method == .get, let (path, query) = TunnelEndpoint.target(of: request), TunnelEndpoint.paths.contains(path),
              let token = TunnelEndpoint.presentedToken(headers: request.headerFields, query: query),
              let user = try? await tokens.authenticate(token)
        else { return .dontUpgrade }
        let headers = request.headerFields
        let features = TunnelEndpoint.negotiated(headers, allowLZ4: configuration.allowLZ4, allowSmux2: configuration.allowSmux2)
        let remote = headers[HTTPField.Name("X-Forwarded-For")!] ?? "direct"
        return .upgrade(TunnelEndpoint.upgradeHeaders(headers, allowLZ4: configuration.allowLZ4, allowSmux2: configuration.allowSmux2)) {
            inbound, outbound, _ in
            let activity = LinkActivity()
            TunnelEndpoint.optimizePipeline(of: channel, activity: activity)
            await self.serveWorker(inbound: inbound, outbound: outbound, user: user, features: features, activity: activity, remote: remote)
        }
    }

    func serveWorker(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, user: AuthenticatedToken, features: TunnelFeatures, activity: LinkActivity,
                     remote: String) async {
        let session: MuxSession
        let lz4 = features.lz4
        do {
            var mux = SmuxConfiguration.tokilake
            mux.version = features.smuxVersion
            session = try MuxSession(role: .server, configuration: mux, logger: logger)
        } catch {
            logger.error("cannot start tunnel session", metadata: ["error": "\(error)"])
            return
        }
        let tunnelOutbound = ServerTunnelOutbound(outbound, lz4: lz4, limits: configuration.tunnelLimits)
        let link = WorkerLink(activity: activity, ping: { try await tunnelOutbound.ping() })
        let handler = WorkerSessionHandler(session: session, link: link, user: user, remote: remote, store: store, presence: presence,
                                           registry: registry, deadlines: deadlines, configuration: configuration, logger: logger)
        let watch = LinkWatch.start(activity: activity, interval: configuration.pingInterval, deadlines: deadlines,
                                    ping: link.ping, close: { [logger] in
                                        logger.info("tunnel link silent past a ping; closing", metadata: ["remote": "\(remote)"])
                                        session.close()
                                    })
        defer { watch.stop() }
        // The session runs in this task, the control handler in one child (each task of an idle
        // session costs its stack). When either ends the session closes, which ends the other.
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await handler.run()
                session.close()
            }
            do {
                try await session.run(inbound: ServerTunnelInbound(inbound, lz4: lz4, limits: self.configuration.tunnelLimits),
                                      outbound: tunnelOutbound)
            } catch {
                self.logger.debug("tunnel session ended", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: OpenAI API

    func authenticate(_ request: Request) async throws -> AuthenticatedToken {
        guard let header = request.headers[.authorization], !header.isEmpty else { throw OpenAIError.missingToken }
        let token = header.lowercased().hasPrefix("bearer ") ? String(header.dropFirst(7)) : header
        guard let user = try await tokens.authenticate(token.trimmingCharacters(in: .whitespaces)) else { throw OpenAIError.invalidToken }
        return user
    }

    func listModels(_ request: Request, context: HubRequestContext) async throws -> Response {
        let user = try await authenticate(request)
        let models = registry.models(group: user.group).filter { user.allows(model: $0) }
        var body = ByteBuffer(string: #"{"object":"list","data":["#)
        for (i, model) in models.enumerated() {
            if i > 0 { body.writeString(",") }
            body.writeString(#"{"id":"#)
            body.writeJSONString(model)
            body.writeString(#","object":"model","created":0,"owned_by":"toki"}"#)
        }
        body.writeString("]}")
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    func proxy(_ request: Request, context: HubRequestContext, route: RouteKind) async throws -> Response {
        if draining.value { throw OpenAIError.draining }
        let user = try await authenticate(request)
        let limit = configuration.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw OpenAIError.bodyTooLarge(limit: limit)
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw OpenAIError.bodyTooLarge(limit: limit)
        }
        let contentType = request.headers[.contentType] ?? "application/json"
        let routed = contentType.lowercased().hasPrefix("multipart/form-data")
            ? try BodyInspector.inspectMultipart(body, contentType: contentType)
            : try BodyInspector.inspectJSON(body)
        guard user.allows(model: routed.model) else { throw OpenAIError.unknownModel(routed.model) }

        let candidates = registry.candidates(model: routed.model, group: user.group, limit: configuration.maxAttempts)
        guard !candidates.isEmpty else {
            // Known (a worker served it before) but nobody online: 503; otherwise 404.
            let known = (try? await store.listWorkers()).map { $0.contains { $0.models.contains(routed.model) } } ?? false
            throw known ? OpenAIError.noWorker(routed.model) : OpenAIError.unknownModel(routed.model)
        }

        var headers: [String: String] = ["Content-Type": contentType]
        headers["Accept"] = request.headers[.accept] ?? (routed.stream ? "text/event-stream" : nil)
        headers["X-Request-Id"] = context.requestID
        let started = ContinuousClock.now
        var lastFailure: UpstreamFailure?
        var timedOut = false
        for worker in candidates {
            let tunnelID = "\(worker.namespace):relay:\(context.requestID)"
            guard worker.begin(requestID: tunnelID, onWorkerLost: {}) else { continue }
            let tunnelRequest = TunnelRequest(requestID: tunnelID, routeKind: route, path: request.uri.path, model: routed.model,
                                              headers: headers, isStream: routed.stream, body: body)
            do {
                let sentAt = NIODeadline.now()
                let call = try TunnelCall.open(on: worker.session, requestID: tunnelID)
                // Armed before the request is written: sending waits while the worker does not read.
                let expired = Locked(false)
                let timer = deadlines.makeID()
                deadlines.arm(timer, after: configuration.responseTimeout) {
                    expired.withLock { $0 = true }
                    call.close()
                }
                // A worker silent while we wait may be frozen: probe it (see `probeIfSilent`).
                let probe = deadlines.makeID()
                deadlines.arm(probe, after: configuration.workerProbeAfter) { [deadlines, configuration] in
                    worker.probeIfSilent(since: sentAt, timeout: configuration.workerProbeTimeout, deadlines: deadlines)
                }
                let head: TunnelHead
                do {
                    try await call.send(tunnelRequest)
                    head = try await call.readHead()
                    deadlines.disarm(timer)
                    deadlines.disarm(probe)
                } catch {
                    deadlines.disarm(timer)
                    deadlines.disarm(probe)
                    call.close()
                    if expired.value {
                        worker.cancel(requestID: tunnelID)
                        timedOut = true
                        worker.end(requestID: tunnelID)
                        break  // a slow worker is not retried: the next one would wait as long
                    }
                    throw error
                }
                context.logger.debug("forwarded", metadata: ["model": "\(routed.model)", "worker": "\(worker.namespace)", "status": "\(head.status)"])
                return streamer.response(for: ForwardedCall(head: head, call: call, worker: worker, tunnelID: tunnelID, user: user, model: routed.model,
                                                            requestID: context.requestID, started: started, client: context.channel, logger: context.logger))
            } catch let failure as UpstreamFailure {
                worker.end(requestID: tunnelID)
                context.logger.warning("worker failed before responding; trying the next", metadata: ["worker": "\(worker.namespace)", "error": "\(failure)"])
                lastFailure = failure
            } catch {
                worker.end(requestID: tunnelID)
                throw error
            }
        }
        if timedOut {
            usage.record(requestID: context.requestID, user: user, model: routed.model, namespace: nil, status: 504, started: started, sniffer: nil)
            throw OpenAIError.timeout(Int(configuration.responseTimeout.components.seconds))
        }
        let failure = lastFailure ?? .transport("no worker could take the request")
        usage.record(requestID: context.requestID, user: user, model: routed.model, namespace: nil, status: 502, started: started, sniffer: nil)
        throw OpenAIError.upstream("All workers failed: \(failure)", code: failure.code)
    }

    // MARK: Admin

    struct CreateTokenRequest: Decodable {
        var user: String
        var name: String?
    }

    func adminCreateToken(_ request: Request, context: HubRequestContext) async throws -> Response {
        let caller = try await authenticate(request)
        guard caller.isAdmin else { throw OpenAIError.adminRequired }
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: 64 * 1024) } catch is NIOTooManyBytesError {
            throw OpenAIError.bodyTooLarge(limit: 64 * 1024)
        }
        let input: CreateTokenRequest
        do { input = try JSONDecoder().decode(CreateTokenRequest.self, from: Data(body.readableBytesView)) } catch {
            throw OpenAIError.malformedJSON("expected {\"user\": \"name\", \"name\": \"label\"}")
        }
        let created: (plaintext: String, record: TokenRecord)
        do {
            created = try await store.createToken(user: input.user, name: input.name)
        } catch let error as StoreError {
            throw OpenAIError(.badRequest, error.description, type: "invalid_request_error", code: "invalid_user")
        }
        var out = ByteBuffer(string: #"{"token":"#)
        out.writeJSONString(created.plaintext)
        out.writeString(#","id":\#(created.record.id),"user":"#)
        out.writeJSONString(input.user)
        out.writeString("}")
        return Response(status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: out))
    }

    func adminWorkers(_ request: Request, context: HubRequestContext) async throws -> Response {
        let caller = try await authenticate(request)
        guard caller.isAdmin else { throw OpenAIError.adminRequired }
        struct Row: Encodable {
            var namespace: String
            var node_name: String
            var user_id: Int64
            var models: [String]
            var groups: [String]
            var in_flight: Int
        }
        let rows = registry.workers.map {
            Row(namespace: $0.namespace, node_name: $0.nodeName, user_id: $0.userID, models: $0.models.sorted(), groups: $0.groups.sorted(), in_flight: $0.inFlight)
        }.sorted { $0.namespace < $1.namespace }
        let data = try JSONEncoder().encode(["workers": rows])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// What the process holds: heap in use (glibc's count of live allocations, which unlike RSS
    /// does not include freed memory the allocator keeps), RSS, workers and armed deadlines. The
    /// scale tests read it to check that sessions leave nothing behind.
    func adminRuntime(_ request: Request, context: HubRequestContext) async throws -> Response {
        let caller = try await authenticate(request)
        guard caller.isAdmin else { throw OpenAIError.adminRequired }
        let pages = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let rss = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        var body = ByteBuffer()
        body.writeString(#"{"heap_in_use_bytes":\#(toki_heap_in_use()),"rss_bytes":\#(rss),"#)
        body.writeString(#""workers":\#(registry.workers.count),"deadlines":\#(deadlines.count.entries)}"#)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    // MARK: Running

    /// Serves until SIGTERM/SIGINT. On SIGTERM new API requests get 503 while in-flight ones
    /// finish (up to `drainTimeout`); worker tunnels stay up until then.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        _ = try? await store.markAllOffline()
        let webSocket = TunnelEndpoint.webSocketConfiguration(limits: configuration.tunnelLimits, autoPingInterval: nil)
        let app = Application(
            router: makeRouter(),
            server: .guardedHTTP1WebSocketUpgrade(webSocket: webSocket, limits: configuration.httpLimits, logger: logger,
                                                  shouldUpgrade: { request, channel, logger in await self.shouldUpgradeTunnel(request, channel: channel, logger: logger) }),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger
        )
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: app), .init(service: usage), .init(service: presence)], logger: logger)
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask { await self.deadlines.run() }
            tasks.addTask {
                var draining = false
                for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                    guard !draining else { continue }  // already on the way out
                    draining = true
                    self.logger.notice("shutting down: draining in-flight requests", metadata: ["signal": "\(signal)"])
                    self.draining.withLock { $0 = true }
                    let deadline = ContinuousClock.now + self.configuration.drainTimeout
                    while ContinuousClock.now < deadline, self.registry.workers.contains(where: { $0.inFlight > 0 }) {
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                    await group.triggerGracefulShutdown()
                }
            }
            try await tasks.next()  // the service group ends first (the others never return on their own)
            tasks.cancelAll()
        }
    }
}
