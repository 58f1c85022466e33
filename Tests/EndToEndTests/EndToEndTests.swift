import AsyncHTTPClient
import Foundation
import NIOCore
import TestSupport
import Testing

/// A hub, one stub backend and one worker, all real processes on loopback.
struct Deployment {
    let hub: HubProcess
    let backend: StubBackend
    let worker: WorkerProcess
    let token: String

    static func start(_ kind: WorkerKind, models: [String] = ["stub-model"], hubArguments: [String] = []) async throws -> Deployment {
        let hub = try await HubProcess(arguments: hubArguments)
        let backend = try await StubBackend(models: models)
        let token = try await hub.createToken(user: "alice")
        let worker = try await WorkerProcess(kind, hub: hub, token: token, backend: backend, namespace: "gpu-\(kind)", models: models)
        try await hub.waitForModel(models[0], token: token)
        return Deployment(hub: hub, backend: backend, worker: worker, token: token)
    }

    func stop() async {
        await worker.stop()
        await backend.stop()
        await hub.stop()
    }

    func post(_ path: String, _ body: String, token: String? = nil, headers: [(String, String)] = []) async throws -> HTTP.Result {
        try await HTTP.post(hub.url + path, token: token ?? self.token, body: body, headers: headers)
    }
}

@Suite("end to end: real toki hub, real workers, stub backend", .serialized)
struct EndToEndTests {
    static let workers: [WorkerKind] = [.goTokiame, .toki]

    @Test("chat, completions, embeddings and models, streamed and not", arguments: workers)
    func happyPath(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        defer { Task { await d.stop() } }

        let chat = try await d.post("/v1/chat/completions", #"{"model":"stub-model","messages":[{"role":"user","content":"hi"}],"unknown_field":{"kept":true}}"#,
                                    headers: [("X-Request-Id", "my-request-42")])
        #expect(chat.status == 200, "\(chat.body)")
        #expect(chat.headers.first(name: "X-Request-Id") == "my-request-42")
        #expect(chat.json?["choices"] != nil)
        if kind == .toki {
            // A small answer of known length crosses the tunnel in one piece (head, body and eof
            // in one write) and the hub sends it whole: a Content-Length, no chunked framing.
            #expect(chat.headers.first(name: "Content-Length") == "\(chat.body.utf8.count)")
            #expect(chat.headers.first(name: "Transfer-Encoding") == nil)
        }

        let completion = try await d.post("/v1/completions", #"{"model":"stub-model","prompt":"once upon"}"#)
        #expect(completion.status == 200, "\(completion.body)")
        let embeddings = try await d.post("/v1/embeddings", #"{"model":"stub-model","input":["a","b"]}"#)
        #expect(embeddings.status == 200, "\(embeddings.body)")
        #expect((embeddings.json?["data"] as? [Any])?.count == 2)

        let (status, models) = try await HTTP.get(d.hub.url + "/v1/models", token: d.token)
        #expect(status == 200 && models.contains("\"stub-model\""))

        // Streamed: the first event reaches the client while the backend is still producing the
        // rest (a causal check, not a timing one): the hub and worker do not buffer the response.
        let completedBefore = try await d.backend.completedCount()
        let received = Locked(0)
        async let streamed = HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                         body: #"{"model":"stub-model","stream":true,"stub_chunks":40,"stub_delay_ms":100}"#, received: received)
        try await received.wait(atLeast: 1)
        #expect(try await d.backend.completedCount() == completedBefore, "the whole response was produced before the client saw a byte")
        let result = try await streamed
        #expect(result.status == 200)
        #expect(result.failure == nil)
        #expect(result.text.contains("data: [DONE]"))
        #expect(result.text.contains("tok39 "))
    }

    @Test("every error answers in OpenAI's shape with the right status", arguments: workers)
    func errors(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind, hubArguments: ["--max-body-mib", "1"])
        defer { Task { await d.stop() } }
        let url = d.hub.url

        let missing = try await HTTP.post(url + "/v1/chat/completions", token: nil, body: #"{"model":"stub-model"}"#)
        #expect(missing.status == 401 && missing.errorCode == "missing_api_key")
        let bad = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#, token: "sk-toki-wrong")
        #expect(bad.status == 401 && bad.errorCode == "invalid_api_key")
        let unknownModel = try await d.post("/v1/chat/completions", #"{"model":"no-such-model"}"#)
        #expect(unknownModel.status == 404 && unknownModel.errorCode == "model_not_found")
        let unknownPath = try await d.post("/v1/no/such/path", "{}")
        #expect(unknownPath.status == 404 && unknownPath.errorType == "invalid_request_error")
        let malformed = try await d.post("/v1/chat/completions", #"{"model": "stub-model", "#)
        #expect(malformed.status == 400 && malformed.errorCode == "invalid_json")
        let noModel = try await d.post("/v1/chat/completions", #"{"messages":[]}"#)
        #expect(noModel.status == 400 && noModel.errorCode == "missing_model")
        let huge = try await d.post("/v1/chat/completions", #"{"model":"stub-model","pad":""# + String(repeating: "x", count: 2 << 20) + #""}"#)
        #expect(huge.status == 413 && huge.json?["error"] != nil)
        // The backend answering 500 is passed through as a normal response (like Tokilake).
        let backend500 = try await d.post("/v1/chat/completions", #"{"model":"stub-model","stub_status":500}"#)
        #expect(backend500.status == 500)

        // Backend down: the worker fails before the head on every attempt → 502.
        await d.backend.stop()
        let down = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
        #expect(down.status == 502 && down.errorType == "upstream_error", "\(down.body)")

        // No worker online for a model the hub has seen → 503.
        await d.worker.stop()
        try await d.hub.waitForModel("stub-model", token: d.token, present: false)
        let offline = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
        #expect(offline.status == 503 && offline.errorCode == "no_worker_available", "\(offline.body)")
    }

    @Test("a worker that does not answer in time gives 504", arguments: workers)
    func timeout(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind, hubArguments: ["--response-timeout", "1"])
        defer { Task { await d.stop() } }
        let slow = try await d.post("/v1/chat/completions", #"{"model":"stub-model","stub_delay_ms":3000}"#)
        #expect(slow.status == 504 && slow.errorCode == "worker_timeout", "\(slow.body)")
    }

    @Test("a worker killed mid-stream: the client sees an error, not a short success", arguments: workers)
    func killedMidStream(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        defer { Task { await d.stop() } }
        let received = Locked(0)
        async let streamed = HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                         body: #"{"model":"stub-model","stream":true,"stub_chunks":40,"stub_delay_ms":100}"#, received: received)
        try await received.wait(atLeast: 3)
        d.worker.kill()
        let result = try await streamed
        #expect(result.status == 200)
        #expect(!result.text.contains("data: [DONE]"), "a broken stream looked complete")
        #expect(result.text.contains("event: error") || result.failure != nil, "no error was visible: \(result.text.suffix(300))")

    }

    @Test("a backend dying mid-body ends the stream with an error event, never [DONE]", arguments: workers)
    func backendDiesMidBody(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        defer { Task { await d.stop() } }
        let result = try await HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                           body: #"{"model":"stub-model","stream":true,"stub_chunks":10,"stub_die_after":3}"#)
        #expect(!result.text.contains("data: [DONE]"))
        #expect(result.text.contains("event: error") || result.failure != nil, "\(result.text)")
    }

    @Test("two workers, one killed: requests still succeed", arguments: workers)
    func failover(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        defer { Task { await d.stop() } }
        let second = try await WorkerProcess(kind, hub: d.hub, token: d.token, backend: d.backend, namespace: "gpu-second", models: ["stub-model"])
        defer { Task { await second.stop() } }
        // Both registered: the admin view lists two workers.
        try await d.hub.waitForWorkers(["gpu-\(kind)", "gpu-second"])
        d.worker.kill()
        for i in 0..<10 {
            let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model","n":\#(i)}"#)
            #expect(r.status == 200, "request \(i) after a worker died: \(r.status) \(r.body)")
        }
    }

    @Test("hub restart: the worker comes back by itself", arguments: workers)
    func hubRestart(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        let hub = try await d.hub.restarted()
        defer { Task { await d.worker.stop(); await d.backend.stop(); await hub.stop() } }
        try await hub.waitForModel("stub-model", token: d.token, timeout: .seconds(40))
        let r = try await HTTP.post(hub.url + "/v1/chat/completions", token: d.token, body: #"{"model":"stub-model"}"#)
        #expect(r.status == 200, "\(r.body)")
    }

    @Test("a client that goes away cancels the request on the backend", arguments: workers)
    func cancellation(kind: WorkerKind) async throws {
        let d = try await Deployment.start(kind)
        defer { Task { await d.stop() } }
        let before = try await d.backend.cancelledCount()
        let partial = try await HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                            body: #"{"model":"stub-model","stream":true,"stub_chunks":100,"stub_delay_ms":100}"#, stopAfter: 2)
        #expect(partial.chunks.count == 2)
        let deadline = ContinuousClock.now + .seconds(15)
        var cancelled = before
        while ContinuousClock.now < deadline {
            cancelled = try await d.backend.cancelledCount()
            if cancelled > before { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(cancelled > before, "the backend kept generating after the client left")
    }

    @Test("the worker tunnel endpoint refuses bad tokens before upgrading (Tokilake's 401)")
    func tunnelAuth() async throws {
        let hub = try await HubProcess()
        defer { Task { await hub.stop() } }
        var request = HTTPClientRequest(url: hub.url + "/api/tokilake/connect")
        request.headers.add(name: "Authorization", value: "Bearer sk-toki-nope")
        let response = try await HTTP.client.execute(request, timeout: .seconds(10))
        #expect(response.status.code == 401)
        let body = String(buffer: try await response.body.collect(upTo: 4096))
        #expect(body.contains("\"success\":false"))
    }
}
