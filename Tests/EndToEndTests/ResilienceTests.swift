import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A client that sends a request and then never reads: its TCP receive window fills up.
final class StalledClient {
    let connection: RawConnection

    init(port: Int, path: String, token: String, body: String) throws {
        connection = try RawConnection(port: port, receiveBuffer: 4096)
        let request = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        _ = request.withCString { send(connection.fd, $0, strlen($0), 0) }
    }
}

@Suite("end to end: resilience", .serialized)
struct ResilienceTests {
    @Test("a client that stops reading is cut off; other requests on the same worker keep flowing")
    func slowClient() async throws {
        let d = try await Deployment.start(.goTokiame, hubArguments: ["--slow-client-timeout", "2"])
        defer { Task { await d.stop() } }
        let before = try await d.backend.cancelledCount()
        // ~16 MB of SSE toward a client that reads nothing: more than TCP buffers and the
        // worker session's 4 MiB receive budget together.
        let stalled = try StalledClient(port: d.hub.port, path: "/v1/chat/completions", token: d.token,
                                        body: #"{"model":"stub-model","stream":true,"stub_chunks":2000,"stub_chunk_bytes":8192}"#)
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
}
