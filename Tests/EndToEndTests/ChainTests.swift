import AsyncHTTPClient
import Foundation
import TestSupport
import Testing

/// `toki relay-only` as a process, dialling `upstream` (a hub's or another relay's base URL).
final class RelayProcess: Sendable {
    let process: ChildProcess
    let port: Int
    let arguments: [String]
    var tunnelURL: String { "ws://127.0.0.1:\(port)/api/tokilake/connect" }
    var baseURL: String { "http://127.0.0.1:\(port)" }

    init(upstream: String, token: String, nodeID: String, port: Int = 0, environment: [String: String]? = nil) async throws {
        arguments = ["relay-only", "--upstream", upstream, "--token", token, "--node-id", nodeID]
        process = try ChildProcess(Products.path("toki"), arguments + ["--listen", "127.0.0.1:\(port)"], environment: environment,
                                   name: "toki relay \(nodeID)")
        let line = try await process.waitForLine(prefix: "LISTEN ")
        guard let bound = Int(line.split(separator: ":").last ?? "") else { throw ChildProcessError("bad line \(line)") }
        self.port = bound
    }

    /// Waits until the relay's log says `text` (e.g. that its upstream link is up).
    func waitForLog(_ text: String, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if process.stderr.contains(text) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError("relay never logged \(text.debugDescription); stderr: \(process.stderr.suffix(3000))")
    }

    func stop() async { await process.stop() }
}

/// root <- `toki hub --upstream` (node lab-hub, exporting under alice's token) <- a worker of
/// the child's own user carol. (Not waited for here: a failed wait must still stop them.)
struct LendingChain {
    let root: HubProcess
    let alice: String
    let child: HubProcess
    let carol: String
    let backend: StubBackend
    let worker: WorkerProcess

    init(_ kind: WorkerKind, namespace: String, model: String) async throws {
        root = try await HubProcess()
        alice = try await root.createToken(user: "alice")
        child = try await HubProcess(arguments: ["--upstream", root.url, "--token", alice, "--node-id", "lab-hub"])
        carol = try await child.createToken(user: "carol")
        backend = try await StubBackend(models: [model])
        worker = try await WorkerProcess(kind, hub: child, token: carol, backend: backend, namespace: namespace, models: [model])
    }

    func stop() async {
        await worker.stop()
        await backend.stop()
        await child.stop()
        await root.stop()
    }
}

/// Chains of hubs, as a user builds them from the README: the root hub, relays below it, and
/// workers (original Go Tokiame and toki) connected to the relays exactly as to a hub.
@Suite("chained relays: root <- relay(s) <- worker", .serialized)
struct ChainTests {
    static let chat = #"{"model":"MODEL","messages":[{"role":"user","content":"hi"}]}"#

    static func chat(_ hub: HubProcess, token: String, model: String, stream: Bool = false) async throws -> HTTP.Result {
        let body = chat.replacingOccurrences(of: "MODEL", with: model).replacingOccurrences(of: "{\"model\"", with: stream ? "{\"stream\":true,\"model\"" : "{\"model\"")
        return try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: body)
    }

    /// `toki status` as a user runs it.
    static func status(url: String, token: String) async throws -> String {
        let cli = try ChildProcess(Products.path("toki"), ["status", "--hub", url, "--token", token], name: "toki status")
        let code = try await cli.waitForExit()
        guard code == 0 else { throw ChildProcessError("toki status failed (\(code)): \(cli.stderr)") }
        return cli.stdoutLines.joined(separator: "\n")
    }

    @Test("root <- relay <- worker serves chat (streamed and not) and embeddings", arguments: [WorkerKind.goTokiame, .toki])
    func oneRelay(kind: WorkerKind) async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let relay = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        let backend = try await StubBackend(models: ["chain-model"])
        let worker = try await WorkerProcess(kind, tunnelURL: relay.tunnelURL, token: token, backend: backend, namespace: "gpu-behind-relay",
                                             models: ["chain-model"])
        defer { Task { await worker.stop(); await backend.stop(); await relay.stop(); await hub.stop() } }
        try await hub.waitForModel("chain-model", token: token)

        let plain = try await Self.chat(hub, token: token, model: "chain-model")
        #expect(plain.status == 200, "\(plain.body)")
        #expect(plain.json?["choices"] != nil)
        let streamed = try await Self.chat(hub, token: token, model: "chain-model", stream: true)
        #expect(streamed.status == 200)
        #expect(streamed.body.contains("data: [DONE]"), "\(streamed.body.suffix(300))")
        let embeddings = try await HTTP.post(hub.url + "/v1/embeddings", token: token, body: #"{"model":"chain-model","input":["a","b"]}"#)
        #expect(embeddings.status == 200, "\(embeddings.body)")
        #expect((embeddings.json?["data"] as? [Any])?.count == 2)
        // Owned and listed at the root like a direct worker.
        #expect(try await hub.workers()["gpu-behind-relay"] != nil)
    }

    @Test("root <- relay <- relay <- worker; a link that would close a loop is refused")
    func twoRelaysAndALoop() async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let a = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        try await a.waitForLog("upstream link up")
        let b = try await RelayProcess(upstream: a.baseURL, token: token, nodeID: "relay-b")
        let backend = try await StubBackend(models: ["deep-model"])
        let worker = try await WorkerProcess(.toki, tunnelURL: b.tunnelURL, token: token, backend: backend, namespace: "deep-gpu", models: ["deep-model"])
        defer { Task { await worker.stop(); await backend.stop(); await b.stop(); await a.stop(); await hub.stop() } }
        try await hub.waitForModel("deep-model", token: token)
        let reply = try await Self.chat(hub, token: token, model: "deep-model", stream: true)
        #expect(reply.status == 200)
        #expect(reply.body.contains("data: [DONE]"))

        // `toki status` at the root: the tree with both relays and the worker two hops down.
        let rootStatus = try await Self.status(url: hub.url, token: try #require(hub.adminToken))
        #expect(rootStatus.contains("relay relay-a"), "\(rootStatus)")
        #expect(rootStatus.contains("relay relay-b"), "\(rootStatus)")
        #expect(rootStatus.contains("worker deep-gpu") && rootStatus.contains("models deep-model") && rootStatus.contains("(2 relay hops)"), "\(rootStatus)")
        // At relay-b, with its own token: its upstream link and its worker.
        let relayStatus = try await Self.status(url: b.baseURL, token: token)
        #expect(relayStatus.contains("relay relay-b"), "\(relayStatus)")
        #expect(relayStatus.contains("connected, parent relay-a"), "\(relayStatus)")
        #expect(relayStatus.contains("lz4") && relayStatus.contains("smux v2"), "\(relayStatus)")
        #expect(relayStatus.contains("worker deep-gpu"), "\(relayStatus)")
        let refused = try await HTTP.get(b.baseURL + "/admin/topology", token: "sk-not-the-relays-token")
        #expect(refused.0 == 401)
        // /admin/workers says how the worker is reached.
        let (_, workers) = try await HTTP.get(hub.url + "/admin/workers", token: try #require(hub.adminToken))
        #expect(workers.contains(#""via":["relay-a","relay-b"]"#), "\(workers)")

        // A second node calling itself relay-a under relay-b would make a loop.
        let loop = try await RelayProcess(upstream: b.baseURL, token: token, nodeID: "relay-a")
        try await loop.waitForLog("relay_loop")
        await loop.stop()
        #expect(b.process.stderr.contains("the link would make a loop"))
        // Nothing else was disturbed.
        let after = try await Self.chat(hub, token: token, model: "deep-model")
        #expect(after.status == 200, "\(after.body)")
    }

    @Test("a killed relay takes its subtree offline at once; restarted, it is served again and a relay below it comes back by itself")
    func relayLostAndBack() async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let a = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        try await a.waitForLog("upstream link up")
        let b = try await RelayProcess(upstream: a.baseURL, token: token, nodeID: "relay-b")
        let backend = try await StubBackend(models: ["sub-model"])
        let worker = try await WorkerProcess(.goTokiame, tunnelURL: b.tunnelURL, token: token, backend: backend, namespace: "sub-gpu",
                                             models: ["sub-model"])
        defer { Task { await worker.stop(); await backend.stop(); await b.stop(); await hub.stop() } }
        try await hub.waitForModel("sub-model", token: token)

        a.process.kill9()
        _ = try await a.process.waitForExit()
        // The root dropped the subtree when the link closed, not after a heartbeat timeout:
        // the next request is refused as having no worker.
        try await hub.waitForModel("sub-model", token: token, present: false, timeout: .seconds(5))
        let gone = try await Self.chat(hub, token: token, model: "sub-model")
        #expect(gone.status == 503 || gone.status == 404, "\(gone.status) \(gone.body)")

        let again = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a", port: a.port)
        defer { Task { await again.stop() } }
        // relay-b reconnects and re-announces its worker; the worker itself never reconnected.
        try await hub.waitForModel("sub-model", token: token)
        let back = try await Self.chat(hub, token: token, model: "sub-model")
        #expect(back.status == 200, "\(back.body)")
        #expect(!worker.process.stderr.contains("reconnect"), "the worker behind relay-b should not have noticed")
    }

    @Test("a namespace owned by another user is refused through a relay, with the root's reason")
    func namespaceOwnership() async throws {
        let hub = try await HubProcess()
        let alice = try await hub.createToken(user: "alice")
        let bob = try await hub.createToken(user: "bob")
        let backend = try await StubBackend(models: ["owned-model"])
        // alice claims the namespace by registering directly once.
        let first = try await WorkerProcess(.toki, hub: hub, token: alice, backend: backend, namespace: "alices-gpu", models: ["owned-model"])
        try await hub.waitForModel("owned-model", token: alice)
        await first.stop()
        try await hub.waitForModel("owned-model", token: alice, present: false)

        let relay = try await RelayProcess(upstream: hub.url, token: bob, nodeID: "relay-bob")
        let intruder = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: bob, backend: backend, namespace: "alices-gpu",
                                               models: ["owned-model"])
        defer { Task { await intruder.stop(); await backend.stop(); await relay.stop(); await hub.stop() } }
        try await relay.waitForLog("namespace_not_owned")
        #expect(try await hub.workers()["alices-gpu"] == nil)
    }

    @Test("the root restarted: relays reconnect and re-announce, workers keep their relay link")
    func rootRestart() async throws {
        var hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let relay = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        let backend = try await StubBackend(models: ["restart-model"])
        let worker = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: token, backend: backend, namespace: "restart-gpu",
                                             models: ["restart-model"])
        try await hub.waitForModel("restart-model", token: token)
        hub = try await hub.restarted(sigkill: true)
        let restartedHub = hub
        defer { Task { await worker.stop(); await backend.stop(); await relay.stop(); await restartedHub.stop() } }
        try await hub.waitForModel("restart-model", token: token)
        let reply = try await Self.chat(hub, token: token, model: "restart-model")
        #expect(reply.status == 200, "\(reply.body)")
    }

    @Test("a frozen worker's namespace is taken over by its owner's new session at once, here through a relay")
    func takeoverThroughARelay() async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let backend = try await StubBackend(models: ["moving-model"])
        let stale = try await WorkerProcess(.toki, hub: hub, token: token, backend: backend, namespace: "moving-gpu", models: ["moving-model"])
        try await hub.waitForModel("moving-model", token: token)
        kill(stale.process.pid, SIGSTOP)  // frozen: its TCP link stays up, it answers nothing
        let relay = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        let fresh = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: token, backend: backend, namespace: "moving-gpu",
                                            models: ["moving-model"])
        defer { Task { stale.kill(); await fresh.stop(); await backend.stop(); await relay.stop(); await hub.stop() } }
        try await relay.waitForLog("worker registered")
        let reply = try await Self.chat(hub, token: token, model: "moving-model")
        #expect(reply.status == 200, "\(reply.body)")
        #expect(!fresh.process.stderr.contains("already connected"))
        #expect(hub.process.stderr.contains("replaced by a new one of the same owner"))
    }

    @Test("hub --upstream: its own users keep using it; upstream its workers serve under the account of its token")
    func hubLendsItsWorkers() async throws {
        let chain = try await LendingChain(.goTokiame, namespace: "lab-gpu", model: "lab-model")
        let (root, alice, child, carol, worker) = (chain.root, chain.alice, chain.child, chain.carol, chain.worker)
        defer { Task { await chain.stop() } }
        try await child.waitForModel("lab-model", token: carol)
        try await root.waitForModel("lab-model", token: alice)

        let local = try await Self.chat(child, token: carol, model: "lab-model")
        #expect(local.status == 200, "\(local.body)")
        let upstream = try await Self.chat(root, token: alice, model: "lab-model", stream: true)
        #expect(upstream.status == 200)
        #expect(upstream.body.contains("data: [DONE]"))
        let (_, workers) = try await HTTP.get(root.url + "/admin/workers", token: try #require(root.adminToken))
        #expect(workers.contains(#""via":["lab-hub"]"#), "\(workers)")
        // The child's own status shows its upstream link.
        let status = try await Self.status(url: child.url, token: try #require(child.adminToken))
        #expect(status.contains("hub lab-hub") && status.contains("connected"), "\(status)")

        // The worker leaves the child hub: it leaves the root too.
        await worker.stop()
        try await root.waitForModel("lab-model", token: alice, present: false)
    }

    @Test("a client that stops reading holds only its own stream across the relay link (smux v2); its cancel reaches the backend through the relay")
    func slowClientBehindARelay() async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let relay = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-a")
        let backend = try await StubBackend(models: ["busy-model"])
        let worker = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: token, backend: backend, namespace: "busy-gpu",
                                             models: ["busy-model"])
        defer { Task { await worker.stop(); await backend.stop(); await relay.stop(); await hub.stop() } }
        try await hub.waitForModel("busy-model", token: token)
        #expect(relay.process.stderr.contains("smux=2"), "the relay link negotiated per-stream windows")
        let before = try await backend.cancelledCount()
        // ~16 MB of SSE toward a client that reads nothing: far more than the stream windows and
        // the session budgets of both links together.
        var stalled: RawConnection? = try RawConnection(port: hub.port, receiveBuffer: 4096)
        try await stalled!.send(RawConnection.request("POST", "/v1/chat/completions", token: token,
                                                      body: #"{"model":"busy-model","stream":true,"stub_chunks":2000,"stub_chunk_bytes":8192}"#))
        try await Task.sleep(for: .seconds(1))
        // Meanwhile the same relay link and the same worker answer other clients.
        for i in 0..<5 {
            let r = try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: #"{"model":"busy-model","i":\#(i)}"#)
            #expect(r.status == 200, "request \(i) while a client stalls: \(r.status) \(r.body)")
        }
        let streamed = try await Self.chat(hub, token: token, model: "busy-model", stream: true)
        #expect(streamed.body.contains("data: [DONE]"))
        // The stalled client goes away: the cancel travels root -> relay -> worker -> backend.
        stalled = nil
        let deadline = ContinuousClock.now + .seconds(20)
        var cancelled = before
        while ContinuousClock.now < deadline, cancelled == before {
            try await Task.sleep(for: .milliseconds(200))
            cancelled = try await backend.cancelledCount()
        }
        #expect(cancelled > before, "the stalled client's request was never cancelled on the backend")
    }

    /// A worker's WebSocket upgrade at `port`, answered by whatever the node says (raw: the
    /// status line and body matter here, not a tunnel).
    static func upgrade(port: Int, token: String) async throws -> String {
        let connection = try RawConnection(port: port)
        try await connection.send(RawConnection.request("GET", "/api/tokilake/connect", token: token, headers: [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]))
        try await connection.read(until: { bytes in
            guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return false }
            // The refusals carry a small JSON body: wait for its closing brace too.
            return bytes.starts(with: Array("HTTP/1.1 101".utf8)) || bytes[end.upperBound...].contains(UInt8(ascii: "}"))
        }, timeout: .seconds(20))
        connection.close()
        return String(decoding: connection.received, as: UTF8.self)
    }

    @Test("a relay without its parent tells a new worker the upstream is unavailable (503, JSON), not that its token is bad")
    func upstreamUnavailableAtTheUpgrade() async throws {
        // Port 1 on loopback: nothing listens, the relay never gets a parent.
        let relay = try await RelayProcess(upstream: "http://127.0.0.1:1", token: "sk-toki-relay", nodeID: "orphan")
        defer { Task { await relay.stop() } }
        try await relay.waitForLog("upstream link down")
        let answer = try await Self.upgrade(port: relay.port, token: "sk-toki-0123456789012345678901234567890123456789")
        #expect(answer.hasPrefix("HTTP/1.1 503"), "\(answer)")
        #expect(answer.contains(#""code":"relay_upstream_unavailable""#), "\(answer)")
        #expect(answer.contains("upstream link is down"), "\(answer)")
        // No token at all is still the plain 401: nothing to check upstream.
        let connection = try RawConnection(port: relay.port)
        try await connection.send(RawConnection.request("GET", "/api/tokilake/connect", headers: [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]))
        try await connection.read(until: { $0.firstRange(of: Array("\r\n\r\n".utf8)) != nil })
        #expect(connection.received.starts(with: Array("HTTP/1.1 401".utf8)), "\(String(decoding: connection.received, as: UTF8.self))")
    }

    @Test("a token revoked at the root: its worker behind a relay leaves at once (not after the relay's 30 s cache) and cannot come back")
    func revocationReachesRelays() async throws {
        let hub = try await HubProcess()
        let admin = try #require(hub.adminToken)
        let relayToken = try await hub.createToken(user: "ops")
        let workerToken = try await hub.createToken(user: "alice")
        let relay = try await RelayProcess(upstream: hub.url, token: relayToken, nodeID: "relay-a")
        let backend = try await StubBackend(models: ["revoked-model"])
        let worker = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: workerToken, backend: backend, namespace: "revoked-gpu",
                                             models: ["revoked-model"])
        defer { Task { await worker.stop(); await backend.stop(); await relay.stop(); await hub.stop() } }
        try await hub.waitForWorkers(["revoked-gpu"])
        try await Self.revoke(workerToken, at: hub, admin: admin)
        let started = ContinuousClock.now

        // Gone at the root well within the relay's 30 s verdict cache.
        let deadline = started + .seconds(10)
        while try await hub.workers()["revoked-gpu"] != nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await hub.workers()["revoked-gpu"] == nil, "still registered at the root after the revocation")
        try await relay.waitForLog("token revoked", timeout: .seconds(10))
        // The relay forgot its cached verdict: the token is refused at the upgrade now.
        let again = try await Self.upgrade(port: relay.port, token: workerToken)
        #expect(again.hasPrefix("HTTP/1.1 401"), "\(again)")
        // The worker keeps retrying and never gets back in; the relay's own link stays up.
        try await Task.sleep(for: .seconds(2))
        #expect(try await hub.workers()["revoked-gpu"] == nil)
        #expect(!relay.process.stderr.contains("upstream link down"), "\(relay.process.stderr.suffix(2000))")

        // Revoking the relay's own token cuts its link at the root.
        try await Self.revoke(relayToken, at: hub, admin: admin)
        try await relay.waitForLog("upstream link down", timeout: .seconds(10))
    }

    /// Revokes `token` through the admin API (its id as its owner sees it).
    static func revoke(_ token: String, at hub: HubProcess, admin: String) async throws {
        let (_, mine) = try await HTTP.get(hub.url + "/api/user/tokens", token: token)
        let rows = try #require((try JSONSerialization.jsonObject(with: Data(mine.utf8)) as? [String: Any])?["data"] as? [[String: Any]])
        let id = try #require(rows.first?["id"] as? Int, "\(mine)")
        var request = HTTPClientRequest(url: hub.url + "/api/admin/tokens/\(id)")
        request.method = .DELETE
        request.headers.add(name: "Authorization", value: "Bearer \(admin)")
        let revoked = try await HTTP.client.execute(request, timeout: .seconds(30))
        #expect(revoked.status.code == 200)
    }

    /// `GET /admin/topology` as JSON.
    static func topology(url: String, token: String) async throws -> [String: Any] {
        let (status, body) = try await HTTP.get(url + "/admin/topology", token: token)
        guard status == 200, let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
            throw ChildProcessError("topology: \(status) \(body.prefix(300))")
        }
        return json
    }

    /// The node `id` anywhere in a topology's tree.
    static func node(_ id: String, in topology: [String: Any]) -> [String: Any]? {
        func find(_ nodes: [[String: Any]]) -> [String: Any]? {
            for node in nodes {
                if node["id"] as? String == id { return node }
                if let found = find(node["children"] as? [[String: Any]] ?? []) { return found }
            }
            return nil
        }
        return find(topology["children"] as? [[String: Any]] ?? [])
    }

    /// Polls `check` on the root's topology until it holds, for up to `timeout`.
    static func waitForTopology(url: String, token: String, timeout: Duration = .seconds(10),
                                _ check: ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any] = [:]
        while ContinuousClock.now < deadline {
            last = try await topology(url: url, token: token)
            if check(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError("topology never matched: \(last)")
    }

    @Test("a child's in-flight counts, its workers' hardware_info, the link's RTT and LZ4 ratio show in the topology")
    func loadAndLinkFigures() async throws {
        let chain = try await LendingChain(.toki, namespace: "load-gpu", model: "load-model")
        let (root, child, carol) = (chain.root, chain.child, chain.carol)
        defer { Task { await chain.stop() } }
        try await root.waitForModel("load-model", token: chain.alice)
        let rootAdmin = try #require(root.adminToken)

        // The worker's register payload reached the root through the child.
        let first = try await Self.topology(url: root.url, token: rootAdmin)
        let hardware = Self.node("load-gpu", in: first)?["hardware_info"] as? [String: Any]
        #expect(hardware?["num_cpu"] as? Int ?? 0 > 0, "\(first)")
        #expect(hardware?["hostname"] is String, "\(first)")

        // A slow request of the child's own user: the root routes none of it, so only the
        // child's worker_load can make it show at the root.
        let slow = Task {
            try await HTTP.post(child.url + "/v1/chat/completions", token: carol,
                                body: #"{"model":"load-model","stub_delay_ms":4000,"messages":[{"role":"user","content":"hi"}]}"#)
        }
        _ = try await Self.waitForTopology(url: root.url, token: rootAdmin) { Self.node("load-gpu", in: $0)?["in_flight"] as? Int == 1 }
        let reply = try await slow.value
        #expect(reply.status == 200, "\(reply.body)")
        _ = try await Self.waitForTopology(url: root.url, token: rootAdmin) { Self.node("load-gpu", in: $0)?["in_flight"] as? Int == 0 }

        // The child's upstream link: a measured round trip, and its LZ4 ratio (plain/wire bytes).
        let link = try await Self.waitForTopology(url: child.url, token: try #require(child.adminToken)) {
            ($0["upstream"] as? [String: Any])?["rtt_ms"] is Double
        }
        let upstream = try #require(link["upstream"] as? [String: Any])
        #expect((upstream["rtt_ms"] as? Double ?? -1) >= 0 && (upstream["rtt_ms"] as? Double ?? 1e9) < 5_000, "\(upstream)")
        #expect((upstream["lz4_ratio"] as? Double ?? 0) > 0, "\(upstream)")
        #expect((upstream["wire_bytes"] as? Int ?? 0) > 0 && (upstream["plain_bytes"] as? Int ?? 0) > 0, "\(upstream)")
        let status = try await Self.status(url: child.url, token: try #require(child.adminToken))
        #expect(status.contains(" ms, lz4 ratio "), "\(status)")
        let rootStatus = try await Self.status(url: root.url, token: rootAdmin)
        #expect(rootStatus.contains("worker load-gpu") && rootStatus.contains("hardware {"), "\(rootStatus)")
    }
}
