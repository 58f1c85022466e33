import Foundation
import Hummingbird
import Logging
import NIOCore
import TokiProtocol
import TokiStore
import TokiTunnel

/// Forwards one API request to a worker: the registry's candidates are tried in turn, each
/// through its route, until one sends a response head. A worker that fails before the first
/// response byte is retried on the next; one that does not answer within `responseTimeout` is
/// not (504: the next would wait as long). A worker silent meanwhile gets a liveness probe. The
/// call whose head arrived goes to the `ResponseStreamer`.
struct RequestForwarder: Sendable {
    let registry: WorkerRegistry
    let directory: any WorkerDirectory
    /// Takes the call once its head arrived (and holds the usage recorder and deadlines).
    let streamer: ResponseStreamer
    let configuration: HubConfiguration
    var usage: ChargeRecorder { streamer.usage }
    var billing: Billing { streamer.billing }
    var deadlines: DeadlineSweeper { streamer.deadlines }

    /// Forwards `request` (its `body` read, its routing fields in `routed`, the caller `user`).
    /// `stripUsage`: the hub added `include_usage` to the body (the streamer takes its report
    /// back out); `requestBytes`: the client's body size, for the usage estimate.
    func forward(_ request: Request, kind: RouteKind, body: ByteBuffer, routed: RoutedBody, user: AuthenticatedToken,
                 context: HubRequestContext, stripUsage: Bool = false, requestBytes: Int? = nil,
                 permit: RateLimiter.Permit = .unlimited, route: RouteMetrics? = nil) async throws -> Response {
        let found = registry.candidates(model: routed.model, groups: user.groups, primary: user.group, limit: configuration.maxAttempts)
        guard !found.isEmpty else {
            // Known in one of the caller's groups (a worker served it there) but nobody online:
            // 503; otherwise 404, which says nothing about other users' pools.
            let known = (try? await directory.listWorkers(userID: nil)).map { claims in
                claims.contains { $0.models.contains(routed.model) && !Set(GroupList.parse($0.group)).isDisjoint(with: user.groups) }
            } ?? false
            throw known ? OpenAIError.noWorker(routed.model) : OpenAIError.unknownModel(routed.model)
        }
        let series = route?.series(servedModel: routed.model)
        // Before routing: groups whose price the caller cannot pay are skipped; if that leaves
        // nothing, 429 `insufficient_quota` and nothing is routed.
        let promptEstimate = TokenCounts.promptEstimate(requestBytes: requestBytes ?? body.readableBytes)
        var verdicts: [String: (price: BillingPrice?, refusal: OpenAIError?)] = [:]
        var candidates: [(worker: WorkerConnection, group: String, price: BillingPrice?)] = []
        var refusal: OpenAIError?
        for (worker, group) in found {
            if verdicts[group] == nil {
                let price = billing.price(model: routed.model, group: group)
                verdicts[group] = (price, try await billing.refusal(for: user, price: price, promptEstimate: promptEstimate))
            }
            let verdict = verdicts[group]!
            if let why = verdict.refusal {
                refusal = why
                continue
            }
            candidates.append((worker, group, verdict.price))
        }
        if candidates.isEmpty, let refusal {
            configuration.metrics.insufficientQuota.increment()
            throw refusal
        }

        var headers: [String: String] = ["Content-Type": request.contentTypeOrJSON]
        headers["Accept"] = request.headers[.accept] ?? (routed.stream ? "text/event-stream" : nil)
        headers["X-Request-Id"] = context.requestID
        let started = ContinuousClock.now
        var lastFailure: UpstreamFailure?
        var timedOut = false
        var attempts = 0
        for (worker, group, price) in candidates {
            let tunnelID = "\(worker.namespace):relay:\(context.requestID)"
            guard worker.begin(requestID: tunnelID) else { continue }
            if attempts > 0 { configuration.metrics.retries.increment() }
            attempts += 1
            let tunnelRequest = TunnelRequest(requestID: tunnelID, routeKind: kind, path: request.uri.path, model: routed.model,
                                              headers: headers, isStream: routed.stream, body: body)
            do {
                let sentAt = NIODeadline.now()
                let call = try worker.route.openCall(requestID: tunnelID)
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
                series?.answered(status: head.status)
                context.logger.debug("forwarded", metadata: ["model": "\(routed.model)", "worker": "\(worker.namespace)", "status": "\(head.status)"])
                let bill = CallBilling(chargeID: FastUUID.next().uuidString, group: group, price: price, stripUsage: stripUsage,
                                       requestBytes: requestBytes ?? body.readableBytes, headAt: .now, permit: permit)
                return try await streamer.response(for: ForwardedCall(head: head, call: call, worker: worker, tunnelID: tunnelID, user: user, model: routed.model,
                                                            requestID: context.requestID, started: started, client: context.channel, logger: context.logger,
                                                            billing: bill, series: series))
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
            usage.record(.unbilled(requestID: context.requestID, user: user, model: routed.model, status: 504, started: started))
            throw OpenAIError.timeout(Int(configuration.responseTimeout.components.seconds))
        }
        let failure = lastFailure ?? .transport("no worker could take the request")
        usage.record(.unbilled(requestID: context.requestID, user: user, model: routed.model, status: 502, started: started))
        throw OpenAIError.upstream("All workers failed: \(failure)", code: failure.code)
    }
}

extension Request {
    /// The body's media type as forwarded (JSON when the client did not say).
    var contentTypeOrJSON: String { headers[.contentType] ?? "application/json" }
}
