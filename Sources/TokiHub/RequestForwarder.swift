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
    var usage: UsageRecorder { streamer.usage }
    var deadlines: DeadlineSweeper { streamer.deadlines }

    /// Forwards `request` (its `body` read, its routing fields in `routed`, the caller `user`).
    func forward(_ request: Request, kind: RouteKind, body: ByteBuffer, routed: RoutedBody, user: AuthenticatedToken,
                 context: HubRequestContext) async throws -> Response {
        let candidates = registry.candidates(model: routed.model, group: user.group, limit: configuration.maxAttempts)
        guard !candidates.isEmpty else {
            // Known (a worker served it before) but nobody online: 503; otherwise 404.
            let known = (try? await directory.listWorkers(userID: nil)).map { $0.contains { $0.models.contains(routed.model) } } ?? false
            throw known ? OpenAIError.noWorker(routed.model) : OpenAIError.unknownModel(routed.model)
        }

        var headers: [String: String] = ["Content-Type": request.contentTypeOrJSON]
        headers["Accept"] = request.headers[.accept] ?? (routed.stream ? "text/event-stream" : nil)
        headers["X-Request-Id"] = context.requestID
        let started = ContinuousClock.now
        var lastFailure: UpstreamFailure?
        var timedOut = false
        for worker in candidates {
            let tunnelID = "\(worker.namespace):relay:\(context.requestID)"
            guard worker.begin(requestID: tunnelID) else { continue }
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
}

extension Request {
    /// The body's media type as forwarded (JSON when the client did not say).
    var contentTypeOrJSON: String { headers[.contentType] ?? "application/json" }
}
