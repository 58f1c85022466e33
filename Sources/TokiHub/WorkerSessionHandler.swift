import Foundation
import Logging
import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// The hub's side of one worker connection (spec §4.5): accepts the control stream, runs the
/// register → models_sync → heartbeat state machine with Tokilake's deadlines, answers every
/// request with an ack (always carrying an `ack` object) or a fatal error, and keeps the worker
/// in the registry while it is registered.
struct WorkerSessionHandler: LinkHandler {
    let connection: TunnelConnection<WorkerPrincipal>
    let remote: String
    let tunnel: WorkerTunnel

    var session: MuxSession { connection.session }
    var principal: WorkerPrincipal { connection.identity }

    typealias Fatal = ControlRefusal

    func serve(isolation: isolated EventLoopIsolation) async {
        var logger = tunnel.logger
        logger[metadataKey: "remote"] = "\(remote)"
        logger[metadataKey: "user"] = "\(principal.userName)"
        // Tokilake's read deadline: 30 s before registration, 45 s after; any message resets it.
        // One entry in the hub's shared sweeper, not a timer or task per session: idle sessions
        // cost nothing. (A `Task.sleep` per session stayed in the global executor's timer heap
        // until it came due even when cancelled: 10,000 of them after a fleet connected.)
        let watchdog = Watchdog(id: tunnel.deadlines.makeID(), deadlines: tunnel.deadlines, session: session, logger: logger)
        defer { watchdog.disarm() }
        watchdog.arm(tunnel.configuration.registerTimeout, reason: "no control stream")
        let control: MuxStream
        do {
            control = try await session.accept()
        } catch {
            logger.info("worker closed: no control stream", metadata: ["error": "\(error)"])
            return
        }
        let channel = ControlChannel(control)
        // Streams a worker opens after the control stream are never used (as in Go); they are
        // closed at once so they cannot fill the accept backlog and stall the session.
        session.refuseIncomingStreams()
        async let writing: Void = { try? await channel.runWriter() }()
        var connection: WorkerConnection?
        do {
            try await controlLoop(channel: channel, watchdog: watchdog, logger: &logger, connection: &connection)
        } catch let fatal as Fatal {
            logger.warning("worker rejected", metadata: ["code": "\(fatal.code)", "reason": "\(fatal.message)"])
            channel.send(.error(requestID: nil, code: fatal.code, message: fatal.message))
        } catch {
            logger.info("worker disconnected", metadata: ["reason": "\(error)"])
        }
        channel.finish()
        await writing
        if let connection {
            connection.markClosed()
            if tunnel.registry.release(connection) { tunnel.presence.departed(connection) }
            logger.info("worker offline", metadata: ["namespace": "\(connection.namespace)"])
        }
        // Let the last lines (an error, acks) reach the transport before the session goes:
        // close() drops whatever is still queued. Bounded, in case the worker stopped reading:
        // the watchdog closes the session, which ends the flush.
        // (The worker still reads what reached it after the link ends: no linger needed.)
        watchdog.arm(Self.goodbyeLimit, reason: "last lines not taken")
        await session.flush()
        session.close()
    }

    /// Closes the session when its deadline passes; one entry in the hub's `DeadlineSweeper`.
    struct Watchdog {
        let id: UInt64
        let deadlines: DeadlineSweeper
        let session: MuxSession
        let logger: Logger

        func arm(_ limit: Duration, reason: String) {
            let (session, logger) = (self.session, self.logger)
            deadlines.arm(id, after: limit) {
                logger.info("worker silent past its deadline; closing", metadata: ["limit": "\(limit)", "waiting for": "\(reason)"])
                session.close()
            }
        }

        func disarm() { deadlines.disarm(id) }
    }

    /// How long the last control lines may take to reach the transport before the session closes.
    static let goodbyeLimit: Duration = .seconds(2)

    private nonisolated(nonsending) func controlLoop(channel: ControlChannel, watchdog: Watchdog, logger: inout Logger,
                                                      connection: inout WorkerConnection?) async throws {
        while true {
            let message: ControlMessage
            do {
                // A last line without "\n" is not a message: the stream ended mid-line.
                guard let received = try await channel.receive(includingTail: false) else { return }
                message = received.message
            } catch let malformed as ControlChannel.Malformed {
                // Go treats an undecodable control line as fatal.
                throw Fatal(code: TunnelProtocol.HubErrorCode.unsupportedMessageType, message: "invalid control message: \(malformed)")
            }
            do {
                try await handle(message, channel: channel, logger: &logger, connection: &connection)
            } catch let fatal as Fatal {
                channel.send(.error(requestID: message.requestID, code: fatal.code, message: fatal.message))
                throw ReportedFatal(code: fatal.code, message: fatal.message)
            }
            if connection != nil {
                watchdog.arm(tunnel.configuration.heartbeatTimeout, reason: "a heartbeat")
            } else {
                watchdog.arm(tunnel.configuration.registerTimeout, reason: "register")
            }
        }
    }

    /// A fatal error already sent to the worker.
    struct ReportedFatal: Error, CustomStringConvertible {
        var code: String
        var message: String
        var description: String { "\(code): \(message)" }
    }

    private nonisolated(nonsending) func handle(_ message: ControlMessage, channel: ControlChannel, logger: inout Logger, connection: inout WorkerConnection?) async throws {
        typealias Code = TunnelProtocol.HubErrorCode
        typealias Ack = TunnelProtocol.AckMessage
        switch message.type {
        case TunnelProtocol.MessageType.auth:
            throw Fatal(code: Code.authAlreadyCompleted, message: "auth message already handled")
        case TunnelProtocol.MessageType.register:
            guard connection == nil else { throw Fatal(code: Code.registerAlreadyCompleted, message: "register message already handled") }
            guard let payload = message.register else { throw Fatal(code: Code.registerPayloadMissing, message: "register payload is required") }
            let registeredConnection = try await register(payload, channel: channel, logger: logger)
            connection = registeredConnection
            logger[metadataKey: "namespace"] = "\(registeredConnection.namespace)"
            channel.send(.ack(requestID: message.requestID, message: Ack.registerOK, namespace: registeredConnection.namespace,
                             workerID: Int(registeredConnection.workerID), channelID: Int(registeredConnection.workerID)))
            logger.info("worker registered", metadata: ["models": "\(registeredConnection.models.sorted())", "node": "\(registeredConnection.nodeName)"])
        case TunnelProtocol.MessageType.modelsSync:
            guard let current = connection else { throw Fatal(code: Code.notRegistered, message: "register first") }
            guard let payload = message.modelsSync else { throw Fatal(code: Code.modelsPayloadMissing, message: "models_sync payload is required") }
            let models = Self.normalizeModels(payload.models ?? [])
            guard !models.isEmpty else { throw Fatal(code: Code.modelsSyncFailed, message: "at least one model is required") }
            let groups = try await authorizeGroups(payload.group, fallback: current.groups)
            tunnel.registry.update(current, models: Set(models), groups: groups)
            current.state.withLock { state in
                if let info = payload.hardwareInfo { state.hardwareInfo = info }
                state.lastSeen = .now
            }
            tunnel.presence.seen(current, models: models)
            channel.send(.ack(requestID: message.requestID, message: Ack.modelsSyncOK, namespace: current.namespace,
                             workerID: Int(current.workerID), channelID: Int(current.workerID)))
            logger.info("worker models synced", metadata: ["models": "\(models)"])
        case TunnelProtocol.MessageType.heartbeat:
            guard let current = connection else { throw Fatal(code: Code.notRegistered, message: "register first") }
            guard let payload = message.heartbeat else { throw Fatal(code: Code.heartbeatPayloadMissing, message: "heartbeat payload is required") }
            let models = payload.currentModels.map(Self.normalizeModels) ?? []
            // The same models as before (nearly every heartbeat): no set is built, nothing re-indexed.
            let same = current.state.withLock { state in
                state.lastSeen = .now
                if let node = payload.nodeName, !node.isEmpty { state.nodeName = node }
                if let info = payload.hardwareInfo { state.hardwareInfo = info }
                return models.count == state.models.count && models.allSatisfy(state.models.contains)
            }
            let changed = !models.isEmpty && !same && tunnel.registry.update(current, models: Set(models))
            tunnel.presence.seen(current, models: changed ? models : nil)
            channel.send(.ack(requestID: message.requestID, message: Ack.heartbeatOK, namespace: current.namespace,
                             workerID: Int(current.workerID), channelID: Int(current.workerID)))
        case TunnelProtocol.MessageType.ack:
            break  // acks of our cancel_request messages
        case TunnelProtocol.MessageType.error:
            logger.warning("worker reported an error", metadata: ["code": "\(message.error?.code ?? "")", "message": "\(message.error?.message ?? "")"])
        default:
            throw Fatal(code: Code.unsupportedMessageType, message: "unsupported message type: \(message.type.rawValue)")
        }
    }

    private func register(_ payload: RegisterPayload, channel: ControlChannel, logger: Logger) async throws -> WorkerConnection {
        typealias Code = TunnelProtocol.HubErrorCode
        let namespace = payload.namespace.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !namespace.isEmpty else { throw Fatal(code: Code.registerFailed, message: "namespace is required") }
        guard namespace.utf8.count <= 128 else { throw Fatal(code: Code.registerFailed, message: "namespace is longer than 128 bytes") }
        let models = Self.normalizeModels(payload.models ?? [])
        guard !models.isEmpty else { throw Fatal(code: Code.registerFailed, message: "at least one model is required") }
        guard models.count <= tunnel.configuration.maxModelsPerWorker else {
            throw Fatal(code: Code.registerFailed, message: "a worker may announce at most \(tunnel.configuration.maxModelsPerWorker) models")
        }
        let nodeName = (payload.nodeName?.isEmpty == false ? payload.nodeName! : namespace)
        let verdict: WorkerAdmissionVerdict
        do throws(AdmissionRefusal) {
            verdict = try await tunnel.admission.admit(WorkerAdmissionRequest(namespace: namespace, nodeName: nodeName, models: models,
                                                                       groups: GroupList.parse(payload.group), hardwareInfo: payload.hardwareInfo),
                                                               for: principal)
        } catch {
            throw Fatal(code: error.code, message: error.message)
        }
        let connection = WorkerConnection(
            sessionID: tunnel.registry.nextSessionID(), namespace: namespace, principal: principal, workerID: verdict.workerID,
            nodeName: nodeName, groups: verdict.groups, models: Set(models), hardwareInfo: payload.hardwareInfo,
            route: SessionRoute(session: session, control: channel,
                               link: WorkerLink(activity: connection.activity, ping: connection.ping), namespace: namespace), logger: logger
        )
        guard tunnel.registry.claim(connection) else {
            throw Fatal(code: Code.registerFailed, message: "namespace already connected")
        }
        tunnel.presence.joined(connection)
        tunnel.configuration.metrics.workerConnects.direct.increment()
        return connection
    }

    /// The groups a worker may serve: a requested group list (comma separated) must pass
    /// admission; none requested keeps `fallback`.
    private func authorizeGroups(_ requested: String?, fallback: Set<String>) async throws -> Set<String> {
        let items = GroupList.parse(requested)
        guard !items.isEmpty else { return fallback }
        do throws(AdmissionRefusal) {
            return try await tunnel.admission.authorizeGroups(items, for: principal)
        } catch {
            throw Fatal(code: error.code, message: error.message)
        }
    }


    /// Trimmed, non-empty, unique and sorted. Every heartbeat carries the list, almost always
    /// already in that form: checked in one pass before anything is rebuilt.
    static func normalizeModels(_ models: [String]) -> [String] {
        func isTrimmedASCIIEnds(_ model: String) -> Bool {
            guard let first = model.utf8.first, let last = model.utf8.last else { return false }
            return first > 0x20 && first < 0x7F && last > 0x20 && last < 0x7F
        }
        var previous: String?
        var normalized = true
        for model in models {
            guard isTrimmedASCIIEnds(model), previous.map({ $0 < model }) ?? true else { normalized = false; break }
            previous = model
        }
        if normalized { return models }
        return Array(Set(models.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty })).sorted()
    }
}
