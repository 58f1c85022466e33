import Foundation
import Synchronization
import TokiHub
import TokiProtocol

/// Admission at a relay: every decision is the root's, asked over the upstream link as if the
/// worker were connected there directly. Token verdicts are cached briefly (a worker's upgrade
/// and its register ask twice within a second; a reconnecting fleet asks thousands of times).
/// The principal keeps the token: the relay re-announces its workers after a reconnect.
struct UpstreamAdmission: WorkerAdmission {
    let upstream: UpstreamLink
    let cache: VerdictCache

    func authenticate(token: String) async -> WorkerPrincipal? {
        if case .valid(let principal) = await check(token: token) { return principal }
        return nil
    }

    func check(token: String) async -> TokenCheck {
        if let cached = cache.principal(for: token) { return .valid(cached) }
        do {
            let reply = try await upstream.request(RelayMessage(type: TunnelProtocol.RelayMessageType.authenticate, token: token))
            guard let principal = reply.principal else { return .invalid }
            let result = WorkerPrincipal(userID: Int64(principal.userID), userName: principal.userName, group: principal.group,
                                         tokenID: principal.tokenID.map { Int64($0) }, token: token)
            cache.store(result, for: token)
            return .valid(result)
        } catch let refusal as UpstreamRefusal where refusal.code == TunnelProtocol.RelayErrorCode.upstreamUnavailable {
            upstream.logger.info("token check upstream impossible", metadata: ["error": "\(refusal)"])
            return .unavailable("the relay cannot check the token: its upstream link is down (\(refusal.message))")
        } catch {
            upstream.logger.info("token check upstream failed", metadata: ["error": "\(error)"])
            return .invalid
        }
    }

    func revoked(tokenID: Int64) { cache.forget(tokenID: tokenID) }

    func authorizeGroups(_ requested: [String], for principal: WorkerPrincipal) async throws(AdmissionRefusal) -> Set<String> {
        do {
            let reply = try await upstream.request(RelayMessage(type: TunnelProtocol.RelayMessageType.authenticate, token: principal.token,
                                                                worker: RelayWorker(namespace: "", group: GroupList.format(requested))))
            return Set(GroupList.parse(reply.worker?.group))
        } catch {
            throw Self.refusal(error)
        }
    }

    func admit(_ request: WorkerAdmissionRequest, for principal: WorkerPrincipal) async throws(AdmissionRefusal) -> WorkerAdmissionVerdict {
        do {
            let reply = try await upstream.request(RelayMessage(
                type: TunnelProtocol.RelayMessageType.workerUp, token: principal.token,
                worker: RelayWorker(namespace: request.namespace, nodeName: request.nodeName, models: request.models,
                                    group: GroupList.format(request.groups), hardwareInfo: request.hardwareInfo, via: request.via)))
            return WorkerAdmissionVerdict(userID: principal.userID, workerID: Int64(reply.worker?.workerID ?? 0), namespace: request.namespace,
                                          groups: Set(GroupList.parse(reply.worker?.group)))
        } catch {
            throw Self.refusal(error)
        }
    }

    /// The parent's refusal with its own code (the worker hears what the root said).
    static func refusal(_ error: any Error) -> AdmissionRefusal {
        guard let refusal = error as? UpstreamRefusal else { return .failed("\(error)") }
        return .relayed(code: refusal.code, message: refusal.message)
    }
}

/// Token verdicts for `ttl`, at most `limit` of them (the oldest half is dropped when full).
final class VerdictCache: Sendable {
    private struct Entry { var principal: WorkerPrincipal; var until: ContinuousClock.Instant }
    private let entries = Mutex<[String: Entry]>([:])
    let ttl: Duration
    let limit: Int

    init(ttl: Duration = .seconds(30), limit: Int = 16_384) {
        self.ttl = ttl
        self.limit = limit
    }

    func principal(for token: String) -> WorkerPrincipal? {
        entries.withLock { entries in
            guard let entry = entries[token] else { return nil }
            guard entry.until > .now else { entries[token] = nil; return nil }
            return entry.principal
        }
    }

    /// Drops every verdict about token `tokenID` (the root revoked it).
    func forget(tokenID: Int64) {
        entries.withLock { entries in entries = entries.filter { $0.value.principal.tokenID != tokenID } }
    }

    func store(_ principal: WorkerPrincipal, for token: String) {
        entries.withLock { entries in
            if entries.count >= limit {
                let now = ContinuousClock.now
                entries = entries.filter { $0.value.until > now }
                if entries.count >= limit { entries = [:] }
            }
            entries[token] = Entry(principal: principal, until: .now + ttl)
        }
    }
}

/// Tells the parent about this node's workers, in order, on one task: a relay's model changes
/// and departures (its admission already announced each worker), or, for a hub that exports
/// its workers (`toki hub --upstream`), every registration too, under the hub's own token.
/// While the link is down nothing is sent: the snapshot after the reconnect says it all.
final class UpstreamAnnouncer: WorkerPresenceSink {
    enum Event: Sendable {
        case up(WorkerConnection)
        case update(WorkerConnection, [String])
        case down(String)
    }

    let upstream: UpstreamLink
    /// The token a hub exports its workers under; nil at a relay.
    let exportToken: String?
    private let events: AsyncStream<Event>
    private let input: AsyncStream<Event>.Continuation

    init(upstream: UpstreamLink, exportToken: String?) {
        self.upstream = upstream
        self.exportToken = exportToken
        (events, input) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingOldest(1 << 16))
    }

    func joined(_ worker: WorkerConnection) {
        if exportToken != nil { input.yield(.up(worker)) }
    }

    func seen(_ worker: WorkerConnection, models: [String]?) {
        if let models { input.yield(.update(worker, models)) }
    }

    func departed(_ worker: WorkerConnection) {
        input.yield(.down(worker.namespace))
    }

    /// Sends the events in order until cancelled.
    func run() async {
        for await event in events {
            guard upstream.isConnected else { continue }
            let logger = upstream.logger
            switch event {
            case .up(let worker):
                guard let token = exportToken else { continue }
                do { _ = try await upstream.request(UpstreamLink.workerUp(worker, token: token)) } catch {
                    logger.warning("the parent refused an exported worker (it stays served here)", metadata: [
                        "namespace": "\(worker.namespace)", "error": "\(error)"])
                }
            case .update(let worker, let models):
                let message = RelayMessage(type: TunnelProtocol.RelayMessageType.workerUpdate,
                                           worker: RelayWorker(namespace: worker.namespace, models: models,
                                                               group: exportToken == nil ? GroupList.format(worker.groups) : nil))
                do { _ = try await upstream.request(message) } catch {
                    logger.warning("the parent refused a worker's update", metadata: ["namespace": "\(worker.namespace)", "error": "\(error)"])
                }
            case .down(let namespace):
                upstream.notify(RelayMessage(type: TunnelProtocol.RelayMessageType.workerDown, namespace: namespace))
            }
        }
    }

    func finish() { input.finish() }
}
