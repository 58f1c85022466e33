import Hummingbird
import NIOCore
import TokiProtocol
import TokiStore
import TokiTunnel

/// The OpenAI API: `GET /v1/models` and every POST endpoint a worker can serve. The caller is
/// authenticated by `APIAuthentication`; while the hub drains, POSTs get 503 first.
struct OpenAIRoutes: Sendable {
    let registry: WorkerRegistry
    let forwarder: RequestForwarder
    let tokens: TokenCache
    let draining: Locked<Bool>
    let maxBodyBytes: Int
    /// Requests, tokens per minute and requests at once, per token and per user.
    let limiter: RateLimiter
    let tokenRateLimit: RateLimit
    let userRateLimit: RateLimit
    var metrics: HubMetrics = .disabled

    func collection() -> RouteCollection<HubRequestContext> {
        let routes = RouteCollection(context: HubRequestContext.self)
        let models = RouteCollection(context: HubRequestContext.self).add(middleware: APIAuthentication(tokens: tokens))
        models.get("/v1/models") { _, context in try self.listModels(context: context) }
        routes.addRoutes(models)
        for kind in RouteKind.allCases where kind.method == "POST" && !kind.rawValue.hasPrefix("videos") {
            guard let path = RouteKind.pathTable.first(where: { $0.kind == kind })?.path else { continue }
            // One collection per route, so its metrics handles are looked up here, once.
            let route = metrics.route(kind)
            let proxied = RouteCollection(context: HubRequestContext.self)
                .add(middleware: CountRefusals(route: route))
                .add(middleware: RefuseWhileDraining(draining: draining))
                .add(middleware: APIAuthentication(tokens: tokens))
            proxied.post(RouterPath(path)) { request, context in try await self.proxy(request, context: context, kind: kind, route: route) }
            routes.addRoutes(proxied)
        }
        return routes
    }

    /// The route's handler. An error it answers with is counted here, under the model once the
    /// body was read, and marked counted for `CountRefusals`; a worker's head is counted by `forward`.
    func proxy(_ request: Request, context: HubRequestContext, kind: RouteKind, route: RouteMetrics) async throws -> Response {
        var model: String?
        do {
            return try await proxy(request, context: context, kind: kind, route: route, model: &model)
        } catch {
            route.series(model: model, served: registry.serves(model:)).answered(status: CountRefusals.status(of: error))
            throw CountRefusals.Counted(error: error)
        }
    }

    func listModels(context: HubRequestContext) throws -> Response {
        let user = try context.authenticatedUser()
        guard user.scope.allowsInference else { throw OpenAIError.workerScopeOnly }
        let models = registry.models(groups: user.groups).filter { user.allows(model: $0) }
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

    /// Reads and checks the body (size, routing fields, the token's model allow-list), then forwards it.
    func proxy(_ request: Request, context: HubRequestContext, kind: RouteKind, route: RouteMetrics, model: inout String?) async throws -> Response {
        let user = try context.authenticatedUser()
        guard user.scope.allowsInference else { throw OpenAIError.workerScopeOnly }
        let limit = maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw OpenAIError.bodyTooLarge(limit: limit)
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw OpenAIError.bodyTooLarge(limit: limit)
        }
        let contentType = request.contentTypeOrJSON
        let routed = contentType.lowercased().hasPrefix("multipart/form-data")
            ? try BodyInspector.inspectMultipart(body, contentType: contentType)
            : try BodyInspector.inspectJSON(body)
        model = routed.model
        guard user.allows(model: routed.model) else { throw OpenAIError.unknownModel(routed.model) }
        // Bill by what the backend counts: ask it to report usage in the stream (and take the
        // report back out before the client sees it) when the client did not.
        var forwarded = body
        var stripUsage = false
        if routed.stream, kind == .chatCompletions || kind == .completions, routed.includeUsage == nil,
           let injected = UsageRequest.inject(into: body) {
            forwarded = injected
            stripUsage = true
        }
        // Rate limits before routing: the prompt's estimate counts against tokens per minute now,
        // the reported usage replaces it when the answer is done (the streamer completes the permit).
        let tokenLimit = RateLimit(rpm: user.rpm ?? tokenRateLimit.rpm, tpm: user.tpm ?? tokenRateLimit.tpm,
                                   concurrency: user.maxConcurrent ?? tokenRateLimit.concurrency)
        let permit: RateLimiter.Permit
        switch limiter.admit(user: user.userID, userLimit: userRateLimit, token: user.tokenID, tokenLimit: tokenLimit,
                             estimatedTokens: TokenCounts.promptEstimate(requestBytes: body.readableBytes)) {
        case .refused(let refusal):
            metrics.rateLimited(refusal)
            var error = OpenAIError(.tooManyRequests, refusal.message, type: refusal.type, code: "rate_limit_exceeded")
            error.headers = refusal.headers
            throw error
        case .admitted(let admitted):
            permit = admitted
        }
        do {
            var response = try await forwarder.forward(request, kind: kind, body: forwarded, routed: routed, user: user, context: context,
                                                       stripUsage: stripUsage, requestBytes: body.readableBytes, permit: permit, route: route)
            permit.status.add(to: &response.headers)
            return response
        } catch {
            permit.complete(tokens: nil)
            throw error
        }
    }
}
