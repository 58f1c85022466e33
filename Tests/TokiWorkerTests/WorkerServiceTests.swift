// The real WorkerService against a fake hub (TunnelListener) and the stub backend process.

import Foundation
import NIOCore
import TestSupport
import Testing
import TokiMux
import TokiProtocol
import TokiTunnel

@testable import TokiWorker

/// Starts stub backend, fake hub and worker; runs `body`; stops everything.
func withWorker(options configure: (inout WorkerOptions) -> Void = { _ in }, targets: [String: ModelTargetConfig] = [:],
                backendModels: [String] = ["m1", "m2"], discover: Bool = true,
                _ body: (FakeHub, StubBackend, RunningWorker) async throws -> Void) async throws {
    let backend = try await StubBackend.start(models: backendModels)
    let hub = try await FakeHub.start()
    var options = testOptions(hub: hub, backend: discover ? backend : nil, targets: targets)
    configure(&options)
    let worker = RunningWorker.start(options)
    do {
        try await body(hub, backend, worker)
    } catch {
        await worker.stop()
        await hub.stop()
        await backend.stop()
        throw error
    }
    await worker.stop()
    await hub.stop()
    await backend.stop()
}

@Suite("WorkerService against a fake hub and the stub backend", .serialized)
struct WorkerServiceTests {
    @Test("register, models_sync and heartbeats: sequence and exact JSON")
    func handshake() async throws {
        try await withWorker { hub, backend, worker in
            let connection = try await hub.nextConnection()
            let (register, sync) = try await connection.handshake(workerID: 7, channelID: 9)
            #expect(hub.tokens.value.first == "sk-test")  // Bearer stripped by the listener, sk- kept as configured

            let rid = try #require(register.message.requestID)
            #expect(rid.hasPrefix("ns-test:register:"))
            #expect(rid.count == "ns-test:register:".count + 36)
            #expect(register.raw.hasPrefix(#"{"type":"register","request_id":"\#(rid)","register":{"namespace":"ns-test","node_name":"gpu-01","models":["m1","m2"],"hardware_info":{"#))
            #expect(register.raw.hasSuffix(#"},"backend_type":"openai"}}"#))
            let payload = try #require(register.message.register)
            #expect(payload.group == nil)  // omitted when empty, like Go
            #expect(payload.hardwareInfo?["hostname"] == .string("test-host"))
            #expect(payload.hardwareInfo?["control_plane_backend"] == .string("openai"))
            // Discovered targets are reported reduced to scheme://host:port.
            #expect(payload.hardwareInfo?["model_target_summaries"]?["m1"]?["url"] == .string(backend.url))

            #expect(sync.message.requestID?.hasPrefix("ns-test:models:") == true)
            #expect(sync.raw.hasPrefix(#"{"type":"models_sync","request_id":"\#(sync.message.requestID!)","models_sync":{"models":["m1","m2"],"hardware_info":{"#))
            #expect(sync.message.modelsSync?.backendType == "openai")

            // Heartbeats: one interval after registering, then periodically; acked by us.
            var times: [ContinuousClock.Instant] = []
            for _ in 0..<3 {
                let hb = try await connection.next(timeout: .seconds(3))
                #expect(hb.message.type == .heartbeat)
                let hrid = try #require(hb.message.requestID)
                #expect(hrid.hasPrefix("ns-test:heartbeat:"))
                #expect(hb.raw.hasPrefix(#"{"type":"heartbeat","request_id":"\#(hrid)","heartbeat":{"node_name":"gpu-01","hardware_info":{"#))
                #expect(hb.raw.hasSuffix(#"},"current_models":["m1","m2"]}}"#))
                try await connection.send(.ack(requestID: hrid, message: TunnelProtocol.AckMessage.heartbeatOK, namespace: "ns-test", workerID: 7, channelID: 9))
                times.append(.now)
            }
            let gap = times[0].duration(to: times[2])
            #expect(gap > .milliseconds(400) && gap < .milliseconds(1500))
            let status = worker.service.status
            #expect(status.registered && status.workerID == 7 && status.channelID == 9 && status.registrations == 1)
            #expect(status.models == ["m1", "m2"])
        }
    }

    @Test("non-streamed request: head, body, eof; only Accept/Content-Type reach the backend")
    func nonStreamed() async throws {
        try await withWorker { hub, backend, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let exchange = try await connection.open(chatRequest(
                id: "ns-test:relay:1", body: #"{"model":"m1","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
                headers: ["Content-Type": "application/json", "Accept": "application/json", "Host": "evil.example",
                          "Authorization": "Bearer leaked", "X-Forwarded-For": "1.2.3.4"]))
            let lines = try await exchange.collect()
            let head = try #require(lines.first?.response)
            #expect(head.statusCode == 200)
            #expect(head.requestID == "ns-test:relay:1")
            #expect(head.headers?["Content-Type"] == "application/json")
            #expect(head.headers?["Content-Length"] == nil && head.headers?["Transfer-Encoding"] == nil && head.headers?["Connection"] == nil)
            #expect(lines.last?.response.eof == true)
            #expect(lines.allSatisfy { $0.response.error == nil })
            let json = try #require(try JSONSerialization.jsonObject(with: Data(bodyText(lines).utf8)) as? [String: Any])
            #expect((json["stub_echo"] as? [String: Any])?["temperature"] as? Double == 0.5)
            #expect(json["usage"] != nil)
            // What reached the backend.
            let seen = try #require(try await backend.requests().last)
            #expect(seen["path"] as? String == "/v1/chat/completions")
            let headers = try #require(seen["headers"] as? [String: String])
            #expect(headers["Host"] == "127.0.0.1:\(backend.port)")
            #expect(headers["Authorization"] == nil && headers["X-Forwarded-For"] == nil)
            #expect(headers["Content-Type"] == "application/json")
            #expect(seen["body"] as? String == #"{"model":"m1","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#)
        }
    }

    @Test("streamed request: body chunks are forwarded while the backend is still producing")
    func streamed() async throws {
        try await withWorker { hub, backend, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let stub = backend
            let completedBefore = try await stub.completedCount
            let exchange = try await connection.open(chatRequest(
                id: "ns-test:relay:s", body: #"{"model":"m1","stream":true,"stub_chunks":30,"stub_delay_ms":100}"#,
                headers: ["Content-Type": "application/json", "Accept": "text/event-stream"], stream: true))
            let head = try #require(try await exchange.next())
            #expect(head.statusCode == 200)
            #expect(head.headers?["Content-Type"] == "text/event-stream")
            // Causal, not timing: the first event is relayed before the backend finished the
            // response, so the worker does not buffer it.
            var first: TunnelResponse?
            while first == nil, let line = try await exchange.next() {
                if line.bodyChunk != nil { first = line }
            }
            #expect(String(buffer: try #require(first?.bodyChunk)).contains("tok0 "))
            #expect(try await stub.completedCount == completedBefore, "the response was complete before its first chunk was relayed")
            var text = String(buffer: first!.bodyChunk!)
            var chunks = 1
            var sawEOF = false
            while let line = try await exchange.next() {
                if let chunk = line.bodyChunk { text += String(buffer: chunk); chunks += 1 }
                if line.eof == true { sawEOF = true; break }
            }
            #expect(sawEOF)
            #expect(chunks > 1, "the body was relayed in one piece")
            #expect(text.contains("tok29 ") && text.hasSuffix("data: [DONE]\n\n"))
        }
    }

    @Test("unknown model → target_not_found; backend down → local_request_failed")
    func errorsBeforeHead() async throws {
        try await withWorker(targets: ["down": ModelTargetConfig(url: "http://127.0.0.1:1/v1")]) { hub, _, _ in
            let connection = try await hub.nextConnection()
            let (register, sync) = try await connection.handshake()
            #expect(register.message.register?.models?.contains("down") == true)
            if sync.message.modelsSync?.models != ["down", "m1", "m2"] {
                // Registered with the configured target first; discovery adds the rest.
                let later = try await connection.next(.modelsSync)
                #expect(later.message.modelsSync?.models == ["down", "m1", "m2"])
            }

            let unknown = try await connection.open(chatRequest(id: "r-unknown", model: "nope", body: "{}")).collect()
            #expect(unknown.count == 1)
            #expect(unknown.first?.response.error?.code == "target_not_found")
            #expect(unknown.first?.response.requestID == "r-unknown")

            let down = try await connection.open(chatRequest(id: "r-down", model: "down", body: "{}")).collect()
            #expect(down.count == 1)
            #expect(down.first?.response.error?.code == "local_request_failed")
            #expect(down.first?.response.statusCode == nil)
        }
    }

    @Test("backend 5xx passes through as a normal response")
    func backendErrorStatus() async throws {
        try await withWorker { hub, _, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let lines = try await connection.open(chatRequest(id: "r-500", body: #"{"model":"m1","stub_status":500}"#)).collect()
            #expect(lines.first?.response.statusCode == 500)
            #expect(lines.last?.response.eof == true)
            #expect(bodyText(lines).contains("stub error 500"))
        }
    }

    @Test("backend dies mid-body → read_local_response_failed, never eof")
    func backendDiesMidBody() async throws {
        try await withWorker { hub, _, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let lines = try await connection.open(chatRequest(
                id: "r-die", body: #"{"model":"m1","stream":true,"stub_chunks":6,"stub_die_after":2,"stub_delay_ms":20}"#, stream: true)).collect()
            #expect(lines.first?.response.statusCode == 200)
            #expect(lines.last?.response.error?.code == "read_local_response_failed")
            #expect(!lines.contains { $0.response.eof == true })
            #expect(bodyText(lines).contains("tok1 "))
        }
    }

    @Test("cancel_request aborts the backend request and is acked cancel_ok; unknown → cancel_noop")
    func cancelRequest() async throws {
        try await withWorker { hub, backend, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let exchange = try await connection.open(chatRequest(
                id: "ns-test:relay:c1", body: #"{"model":"m1","stream":true,"stub_chunks":200,"stub_delay_ms":30}"#, stream: true))
            _ = try await exchange.next()  // head
            _ = try await exchange.next()  // first chunk
            #expect(worker.service.status.inFlight == 1)
            try await connection.send(.cancelRequest(requestID: "ns-test:cancel:1", targetRequestID: "ns-test:relay:c1"))
            let ack = try await connection.next(.ack)
            #expect(ack.raw == #"{"type":"ack","request_id":"ns-test:cancel:1","ack":{"message":"cancel_ok","namespace":"ns-test"}}"#)
            try await backend.waitUntil("the stub saw the client go away") { try await backend.cancelledCount == 1 }
            // The stream ends without eof.
            var sawEOF = false
            while let line = try await exchange.next(timeout: .seconds(20)) { if line.eof == true { sawEOF = true } }
            #expect(!sawEOF)
            try await backend.waitUntil("in-flight count back to 0") { worker.service.status.inFlight == 0 }

            try await connection.send(.cancelRequest(requestID: "ns-test:cancel:2", targetRequestID: "ns-test:relay:unknown"))
            let noop = try await connection.next(.ack)
            #expect(noop.raw == #"{"type":"ack","request_id":"ns-test:cancel:2","ack":{"message":"cancel_noop","namespace":"ns-test"}}"#)
        }
    }

    @Test("the hub closing the data stream aborts the backend request")
    func hubClosesDataStream() async throws {
        try await withWorker { hub, backend, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let exchange = try await connection.open(chatRequest(
                id: "r-close", body: #"{"model":"m1","stream":true,"stub_chunks":200,"stub_delay_ms":30}"#, stream: true))
            _ = try await exchange.next()
            _ = try await exchange.next()
            exchange.stream.close()
            try await backend.waitUntil("the stub saw the client go away") { try await backend.cancelledCount == 1 }
            try await backend.waitUntil("in-flight count back to 0") { worker.service.status.inFlight == 0 }
        }
    }

    @Test("reconnects after the hub goes away, after a hub error, and after control-stream silence")
    func reconnects() async throws {
        try await withWorker(options: { $0.livenessTimeout = .milliseconds(900) }) { hub, _, worker in
            // 1. The hub drops the session.
            let first = try await hub.nextConnection()
            try await first.handshake()
            first.session.close()
            let second = try await hub.nextConnection()
            try await second.handshake()
            // 2. An error message on the control stream: reconnect instead of staying half-alive.
            try await second.send(.error(requestID: nil, code: "heartbeat_failed", message: "db is down"))
            let third = try await hub.nextConnection()
            try await third.handshake()
            // 3. Heartbeats never acked: the link is presumed dead after 3 × 300 ms.
            let started = ContinuousClock.now
            let fourth = try await hub.nextConnection(timeout: .seconds(20))
            let silentFor = started.duration(to: .now)
            #expect(silentFor >= .milliseconds(800), "liveness timeout fired after \(silentFor)")
            try await fourth.handshake()
            try await Task.sleep(for: .milliseconds(100))
            #expect(worker.service.status.registrations == 4)
            #expect(worker.service.status.connectAttempts >= 4)
        }
    }

    @Test("a hub that answers every heartbeat keeps the link alive well past the liveness limit")
    func livenessRearmedPerLine() async throws {
        try await withWorker(options: { $0.livenessTimeout = .seconds(2) }) { hub, _, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            // Ten heartbeats (several liveness limits' worth), each answered as the hub does.
            for _ in 0..<10 {
                let heartbeat = try await connection.next(.heartbeat)
                try await connection.send(.ack(requestID: heartbeat.message.requestID,
                                               message: TunnelProtocol.AckMessage.heartbeatOK))
            }
            #expect(hub.connectionCount == 1)
            #expect(worker.service.status.registrations == 1)
        }
    }

    @Test("a rejected register is logged and retried with back-off")
    func registerRejected() async throws {
        try await withWorker(options: { $0.reconnectDelay = .milliseconds(50); $0.reconnectDelayCap = .milliseconds(200) }) { hub, _, worker in
            let first = try await hub.nextConnection()
            let register = try await first.next()
            try await first.send(.error(requestID: register.message.requestID, code: "register_failed",
                                        message: "namespace ns-test is already owned by another user"))
            let second = try await hub.nextConnection(timeout: .seconds(20))
            try await second.handshake()
            try await Task.sleep(for: .milliseconds(50))
            #expect(worker.service.status.registrations == 1)
            #expect(worker.service.status.connectAttempts >= 2)
        }
    }

    @Test("the request path and headers cannot redirect the worker away from its backend")
    func urlSafety() async throws {
        try await withWorker { hub, backend, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            for (i, path) in ["http://evil.example/v1/chat/completions", "//evil.example/x", "/v1/chat/completions?x=http://evil.example"].enumerated() {
                let lines = try await connection.open(chatRequest(id: "r-safe-\(i)", body: #"{"model":"m1"}"#,
                                                                  headers: ["Host": "evil.example", "Content-Type": "application/json"],
                                                                  path: path)).collect()
                #expect(lines.first?.response.statusCode != nil, "path \(path) reached the configured backend")
                let seen = try #require(try await backend.requests().last)
                #expect((seen["headers"] as? [String: String])?["Host"] == "127.0.0.1:\(backend.port)")
            }
            let paths = try await backend.requests().compactMap { $0["path"] as? String }
            #expect(paths.contains("/http:/evil.example/v1/chat/completions"))
            #expect(paths.contains("/evil.example/x"))
            for (i, path) in ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/chat%2fcompletions", "/v1/chat completions", "/v1/x\r\nHost: evil"].enumerated() {
                let lines = try await connection.open(chatRequest(id: "r-bad-\(i)", body: "{}", path: path)).collect()
                #expect(lines.count == 1 && lines.first?.response.error?.code == "invalid_target_url", "path \(path)")
            }
        }
    }

    @Test("models re-discovered and synced when the backend's list changes")
    func rediscovery() async throws {
        try await withWorker(options: { $0.discoveryInterval = .milliseconds(200) }) { hub, backend, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            try await backend.post("/stub/models", json: #"{"models":["m3","m1","m2"]}"#)
            let sync = try await connection.next(.modelsSync, timeout: .seconds(20))
            #expect(sync.message.modelsSync?.models == ["m1", "m2", "m3"])
            try await connection.send(.ack(requestID: sync.message.requestID, message: TunnelProtocol.AckMessage.modelsSyncOK))
            #expect(worker.service.models == ["m1", "m2", "m3"])
            let hb = try await connection.next(.heartbeat)
            #expect(hb.message.heartbeat?.currentModels == ["m1", "m2", "m3"])
        }
    }

    @Test("over --max-concurrent a stream is refused at once with an error line")
    func concurrencyLimit() async throws {
        try await withWorker(options: { $0.maxConcurrentRequests = 1 }) { hub, _, _ in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let long = try await connection.open(chatRequest(
                id: "r-long", body: #"{"model":"m1","stream":true,"stub_chunks":20,"stub_delay_ms":50}"#, stream: true))
            _ = try await long.next()
            let refused = try await connection.open(chatRequest(id: "r-refused", body: "{}")).collect()
            #expect(refused.count == 1 && refused.first?.response.error?.code == "local_request_failed")
            #expect(refused.first?.response.error?.message.contains("busy") == true)
            let rest = try await long.collect()
            #expect(rest.last?.response.eof == true)
        }
    }

    @Test("graceful shutdown: no new streams, in-flight requests finish, then run() returns")
    func gracefulDrain() async throws {
        try await withWorker { hub, _, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let exchange = try await connection.open(chatRequest(
                id: "r-drain", body: #"{"model":"m1","stream":true,"stub_chunks":8,"stub_delay_ms":60}"#, stream: true))
            _ = try await exchange.next()
            worker.service.beginShutdown()
            let rest = try await exchange.collect()
            #expect(rest.last?.response.eof == true, "the in-flight request completed")
            let result = await withTimeLimitResult(.seconds(20)) { try await worker.task.value }
            #expect(result == true, "run() returned after the drain")
        }
    }

    @Test("a stream that never sends its request line is closed after the time limit")
    func requestLineTimeout() async throws {
        try await withWorker(options: { $0.requestLineTimeout = .milliseconds(300) }) { hub, _, worker in
            let connection = try await hub.nextConnection()
            try await connection.handshake()
            let stream = try connection.session.openStream()
            try await stream.write(ByteBuffer(string: #"{"request_id":"r-slow""#))  // no newline, ever
            let reader = StreamLineReader(stream, maxLineLength: 1 << 20)
            let end = try await withTimeLimit(.seconds(3)) { try await reader.nextLine() }
            #expect(end == .some(nil), "the worker closed the stream")
            try await Task.sleep(for: .milliseconds(50))
            #expect(worker.service.status.inFlight == 0)
        }
    }
}

/// true if `body` finished (successfully) within `limit`.
func withTimeLimitResult(_ limit: Duration, _ body: @escaping @Sendable () async throws -> Void) async -> Bool {
    (try? await withTimeLimit(limit) { try await body(); return true }) == .some(true)
}

@Suite("worker pure pieces")
struct WorkerPieceTests {
    @Test("hub URL: a bare host gets the Tokilake path; a URL with a path is verbatim")
    func hubURL() {
        #expect(WorkerOptions.hubURL("https://hub.example.com") == "https://hub.example.com/api/tokilake/connect")
        #expect(WorkerOptions.hubURL("wss://hub.example.com/") == "wss://hub.example.com/api/tokilake/connect")
        #expect(WorkerOptions.hubURL("ws://127.0.0.1:8080") == "ws://127.0.0.1:8080/api/tokilake/connect")
        #expect(WorkerOptions.hubURL("ws://h:1/connect") == "ws://h:1/connect")
        #expect(WorkerOptions.hubURL("https://h/custom/path?x=1") == "https://h/custom/path?x=1")
    }

    @Test("backend URL guard", arguments: [
        ("http://127.0.0.1:8000/v1", "/v1/chat/completions", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000", "http://evil/x", "http://127.0.0.1:8000/http:/evil/x"),
        ("http://127.0.0.1:8000", "//evil:99/x", "http://127.0.0.1:8000/evil:99/x"),
        ("http://127.0.0.1:8000", "@evil/x", "http://127.0.0.1:8000/@evil/x"),
        ("http://u:p@127.0.0.1:8000", "/v1/models?a=b", "http://u:p@127.0.0.1:8000/v1/models?a=b"),
    ])
    func guardAllows(target: String, path: String, expected: String) throws {
        #expect(try LocalRequestBuilder.url(target: target, requestPath: path) == expected)
    }

    @Test("backend URL guard refuses", arguments: ["/../x", "/v1/./x", "/a/%2E%2E/b", "/a%2Fb", "/a b", "/a\\b", "/a\u{7f}"])
    func guardRefuses(path: String) {
        #expect(throws: WorkerRequestError.self) { try LocalRequestBuilder.url(target: "http://127.0.0.1:8000", requestPath: path) }
    }

    @Test("back-off: full jitter under a doubling ceiling, capped, reset, saturated")
    func backoff() {
        var b = ReconnectBackoff(base: .seconds(1), cap: .seconds(10))
        var ceilings: [Duration] = []
        for _ in 0..<6 {
            ceilings.append(b.ceiling)
            let d = b.nextDelay()
            #expect(d >= .zero && d <= ceilings.last!)
        }
        #expect(ceilings == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10)])
        b.reset()
        #expect(b.ceiling == .seconds(1))
        b.saturate()
        #expect(b.ceiling == .seconds(10))
    }

    @Test("persistent rejections are recognised by code or message")
    func persistent() {
        #expect(WorkerConnection.isPersistentRejection(code: "register_failed", message: "namespace x is already owned by another user"))
        #expect(WorkerConnection.isPersistentRejection(code: "register_failed", message: "group g is not authorized for current user"))
        #expect(WorkerConnection.isPersistentRejection(code: "namespace_not_owned", message: ""))
        #expect(!WorkerConnection.isPersistentRejection(code: "register_failed", message: "namespace already connected"))
    }

    @Test("options validation")
    func validation() throws {
        var config = TokiameConfig()
        config.gatewayURL = "wss://hub.example.com/api/tokilake/connect"
        config.token = "sk-x"
        config.namespace = "ns"
        config.normalize()
        var options = WorkerOptions(config: config)
        #expect(throws: TokiameConfigError.self) { try options.validate() }  // no models, no backend
        options.discoveryBackends = ["http://127.0.0.1:11434"]
        try options.validate()
        options.heartbeatInterval = .seconds(45)
        #expect(throws: TokiameConfigError.self) { try options.validate() }
        options.heartbeatInterval = .seconds(15)
        options.discoveryBackends = ["ftp://x"]
        #expect(throws: TokiameConfigError.self) { try options.validate() }
    }
}
