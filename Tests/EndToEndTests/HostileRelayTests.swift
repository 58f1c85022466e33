// A scripted relay that breaks the relay protocol against a real root hub: every bad
// announcement must be refused with its own error code on the wire (and a log line at the
// root), and nothing else may be disturbed: a direct worker keeps serving throughout.

import Foundation
import Logging
import NIOCore
import TestSupport
import Testing
import TokiMux
import TokiProtocol
import TokiTunnel

/// A raw relay link: WebSocket + smux with the relay role, and its control stream.
final class ScriptedRelay: Sendable {
    let session: MuxSession
    let control: ControlChannel
    let tasks = Locked<[Task<Void, Never>]>([])

    init(hub: HubProcess, token: String, nodeID: String) async throws {
        var options = TunnelDialOptions(url: hub.tunnelURL)
        options.headers = [("Authorization", "Bearer \(token)"), (TunnelProtocol.relayHeader, nodeID)]
        options.offerSmux2 = true
        var logger = Logger(label: "scripted-relay")
        logger.logLevel = .critical
        let tunnel = try await ClientTunnel.connect(options, logger: logger)
        #expect(tunnel.responseHeaders.first(name: TunnelProtocol.relayHeader) != nil, "a toki hub answers the relay role")
        var configuration = SmuxConfiguration.tokilake
        configuration.version = tunnel.features.smuxVersion
        configuration.keepAliveInterval = .seconds(5)
        configuration.keepAliveTimeout = .seconds(10)
        session = try MuxSession(role: .client, configuration: configuration, logger: logger)
        control = ControlChannel(try session.openStream())
        let (session, control) = (self.session, self.control)
        tasks.withLock {
            $0.append(Task { try? await tunnel.run(session); session.close() })
            $0.append(Task { try? await control.runWriter() })
        }
    }

    /// Sends one line (a message, or raw bytes) and returns the hub's next line, if any.
    func exchange(_ message: RelayMessage) async throws -> RelayMessage? {
        control.send(message)
        return try await control.receive(RelayMessage.self, includingTail: true)?.message
    }

    func exchange(raw: ByteBuffer) async throws -> RelayMessage? {
        try await control.stream.write(raw)
        return try await control.receive(RelayMessage.self, includingTail: true)?.message
    }

    func close() {
        session.close()
        for task in tasks.withLock({ $0 }) { task.cancel() }
    }
}

@Suite("a hostile relay against a real root hub", .serialized)
struct HostileRelayTests {
    typealias Kind = TunnelProtocol.RelayMessageType

    struct Setup {
        let hub: HubProcess
        let token: String
        let backend: StubBackend
        let worker: WorkerProcess

        static func start() async throws -> Setup {
            let hub = try await HubProcess()
            let token = try await hub.createToken(user: "alice")
            let backend = try await StubBackend(models: ["steady-model"])
            let worker = try await WorkerProcess(.toki, hub: hub, token: token, backend: backend, namespace: "steady-gpu", models: ["steady-model"])
            try await hub.waitForModel("steady-model", token: token)
            return Setup(hub: hub, token: token, backend: backend, worker: worker)
        }

        /// A scripted relay linked to the hub with this setup's token, past its hello.
        func helloedRelay(_ nodeID: String) async throws -> ScriptedRelay {
            let relay = try await ScriptedRelay(hub: hub, token: token, nodeID: nodeID)
            let hello = try await relay.exchange(RelayMessage(type: Kind.hello, requestID: "h", node: RelayNode(id: nodeID)))
            #expect(hello?.type == .ack && hello?.node?.path?.count == 1)
            return relay
        }

        /// The direct worker still answers.
        func undisturbed() async throws {
            let reply = try await HTTP.post(hub.url + "/v1/chat/completions", token: token,
                                            body: #"{"model":"steady-model","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(reply.status == 200, "\(reply.body)")
        }

        func stop() async {
            await worker.stop()
            await backend.stop()
            await hub.stop()
        }
    }

    @Test("announcements that are not allowed each get their own error; the link and the hub carry on")
    func refusedAnnouncements() async throws {
        let s = try await Setup.start()
        defer { Task { await s.stop() } }
        let relay = try await s.helloedRelay("hostile")
        defer { relay.close() }

        // An update and a departure for namespaces this relay never announced.
        let update = try await relay.exchange(RelayMessage(type: Kind.workerUpdate, requestID: "u",
                                                           worker: RelayWorker(namespace: "steady-gpu", models: ["stolen"])))
        #expect(update?.error?.code == TunnelProtocol.RelayErrorCode.unknownNamespace, "\(String(describing: update))")
        #expect(update?.requestID == "u")
        let down = try await relay.exchange(RelayMessage(type: Kind.workerDown, requestID: "d", namespace: "steady-gpu"))
        #expect(down?.error?.code == TunnelProtocol.RelayErrorCode.unknownNamespace)
        // A worker with a token the root does not know.
        let badToken = try await relay.exchange(RelayMessage(type: Kind.workerUp, requestID: "t", token: "sk-toki-forged",
                                                             worker: RelayWorker(namespace: "x", models: ["m"])))
        #expect(badToken?.error?.code == TunnelProtocol.RelayErrorCode.authFailed)
        // Too many models, no models, an empty namespace.
        let many = try await relay.exchange(RelayMessage(type: Kind.workerUp, requestID: "m", token: s.token,
                                                         worker: RelayWorker(namespace: "big", models: (0..<2000).map { "m\($0)" })))
        #expect(many?.error?.code == TunnelProtocol.HubErrorCode.registerFailed)
        #expect(many?.error?.message.contains("at most") == true)
        let none = try await relay.exchange(RelayMessage(type: Kind.workerUp, requestID: "n", token: s.token,
                                                         worker: RelayWorker(namespace: "empty", models: [])))
        #expect(none?.error?.code == TunnelProtocol.HubErrorCode.registerFailed)
        let nameless = try await relay.exchange(RelayMessage(type: Kind.workerUp, requestID: "e", token: s.token,
                                                             worker: RelayWorker(namespace: "  ", models: ["m"])))
        #expect(nameless?.error?.code == TunnelProtocol.HubErrorCode.registerFailed)
        // A type the root does not know.
        let unknown = try await relay.exchange(RelayMessage(type: "teleport", requestID: "x"))
        #expect(unknown?.error?.code == TunnelProtocol.HubErrorCode.unsupportedMessageType)
        // Nothing above registered anything.
        let (_, workers) = try await HTTP.get(s.hub.url + "/admin/workers", token: try #require(s.hub.adminToken))
        #expect(!workers.contains("\"big\"") && !workers.contains("\"empty\"") && !workers.contains("\"x\""))
        #expect(s.hub.process.stderr.contains("relay_unknown_namespace"))
        try await s.undisturbed()
    }

    @Test("an announcement numbered out of order ends the relay's link with relay_sequence_gap and takes its workers offline")
    func sequenceGap() async throws {
        let s = try await Setup.start()
        defer { Task { await s.stop() } }
        let relay = try await s.helloedRelay("gappy")
        defer { relay.close() }
        let up = try await relay.exchange(RelayMessage(type: Kind.workerUp, requestID: "1", token: s.token,
                                                       worker: RelayWorker(namespace: "gap-gpu", models: ["gap-model"]), seq: 1))
        #expect(up?.type == .ack, "\(String(describing: up))")
        let update = try await relay.exchange(RelayMessage(type: Kind.workerUpdate, requestID: "2",
                                                           worker: RelayWorker(namespace: "gap-gpu", models: ["gap-model", "more"]), seq: 2))
        #expect(update?.type == .ack, "\(String(describing: update))")
        try await s.hub.waitForWorkers(["gap-gpu"])
        // Number 3 never arrives.
        let skipped = try await relay.exchange(RelayMessage(type: Kind.workerUpdate, requestID: "4",
                                                            worker: RelayWorker(namespace: "gap-gpu", models: ["gap-model"]), seq: 4))
        #expect(skipped?.error?.code == TunnelProtocol.RelayErrorCode.sequenceGap, "\(String(describing: skipped))")
        #expect(skipped?.error?.message.contains("4 after 2") == true)
        // The link ended with it: the subtree it announced is offline at the root.
        let deadline = ContinuousClock.now + .seconds(10)
        while try await s.hub.workers()["gap-gpu"] != nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await s.hub.workers()["gap-gpu"] == nil)
        try await s.undisturbed()
    }

    @Test("a line that is not a relay message ends that relay's link with an error; nothing else is disturbed")
    func malformedLine() async throws {
        let s = try await Setup.start()
        defer { Task { await s.stop() } }
        let relay = try await s.helloedRelay("garbage")
        defer { relay.close() }
        let reply = try await relay.exchange(raw: ByteBuffer(string: "{\"type\":\"worker_up\",\"worker\":{\"namespace\":\n"))
        #expect(reply?.error?.code == TunnelProtocol.HubErrorCode.unsupportedMessageType, "\(String(describing: reply))")
        #expect(reply?.error?.message.contains("invalid relay message") == true)
        try await s.undisturbed()
    }

    @Test("a relay whose first line is not hello is refused")
    func noHello() async throws {
        let s = try await Setup.start()
        defer { Task { await s.stop() } }
        let relay = try await ScriptedRelay(hub: s.hub, token: s.token, nodeID: "rude")
        defer { relay.close() }
        let reply = try await relay.exchange(RelayMessage(type: Kind.workerDown, namespace: "steady-gpu"))
        #expect(reply?.error?.code == TunnelProtocol.HubErrorCode.unsupportedMessageType)
        try await s.undisturbed()
    }

    @Test("a relay with a token the root does not accept is refused at the upgrade and says so")
    func badRelayToken() async throws {
        let s = try await Setup.start()
        defer { Task { await s.stop() } }
        let relay = try await RelayProcess(upstream: s.hub.url, token: "sk-toki-not-a-token", nodeID: "stranger")
        defer { Task { await relay.stop() } }
        try await relay.waitForLog("upstream link down")
        #expect(relay.process.stderr.contains("refused") || relay.process.stderr.contains("401"), "\(relay.process.stderr.suffix(1000))")
        try await s.undisturbed()
    }
}
