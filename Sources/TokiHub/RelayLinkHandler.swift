import Foundation
import Logging
import NIOCore
import TokiMux
import TokiProtocol
import TokiTunnel

/// The parent's side of one child relay link (at the root, or at a relay with relays below it;
/// docs/protocol.md "Relays"). The child says who it is (`hello`: refused if it would close a
/// loop or pass the hop limit), then asks for token checks and announces the workers of its
/// subtree; each admitted worker is registered here with a `RelayRoute` through this link,
/// owned, grouped and routed exactly as a direct one. When the link ends every worker it
/// announced leaves the registry at once.
struct RelayLinkHandler: LinkHandler {
    let connection: TunnelConnection<WorkerPrincipal>
    let childID: String
    let tunnel: WorkerTunnel

    typealias Kind = TunnelProtocol.RelayMessageType
    typealias Code = TunnelProtocol.RelayErrorCode
    typealias Refusal = ControlRefusal

    func serve(isolation: isolated EventLoopIsolation) async {
        let (session, principal, features) = (connection.session, connection.identity, connection.features)
        let link = WorkerLink(activity: connection.activity, ping: connection.ping)
        var logger = tunnel.logger
        logger[metadataKey: "relay"] = "\(childID)"
        logger[metadataKey: "user"] = "\(principal.userName)"
        let watchdog = WorkerSessionHandler.Watchdog(id: tunnel.deadlines.makeID(), deadlines: tunnel.deadlines, session: session, logger: logger)
        defer { watchdog.disarm() }
        watchdog.arm(tunnel.configuration.registerTimeout, reason: "the relay's control stream")
        let control: MuxStream
        do { control = try await session.accept() } catch {
            logger.info("relay closed: no control stream", metadata: ["error": "\(error)"])
            return
        }
        // The relay link has smux keepalives: no read deadline past the hello.
        let channel = ControlChannel(control)
        session.refuseIncomingStreams()
        let relay = RelayLink(session: session, control: channel, link: link, nodeID: childID)
        async let writing: Void = { try? await channel.runWriter() }()
        var owned: [String: WorkerConnection] = [:]
        var lastSequence = 0
        do {
            try await hello(channel)
            watchdog.disarm()
            let key = tunnel.relayLinks.add(RelayLinks.Link(id: childID, user: principal.userName, lz4: features.lz4,
                                                smuxVersion: session.configuration.version, since: Date(),
                                                tokenID: principal.tokenID, control: channel, session: session))
            defer { tunnel.relayLinks.remove(key) }
            logger.info("relay connected", metadata: ["lz4": "\(features.lz4)", "smux": "\(session.configuration.version)"])
            while let (message, _) = try await Self.receive(channel) {
                // A numbered announcement out of order: a change may be lost, so this view of
                // the subtree cannot be trusted. The link ends (thrown past the per-message
                // refusals); the child reconnects and restates everything in its snapshot.
                if message.isAnnouncement, let seq = message.seq {
                    guard seq == lastSequence + 1 else {
                        throw Refusal(code: Code.sequenceGap, message: "announcement \(seq) after \(lastSequence): a change was lost; reconnect and send a snapshot")
                    }
                    lastSequence = seq
                }
                do {
                    if let reply = try await handle(message, relay: relay, owned: &owned, logger: logger) { channel.send(reply) }
                } catch let refusal as Refusal {
                    logger.warning("relay request refused", metadata: ["type": "\(message.type)", "code": "\(refusal.code)", "reason": "\(refusal.message)"])
                    channel.send(RelayMessage.error(requestID: message.requestID, code: refusal.code, message: refusal.message))
                }
            }
            logger.info("relay disconnected")
        } catch let refusal as Refusal {
            logger.warning("relay refused", metadata: ["code": "\(refusal.code)", "reason": "\(refusal.message)"])
            channel.send(RelayMessage.error(requestID: nil, code: refusal.code, message: refusal.message))
        } catch {
            logger.info("relay disconnected", metadata: ["reason": "\(error)"])
        }
        channel.finish()
        await writing
        // The whole subtree leaves at once: no worker behind a lost relay stays routable.
        for worker in owned.values { depart(worker) }
        if !owned.isEmpty { logger.info("relay subtree offline", metadata: ["workers": "\(owned.count)"]) }
        watchdog.arm(WorkerSessionHandler.goodbyeLimit, reason: "last lines not taken")
        await session.flush()
        session.close()
    }

    /// The first line must be `hello`; refused if this link would close a loop or go past the
    /// hop limit.
    private nonisolated(nonsending) func hello(_ channel: ControlChannel) async throws {
        guard let (message, _) = try await Self.receive(channel) else {
            throw Refusal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "the relay closed its control stream before hello")
        }
        guard message.type == Kind.hello, let child = message.node, !child.id.isEmpty else {
            throw Refusal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "the first message of a relay link must be hello")
        }
        let path = tunnel.node.path()
        if child.id == tunnel.node.id || path.contains(child.id) {
            throw Refusal(code: Code.loop, message: "relay \(child.id) is already on the path to the root (\(path.joined(separator: " <- "))): the link would make a loop")
        }
        // The child would be the path.count-th relay below the root.
        if path.count > tunnel.node.hopLimit {
            throw Refusal(code: Code.hopLimit, message: "a relay here would be \(path.count) relays below the root; the limit is \(tunnel.node.hopLimit)")
        }
        channel.send(RelayMessage.ack(requestID: message.requestID, node: RelayNode(id: tunnel.node.id, path: path)))
    }

    /// The next line; a line that is not a relay message, or is too long, ends the link with
    /// an error that says so (as the worker protocol treats an undecodable control line).
    private static nonisolated(nonsending) func receive(_ channel: ControlChannel) async throws -> (RelayMessage, ByteBuffer)? {
        do {
            return try await channel.receive(RelayMessage.self, includingTail: false)
        } catch let malformed as ControlChannel.Malformed {
            throw Refusal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "invalid relay message: \(malformed)")
        } catch let tooLong as LineTooLong {
            throw Refusal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "relay message too long: \(tooLong)")
        }
    }

    private nonisolated(nonsending) func handle(_ message: RelayMessage, relay: RelayLink, owned: inout [String: WorkerConnection],
                                                 logger: Logger) async throws -> RelayMessage? {
        switch message.type {
        case Kind.authenticate:
            let principal = try await authenticate(message.token)
            var granted: RelayWorker?
            let asked = GroupList.parse(message.worker?.group)
            if !asked.isEmpty {
                let groups = try await authorize(asked, for: principal)
                granted = RelayWorker(namespace: "", group: GroupList.format(groups))
            }
            return .ack(requestID: message.requestID, worker: granted,
                        principal: RelayPrincipal(userID: Int(principal.userID), userName: principal.userName, group: principal.group,
                                                  tokenID: principal.tokenID.map { Int($0) }))

        case Kind.workerUp:
            guard let announced = message.worker else { throw Refusal(code: TunnelProtocol.HubErrorCode.registerPayloadMissing, message: "worker_up without a worker") }
            let principal = try await authenticate(message.token)
            let namespace = announced.namespace.trimmingCharacters(in: .whitespacesAndNewlines)
            let models = try checkedModels(announced.models)
            guard !namespace.isEmpty, namespace.utf8.count <= 128 else {
                throw Refusal(code: TunnelProtocol.HubErrorCode.registerFailed, message: "namespace must be 1 to 128 bytes")
            }
            let via = [childID] + (announced.via ?? []).prefix(tunnel.node.hopLimit)
            if let earlier = owned.removeValue(forKey: namespace) { depart(earlier) }  // re-announced (relay snapshot)
            let nodeName = announced.nodeName.flatMap { $0.isEmpty ? nil : $0 } ?? namespace
            let verdict: WorkerAdmissionVerdict
            do throws(AdmissionRefusal) {
                verdict = try await tunnel.admission.admit(WorkerAdmissionRequest(namespace: namespace, nodeName: nodeName, models: models,
                                                                           groups: GroupList.parse(announced.group), via: via,
                                                                           hardwareInfo: announced.hardwareInfo),
                                                    for: principal)
            } catch {
                throw Refusal(code: error.code, message: error.message)
            }
            let connection = WorkerConnection(
                sessionID: tunnel.registry.nextSessionID(), namespace: namespace, principal: principal, workerID: verdict.workerID,
                nodeName: nodeName, groups: verdict.groups, models: Set(models), hardwareInfo: announced.hardwareInfo, via: via,
                route: RelayRoute(link: relay, namespace: namespace), logger: logger)
            guard tunnel.registry.claim(connection) else {
                throw Refusal(code: TunnelProtocol.HubErrorCode.registerFailed, message: "namespace already connected")
            }
            owned[namespace] = connection
            tunnel.presence.joined(connection)
            tunnel.configuration.metrics.workerConnects.relayed.increment()
            tunnel.presence.seen(connection, models: models)
            logger.info("worker registered via relay", metadata: ["namespace": "\(namespace)", "via": "\(via)", "models": "\(models)"])
            return .ack(requestID: message.requestID,
                        worker: RelayWorker(namespace: namespace, group: GroupList.format(verdict.groups),
                                            workerID: Int(verdict.workerID)))

        case Kind.workerUpdate:
            guard let announced = message.worker, let connection = owned[announced.namespace] else {
                throw Refusal(code: Code.unknownNamespace, message: "worker_update for a namespace this relay has not announced")
            }
            let models = try checkedModels(announced.models)
            let asked = GroupList.parse(announced.group)
            let groups = asked.isEmpty ? nil : try await authorize(asked, for: connection.principal)
            let changed = tunnel.registry.update(connection, models: Set(models), groups: groups)
            connection.state.withLock { state in
                state.lastSeen = .now
                if let info = announced.hardwareInfo { state.hardwareInfo = info }
            }
            tunnel.presence.seen(connection, models: changed ? models : nil)
            return .ack(requestID: message.requestID,
                        worker: RelayWorker(namespace: connection.namespace, group: GroupList.format(connection.groups)))

        case Kind.workerLoad:
            // A load for a worker that just left (or is not acked yet) is simply dropped.
            if let namespace = message.namespace, let connection = owned[namespace], let load = message.inFlight {
                connection.state.withLock { $0.reportedInFlight = max(0, load) }
            }
            return nil

        case Kind.ping:
            return .ack(requestID: message.requestID)

        case Kind.workerDown:
            guard let namespace = message.namespace, let connection = owned.removeValue(forKey: namespace) else {
                throw Refusal(code: Code.unknownNamespace, message: "worker_down for a namespace this relay has not announced")
            }
            depart(connection)
            logger.info("worker offline via relay", metadata: ["namespace": "\(namespace)"])
            return nil

        default:
            throw Refusal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "unsupported relay message type: \(message.type.rawValue)")
        }
    }

    private func depart(_ connection: WorkerConnection) {
        connection.markClosed()
        if tunnel.registry.release(connection) { tunnel.presence.departed(connection) }
    }

    private nonisolated(nonsending) func authenticate(_ token: String?) async throws -> WorkerPrincipal {
        guard let token, !token.isEmpty else { throw Refusal(code: Code.authFailed, message: "invalid token") }
        switch await tunnel.admission.check(token: token) {
        case .valid(let principal): return principal
        case .invalid: throw Refusal(code: Code.authFailed, message: "invalid token")
        // A middle relay without its parent: the child hears that, not a bad token.
        case .unavailable(let why): throw Refusal(code: Code.upstreamUnavailable, message: why)
        }
    }

    private nonisolated(nonsending) func authorize(_ groups: [String], for principal: WorkerPrincipal) async throws -> Set<String> {
        do throws(AdmissionRefusal) {
            return try await tunnel.admission.authorizeGroups(groups, for: principal)
        } catch {
            throw Refusal(code: error.code, message: error.message)
        }
    }

    private func checkedModels(_ announced: [String]?) throws -> [String] {
        let models = WorkerSessionHandler.normalizeModels(announced ?? [])
        guard !models.isEmpty else { throw Refusal(code: TunnelProtocol.HubErrorCode.registerFailed, message: "at least one model is required") }
        guard models.count <= tunnel.configuration.maxModelsPerWorker else {
            throw Refusal(code: TunnelProtocol.HubErrorCode.registerFailed,
                          message: "a worker may announce at most \(tunnel.configuration.maxModelsPerWorker) models")
        }
        return models
    }
}

/// This node's place in a chain: its id, its path from the root (itself last; changes when a
/// relay reconnects upstream) and the hop limit.
public struct RelayNodeIdentity: Sendable {
    public let id: String
    public let hopLimit: Int
    public let path: @Sendable () -> [String]

    public init(id: String, hopLimit: Int = TunnelProtocol.defaultHopLimit, path: @escaping @Sendable () -> [String]) {
        self.id = id
        self.hopLimit = hopLimit
        self.path = path
    }

    /// The root: its path is itself.
    public static func root(id: String) -> RelayNodeIdentity {
        RelayNodeIdentity(id: id, path: { [id] })
    }
}
