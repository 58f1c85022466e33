import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("end to end: resilience", .serialized)
struct ResilienceTests {
    @Test("a client that stops reading is cut off; other requests on the same worker keep flowing")
    func slowClient() async throws {
        let d = try await Deployment.start(.goTokiame, hubArguments: ["--slow-client-timeout", "2"])
        defer { Task { await d.stop() } }
        let before = try await d.backend.cancelledCount()
        // ~16 MB of SSE toward a client that reads nothing: more than TCP buffers and the
        // worker session's 4 MiB receive budget together.
        let stalled = try RawConnection(port: d.hub.port, receiveBuffer: 4096)
        try await stalled.send(RawConnection.request("POST", "/v1/chat/completions", token: d.token,
                                                     body: #"{"model":"stub-model","stream":true,"stub_chunks":2000,"stub_chunk_bytes":8192}"#))
        try await Task.sleep(for: .seconds(1))
        // Meanwhile, and after the cut-off, the same worker answers other clients.
        for i in 0..<5 {
            let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model","i":\#(i)}"#)
            #expect(r.status == 200, "request \(i) while a client stalls: \(r.status) \(r.body)")
            try await Task.sleep(for: .milliseconds(800))
        }
        let deadline = ContinuousClock.now + .seconds(15)
        var cancelled = before
        while ContinuousClock.now < deadline, cancelled == before {
            try await Task.sleep(for: .milliseconds(200))
            cancelled = try await d.backend.cancelledCount()
        }
        #expect(cancelled > before, "the stalled client's request was never cancelled on the backend")
        withExtendedLifetime(stalled) {}
    }

    @Test("a worker whose link died silently is dropped within two ping periods, not 45 s")
    func deadLink() async throws {
        let d = try await Deployment.start(.goTokiame, hubArguments: ["--ping-interval", "1"])
        defer { Task { await d.stop() } }
        // Freeze the worker: its TCP connection stays open but nothing answers any more.
        kill(d.worker.process.pid, SIGSTOP)
        defer { kill(d.worker.process.pid, SIGCONT) }
        let started = ContinuousClock.now
        try await d.hub.waitForModel("stub-model", token: d.token, present: false, timeout: .seconds(15))
        #expect(ContinuousClock.now - started < .seconds(15))
        // The namespace is free again: a new worker with the same namespace registers.
        let replacement = try await WorkerProcess(.goTokiame, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-goTokiame", models: ["stub-model"])
        defer { Task { await replacement.stop() } }
        try await d.hub.waitForModel("stub-model", token: d.token)
        let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
        #expect(r.status == 200)
    }

    @Test("SIGTERM drains: an in-flight stream completes, new requests get 503, exit 0")
    func drain() async throws {
        let d = try await Deployment.start(.goTokiame)
        defer { Task { await d.worker.stop(); await d.backend.stop() } }
        let received = Locked(0)
        async let streamed = HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                         body: #"{"model":"stub-model","stream":true,"stub_chunks":15,"stub_delay_ms":100}"#, received: received)
        try await received.wait(atLeast: 2)
        kill(d.hub.process.pid, SIGTERM)
        try await Task.sleep(for: .milliseconds(200))
        let refused = try? await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
        if let refused { #expect(refused.status == 503, "\(refused.body)") }
        let result = try await streamed
        #expect(result.failure == nil)
        #expect(result.text.contains("data: [DONE]"), "the in-flight stream was cut by the shutdown")
        #expect(try await d.hub.process.waitForExit(timeout: .seconds(40)) == 0)
    }

    /// Which process of root <- relay <- worker gets the SIGTERM.
    enum DrainedNode: String, CaseIterable, CustomStringConvertible {
        case relay, worker
        var description: String { rawValue }
    }

    @Test("SIGTERM to a relay or a toki worker mid-stream: the stream completes, the process exits 0", arguments: DrainedNode.allCases)
    func drainBelowTheHub(node: DrainedNode) async throws {
        let hub = try await HubProcess()
        let token = try await hub.createToken(user: "alice")
        let relay = try await RelayProcess(upstream: hub.url, token: token, nodeID: "relay-drain")
        let backend = try await StubBackend(models: ["drain-model"])
        let worker = try await WorkerProcess(.toki, tunnelURL: relay.tunnelURL, token: token, backend: backend, namespace: "gpu-drain",
                                             models: ["drain-model"])
        defer { Task { await worker.stop(); await relay.stop(); await backend.stop(); await hub.stop() } }
        try await hub.waitForModel("drain-model", token: token)
        let received = Locked(0)
        async let streamed = HTTP.stream(hub.url + "/v1/chat/completions", token: token,
                                         body: #"{"model":"drain-model","stream":true,"stub_chunks":15,"stub_delay_ms":100}"#, received: received)
        try await received.wait(atLeast: 2)
        let drained = node == .relay ? relay.process : worker.process
        kill(drained.pid, SIGTERM)
        let result = try await streamed
        #expect(result.status == 200)
        #expect(result.failure == nil)
        #expect(result.text.contains("data: [DONE]"), "the in-flight stream was cut by the \(node)'s shutdown: \(result.text.suffix(300))")
        #expect(try await drained.waitForExit(timeout: .seconds(40)) == 0, "\(drained.stderr.suffix(2000))")
    }

    @Test("under systemd (Type=notify): READY once serving or registered, WATCHDOG with STATUS, STOPPING on SIGTERM")
    func systemdNotify() async throws {
        let hubSocket = try NotifySocketListener(abstract: true)
        let workerSocket = try NotifySocketListener(abstract: false)
        // WatchdogSec=1s: a ping every 500 ms.
        let hub = try await HubProcess(environment: ["NOTIFY_SOCKET": hubSocket.name, "WATCHDOG_USEC": "1000000"])
        let token = try await hub.createToken(user: "alice")
        let backend = try await StubBackend(models: ["notify-model"])
        defer { Task { await backend.stop(); await hub.stop() } }
        // The hub printed LISTEN before this: READY=1 comes once the port is bound.
        let hubReady = await hubSocket.receive(until: { $0.contains("READY=1") })
        #expect(hubReady?.last?.contains("STATUS=serving on port \(hub.port)") == true, "\(hubReady ?? [])")

        let worker = try await WorkerProcess(.toki, tunnelURL: hub.tunnelURL, token: token, backend: backend, namespace: "gpu-notify",
                                             models: ["notify-model"], environment: ["NOTIFY_SOCKET": workerSocket.name])
        defer { Task { await worker.stop() } }
        let workerReady = await workerSocket.receive(until: { $0.contains("READY=1") })
        #expect(workerReady?.last == "READY=1\nSTATUS=registered", "\(workerReady ?? [])")
        // Registered means the hub has it (READY is sent after the hub's acknowledgement).
        #expect(try await hub.workers()["gpu-notify"] != nil)
        // No WatchdogSec for the worker: no pings, only STATUS now and then.
        // The hub's watchdog pings and reports the worker.
        let pings = await hubSocket.receive(until: { $0.contains("STATUS=serving, 1 workers") })
        #expect(pings?.last?.hasPrefix("WATCHDOG=1\n") == true, "\(pings ?? [])")

        kill(hub.process.pid, SIGTERM)
        let stopping = await hubSocket.receive(until: { $0.hasPrefix("STOPPING=1") })
        #expect(stopping?.last == "STOPPING=1\nSTATUS=draining", "\(stopping ?? [])")
        #expect(try await hub.process.waitForExit(timeout: .seconds(40)) == 0)
        kill(worker.process.pid, SIGTERM)
        #expect(await workerSocket.receive(until: { $0.hasPrefix("STOPPING=1") }) != nil)
        #expect(try await worker.process.waitForExit(timeout: .seconds(40)) == 0)
    }
}
