// A worker's answers are untrusted (any user may attach one): these tests run a real `toki hub`
// process against `HostileWorker` (scripted, in-process) or real workers, with real HTTP clients
// (AsyncHTTPClient, or `RawConnection` where the exact bytes on a keep-alive connection matter),
// and assert what the client, the hub and the other workers see.

import Foundation
import NIOCore
import TestSupport
import Testing
import TokiMux
import TokiProtocol
import TokiTunnel

#if canImport(Glibc)
import Glibc
#endif

/// A real hub, one user, and a well-behaved scripted worker serving `good-model`: the yardstick
/// for "the hub is still fine" after a hostile worker did its worst.
struct HostileBed {
    let hub: HubProcess
    let token: String
    let good: HostileWorker

    static func start(hubArguments: [String] = []) async throws -> HostileBed {
        let hub = try await HubProcess(arguments: hubArguments)
        let token = try await hub.createToken(user: "alice")
        let good = try await HostileWorker.connect(hub, token: token, namespace: "good", models: ["good-model"], script: HostileWorker.polite("good"))
        return HostileBed(hub: hub, token: token, good: good)
    }

    /// A registered scripted worker (once `connect` returns, the hub routes to it).
    func worker(_ namespace: String = "evil", model: String = "evil-model", offerLZ4: Bool = false,
                script: @escaping HostileScript) async throws -> HostileWorker {
        try await HostileWorker.connect(hub, token: token, namespace: namespace, models: [model], offerLZ4: offerLZ4, script: script)
    }

    func post(model: String, stream: Bool = false, headers: [(String, String)] = []) async throws -> HTTP.Result {
        try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: #"{"model":"\#(model)","stream":\#(stream)}"#, headers: headers)
    }

    func stream(model: String) async throws -> HTTP.Stream {
        try await HTTP.stream(hub.url + "/v1/chat/completions", token: token, body: #"{"model":"\#(model)","stream":true}"#)
    }

    /// The hub is alive and still serves: `/healthz` answers and the good worker's model works.
    func expectHealthy(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        #expect(hub.process.isRunning, "the hub died: \(hub.process.stderr.suffix(3000))", sourceLocation: sourceLocation)
        let (status, body) = try await HTTP.get(hub.url + "/healthz")
        #expect(status == 200 && body.hasPrefix("ok"), "healthz: \(status) \(body)", sourceLocation: sourceLocation)
        let r = try await post(model: "good-model")
        #expect(r.status == 200 && r.body.contains(#""served_by":"good""#), "the good worker's model: \(r.status) \(r.body)", sourceLocation: sourceLocation)
    }

    func stop() async {
        await good.stop()
        await hub.stop()
    }
}

/// The OpenAI error shape `{"error":{"message","type","param","code"}}` with `code`.
func expectOpenAIError(_ r: HTTP.Result, status: Int, code: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == status, "status \(r.status), body \(r.body)", sourceLocation: sourceLocation)
    let error = r.json?["error"] as? [String: Any]
    #expect(error?["message"] is String && error?["type"] is String && error?.keys.contains("param") == true,
            "not OpenAI's error shape: \(r.body)", sourceLocation: sourceLocation)
    #expect(r.errorCode == code, "code: \(r.body)", sourceLocation: sourceLocation)
}

/// The `code` of the first SSE `event: error` in `text`, if any.
func sseErrorCode(_ text: String) -> String? {
    guard let event = text.range(of: "event: error\ndata: ") else { return nil }
    let data = text[event.upperBound...].prefix { $0 != "\n" }
    let json = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any]
    return (json?["error"] as? [String: Any])?["code"] as? String
}

@Suite("end to end: a hostile worker", .serialized)
struct HostileWorkerTests {
    // MARK: (a) impossible status codes

    @Test("a head with an impossible status gives 502 malformed_worker_response, and is retried on another worker",
          arguments: [1000, -1, 99, 600, 100, 101])
    func impossibleStatus(status: Int) async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let badHead: HostileScript = { call in
            try await call.head(status, chunk: #"{"status":"\#(status)"}"#)
            try await call.eof()
        }
        let evil = try await bed.worker(script: badHead)
        defer { Task { await evil.stop() } }

        // No HTTP answer at all (the connection dropped, or an unparseable status line) is a
        // failure too; go on to see whether the hub survived it.
        do {
            let r = try await bed.post(model: "evil-model")
            expectOpenAIError(r, status: 502, code: "malformed_worker_response")
        } catch {
            Issue.record("no valid HTTP response for a worker status of \(status): \(error)")
        }
        #expect(evil.calls.value.count == 1, "the request never reached the hostile worker")
        try await bed.expectHealthy()

        // Before the first byte a failure is retried: with a well-behaved worker for the same
        // model every request succeeds, including those the hub tried on the hostile one first
        // (routing is random between idle workers, so send until one went there first).
        let flaky = try await bed.worker("evil-2", model: "retry-model", script: badHead)
        let rescuer = try await bed.worker("rescuer", model: "retry-model", script: HostileWorker.polite("rescuer"))
        defer { Task { await flaky.stop(); await rescuer.stop() } }
        var sent = 0
        while flaky.calls.value.isEmpty, sent < 20 {
            let retried = try await bed.post(model: "retry-model")
            #expect(retried.status == 200 && retried.body.contains("rescuer"), "request \(sent): \(retried.status) \(retried.body)")
            sent += 1
        }
        #expect(!flaky.calls.value.isEmpty, "in \(sent) requests the hub never tried the hostile worker")
    }

    // MARK: (b) response splitting

    @Test("a body on a 204/304 never reaches the client, and cannot smuggle a response onto the keep-alive connection",
          arguments: [204, 304])
    func responseSplitting(status: Int) async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let smuggled = "HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 5\r\n\r\nEVIL!"
        let evil = try await bed.worker { call in
            try await call.head(status, headers: ["Content-Type": "text/plain"], chunk: smuggled)
            try await call.chunk(smuggled)
            try await call.chunk(smuggled)
            try await call.eof()
        }
        defer { Task { await evil.stop() } }

        let connection = try RawConnection(port: bed.hub.port)
        try await connection.send(RawConnection.request("POST", "/v1/chat/completions", token: bed.token, body: #"{"model":"evil-model"}"#))
        try await connection.read(until: { RawResponse.parse($0[...], noBody: true) != nil })
        let first = try #require(RawResponse.parse(connection.received[...], noBody: true), "no response head: \(connection.text)")
        #expect(first.status == status, "\(first.headText)")
        #expect(first.values("Transfer-Encoding").isEmpty, "a \(status) announced a body: \(first.headText)")
        if status == 204 { #expect(first.values("Content-Length").allSatisfy { $0 == "0" }, "\(first.headText)") }

        // Causal, not timed: once the hub closed the worker's stream it has handled every line
        // of the answer, so anything it was going to write for it has been written.
        let call = try await evil.waitForCalls(1)[0]
        try await call.waitForHubClose()
        connection.readAvailable()

        try await connection.send(RawConnection.request("GET", "/healthz"))
        try await connection.read(until: { bytes in RawResponse.parse(bytes[first.length...])?.complete ?? false }, timeout: .seconds(15))
        let rest = connection.received[first.length...]
        #expect(!rest.contains(text: "X-Smuggled") && !rest.contains(text: "EVIL!"), "smuggled bytes reached the client: \(String(decoding: rest, as: UTF8.self))")
        let second = RawResponse.parse(rest)
        #expect(second?.status == 200 && second?.bodyText == "ok\n",
                "the second request on the connection did not get its own answer (connection \(connection.ended ?? "open")): \(String(decoding: rest, as: UTF8.self))")
        #expect(second?.length == rest.count, "bytes after the second response: \(String(decoding: rest, as: UTF8.self))")
        try await bed.expectHealthy()
    }

    // MARK: (c) header injection and hop-by-hop headers

    @Test("worker headers that are invalid, inject lines, or are hop-by-hop never reach the client; the rest does")
    func hostileHeaders() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let body = #"{"ok":true}"#
        let headers: [String: String] = [
            "Content-Type": "application/json",
            "X-Good": "kept",
            // Line breaks and NUL in values: each could start a header of the worker's choosing.
            "X-Cr": "a\rX-Injected-Cr: 1",
            "X-Lf": "a\nX-Injected-Lf: 1",
            "X-Crlf": "a\r\nX-Injected-Crlf: 1",
            "X-Nul": "a\u{0}b",
            // Names that are not HTTP tokens.
            "Bad Name": "v-space",
            "Bad:Name": "v-colon",
            "": "v-empty",
            "X-Name\r\nX-Injected-Name": "v-crlf-name",
            // Hop-by-hop: about the worker's connection, never the client's.
            "Connection": "evil-token",
            "Keep-Alive": "timeout=999",
            "Transfer-Encoding": "gzip",
            "Content-Length": "99999",
            "Upgrade": "evil-protocol",
            "TE": "trailers",
            "Trailer": "X-Evil-Trailer",
            "Proxy-Authenticate": "Basic realm=evil",
            // The request id is the hub's.
            "X-Request-Id": "worker-chosen-id",
        ]
        let evil = try await bed.worker { call in
            try await call.head(201, headers: headers, chunk: body)
            try await call.eof()
        }
        defer { Task { await evil.stop() } }

        let connection = try RawConnection(port: bed.hub.port)
        try await connection.send(RawConnection.request("POST", "/v1/chat/completions", token: bed.token, body: #"{"model":"evil-model"}"#,
                                                        headers: [("X-Request-Id", "client-id-c")]))
        try await connection.read(until: { RawResponse.parse($0[...])?.complete ?? false })
        let response = try #require(RawResponse.parse(connection.received[...]), "no response: \(connection.text)")
        let head = response.headText
        #expect(response.status == 201, "\(head)")
        #expect(response.complete && response.bodyText == body, "body: \(response.bodyText)")
        #expect(response.values("X-Good") == ["kept"], "\(head)")
        #expect(!head.lowercased().contains("x-injected"), "a worker value or name injected a header line:\n\(head)")
        #expect(!response.headHasStrayControlBytes, "a lone CR or LF, or a NUL, in the head:\n\(head)")
        for name in ["X-Cr", "X-Lf", "X-Crlf", "X-Nul"] {
            #expect(response.values(name).isEmpty, "\(name) with a forbidden character was passed on:\n\(head)")
        }
        for value in ["v-space", "v-colon", "v-empty", "v-crlf-name"] {
            #expect(!head.contains(value), "a header with an invalid name was passed on (\(value)):\n\(head)")
        }
        for name in ["Keep-Alive", "Upgrade", "TE", "Trailer", "Proxy-Authenticate"] {
            #expect(response.values(name).isEmpty, "hop-by-hop \(name) was passed on:\n\(head)")
        }
        #expect(!head.contains("evil-token"), "the worker's Connection header was passed on:\n\(head)")
        #expect(!head.contains("gzip"), "the worker's Transfer-Encoding was passed on:\n\(head)")
        #expect(response.values("Content-Length").allSatisfy { $0 == "\(body.utf8.count)" }, "the worker's Content-Length was passed on:\n\(head)")
        #expect(response.values("X-Request-Id") == ["client-id-c"], "\(head)")
        try await bed.expectHealthy()
    }

    @Test("oversized worker headers are dropped, the response still arrives")
    func oversizedHeaders() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        var headers = ["Content-Type": "application/json", "X-Huge": String(repeating: "h", count: 16 << 10),
                       "X-" + String(repeating: "n", count: 1000): "long-name"]
        for i in 0..<2000 { headers["X-Many-\(i)"] = "value-\(i)" }  // ≈ 40 KB of headers, 2000 of them
        let all = headers
        let evil = try await bed.worker { call in
            try await call.head(200, headers: all, chunk: #"{"ok":true}"#, eof: true)
        }
        defer { Task { await evil.stop() } }
        let r = try await bed.post(model: "evil-model")
        #expect(r.status == 200 && r.body == #"{"ok":true}"#, "\(r.status) \(r.body.prefix(300))")
        #expect(r.headers.first(name: "X-Huge") == nil, "a 16 KiB header value was passed on")
        #expect(!r.headers.contains { $0.value == "long-name" }, "a 1000-byte header name was passed on")
        let many = r.headers.filter { $0.name.lowercased().hasPrefix("x-many-") }.count
        #expect(many <= 100, "\(many) worker headers were passed on")
        try await bed.expectHealthy()
    }

    // MARK: (d) one unread client must not freeze the worker's other streams

    @Test("a client that never reads cannot stall its worker's other requests; on smux v1 its own response is cut, on v2 it waits",
          arguments: [WorkerKind.goTokiame, .toki])
    func unreadClientDoesNotFreezeWorker(kind: WorkerKind) async throws {
        // 600 s: no timer can be what frees the worker's session during this test.
        let d = try await Deployment.start(kind, hubArguments: ["--slow-client-timeout", "600"])
        defer { Task { await d.stop() } }
        // ≈ 26 MB of SSE toward a client that reads nothing. The Go Tokiame speaks smux v1 (no
        // per-stream windows, one receive budget for the whole session); toki workers speak v2.
        let stalled = try RawConnection(port: d.hub.port, receiveBuffer: 4096)
        try await stalled.send(RawConnection.request("POST", "/v1/chat/completions", token: d.token,
                                                     body: #"{"model":"stub-model","stream":true,"stub_chunks":3200,"stub_chunk_bytes":8192}"#))
        // Causal: the backend has produced more than a whole 4 MiB session budget (the hub takes
        // at least its 4 MiB per-client buffer before it cuts (v1) or stops reading (v2)).
        try await poll("the backend to stream 4 MiB to the unread client", timeout: .seconds(60)) { try await d.backend.streamedBytes() > 4 << 20 }

        // Twenty other requests to the same worker, all at once, while the client stays unread.
        let outcomes = await withTaskGroup(of: String?.self) { group in
            for i in 0..<20 {
                group.addTask {
                    do {
                        let r = try await HTTP.stream(d.hub.url + "/v1/chat/completions", token: d.token,
                                                      body: #"{"model":"stub-model","stream":true,"stub_chunks":20,"i":\#(i)}"#)
                        return r.status == 200 && r.failure == nil && r.text.contains("tok19 ") && r.text.hasSuffix("data: [DONE]\n\n")
                            ? nil : "request \(i): \(r.status) \(r.failure ?? "") \(r.text.suffix(200))"
                    } catch {
                        return "request \(i): \(error)"
                    }
                }
            }
            var failures: [String] = []
            for await failure in group { if let failure { failures.append(failure) } }
            return failures
        }
        #expect(outcomes.isEmpty, "\(outcomes.count) of 20 requests failed while one client did not read: \(outcomes.prefix(3))")

        if kind == .toki {
            // v2: the stream's own window held the worker back; read now, the answer is whole.
            stalled.setReceiveBuffer(4 << 20)
            try await stalled.read(until: { _ in stalled.endsWithLastChunk }, timeout: .seconds(120))
            let response = RawResponse.parse(stalled.received[...], connectionEnded: stalled.ended != nil)
            #expect(response?.status == 200)
            #expect(response?.complete == true && response?.bodyText.hasSuffix("data: [DONE]\n\n") == true,
                    "the unread client's response on a v2 link was cut (connection \(stalled.ended ?? "open"))")
            return
        }
        // v1: the unread client's response was cut: reading now, its connection ends without a
        // complete body (the hub held at most --response-buffer-mib for it).
        stalled.setReceiveBuffer(4 << 20)
        try await stalled.readToEnd(timeout: .seconds(120))
        let response = RawResponse.parse(stalled.received[...], connectionEnded: true)
        #expect(response?.status == 200)
        #expect(response?.complete == false, "the unread client's response was complete: it was buffered whole, not cut")
        #expect(!stalled.received.contains(text: "data: [DONE]"), "the unread client's response looked complete")
    }

    // MARK: (e) a steady slow reader is not a stalled one

    enum SlowSource: String, CaseIterable, CustomStringConvertible {
        /// A Go Tokiame relaying the stub backend's 8 KiB events.
        case goTokiame
        /// A scripted worker sending 256 KiB body chunks (a single write takes the client ~2.5 s).
        case largeChunks
        var description: String { rawValue }
    }

    @Test("a client reading steadily at ~100 KB/s gets its whole stream even with --slow-client-timeout 1", arguments: SlowSource.allCases)
    func steadySlowReader(source: SlowSource) async throws {
        let arguments = ["--slow-client-timeout", "1"]
        let hub: HubProcess
        let token: String
        let stop: @Sendable () async -> Void
        switch source {
        case .goTokiame:
            let d = try await Deployment.start(.goTokiame, hubArguments: arguments)
            (hub, token, stop) = (d.hub, d.token, { await d.stop() })
        case .largeChunks:
            let bed = try await HostileBed.start(hubArguments: arguments)
            let events = String(repeating: "data: " + String(repeating: "x", count: 1018) + "\n\n", count: 256)
            let worker = try await bed.worker(model: "stub-model") { call in
                try await call.head(200, headers: ["Content-Type": "text/event-stream"])
                for i in 0..<4 { try await call.chunk(events.replacingOccurrences(of: "data: xx", with: "data: \(i)x")) }
                try await call.chunk("data: [DONE]\n\n")
                try await call.eof()
            }
            (hub, token, stop) = (bed.hub, bed.token, { await worker.stop(); await bed.stop() })
        }
        defer { Task { await stop() } }
        let reader = try RawConnection(port: hub.port, receiveBuffer: 8192)
        try await reader.send(RawConnection.request("POST", "/v1/chat/completions", token: token,
                                                    body: #"{"model":"stub-model","stream":true,"stub_chunks":128,"stub_chunk_bytes":8192}"#))
        // ≈ 1 MiB at 10 KB per 100 ms.
        try await reader.read(until: { RawResponse.parse($0[...])?.complete ?? false }, timeout: .seconds(180), chunk: 10_000, pause: .milliseconds(100))
        let response = try #require(RawResponse.parse(reader.received[...], connectionEnded: reader.ended != nil))
        #expect(response.status == 200)
        #expect(response.complete, "the slow reader's response ended early (connection \(reader.ended ?? "open")) after \(response.body.count) bytes, although its longest wait for data was \(reader.longestWait); hub log: \(hub.process.stderr.suffix(600))")
        #expect(response.body.count > 1 << 20, "\(response.body.count) bytes")
        #expect(response.bodyText.hasSuffix("data: [DONE]\n\n"), "ends with: \(response.bodyText.suffix(200))")
    }

    // MARK: (f) a worker that stalls after the head

    @Test("a worker silent after the head: SSE keep-alive comments, then event: error worker_timeout, and cancel_request; a plain body is aborted",
          arguments: [true, false])
    func stallAfterHead(sse: Bool) async throws {
        let bed = try await HostileBed.start(hubArguments: ["--stream-idle-timeout", "3", "--sse-keepalive", "1"])
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { call in
            if sse {
                try await call.head(200, headers: ["Content-Type": "text/event-stream"], chunk: "data: {\"n\":1}\n\n")
            } else {
                try await call.head(200, headers: ["Content-Type": "application/json"], chunk: #"{"partial":"#)
            }
            // …then nothing, with the stream left open.
        }
        defer { Task { await evil.stop() } }

        let result = try await bed.stream(model: "evil-model")
        #expect(result.status == 200)
        let text = result.text
        if sse {
            #expect(text.hasPrefix("data: {\"n\":1}\n\n"), "\(text)")
            let lines = text.components(separatedBy: "\n")
            let comment = lines.firstIndex { $0.hasPrefix(":") }
            let error = lines.firstIndex { $0 == "event: error" }
            #expect(comment != nil, "no SSE comment line while the worker was silent: \(text)")
            #expect(error != nil, "no event: error: \(text)")
            if let comment, let error { #expect(comment < error, "\(text)") }
            #expect(sseErrorCode(text) == "worker_timeout", "\(text)")
            #expect(!text.contains("[DONE]"))
        } else {
            #expect(result.failure != nil, "a stalled plain body ended cleanly: \(text)")
        }
        let call = try await evil.waitForCalls(1)[0]
        try await evil.waitForCancel(of: call.id)
        try await bed.expectHealthy()
    }

    // MARK: (g) request bodies

    @Test("a 20 MiB body reaches the backend whole through a toki worker; 33 MiB gets 413 request_too_large")
    func largeBodies() async throws {
        let d = try await Deployment.start(.toki)
        defer { Task { await d.stop() } }
        func body(_ size: Int) -> String {
            let head = #"{"model":"stub-model","input":["a"],"pad":""#
            let tail = #""}"#
            return head + String(repeating: "x", count: size - head.utf8.count - tail.utf8.count) + tail
        }
        let twenty = body(20 << 20)
        let r = try await d.post("/v1/embeddings", twenty)
        #expect(r.status == 200, "\(r.status) \(r.body.prefix(500))")
        #expect(try await d.backend.receivedBodySizes().last == twenty.utf8.count, "the backend did not get the whole body")

        let tooLarge = try await d.post("/v1/embeddings", body(33 << 20))
        expectOpenAIError(tooLarge, status: 413, code: "request_too_large")
    }

    // MARK: What the hub tells a worker

    @Test("a worker that never answers: 504 worker_timeout for the client, cancel_request and FIN for the worker")
    func noHead() async throws {
        let bed = try await HostileBed.start(hubArguments: ["--response-timeout", "1"])
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { _ in }  // reads the request, answers nothing
        defer { Task { await evil.stop() } }
        let r = try await bed.post(model: "evil-model")
        expectOpenAIError(r, status: 504, code: "worker_timeout")
        let call = try await evil.waitForCalls(1)[0]
        try await evil.waitForCancel(of: call.id)
        try await call.waitForHubClose()
        try await bed.expectHealthy()
    }

    @Test("a client that leaves mid-stream: the worker gets cancel_request and the stream's FIN")
    func clientLeaves() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { call in
            try await call.head(200, headers: ["Content-Type": "text/event-stream"])
            // Keeps streaming until the hub closes the stream (a write then fails or is dropped).
            for i in 0..<600 where !call.hubClosed.value {
                try await call.chunk("data: {\"n\":\(i)}\n\n")
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        defer { Task { await evil.stop() } }
        let partial = try await HTTP.stream(bed.hub.url + "/v1/chat/completions", token: bed.token,
                                            body: #"{"model":"evil-model","stream":true}"#, stopAfter: 2)
        #expect(partial.chunks.count == 2)
        let call = try await evil.waitForCalls(1)[0]
        try await evil.waitForCancel(of: call.id)
        try await call.waitForHubClose()
    }

    @Test("a worker that never reads a large request: the client gets 502/504, never a hang (smux v1 and v2)", arguments: [1, 2])
    func unreadRequest(smux: Int) async throws {
        let bed = try await HostileBed.start(hubArguments: ["--response-timeout", "3"])
        defer { Task { await bed.stop() } }
        let evil = try await HostileWorker.connect(bed.hub, token: bed.token, namespace: "evil", models: ["evil-model"], smux2: smux == 2,
                                                   acceptStreams: false, script: { _ in })
        defer { Task { await evil.stop() } }
        #expect(evil.session.configuration.version == UInt8(smux), "the hub did not agree to smux v\(smux)")
        // 20 MiB, 27 MiB in base64: more than the worker's window (v2) or its session budget,
        // the TCP buffers and the hub's outbound queue together (v1).
        let body = #"{"model":"evil-model","pad":""# + String(repeating: "x", count: 20 << 20) + #""}"#
        do {
            let r = try await HTTP.post(bed.hub.url + "/v1/chat/completions", token: bed.token, body: body, timeout: .seconds(60))
            #expect(r.status == 502 || r.status == 504, "\(r.status) \(r.body.prefix(300))")
            #expect(r.errorCode != nil, "not an OpenAI error: \(r.body.prefix(300))")
        } catch {
            let inFlight = try? await bed.hub.workers()["evil"]
            Issue.record("no answer within 60 s while the worker did not read the request (--response-timeout 3): \(error); the worker's session \(evil.ended.value ?? "is still up"), in flight on it: \(inFlight.map(String.init) ?? "?")")
        }
        try await bed.expectHealthy()
    }

    @Test("a worker opening thousands of streams of its own cannot stall the hub or its session")
    func streamFlood() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker(script: HostileWorker.polite("evil"))
        defer { Task { await evil.stop() } }
        // More than the 1024-stream accept backlog; a hub that left them unaccepted would stop
        // reading this session.
        var flood: [MuxStream] = []
        for _ in 0..<3000 { flood.append(try evil.session.openStream()) }
        try await flood.last!.write(ByteBuffer(string: "hello?\n"))
        for i in 0..<3 {
            let r = try await bed.post(model: "evil-model")
            #expect(r.status == 200 && r.body.contains(#""served_by":"evil""#), "request \(i) after the flood: \(r.status) \(r.body)")
        }
        try await bed.expectHealthy()
        withExtendedLifetime(flood) {}
    }

    // MARK: Already refused today (kept that way)

    enum BadFrame: String, CaseIterable, CustomStringConvertible {
        case badVersion, unknownCommand, payloadOnControlFrame, lengthBeyondFrame
        var description: String { rawValue }
    }

    @Test("a malformed smux frame closes that worker's session; the hub and other workers carry on", arguments: BadFrame.allCases)
    func malformedFrame(frame: BadFrame) async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker(script: HostileWorker.polite("evil"))
        defer { Task { await evil.stop() } }
        let control = evil.control.id
        let bytes: ByteBuffer =
            switch frame {
            case .badVersion: HostileWorker.rawFrame(version: 7, command: 3, streamID: 0)
            case .unknownCommand: HostileWorker.rawFrame(command: 9, streamID: control)
            case .payloadOnControlFrame: HostileWorker.rawFrame(command: 3, streamID: 0, payload: [1, 2, 3, 4])
            // The length says 16, 64 bytes follow: the hub reads the rest as the next header.
            case .lengthBeyondFrame: HostileWorker.rawFrame(command: 2, streamID: control, length: 16, payload: [UInt8](repeating: 0xFF, count: 64))
            }
        try await evil.sendRawMux(bytes)
        try await evil.waitUntilClosed()
        try await bed.hub.waitForModel("evil-model", token: bed.token, present: false)
        try await bed.expectHealthy()
    }

    @Test("data on a stream the hub never opened is never taken for a later response")
    func dataOnUnopenedStream() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { call in try await call.head(200, chunk: "GENUINE", eof: true) }
        defer { Task { await evil.stop() } }
        // A whole forged answer for the request the hub will send next, on the stream ids it
        // will open next (even ids from 2; the good worker's session has its own ids).
        let forged = TunnelResponse(requestID: "evil:relay:forged-1", statusCode: 200, headers: ["Content-Type": "text/plain"],
                                    bodyChunk: ByteBuffer(string: "INJECTED"), eof: true).encodedLine()
        for id: UInt32 in [2, 4, 6] {
            try await evil.sendRawMux(HostileWorker.rawFrame(command: 2, streamID: id, payload: Array(forged.readableBytesView)))
        }
        // The hub handles frames in order: once this heartbeat is acked, the forgery was read.
        let heartbeat = "heartbeat-\(UUID())"
        try await evil.sendControl(.heartbeat(requestID: heartbeat, HeartbeatPayload(status: WorkerStatus.online)))
        _ = try await evil.reply(to: heartbeat)

        let r = try await bed.post(model: "evil-model", headers: [("X-Request-Id", "forged-1")])
        #expect(!r.body.contains("INJECTED"), "bytes sent before the hub opened the stream were delivered: \(r.body)")
        if evil.ended.value == nil {
            #expect(r.status == 200 && r.body == "GENUINE", "\(r.status) \(r.body)")
        }
        try await bed.expectHealthy()
    }

    @Test("a control line over 1 MiB closes the session")
    func oversizedControlLine() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker(script: HostileWorker.polite("evil"))
        defer { Task { await evil.stop() } }
        try await evil.control.write(ByteBuffer(repeating: UInt8(ascii: "a"), count: (1 << 20) + 4096))
        try await evil.waitUntilClosed()
        try await bed.hub.waitForModel("evil-model", token: bed.token, present: false)
        try await bed.expectHealthy()
    }

    @Test("an LZ4 bomb (a toki-lz4 message decompressing past 1 MiB) closes the session")
    func lz4Bomb() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker(offerLZ4: true, script: HostileWorker.polite("evil"))
        defer { Task { await evil.stop() } }
        #expect(evil.lz4, "the hub did not negotiate toki-lz4")
        try await evil.sendRawMessage(Self.lz4Bomb(decompressedSize: 4 << 20))
        try await evil.waitUntilClosed()
        try await bed.hub.waitForModel("evil-model", token: bed.token, present: false)
        try await bed.expectHealthy()
    }

    /// A compressed toki-lz4 message (flags 0x01, LEB128 size, raw LZ4 block) whose block
    /// really decodes to `decompressedSize` zero bytes: one literal, then one long match.
    static func lz4Bomb(decompressedSize: Int) -> ByteBuffer {
        var block: [UInt8] = [0x1F, 0x00, 0x01, 0x00]  // 1 literal (0), match offset 1, length 15+4+…
        var extra = decompressedSize - 1 - 5 - 19  // the last 5 bytes are literals (LZ4's end rule)
        while extra >= 255 { block.append(255); extra -= 255 }
        block.append(UInt8(extra))
        block += [0x50, 0, 0, 0, 0, 0]  // 5 literals, end of block
        var message = ByteBuffer(bytes: [0x01])
        var size = decompressedSize
        while size >= 0x80 { message.writeInteger(UInt8(size & 0x7F | 0x80)); size >>= 7 }
        message.writeInteger(UInt8(size))
        message.writeBytes(block)
        return message
    }

    @Test("a user cannot register another user's namespace; the owner keeps serving")
    func namespaceHijack() async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let owner = try await bed.worker("ns-a", model: "a-model", script: HostileWorker.polite("ns-a"))
        defer { Task { await owner.stop() } }
        let mallory = try await bed.hub.createToken(user: "mallory")
        let hijacker = try await HostileWorker.dial(bed.hub, token: mallory, namespace: "ns-a", script: HostileWorker.polite("hijacker"))
        defer { Task { await hijacker.stop() } }
        let reply = try await hijacker.register(models: ["a-model"])
        #expect(reply.type == .error && reply.error?.code == TunnelProtocol.HubErrorCode.namespaceNotOwned, "\(reply)")
        try await hijacker.waitUntilClosed()
        for _ in 0..<5 {
            let r = try await bed.post(model: "a-model")
            #expect(r.status == 200 && r.body.contains(#""served_by":"ns-a""#), "\(r.status) \(r.body)")
        }
        #expect(hijacker.calls.value.isEmpty)
        try await bed.expectHealthy()
    }

    enum BrokenAnswer: String, CaseIterable, CustomStringConvertible {
        case notJSON, badBase64, lineOver16MiB, finWithoutEOF
        var description: String { rawValue }
        var code: String { self == .finWithoutEOF ? "truncated_response" : "malformed_worker_response" }

        func send(on call: HostileCall) async throws {
            switch self {
            case .notJSON: try await call.write("{\"request_id\":\"\(call.id)\",\"body_chunk\":\n")
            case .badBase64: try await call.write("{\"request_id\":\"\(call.id)\",\"body_chunk\":\"!!not*base64\"}\n")
            case .lineOver16MiB: try await call.write(ByteBuffer(repeating: UInt8(ascii: "a"), count: (16 << 20) + 4096))
            case .finWithoutEOF: call.finish()
            }
        }
    }

    @Test("a broken answer before the first byte is a 502 with its code", arguments: BrokenAnswer.allCases)
    func brokenBeforeHead(answer: BrokenAnswer) async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { call in try await answer.send(on: call) }
        defer { Task { await evil.stop() } }
        let r = try await bed.post(model: "evil-model")
        expectOpenAIError(r, status: 502, code: answer.code)
        try await bed.expectHealthy()
    }

    @Test("a broken answer after the first byte ends the SSE stream with event: error and no [DONE]", arguments: BrokenAnswer.allCases)
    func brokenAfterHead(answer: BrokenAnswer) async throws {
        let bed = try await HostileBed.start()
        defer { Task { await bed.stop() } }
        let evil = try await bed.worker { call in
            try await call.head(200, headers: ["Content-Type": "text/event-stream"], chunk: "data: {\"n\":1}\n\n")
            try await answer.send(on: call)
        }
        defer { Task { await evil.stop() } }
        let result = try await bed.stream(model: "evil-model")
        #expect(result.status == 200)
        #expect(result.text.hasPrefix("data: {\"n\":1}\n\n"), "\(result.text)")
        #expect(sseErrorCode(result.text) == answer.code, "\(result.text)")
        #expect(!result.text.contains("[DONE]"))
        try await bed.expectHealthy()
    }
}
