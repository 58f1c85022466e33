// toki-stub-backend: a stub OpenAI-compatible inference server for tests and benchmarks.
//
// USAGE
//   toki-stub-backend [--host 127.0.0.1] [--port 0] [--models a,b] [--history 100] [--ollama-only]
//
//   Prints exactly one line `LISTEN <port>` on stdout (flushed) once bound, then logs nothing on
//   stdout. Exits 0 on SIGTERM/SIGINT.
//   --models       model ids served by GET /v1/models and GET /api/tags (default: stub-model)
//   --history      how many requests /stub/requests keeps (default 100)
//   --ollama-only  GET /v1/models answers 404; models are listed only by GET /api/tags
//
// OPENAI ROUTES (JSON bodies; the `model` field is echoed, never validated)
//   GET  /v1/models               {"object":"list","data":[{"id":…,"object":"model",…}]}
//   GET  /api/tags                Ollama shape {"models":[{"name":…,"model":…}]}
//   POST /v1/chat/completions     non-streaming: chat.completion JSON with usage and
//                                 "stub_echo" = the request body as received (parsed JSON);
//                                 "stream":true → text/event-stream, N `data: {chat.completion.chunk}`
//                                 events, then (if stream_options.include_usage) a usage chunk,
//                                 then `data: [DONE]`. Each event is written and flushed on its own.
//   POST /v1/completions          same, with text_completion objects
//   POST /v1/embeddings           one 8-dimensional embedding per input string
//   POST /v1/audio/transcriptions {"text":"stub transcription","bytes":<body size>,"content_type":…}
//
// CONTROL FIELDS in a JSON request body (all optional):
//   "stub_chunks": N       streamed events before [DONE] (default 5)
//   "stub_delay_ms": D     delay before each streamed event; for non-streaming responses a delay
//                          before the answer (default 0)
//   "stub_chunk_bytes": B  pad each streamed event's content to about B bytes (default: short)
//   "stub_status": S       answer status S with an OpenAI error JSON body (e.g. 500, 429)
//   "stub_die_after": K    streaming: close the connection abruptly after K events (no [DONE],
//                          no terminating chunk)
//
// OBSERVATION ROUTES
//   GET  /stub/cancelled   {"cancelled":n,"completed":m,"streams":k,"streamed_bytes":b}: n = streaming
//                          responses that ended because the client closed the connection; m = that
//                          completed; b = bytes of streamed events written so far (all streams)
//   GET  /stub/requests    {"requests":[{"method","path","query","headers":{name:value} (incl. Host),
//                          "body":"<utf8 or empty>","body_bytes":n}]}, oldest first, last --history
//   POST /stub/models      body {"models":["a","b"]}: replaces the model list
//   POST /stub/reset       clears counters and history
//   GET  /health           {"status":"ok"}
//   any other GET/POST     recorded in /stub/requests, then 404 with an OpenAI error body

import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

// MARK: Arguments

struct Arguments {
    var host = "127.0.0.1"
    var port = 0
    var models = ["stub-model"]
    var history = 100
    var ollamaOnly = false

    static func parse(_ argv: [String]) -> Arguments {
        var a = Arguments()
        var i = 0
        func value() -> String {
            i += 1
            guard i < argv.count else { fail("missing value for \(argv[i - 1])") }
            return argv[i]
        }
        while i < argv.count {
            switch argv[i] {
            case "--host": a.host = value()
            case "--port": a.port = Int(value()) ?? { fail("--port needs a number") }()
            case "--models": a.models = value().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            case "--history": a.history = max(1, Int(value()) ?? 100)
            case "--ollama-only": a.ollamaOnly = true
            case "-h", "--help":
                print("usage: toki-stub-backend [--host 127.0.0.1] [--port 0] [--models a,b] [--history 100] [--ollama-only]")
                exit(0)
            default: fail("unknown argument \(argv[i])")
            }
            i += 1
        }
        return a
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("toki-stub-backend: \(message)\n".utf8))
        exit(2)
    }
}

// MARK: State

struct RecordedRequest: Sendable {
    var method: String
    var path: String
    var query: String
    var headers: [(String, String)]
    var body: ByteBuffer

    var json: [String: Any] {
        var h: [String: String] = [:]
        for (name, value) in headers {
            h[name] = h[name].map { $0 + ", " + value } ?? value
        }
        let text = body.readableBytes <= 1 << 16 ? (String(validating: body.readableBytesView, as: UTF8.self) ?? "") : ""
        return ["method": method, "path": path, "query": query, "headers": h, "body": text, "body_bytes": body.readableBytes]
    }
}

final class StubState: Sendable {
    struct Values {
        var models: [String]
        var history: [RecordedRequest] = []
        var cancelled = 0
        var completed = 0
        var streams = 0
        var streamedBytes = 0
    }

    let values: Mutex<Values>
    let historyLimit: Int

    init(models: [String], historyLimit: Int) {
        values = Mutex(Values(models: models))
        self.historyLimit = historyLimit
    }

    func record(_ r: RecordedRequest) {
        values.withLock { v in
            v.history.append(r)
            if v.history.count > historyLimit { v.history.removeFirst(v.history.count - historyLimit) }
        }
    }
}

// MARK: Helpers

func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func openAIError(status: Int, message: String) -> Response {
    jsonResponse(["error": ["message": message, "type": status >= 500 ? "server_error" : "invalid_request_error", "code": status]],
                 status: HTTPResponse.Status(code: status))
}

func int(_ v: Any?) -> Int? {
    if let n = v as? Int { return n }
    if let d = v as? Double { return Int(d) }
    if let n = v as? NSNumber { return n.intValue }
    if let s = v as? String { return Int(s) }
    return nil
}

/// Reads the body, records the request, and parses a JSON object (empty if not JSON).
func receive(_ request: Request, state: StubState) async throws -> (body: ByteBuffer, json: [String: Any]) {
    let body = try await request.body.collect(upTo: 64 << 20)
    state.record(RecordedRequest(method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
                                 headers: [("Host", request.head.authority ?? "")] + request.headers.map { ($0.name.rawName, $0.value) }, body: body))
    let json = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    return (body, json)
}

func usage(_ prompt: Int, _ completion: Int) -> [String: Any] {
    ["prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion]
}

/// A streamed completion: `chunks` events, each flushed, with delays; counts client disconnects.
func streamResponse(json: [String: Any], state: StubState, chat: Bool) -> Response {
    let chunks = max(0, int(json["stub_chunks"]) ?? 5)
    let delay = max(0, int(json["stub_delay_ms"]) ?? 0)
    let padTo = max(0, int(json["stub_chunk_bytes"]) ?? 0)
    let dieAfter = int(json["stub_die_after"])
    let includeUsage = ((json["stream_options"] as? [String: Any])?["include_usage"] as? Bool) ?? false
    let model = json["model"] as? String ?? ""
    let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.prefix(8).lowercased()
    state.values.withLock { $0.streams += 1 }

    @Sendable func event(_ object: [String: Any]) -> ByteBuffer {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        var b = ByteBuffer(string: "data: ")
        b.writeBytes(data)
        b.writeString("\n\n")
        return b
    }
    @Sendable func delta(_ i: Int) -> [String: Any] {
        var text = "tok\(i) "
        if padTo > text.utf8.count { text += String(repeating: "x", count: padTo - text.utf8.count) }
        let choice: [String: Any] = chat
            ? ["index": 0, "delta": i == 0 ? ["role": "assistant", "content": text] : ["content": text], "finish_reason": i == chunks - 1 ? "stop" : NSNull()]
            : ["index": 0, "text": text, "finish_reason": i == chunks - 1 ? "stop" : NSNull()]
        return ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": 0, "model": model, "choices": [choice]]
    }

    let body = ResponseBody { writer in
        do {
            for i in 0..<chunks {
                if i == dieAfter { throw StubDied() }  // abrupt: no [DONE], no terminating chunk
                if delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
                let bytes = event(delta(i))
                try await writer.write(bytes)
                state.values.withLock { $0.streamedBytes += bytes.readableBytes }
            }
            if let dieAfter, dieAfter >= chunks { throw StubDied() }
            if includeUsage {
                try await writer.write(event(["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": 0,
                                              "model": model, "choices": [], "usage": usage(8, chunks)]))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
            state.values.withLock { $0.completed += 1 }
        } catch let died as StubDied {
            throw died
        } catch {
            state.values.withLock { $0.cancelled += 1 }
            throw error
        }
    }
    return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
}

struct StubDied: Error {}

// MARK: Routes

func runStub(arguments: Arguments) async throws {
    let state = StubState(models: arguments.models, historyLimit: arguments.history)
    var logger = Logger(label: "toki-stub-backend")
    logger.logLevel = .error
    let router = Router()

    router.get("/health") { _, _ in jsonResponse(["status": "ok"]) }

    router.get("/v1/models") { request, _ -> Response in
        _ = try await receive(request, state: state)
        if arguments.ollamaOnly { return openAIError(status: 404, message: "not found") }
        let models = state.values.withLock { $0.models }
        return jsonResponse(["object": "list", "data": models.map { ["id": $0, "object": "model", "created": 0, "owned_by": "stub"] }])
    }

    router.get("/api/tags") { request, _ -> Response in
        _ = try await receive(request, state: state)
        let models = state.values.withLock { $0.models }
        return jsonResponse(["models": models.map { ["name": $0, "model": $0, "size": 0] }])
    }

    @Sendable func completionRoute(chat: Bool) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
        { request, _ in
            let (_, json) = try await receive(request, state: state)
            if let status = int(json["stub_status"]), status >= 400 {
                return openAIError(status: status, message: "stub error \(status)")
            }
            if json["stream"] as? Bool == true { return streamResponse(json: json, state: state, chat: chat) }
            if let delay = int(json["stub_delay_ms"]), delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
            let model = json["model"] as? String ?? ""
            let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.prefix(8).lowercased()
            let choice: [String: Any] = chat
                ? ["index": 0, "message": ["role": "assistant", "content": "stub reply"], "finish_reason": "stop"]
                : ["index": 0, "text": "stub reply", "finish_reason": "stop"]
            return jsonResponse(["id": id, "object": chat ? "chat.completion" : "text_completion", "created": 0, "model": model,
                                 "choices": [choice], "usage": usage(8, 2), "stub_echo": json])
        }
    }

    router.post("/v1/chat/completions", use: completionRoute(chat: true))
    router.post("/v1/completions", use: completionRoute(chat: false))

    router.post("/v1/embeddings") { request, _ -> Response in
        let (_, json) = try await receive(request, state: state)
        if let status = int(json["stub_status"]), status >= 400 { return openAIError(status: status, message: "stub error \(status)") }
        let inputs: [Any] = (json["input"] as? [Any]) ?? [json["input"] ?? ""]
        let data = inputs.enumerated().map { i, _ in
            ["object": "embedding", "index": i, "embedding": (0..<8).map { Double($0 + i) / 10 }] as [String: Any]
        }
        return jsonResponse(["object": "list", "data": data, "model": json["model"] as? String ?? "", "usage": usage(inputs.count, 0)])
    }

    router.post("/v1/audio/transcriptions") { request, _ -> Response in
        let (body, _) = try await receive(request, state: state)
        return jsonResponse(["text": "stub transcription", "bytes": body.readableBytes,
                             "content_type": request.headers[.contentType] ?? ""])
    }

    router.get("/stub/cancelled") { _, _ in
        let v = state.values.withLock { ($0.cancelled, $0.completed, $0.streams, $0.streamedBytes) }
        return jsonResponse(["cancelled": v.0, "completed": v.1, "streams": v.2, "streamed_bytes": v.3])
    }

    router.get("/stub/requests") { _, _ in
        let history = state.values.withLock { $0.history }
        return jsonResponse(["requests": history.map(\.json)])
    }

    router.post("/stub/models") { request, _ -> Response in
        let body = try await request.body.collect(upTo: 1 << 20)
        let json = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
        let models = (json["models"] as? [String]) ?? []
        state.values.withLock { $0.models = models }
        return jsonResponse(["models": models])
    }

    router.post("/stub/reset") { _, _ in
        state.values.withLock { v in
            v.history = []
            v.cancelled = 0
            v.completed = 0
            v.streams = 0
            v.streamedBytes = 0
        }
        return jsonResponse(["ok": true])
    }

    // Anything else is recorded too (so tests can see where a request landed), then 404.
    @Sendable func notFound(_ request: Request, _: BasicRequestContext) async throws -> Response {
        _ = try await receive(request, state: state)
        return openAIError(status: 404, message: "no route for \(request.method.rawValue) \(request.uri.path)")
    }
    router.get("**", use: notFound)
    router.post("**", use: notFound)

    let app = Application(
        router: router,
        configuration: .init(address: .hostname(arguments.host, port: arguments.port), serverName: nil),
        onServerRunning: { channel in
            // Unbuffered, so a parent reading the pipe sees it at once.
            FileHandle.standardOutput.write(Data("LISTEN \(channel.localAddress?.port ?? 0)\n".utf8))
        },
        logger: logger
    )
    try await app.runService()
}

try await runStub(arguments: Arguments.parse(Array(CommandLine.arguments.dropFirst())))
