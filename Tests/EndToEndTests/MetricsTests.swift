import Foundation
import TestSupport
import Testing

/// `--metrics-listen` on a real hub and worker: the scraped counters match the requests made.
@Suite("end to end: metrics", .serialized)
struct MetricsTests {
    /// The `host:port` a process printed on its `METRICS` line.
    static func metricsURL(_ process: ChildProcess) async throws -> String {
        let line = try await process.waitForLine(prefix: "METRICS ")
        return "http://" + line.dropFirst("METRICS ".count)
    }

    static func scrape(_ base: String) async throws -> PrometheusText {
        let (status, body) = try await HTTP.get(base + "/metrics")
        guard status == 200 else { throw ChildProcessError("GET /metrics: \(status) \(body.prefix(300))") }
        return try PrometheusText(body)
    }

    @Test("hub and worker count streamed and plain requests, an unknown model and a bad token")
    func countsMatchRequests() async throws {
        let hub = try await HubProcess(arguments: ["--metrics-listen", "127.0.0.1:0"])
        let backend = try await StubBackend(models: ["stub-model"])
        let token = try await hub.createToken(user: "alice")
        let worker = try ChildProcess(Products.path("toki"), [
            "worker", "--hub", hub.tunnelURL, "--token", token, "--backend", backend.url, "--namespace", "gpu-metrics",
            "--heartbeat-seconds", "5", "--reconnect-delay-ms", "300", "--metrics-listen", "127.0.0.1:0",
        ], name: "toki worker gpu-metrics")
        defer {
            Task {
                await worker.stop()
                await backend.stop()
                await hub.stop()
            }
        }
        try await hub.waitForModel("stub-model", token: token)
        let hubMetrics = try await Self.metricsURL(hub.process)
        let workerMetrics = try await Self.metricsURL(worker)

        // The monitoring port answers health and readiness too; the API port has no /metrics
        // (it was not asked for with --metrics).
        #expect(try await HTTP.get(hubMetrics + "/healthz").0 == 200)
        #expect(try await HTTP.get(hubMetrics + "/readyz").0 == 200)
        #expect(try await HTTP.get(workerMetrics + "/readyz").0 == 200)
        #expect(try await HTTP.get(hub.url + "/metrics").0 == 404)

        let plain = 3, streamed = 2
        for _ in 0..<plain {
            let answer = try await HTTP.post(hub.url + "/v1/chat/completions", token: token,
                                             body: #"{"model":"stub-model","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(answer.status == 200, "\(answer.body)")
        }
        for _ in 0..<streamed {
            let answer = try await HTTP.post(hub.url + "/v1/chat/completions", token: token,
                                             body: #"{"model":"stub-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(answer.status == 200 && answer.body.contains("[DONE]"), "\(answer.body)")
        }
        let unknown = try await HTTP.post(hub.url + "/v1/chat/completions", token: token,
                                          body: #"{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(unknown.status == 404)
        let badToken = try await HTTP.post(hub.url + "/v1/chat/completions", token: "sk-toki-not-a-token",
                                           body: #"{"model":"stub-model","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(badToken.status == 401)

        // A streamed answer's duration is recorded when its last byte went out: wait for both.
        var text = try await Self.scrape(hubMetrics)
        let deadline = ContinuousClock.now + .seconds(10)
        while text.sum("toki_hub_request_duration_seconds_count", ["model": "stub-model"]) < Double(plain + streamed), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            text = try await Self.scrape(hubMetrics)
        }
        let route = ["route": "chat_completions"]
        #expect(text.sum("toki_hub_requests_total", route.merging(["model": "stub-model", "status": "200"]) { $1 }) == Double(plain + streamed))
        #expect(text.sum("toki_hub_requests_total", route.merging(["model": "unknown", "status": "404"]) { $1 }) == 1)
        #expect(text.sum("toki_hub_requests_total", route.merging(["model": "unknown", "status": "401"]) { $1 }) == 1)
        #expect(text.sum("toki_hub_requests_total") == Double(plain + streamed + 2))
        #expect(!text.samples.contains { $0.labels["model"] == "no-such-model" })
        #expect(text.sum("toki_hub_request_duration_seconds_count", ["model": "stub-model"]) == Double(plain + streamed))
        #expect(text.sum("toki_hub_time_to_first_byte_seconds_count", ["model": "stub-model"]) == Double(plain + streamed))
        // The stub reports 8 prompt tokens each, 2 completion tokens unstreamed and 5 streamed.
        #expect(text.sum("toki_hub_prompt_tokens_total", ["model": "stub-model"]) == Double(8 * (plain + streamed)))
        #expect(text.sum("toki_hub_completion_tokens_total", ["model": "stub-model"]) == Double(2 * plain + 5 * streamed))
        #expect(text.sum("toki_hub_workers_online") == 1)
        #expect(text.sum("toki_hub_worker_connects_total", ["link": "direct"]) == 1)
        #expect(text.sum("toki_hub_requests_in_flight") == 0)
        #expect(text.sum("toki_hub_retries_total") == 0)
        // The worker's link carried the requests and answers both ways.
        #expect(text.sum("toki_tunnel_bytes_total", ["link": "worker", "direction": "in", "layer": "plain"]) > 0)
        #expect(text.sum("toki_tunnel_bytes_total", ["link": "worker", "direction": "out", "layer": "wire"]) > 0)

        let workerText = try await Self.scrape(workerMetrics)
        #expect(workerText.sum("toki_worker_requests_total", ["outcome": "completed"]) == Double(plain + streamed))
        #expect(workerText.sum("toki_worker_backend_errors_total") == 0)
        #expect(workerText.sum("toki_worker_connected") == 1)
        #expect(workerText.sum("toki_worker_requests_in_flight") == 0)
    }

    @Test("a relay without its upstream is alive but not ready, and says so in its metrics")
    func relayReadiness() async throws {
        // Port 1 on loopback: nothing listens, so the upstream link never comes up.
        let relay = try ChildProcess(Products.path("toki"), [
            "relay-only", "--upstream", "http://127.0.0.1:1", "--token", "sk-toki-unused", "--listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0", "--metrics",
        ], name: "toki relay-only")
        defer { Task { await relay.stop() } }
        let metrics = try await Self.metricsURL(relay)
        let listen = try await relay.waitForLine(prefix: "LISTEN ")
        let port = "http://" + listen.dropFirst("LISTEN ".count)
        #expect(try await HTTP.get(metrics + "/healthz").0 == 200)
        let (status, body) = try await HTTP.get(metrics + "/readyz")
        #expect(status == 503 && body == "upstream not connected\n")
        #expect(try await HTTP.get(port + "/readyz").0 == 503)
        let text = try await Self.scrape(metrics)
        #expect(text.matching("toki_upstream_connected").map(\.value) == [0])
        #expect(text.sum("toki_hub_workers_online") == 0)
        // --metrics: the relay's own port serves the same text.
        #expect(try await Self.scrape(port).matching("toki_upstream_connected").map(\.value) == [0])
    }
}
