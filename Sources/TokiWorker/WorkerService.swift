// The edge daemon as a swift-service-lifecycle Service: discovers models, keeps one registered
// tunnel to the hub (reconnecting with back-off), and serves the hub's data streams from the
// local backends (spec §4.4-4.7, §5, §9.1).

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOPosix
import ServiceLifecycle
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

/// Point-in-time view of a worker, for status output and tests.
public struct WorkerStatus: Sendable, Equatable {
    public var connected = false
    public var registered = false
    /// Successful registrations since start.
    public var registrations = 0
    /// Connection attempts since start.
    public var connectAttempts = 0
    public var workerID: Int?
    public var channelID: Int?
    public var models: [String] = []
    public var inFlight = 0
    /// The last reason a connection ended or failed.
    public var lastError: String?
}

public final class WorkerService: Service, Sendable {
    public let options: WorkerOptions
    let logger: Logger
    let catalog: ModelCatalog
    let registry: InFlightRegistry
    let client: HTTPClient
    let shutdown = AsyncEvent()
    private let statusState = Mutex(WorkerStatus())

    /// Called after each successful registration with the hub (readiness for systemd).
    let onRegistered: @Sendable () -> Void

    /// - Parameters:
    ///   - options: validated with `options.validate()` by the caller (the CLI does).
    ///   - logger: used for everything the worker logs.
    ///   - onRegistered: called after every successful registration with the hub.
    public init(options: WorkerOptions, logger: Logger, onRegistered: @escaping @Sendable () -> Void = {}) {
        self.options = options
        self.logger = logger
        self.onRegistered = onRegistered
        self.catalog = ModelCatalog(base: options.config)
        self.registry = InFlightRegistry(limit: max(1, options.maxConcurrentRequests))
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .nanoseconds(Int64(options.backendConnectTimeout.seconds * 1e9)), read: nil)
        configuration.redirectConfiguration = .disallow  // a redirect could point anywhere
        configuration.decompression = .disabled  // bytes pass through untouched
        configuration.connectionPool = .init(idleTimeout: .seconds(60),
                                             concurrentHTTP1ConnectionsPerHostSoftLimit: max(8, options.maxConcurrentRequests))
        // A backend that refuses connections fails the request at once (local_request_failed)
        // instead of being retried until a deadline the worker does not set.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.proxy = nil
        self.client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration,
                                 backgroundActivityLogger: logger)
    }

    /// Current state (connection, registration, models, in-flight requests).
    public var status: WorkerStatus {
        var s = statusState.withLock { $0 }
        s.models = catalog.snapshot.models
        s.inFlight = registry.count
        return s
    }

    /// The models currently served.
    public var models: [String] { catalog.snapshot.models }

    /// Same as a graceful shutdown from the service group: stop accepting, drain, leave.
    public func beginShutdown() { shutdown.set() }

    /// Runs until cancelled or, after a graceful shutdown request, until in-flight requests are
    /// done (at most `options.drainTimeout`). Returns normally in both cases.
    /// Closes data streams whose request line is overdue, for every stream at once (a quarter
    /// of the limit late at most, and at most a second).
    func requestLineSweeper() async {
        let period = min(Duration.seconds(1), options.requestLineTimeout / 4)
        while !Task.isCancelled {
            do { try await Task.sleep(for: period) } catch { return }
            registry.closeLateStreams(now: .now)
        }
    }

    public func run() async throws {
        logger.info("worker starting", metadata: [
            "hub": "\(options.config.gatewayURL)", "namespace": "\(options.config.namespace)",
            "configured_models": "\(options.config.modelNames)", "backends": "\(options.discoveryBackends)",
        ])
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                if !options.discoveryBackends.isEmpty {
                    group.addTask { await self.discoveryLoop() }
                }
                group.addTask { await self.connectLoop() }
                group.addTask { await self.requestLineSweeper() }
                // The connect loop ends on shutdown or cancellation; discovery and the sweeper are then stopped.
                await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.shutdown.set()
        }
        do { try await client.shutdown() } catch { logger.debug("http client shutdown", metadata: ["error": "\(error)"]) }
        logger.info("worker stopped")
    }

    // MARK: Discovery

    func discoveryLoop() async {
        var lastErrors: [String: String] = [:]
        while !Task.isCancelled {
            for backend in options.discoveryBackends {
                do {
                    let names = try await ModelDiscovery.discover(backend: backend, client: client,
                                                                  timeout: options.discoveryTimeout, logger: logger)
                    if catalog.update(backend: backend, models: names) {
                        logger.info("models discovered", metadata: ["backend": "\(backend)", "models": "\(names)"])
                    }
                    lastErrors[backend] = nil
                } catch {
                    if Task.isCancelled { return }
                    // Keep the models last seen: a backend restart should not unregister them.
                    let text = "\(error)"
                    if lastErrors[backend] != text {
                        logger.warning("model discovery failed", metadata: ["backend": "\(backend)", "error": "\(text)"])
                    }
                    lastErrors[backend] = text
                }
            }
            let interval = catalog.snapshot.models.isEmpty ? min(options.discoveryRetryInterval, options.discoveryInterval)
                                                           : options.discoveryInterval
            try? await Task.sleep(for: interval)
        }
    }

    // MARK: Connection loop

    func updateStatus(_ body: (inout WorkerStatus) -> Void) { statusState.withLock { body(&$0) } }

    func connectLoop() async {
        var backoff = ReconnectBackoff(base: options.reconnectDelay, cap: options.reconnectDelayCap)
        var waitingLogged = false
        while !Task.isCancelled, !shutdown.isSet {
            let snapshot = catalog.snapshot
            if snapshot.models.isEmpty {
                if !waitingLogged {
                    logger.info("waiting for the backends to list at least one model before registering")
                    waitingLogged = true
                }
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await self.catalog.changes.wait(after: snapshot.version) }
                    group.addTask { await self.shutdown.wait() }
                    await group.next()
                    group.cancelAll()
                }
                continue
            }
            let outcome = await runConnection()
            updateStatus {
                $0.connected = false
                $0.registered = false
                $0.lastError = outcome.reason
            }
            if shutdown.isSet || Task.isCancelled { break }
            if let since = outcome.registeredAt, since.duration(to: .now) >= options.stableConnectionDuration {
                backoff.reset()
            }
            if outcome.persistentRejection { backoff.saturate() }
            options.metrics.reconnects.increment()
            let delay = backoff.nextDelay()
            logger.warning("hub connection ended; reconnecting", metadata: [
                "reason": "\(outcome.reason)", "delay_ms": "\(Int(delay.seconds * 1000))",
            ])
            await sleep(for: delay, unlessSet: shutdown)
        }
    }

    struct ConnectionOutcome: Sendable {
        var reason: String
        var registeredAt: ContinuousClock.Instant?
        var persistentRejection = false
    }

    /// One connection: dial, handshake, serve until it ends. Never throws.
    func runConnection() async -> ConnectionOutcome {
        updateStatus { $0.connectAttempts += 1 }
        let url = WorkerOptions.hubURL(options.config.gatewayURL)
        var dial = TunnelDialOptions(url: url)
        dial.headers = [("Authorization", "Bearer \(options.config.token)")]
        dial.offerLZ4 = options.offerLZ4
        dial.offerSmux2 = true  // per-stream windows with toki hubs; original hubs select nothing (v1)
        dial.tls = options.effectiveTLS
        dial.connectTimeout = options.dialTimeout
        let tunnel: ClientTunnel
        let session: MuxSession
        do {
            tunnel = try await ClientTunnel.connect(dial, logger: logger)
            var mux = SmuxConfiguration.tokilake
            mux.version = tunnel.features.smuxVersion
            session = try MuxSession(role: .client, configuration: mux, logger: logger)
        } catch let error as NIOSSLError {
            // Usually a hub whose certificate comes from a private CA the worker was not told of.
            return ConnectionOutcome(reason: "dial \(url): TLS handshake failed, the hub's certificate was not accepted (trust its CA with --ca-file): \(error)")
        } catch {
            return ConnectionOutcome(reason: "dial \(url): \(error)")
        }
        updateStatus { $0.connected = true }
        logger.debug("tunnel connected", metadata: ["url": "\(tunnel.url)", "lz4": "\(tunnel.lz4)", "smux": "\(tunnel.features.smuxVersion)"])
        return await withTaskGroup(of: ConnectionOutcome?.self) { group in
            group.addTask {
                do { try await tunnel.run(session) } catch {
                    self.logger.debug("tunnel transport ended", metadata: ["error": "\(error)"])
                }
                session.close()
                return nil
            }
            group.addTask {
                let outcome = await WorkerConnection(service: self, session: session).run()
                session.close()
                return outcome
            }
            var result = ConnectionOutcome(reason: "connection closed")
            for await outcome in group {
                if let outcome { result = outcome }
            }
            return result
        }
    }
}

// MARK: - One registered connection

/// Why a registered connection ended.
struct ConnectionEnd: Error, CustomStringConvertible {
    var description: String
    var persistent = false
    init(_ description: String, persistent: Bool = false) {
        self.description = description
        self.persistent = persistent
    }
}

struct WorkerConnection: Sendable {
    let service: WorkerService
    let session: MuxSession

    var logger: Logger { service.logger }
    var options: WorkerOptions { service.options }
    var namespace: String { options.config.namespace }

    func run() async -> WorkerService.ConnectionOutcome {
        let channel: ControlChannel
        do {
            channel = ControlChannel(try session.openStream())
        } catch {
            return .init(reason: "handshake: \(error)", registeredAt: nil)
        }
        // The control stream's one writer runs for the whole connection (handshake included).
        return await withTaskGroup(of: WorkerService.ConnectionOutcome?.self) { group in
            group.addTask {
                do {
                    try await channel.runWriter()
                    return nil
                } catch {
                    session.close()
                    return .init(reason: "control stream write failed: \(error)", registeredAt: nil)
                }
            }
            group.addTask {
                let outcome = await handshakeAndServe(channel)
                channel.finish()
                session.close()  // (already closed after serving) fails a write stuck on a full window
                return outcome
            }
            var result: WorkerService.ConnectionOutcome?
            for await outcome in group where result == nil { result = outcome }
            return result ?? .init(reason: "connection ended", registeredAt: nil)
        }
    }

    func handshakeAndServe(_ channel: ControlChannel) async -> WorkerService.ConnectionOutcome {
        let registeredAt: ContinuousClock.Instant
        var snapshot = service.catalog.snapshot
        do {
            let register = ControlMessage.register(
                requestID: TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.register),
                RegisterPayload(namespace: namespace, nodeName: nonEmpty(options.config.nodeName),
                                group: nonEmpty(options.config.group), models: snapshot.models,
                                hardwareInfo: hardwareInfo(snapshot), backendType: snapshot.config.controlPlaneBackendType))
            let ack = try await exchange(register, action: "register", channel: channel)
            service.updateStatus {
                $0.registered = true
                $0.registrations += 1
                $0.workerID = ack.workerID
                $0.channelID = ack.channelID
            }
            registeredAt = .now
            logger.info("registered with the hub", metadata: [
                "namespace": "\(namespace)", "worker_id": "\(ack.workerID.map(String.init) ?? "-")",
                "channel_id": "\(ack.channelID.map(String.init) ?? "-")", "models": "\(snapshot.models)",
            ])
            service.onRegistered()
            snapshot = service.catalog.snapshot
            _ = try await exchange(modelsSync(snapshot), action: "models_sync", channel: channel)
        } catch let end as ConnectionEnd {
            return .init(reason: end.description, registeredAt: nil, persistentRejection: end.persistent)
        } catch {
            return .init(reason: "handshake: \(error)", registeredAt: nil)
        }

        let end = await serve(channel: channel, syncedVersion: snapshot.version)
        return .init(reason: end.description, registeredAt: registeredAt, persistentRejection: end.persistent)
    }

    func nonEmpty(_ s: String) -> String? { s.isEmpty ? nil : s }

    func hardwareInfo(_ snapshot: ModelSnapshot) -> RawJSON {
        RawJSON(snapshot.config.hardwareInfo(hostname: options.hostname, numCPU: ProcessInfo.processInfo.activeProcessorCount))
    }

    func modelsSync(_ snapshot: ModelSnapshot) -> ControlMessage {
        ControlMessage.modelsSync(
            requestID: TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.modelsSync),
            ModelsSyncPayload(group: nonEmpty(options.config.group), models: snapshot.models,
                              hardwareInfo: hardwareInfo(snapshot), backendType: snapshot.config.controlPlaneBackendType))
    }

    /// Sends `message` and waits (≤ ackTimeout) for the ack or error echoing its request id.
    func exchange(_ message: ControlMessage, action: String, channel: ControlChannel) async throws -> AckPayload {
        channel.send(message)
        let requestID = message.requestID ?? ""
        let reply = try await withTimeLimit(options.ackTimeout, onTimeout: { session.close() }) { () async throws -> ControlMessage in
            while true {
                let reply: ControlMessage
                do {
                    guard let received = try await channel.receive() else { break }
                    reply = received.message
                } catch let malformed as ControlChannel.Malformed {
                    throw ConnectionEnd("malformed control message from the hub: \(malformed)")
                }
                if reply.type == .error, reply.requestID == nil || reply.requestID == "" || reply.requestID == requestID {
                    return reply
                }
                if reply.type == .ack, reply.requestID == requestID { return reply }
                // Anything else (other acks, early cancels) is skipped, as in Go.
            }
            throw ConnectionEnd("the hub closed the control stream during \(action)")
        }
        guard let reply else { throw ConnectionEnd("no \(action) ack within \(options.ackTimeout)") }
        if reply.type == .error {
            let code = reply.error?.code ?? ""
            let text = reply.error?.message ?? ""
            let persistent = Self.isPersistentRejection(code: code, message: text)
            logger.error("the hub rejected \(action): \(text)", metadata: ["code": "\(code)", "namespace": "\(namespace)"])
            throw ConnectionEnd("\(action) rejected: \(text)" + (code.isEmpty ? "" : " (\(code))"), persistent: persistent)
        }
        return reply.ack ?? AckPayload()
    }

    /// Rejections that retrying soon will not fix: someone else's namespace, a group the token
    /// may not use. The worker keeps trying, at the capped back-off.
    static func isPersistentRejection(code: String, message: String) -> Bool {
        if code == TunnelProtocol.HubErrorCode.namespaceNotOwned || code == TunnelProtocol.HubErrorCode.groupNotAuthorized { return true }
        let m = message.lowercased()
        return m.contains("owned by another user") || m.contains("not authorized")
    }

    // MARK: Steady state

    func serve(channel: ControlChannel, syncedVersion: Int) async -> ConnectionEnd {
        let send: @Sendable (ControlMessage) -> Void = { message in
            if !channel.send(message) {
                service.logger.warning("control stream backlog full; dropping a \(message.type) message")
            }
        }

        return await withTaskGroup(of: ConnectionEnd.self) { group in
            // (The control stream's writer runs beside this group, for the whole connection.)
            // Heartbeats: the first one an interval after registering, like Go's ticker.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: options.heartbeatInterval)
                    if Task.isCancelled { break }
                    let snapshot = service.catalog.snapshot
                    send(.heartbeat(
                        requestID: TunnelProtocol.makeRequestID(namespace: namespace, prefix: TunnelProtocol.RequestIDPrefix.heartbeat),
                        HeartbeatPayload(nodeName: nonEmpty(options.config.nodeName), hardwareInfo: hardwareInfo(snapshot),
                                         currentModels: snapshot.models)))
                }
                return ConnectionEnd("heartbeat stopped")
            }
            // Control reader, and liveness: the hub answers every heartbeat, so a control stream
            // silent for the limit means a dead link. Each line received re-arms the deadline.
            group.addTask {
                let limit = options.effectiveLivenessTimeout
                do {
                    while true {
                        guard let received = try await withTimeLimit(limit, { try await channel.receive() }) else {
                            return ConnectionEnd("nothing received on the control stream for \(limit); link presumed dead")
                        }
                        guard let (message, _) = received else { return ConnectionEnd("the hub closed the control stream") }
                        if let end = handle(message, send: send) { return end }
                    }
                } catch let malformed as ControlChannel.Malformed {
                    return ConnectionEnd("malformed control message from the hub: \(malformed)")
                } catch {
                    return ConnectionEnd("control stream read failed: \(error)")
                }
            }
            // Model changes → models_sync (the ack is logged by the reader).
            group.addTask {
                var synced = syncedVersion
                while !Task.isCancelled {
                    await service.catalog.changes.wait(after: synced)
                    if Task.isCancelled { break }
                    let snapshot = service.catalog.snapshot
                    synced = snapshot.version
                    guard !snapshot.models.isEmpty else {
                        logger.warning("backends list no models; keeping the hub's list as it is")
                        continue
                    }
                    logger.info("models changed; syncing", metadata: ["models": "\(snapshot.models)"])
                    send(modelsSync(snapshot))
                }
                return ConnectionEnd("model sync stopped")
            }
            // Data streams, and the drain on graceful shutdown.
            group.addTask { await acceptLoop() }
            group.addTask { await drainOnShutdown() }

            let end = await group.next() ?? ConnectionEnd("connection ended")
            // Close before cancelling: it fails every pending accept/read/write of this session at once.
            session.close()
            group.cancelAll()
            return end
        }
    }

    /// Handles one steady-state control message; returns a reason to reconnect, or nil.
    func handle(_ message: ControlMessage, send: @Sendable (ControlMessage) -> Void) -> ConnectionEnd? {
        switch message.type {
        case .ack:
            logger.debug("hub ack", metadata: ["request_id": "\(message.requestID ?? "")", "message": "\(message.ack?.message ?? "")"])
        case .cancelRequest:
            guard let payload = message.cancelRequest else { return nil }
            let found = service.registry.cancel(requestID: payload.targetRequestID)
            logger.info("hub cancelled a request", metadata: [
                "request_id": "\(payload.targetRequestID)", "reason": "\(payload.reason ?? "")", "found": "\(found)",
            ])
            send(.ack(requestID: message.requestID,
                      message: found ? TunnelProtocol.AckMessage.cancelOK : TunnelProtocol.AckMessage.cancelNoop,
                      namespace: namespace))
        case .error:
            let code = message.error?.code ?? ""
            let text = message.error?.message ?? ""
            logger.error("the hub reported an error: \(text)", metadata: ["code": "\(code)", "request_id": "\(message.requestID ?? "")"])
            return ConnectionEnd("hub error: \(text)" + (code.isEmpty ? "" : " (\(code))"),
                                 persistent: Self.isPersistentRejection(code: code, message: text))
        default:
            logger.debug("ignoring control message", metadata: ["type": "\(message.type)"])
        }
        return nil
    }

    /// Accepts data streams until the session ends. After a graceful-shutdown request new
    /// streams are refused with an error line.
    func acceptLoop() async -> ConnectionEnd {
        let relay = RequestRelay(service: service)
        return await withDiscardingTaskGroup { requests -> ConnectionEnd in
            while true {
                let stream: MuxStream
                do { stream = try await session.accept() } catch {
                    return ConnectionEnd("session ended: \(error)")
                }
                let refusal: String?
                var slot: (token: UInt64, cancel: AsyncEvent)?
                if service.shutdown.isSet {
                    refusal = "worker shutting down"
                } else if let reserved = service.registry.reserve() {
                    slot = reserved
                    refusal = nil
                } else {
                    refusal = "worker busy: \(service.registry.limit) requests in flight"
                    logger.warning("too many concurrent requests; refusing a data stream", metadata: ["limit": "\(service.registry.limit)"])
                }
                if let slot {
                    requests.addTask { await relay.serve(stream, token: slot.token, cancel: slot.cancel) }
                } else if let refusal {
                    var out = ByteBuffer()
                    TunnelResponse.writeErrorLine(requestID: "", code: TunnelProtocol.WorkerErrorCode.localRequestFailed,
                                                  message: refusal, into: &out)
                    requests.addTask {
                        try? await stream.write(out)
                        stream.close()
                    }
                }
            }
        }
    }

    /// On graceful shutdown: waits for the in-flight requests (bounded), then ends the connection.
    func drainOnShutdown() async -> ConnectionEnd {
        await service.shutdown.wait()
        if Task.isCancelled { return ConnectionEnd("drain watcher stopped") }
        logger.info("graceful shutdown: no new requests; waiting for in-flight ones",
                    metadata: ["in_flight": "\(service.registry.count)", "limit": "\(options.drainTimeout)"])
        let drained = await withTaskGroup(of: Bool.self) { wait in
            wait.addTask {
                await service.registry.waitUntilIdle()
                return !Task.isCancelled
            }
            wait.addTask {
                try? await Task.sleep(for: options.drainTimeout)
                return false
            }
            let first = await wait.next() ?? false
            wait.cancelAll()
            return first
        }
        if !drained {
            logger.warning("drain time limit reached; cancelling the remaining requests",
                           metadata: ["in_flight": "\(service.registry.count)"])
            service.registry.cancelAll()
        }
        // MuxSession.close() drops frames still queued: wait until the last eof lines and FINs
        // have reached the transport (bounded, in case the hub stopped reading). The hub still
        // reads what reached it after the link ends, as Go's smux does.
        let session = self.session
        _ = try? await withTimeLimit(.seconds(2), onTimeout: { session.close() }) { await session.flush() }
        return ConnectionEnd("graceful shutdown")
    }
}
