import Foundation
import TestSupport
import Testing
import TokiTunnel

#if canImport(Glibc)
import Glibc
#endif

/// Long SSE streams (≈ 10 s each) started one after another, each waited for until its first
/// events arrived: with fewest-in-flight routing they alternate between two idle workers.
/// Each task ends with the stream, an error, or nil if it was still running after `limit` (a hang).
func startStreams(_ count: Int, hub: HubProcess, token: String, limit: Duration = .seconds(40)) async throws -> [Task<Result<HTTP.Stream, any Error>?, Never>] {
    var tasks: [Task<Result<HTTP.Stream, any Error>?, Never>] = []
    for _ in 0..<count {
        let received = Locked(0)
        tasks.append(Task {
            try? await withTimeLimit(limit) {
                do {
                    return .success(try await HTTP.stream(hub.url + "/v1/chat/completions", token: token,
                                                          body: #"{"model":"stub-model","stream":true,"stub_chunks":100,"stub_delay_ms":100}"#,
                                                          received: received))
                } catch {
                    return .failure(error)
                }
            }
        })
        try await received.wait(atLeast: 2)
    }
    return tasks
}

@Suite("end to end: chaos", .serialized)
struct ChaosTests {
    @Test("hub SIGKILLed under load: every in-flight request ends visibly broken; workers come back by themselves")
    func hubKilledUnderLoad() async throws {
        let d = try await Deployment.start(.toki)
        let go = try await WorkerProcess(.goTokiame, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-go", models: ["stub-model"])
        try await d.hub.waitForWorkers(["gpu-toki", "gpu-go"])
        let streams = try await startStreams(4, hub: d.hub, token: d.token)

        let hub = try await d.hub.restarted(sigkill: true)
        defer { Task { await d.worker.stop(); await go.stop(); await d.backend.stop(); await hub.stop() } }
        for (i, task) in streams.enumerated() {
            switch await task.value {
            case nil:
                Issue.record("stream \(i) hung after the hub was killed")
            case .failure:
                break  // the connection failed: visibly broken
            case .success(let stream):
                #expect(!stream.text.contains("data: [DONE]"), "stream \(i) looked complete after the hub died")
                #expect(stream.failure != nil || stream.text.contains("event: error"), "stream \(i) ended cleanly: \(stream.text.suffix(200))")
            }
        }

        // Same port, same data directory: both workers reconnect on their own.
        try await hub.waitForWorkers(["gpu-toki", "gpu-go"], timeout: .seconds(60))
        for i in 0..<10 {
            let r = try await HTTP.post(hub.url + "/v1/chat/completions", token: d.token, body: #"{"model":"stub-model","i":\#(i)}"#)
            #expect(r.status == 200, "request \(i) after the restart: \(r.status) \(r.body)")
        }
    }

    @Test("worker SIGKILLed mid-stream: its streams end with event: error, the survivor's complete, new requests succeed")
    func workerKilledMidStream() async throws {
        let d = try await Deployment.start(.toki)
        let survivor = try await WorkerProcess(.toki, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-survivor", models: ["stub-model"])
        defer { Task { await survivor.stop(); await d.stop() } }
        try await d.hub.waitForWorkers(["gpu-toki", "gpu-survivor"])
        let streams = try await startStreams(4, hub: d.hub, token: d.token)
        let onVictim = try await d.hub.workers()["gpu-toki"] ?? 0
        #expect(onVictim > 0, "no stream went to the worker about to be killed")
        d.worker.kill()

        var broken = 0
        for (i, task) in streams.enumerated() {
            guard case .success(let stream)? = await task.value else {
                Issue.record("stream \(i) hung or failed outright instead of ending with an SSE error")
                continue
            }
            if stream.text.contains("event: error") {
                broken += 1
                #expect(!stream.text.contains("data: [DONE]"), "stream \(i): an error and [DONE]")
            } else {
                #expect(stream.failure == nil && stream.text.hasSuffix("data: [DONE]\n\n"), "stream \(i) neither completed nor reported an error: \(stream.failure ?? "") \(stream.text.suffix(200))")
            }
        }
        #expect(broken == onVictim, "\(onVictim) streams were on the killed worker, \(broken) ended with event: error")

        for i in 0..<10 {
            let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model","i":\#(i)}"#)
            #expect(r.status == 200, "request \(i) after the kill: \(r.status) \(r.body)")
        }
    }

    @Test("a SIGSTOPped worker does not make the pool slower than a dead one: 10 sequential requests all succeed")
    func frozenWorker() async throws {
        let d = try await Deployment.start(.toki, hubArguments: ["--response-timeout", "300"])
        let other = try await WorkerProcess(.toki, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-other", models: ["stub-model"])
        try await d.hub.waitForWorkers(["gpu-toki", "gpu-other"])
        kill(d.worker.process.pid, SIGSTOP)
        defer { Task { kill(d.worker.process.pid, SIGCONT); await other.stop(); await d.stop() } }

        for i in 0..<10 {
            do {
                let r = try await HTTP.post(d.hub.url + "/v1/chat/completions", token: d.token, body: #"{"model":"stub-model","i":\#(i)}"#,
                                            timeout: .seconds(30))
                #expect(r.status == 200, "request \(i) with one worker frozen: \(r.status) \(r.body)")
            } catch {
                Issue.record("request \(i) with one worker frozen: no answer within 30 s (\(error))")
            }
        }
    }

    @Test("a worker frozen while idle is dropped after two silent ping periods, long before its heartbeat deadline; a healthy idle worker stays")
    func silentLinkDropped() async throws {
        let d = try await Deployment.start(.toki, hubArguments: ["--ping-interval", "1", "--heartbeat-timeout", "300"])
        let other = try await WorkerProcess(.toki, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-other", models: ["stub-model"])
        try await d.hub.waitForWorkers(["gpu-toki", "gpu-other"])
        kill(d.worker.process.pid, SIGSTOP)
        defer { Task { kill(d.worker.process.pid, SIGCONT); await other.stop(); await d.stop() } }

        // Only the ping path can drop it this soon: its heartbeat deadline is 300 s away.
        try await poll("the frozen worker to be dropped", timeout: .seconds(20)) { try await d.hub.workers()["gpu-toki"] == nil }
        #expect(d.hub.process.stderr.contains("silent past a ping"))
        // Several ping periods later the idle worker that answers pings is still there.
        try await Task.sleep(for: .seconds(3))
        #expect(try await d.hub.workers()["gpu-other"] != nil)
        let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
        #expect(r.status == 200)
    }
}
