import Foundation
import Logging
import NIOCore
import NIOSSL
import Synchronization
import TokiHub
import TokiMux
import TokiProtocol
import TokiTunnel

/// Why the parent refused something a relay asked for.
struct UpstreamRefusal: Error, CustomStringConvertible {
    var code: String
    var message: String
    var description: String { "\(code): \(message)" }
}

/// A relay's link to its parent: dialled like a worker (so it works from behind NAT), relay
/// role, LZ4 and smux v2 asked for at the upgrade. Over its control stream the relay asks the
/// parent to check tokens and announces its subtree (a full snapshot after every connect, then
/// each change); over the data streams the parent opens it splices bytes to the workers.
/// Reconnects with jittered back-off; workers stay connected to the relay meanwhile.
final class UpstreamLink: Sendable {
    struct Options: Sendable {
        var url: String
        var token: String
        var nodeID: String
        var offerLZ4 = true
        var tls: TLSConfiguration?
        var reconnectDelay: Duration = .seconds(1)
        var reconnectDelayCap: Duration = .seconds(30)
        var requestTimeout: Duration = .seconds(15)
        /// smux keepalive: a NOP every interval whatever the traffic; the link is dropped when
        /// nothing arrived for two intervals (a half-open link is noticed that fast).
        var keepAlive: Duration = .seconds(5)
        /// The token a hub exports its workers under (`toki hub --upstream`); nil at a relay,
        /// where each worker is announced with its own token.
        var exportToken: String?
        /// How often in-flight counts that changed are sent up (coalesced per worker).
        var loadInterval: Duration = .milliseconds(250)
        /// How often the link's round trip is measured (`ping`).
        var pingInterval: Duration = .seconds(5)
    }

    /// Data streams being spliced to workers right now (requests in flight through this node);
    /// a draining relay waits for them.
    let activeSplices = Atomic<Int>(0)

    /// One connected link.
    final class Connected: Sendable {
        let session: MuxSession
        let control: ControlChannel
        let parentPath: [String]
        let pending = Mutex<[String: CheckedContinuation<RelayMessage, any Error>]>([:])

        init(session: MuxSession, control: ControlChannel, parentPath: [String]) {
            self.session = session
            self.control = control
            self.parentPath = parentPath
        }

        /// The last announcement number sent on this link.
        private let sequence = Mutex(0)

        /// Sends a line; an announcement gets the link's next number under the same lock as
        /// its enqueueing, so the numbers go out in order whichever task sends.
        @discardableResult
        func send(_ message: RelayMessage) -> Bool {
            guard message.isAnnouncement else { return control.send(message) }
            return sequence.withLock { last in
                last += 1
                var numbered = message
                numbered.seq = last
                return control.send(numbered)
            }
        }

        func failAll(_ error: any Error) {
            let waiting = pending.withLock { pending in
                defer { pending = [:] }
                return Array(pending.values)
            }
            for continuation in waiting { continuation.resume(throwing: error) }
        }
    }

    struct Status: Sendable {
        var connected = false
        var reconnects = 0
        var lastError: String?
        var parent: String?
        var lz4 = false
        var smux = 1
        var since: ContinuousClock.Instant?
        /// The last `ping` round trip.
        var rtt: Duration?
        /// This connection's bytes (LZ4 ratio).
        var traffic: LinkTraffic?
    }

    /// The link as `/admin/topology` shows it.
    var topology: Topology.Upstream {
        let status = self.status.withLock { $0 }
        var upstream = Topology.Upstream(url: TunnelDialOptions.hubURL(options.url), state: status.connected ? "connected" : "reconnecting", path: path)
        upstream.reconnects = status.reconnects
        upstream.lastError = status.lastError
        if status.connected {
            (upstream.parent, upstream.lz4, upstream.smux) = (status.parent, status.lz4, status.smux)
            upstream.connectedSeconds = status.since.map { Int($0.duration(to: .now).components.seconds) }
            upstream.rttMilliseconds = status.rtt.map { Double($0.components.seconds) * 1000 + Double($0.components.attoseconds) / 1e15 }
            if let totals = status.traffic?.totals, totals.wireIn + totals.wireOut > 0 {
                upstream.lz4Ratio = totals.compressionRatio
                (upstream.wireBytes, upstream.plainBytes) = (totals.wireIn + totals.wireOut, totals.plainIn + totals.plainOut)
            }
        }
        return upstream
    }

    let options: Options
    let registry: WorkerRegistry
    let logger: Logger
    private let current = Mutex<Connected?>(nil)
    let status = Mutex(Status())
    /// What a `revoke` from the parent does here (set once the worker endpoint exists).
    let onRevoke = Mutex<@Sendable (Int64) -> Void>({ _ in })
    private let nextRequest = Atomic<UInt64>(0)

    init(options: Options, registry: WorkerRegistry, logger: Logger) {
        self.options = options
        self.registry = registry
        self.logger = logger
    }

    var isConnected: Bool { current.withLock { $0 != nil } }

    /// A worker's announcement: under its own token at a relay, the hub's when exporting.
    static func workerUp(_ worker: WorkerConnection, token: String, exporting: Bool = true) -> RelayMessage {
        RelayMessage(type: TunnelProtocol.RelayMessageType.workerUp, token: token,
                     worker: RelayWorker(namespace: worker.namespace, nodeName: worker.nodeName, models: worker.models.sorted(),
                                         group: exporting ? nil : GroupList.format(worker.groups), hardwareInfo: worker.hardwareInfo,
                                         via: worker.via))
    }

    /// This node's path from the root (itself last); just itself while disconnected.
    var path: [String] {
        (current.withLock { $0?.parentPath } ?? []) + [options.nodeID]
    }

    // MARK: Requests to the parent

    /// Sends `message` with a fresh request id and waits for the parent's ack (or its error,
    /// thrown as `UpstreamRefusal`). Throws at once while there is no link.
    func request(_ message: RelayMessage) async throws -> RelayMessage {
        guard let link = current.withLock({ $0 }) else {
            throw UpstreamRefusal(code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: "the relay is not connected to its parent")
        }
        return try await request(message, on: link)
    }

    private func request(_ message: RelayMessage, on link: Connected) async throws -> RelayMessage {
        let id = "\(options.nodeID):\(nextRequest.wrappingAdd(1, ordering: .relaxed).newValue)"
        let message = { var m = message; m.requestID = id; return m }()
        let timeout = options.requestTimeout
        let reply = try await withTimeLimit(timeout, onTimeout: {
            let waiter = link.pending.withLock { $0.removeValue(forKey: id) }
            waiter?.resume(throwing: UpstreamRefusal(code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: "the parent did not answer within \(timeout)"))
        }) {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<RelayMessage, any Error>) in
                link.pending.withLock { $0[id] = continuation }
                if !link.send(message) {
                    link.pending.withLock { $0.removeValue(forKey: id) }?.resume(throwing: UpstreamRefusal(
                        code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: "the link to the parent is closing"))
                }
            }
        }
        guard let reply else {
            throw UpstreamRefusal(code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: "the parent did not answer within \(timeout)")
        }
        if reply.type == .error {
            throw UpstreamRefusal(code: reply.error?.code ?? TunnelProtocol.HubErrorCode.registerFailed, message: reply.error?.message ?? "refused")
        }
        return reply
    }

    /// Sends a message that has no answer (worker_down); dropped while disconnected (the next
    /// snapshot says it anyway).
    func notify(_ message: RelayMessage) {
        current.withLock { $0 }?.send(message)
    }

    // MARK: The link's life

    /// Connects, serves, reconnects; until cancelled.
    func run() async {
        var backoff = ReconnectBackoff(base: options.reconnectDelay, cap: options.reconnectDelayCap)
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let reason = await runConnection()
            status.withLock { status in
                status.connected = false
                status.since = nil
                status.reconnects += 1
                status.lastError = reason
            }
            if Task.isCancelled { return }
            if started.duration(to: .now) > .seconds(30) { backoff.reset() }
            // A refusal of the link itself (loop, hop limit) will not go away soon.
            if reason.hasPrefix(Self.refusedPrefix) { backoff.saturate() }
            let delay = backoff.nextDelay()
            logger.warning("upstream link down; reconnecting", metadata: ["reason": "\(reason)", "delay": "\(delay)"])
            try? await Task.sleep(for: delay)
        }
    }

    /// One connection: dial, hello, snapshot, serve until it ends. Returns why it ended.
    private func runConnection() async -> String {
        var dial = TunnelDialOptions(url: TunnelDialOptions.hubURL(options.url))
        dial.headers = [("Authorization", "Bearer \(options.token)"), (TunnelProtocol.relayHeader, options.nodeID)]
        dial.offerLZ4 = options.offerLZ4
        dial.offerSmux2 = true
        dial.tls = options.tls
        let tunnel: ClientTunnel
        let session: MuxSession
        do {
            tunnel = try await ClientTunnel.connect(dial, logger: logger)
            guard tunnel.responseHeaders.first(name: TunnelProtocol.relayHeader) != nil else {
                return "the parent at \(dial.url) does not accept relays (no \(TunnelProtocol.relayHeader) in its answer: an original Tokilake?)"
            }
            var mux = SmuxConfiguration.tokilake
            mux.version = tunnel.features.smuxVersion
            mux.keepAliveInterval = options.keepAlive
            mux.keepAliveTimeout = options.keepAlive * 2
            session = try MuxSession(role: .client, configuration: mux, logger: logger)
        } catch {
            return "dial \(dial.url): \(error)"
        }
        let traffic = LinkTraffic()
        status.withLock { ($0.traffic, $0.rtt) = (traffic, nil) }
        // The control side's reason wins: it says what the parent said (a refusal), where the
        // transport only saw the link close.
        enum Ended: Sendable { case transport(String), control(String) }
        return await withTaskGroup(of: Ended.self) { group in
            group.addTask {
                do { try await tunnel.run(session, traffic: traffic) } catch { return .transport("transport: \(error)") }
                return .transport("the parent closed the link")
            }
            group.addTask {
                defer { session.close() }
                return .control(await self.serve(session, lz4: tunnel.features.lz4))
            }
            var reasons: [String] = []
            for await ended in group {
                session.close()
                switch ended {
                case .control(let reason) where !reason.isEmpty: reasons.insert(reason, at: 0)
                case .transport(let reason): reasons.append(reason)
                default: break
                }
            }
            return reasons.first ?? "connection closed"
        }
    }

    static let refusedPrefix = "the parent refused the link: "

    private func serve(_ session: MuxSession, lz4: Bool) async -> String {
        let control: ControlChannel
        let parentPath: [String]
        do {
            control = ControlChannel(try session.openStream())
            async let _ = try? control.runWriter()
            // hello: read directly (nothing else is in flight yet).
            control.send(RelayMessage(type: TunnelProtocol.RelayMessageType.hello, requestID: "hello",
                                      node: RelayNode(id: options.nodeID)))
            guard let (reply, _) = try await control.receive(RelayMessage.self, includingTail: false) else { return "the parent closed the control stream" }
            guard reply.type == .ack, let parent = reply.node else {
                return "\(Self.refusedPrefix)\(reply.error?.code ?? "-"): \(reply.error?.message ?? "no answer to hello")"
            }
            parentPath = parent.path ?? [parent.id]
            // The parent's own path may run through this node (two relays dialling each other
            // while both were cut off): that link would be a loop.
            if parentPath.contains(options.nodeID) {
                return "\(Self.refusedPrefix)\(TunnelProtocol.RelayErrorCode.loop): this node (\(options.nodeID)) is on its parent's path to the root (\(parentPath.joined(separator: " <- ")))"
            }
            let link = Connected(session: session, control: control, parentPath: parentPath)
            current.withLock { $0 = link }
            status.withLock { status in
                status.connected = true
                status.parent = parent.id
                status.lz4 = lz4
                status.smux = Int(session.configuration.version)
                status.since = .now
            }
            logger.notice("upstream link up", metadata: ["parent": "\(parent.id)", "path": "\(parentPath + [options.nodeID])",
                                                         "lz4": "\(lz4)", "smux": "\(session.configuration.version)"])
            defer {
                current.withLock { if $0 === link { $0 = nil } }
                link.failAll(UpstreamRefusal(code: TunnelProtocol.RelayErrorCode.upstreamUnavailable, message: "the link to the parent went down"))
                control.finish()
            }
            return await withTaskGroup(of: String.self) { group in
                group.addTask { await self.readControl(link) }
                group.addTask { await self.acceptStreams(link) }
                group.addTask { await self.announceSnapshot(on: link); return "" }
                group.addTask { await self.announceLoads(on: link); return "" }
                group.addTask { await self.measureRoundTrips(on: link); return "" }
                var reason = ""
                for await ended in group where !ended.isEmpty {
                    reason = ended
                    group.cancelAll()
                    session.close()
                }
                return reason
            }
        } catch {
            return "control stream: \(error)"
        }
    }

    /// Acks and errors go to their waiting requests; `cancel` to the worker.
    private func readControl(_ link: Connected) async -> String {
        do {
            while let (message, _) = try await link.control.receive(RelayMessage.self, includingTail: false) {
                switch message.type {
                case .ack, .error:
                    guard let id = message.requestID, let waiter = link.pending.withLock({ $0.removeValue(forKey: id) }) else {
                        if message.type == .error {
                            logger.warning("the parent reported an error", metadata: ["code": "\(message.error?.code ?? "")", "message": "\(message.error?.message ?? "")"])
                        }
                        continue
                    }
                    waiter.resume(returning: message)
                case TunnelProtocol.RelayMessageType.revoke:
                    guard let id = message.tokenID else { continue }
                    // An exporting hub's workers are under its own store's tokens: the root's
                    // ids mean nothing there (and a revoked export token closes this link).
                    if options.exportToken == nil { onRevoke.withLock { $0 }(Int64(id)) }
                case TunnelProtocol.RelayMessageType.cancel:
                    if let namespace = message.namespace, let target = message.cancelRequest?.targetRequestID {
                        registry.worker(namespace: namespace)?.cancel(requestID: target)
                    }
                default:
                    logger.warning("unexpected message from the parent", metadata: ["type": "\(message.type)"])
                }
            }
            return "the parent closed the control stream"
        } catch {
            return "control stream: \(error)"
        }
    }

    /// Data streams the parent opens: a `route` line, then bytes spliced to the worker.
    private func acceptStreams(_ link: Connected) async -> String {
        await withDiscardingTaskGroup { group in
            while true {
                guard let stream = try? await link.session.accept() else { return }
                group.addTask { await self.splice(stream) }
            }
        }
        return "the link to the parent ended"
    }

    private func splice(_ upstream: MuxStream) async {
        let reader = StreamLineReader(upstream, maxLineLength: TunnelProtocol.maxRouteLineLength)
        let route: RelayMessage
        do {
            guard let line = try await reader.nextLine(includingTail: false) else { return upstream.close() }
            route = try RelayMessage.decode(line: line)
        } catch {
            logger.warning("data stream from the parent without a valid route line; closed", metadata: ["error": "\(error)"])
            return upstream.close()
        }
        guard route.type == TunnelProtocol.RelayMessageType.route, let namespace = route.namespace,
              let worker = registry.worker(namespace: namespace) else {
            // Closing without a byte: the root retries the request elsewhere.
            logger.info("data stream for a worker not here; closed", metadata: ["namespace": "\(route.namespace ?? "")"])
            return upstream.close()
        }
        let downstream: MuxStream
        do { downstream = try await worker.openStream() } catch {
            logger.info("cannot open a stream to the worker", metadata: ["namespace": "\(namespace)", "error": "\(error)"])
            return upstream.close()
        }
        activeSplices.add(1, ordering: .relaxed)
        worker.beginSplice()
        defer {
            worker.endSplice()
            activeSplices.subtract(1, ordering: .relaxed)
        }
        await StreamSplice.run(upstream, downstream, first: reader.takeRemainder())
    }

    /// In-flight counts that changed, every `loadInterval` (so at most that often per worker,
    /// however busy). Every 20th round re-sends the non-zero ones: a count sent before its
    /// worker's admission was acked was dropped by the parent.
    private func announceLoads(on link: Connected) async {
        var sent: [String: Int] = [:]
        var round = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: options.loadInterval)
            round += 1
            let refresh = round % 20 == 0
            var now: [String: Int] = [:]
            for worker in registry.workers {
                let load = worker.load
                now[worker.namespace] = load
                if load != sent[worker.namespace] ?? 0 || (refresh && load != 0) {
                    link.control.send(RelayMessage(type: TunnelProtocol.RelayMessageType.workerLoad, namespace: worker.namespace, inFlight: load))
                }
            }
            sent = now
        }
    }

    /// The link's round trip: a `ping` the parent acks, every `pingInterval` (smux keepalive
    /// NOPs are not answered, so they cannot be timed).
    private func measureRoundTrips(on link: Connected) async {
        while !Task.isCancelled {
            let start = ContinuousClock.now
            if (try? await request(RelayMessage(type: TunnelProtocol.RelayMessageType.ping), on: link)) != nil {
                let rtt = start.duration(to: .now)
                status.withLock { $0.rtt = rtt }
            }
            try? await Task.sleep(for: options.pingInterval)
        }
    }

    /// After a (re)connect: every worker of the subtree, announced again.
    private func announceSnapshot(on link: Connected) async {
        let workers = registry.workers
        guard !workers.isEmpty else { return }
        var announced = 0
        for worker in workers {
            guard let token = options.exportToken ?? worker.principal.token else { continue }
            do {
                _ = try await request(Self.workerUp(worker, token: token, exporting: options.exportToken != nil), on: link)
                announced += 1
            } catch {
                logger.warning("the parent refused a worker on re-announcement", metadata: ["namespace": "\(worker.namespace)", "error": "\(error)"])
                // At a relay the root no longer admits it (token revoked, namespace taken
                // meanwhile): a direct worker is dropped here too, and its reconnect hears why.
                // (One behind a child relay is left to that relay: dropping the child link would
                // drop all; an exported worker stays served by its own hub.)
                if options.exportToken == nil, worker.via.isEmpty { worker.disconnect() }
            }
        }
        logger.info("subtree announced upstream", metadata: ["workers": "\(announced)"])
    }
}
