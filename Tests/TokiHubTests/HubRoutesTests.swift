// The hub's HTTP routes in-process (HummingbirdTesting's router framework): routing, retries and
// every OpenAI error shape, with fake workers behind the route seam and an in-memory store.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import TokiStore
import TokiTunnel

@testable import TokiHub

/// A hub over an in-memory store with two users: alice (group default) and bob (group vip).
struct HubFixture {
    let hub: HubService
    let store: HubStore
    let alice: String
    let bob: String
    let admin: String

    static func make(_ configure: (inout HubConfiguration) -> Void = { _ in }) async throws -> HubFixture {
        let logger = Logger(label: "test.hub", factory: { _ in SwiftLogNoOpLogHandler() })
        let store = try HubStore.inMemory(logger: logger)
        var configuration = HubConfiguration()
        configure(&configuration)
        let alice = try await store.createToken(user: "alice").plaintext
        let bob = try await store.createToken(user: "bob", group: "vip").plaintext
        let admin = try await store.createToken(user: "root", role: .admin).plaintext
        return HubFixture(hub: HubService(configuration: configuration, store: store, logger: logger), store: store,
                          alice: alice, bob: bob, admin: admin)
    }

    /// Runs `body` against the hub's router, with the deadline sweeper running.
    /// `logger`: the application's, from which each request's `context.logger` is made.
    func test<R: Sendable>(logger: Logger = Logger(label: "test.app", factory: { _ in SwiftLogNoOpLogHandler() }),
                           _ body: @Sendable (any TestClientProtocol) async throws -> R) async throws -> R {
        let sweeper = Task { [hub] in await hub.deadlines.run() }
        defer { sweeper.cancel() }
        let app = Application(router: hub.makeRouter(), logger: logger)
        return try await app.test(.router) { client in try await body(client) }
    }
}

extension TestClientProtocol {
    func post(_ path: String = "/v1/chat/completions", token: String?, json: String, headers extra: HTTPFields = [:]) async throws -> TestResponse {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let token { headers[.authorization] = "Bearer \(token)" }
        headers.append(contentsOf: extra)
        return try await execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: json))
    }
}

/// The `error` object of an OpenAI error body.
struct ErrorBody: Decodable, Equatable {
    struct Inner: Decodable, Equatable {
        var message: String
        var type: String
        var code: String?
        var param: String?
    }
    var error: Inner

    init(_ response: TestResponse) throws {
        self = try JSONDecoder().decode(Self.self, from: Data(response.body.readableBytesView))
    }
}

func chat(_ model: String, stream: Bool = false) -> String {
    #"{"model":"\#(model)","stream":\#(stream),"messages":[{"role":"user","content":"hi"}]}"#
}

@Suite("hub routes in-process")
struct HubRoutesTests {
    @Test("requests go to a worker serving the model in the caller's group")
    func routingByModelAndGroup() async throws {
        let f = try await HubFixture.make()
        for (namespace, model, group) in [("a", "llama", "default"), ("b", "qwen", "default"), ("v", "llama", "vip")] {
            try f.hub.registry.addFake(namespace, models: [model], groups: [group]) { _ in .respond(body: #"{"from":"\#(namespace)"}"#) }
        }
        try await f.test { client in
            for (token, model, expected) in [(f.alice, "llama", "a"), (f.alice, "qwen", "b"), (f.bob, "llama", "v")] {
                let response = try await client.post(token: token, json: chat(model), headers: [HTTPField.Name("X-Request-Id")!: "req-\(expected)"])
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == #"{"from":"\#(expected)"}"#)
                #expect(response.headers[HTTPField.Name("X-Request-Id")!] == "req-\(expected)")
            }
            // bob's group has no qwen: 404, as if it did not exist.
            let response = try await client.post(token: f.bob, json: chat("qwen"))
            #expect(response.status == .notFound)
            #expect(try ErrorBody(response).error.code == "model_not_found")
        }
        let fake = try #require(f.hub.registry.workers.first { $0.namespace == "a" }?.route as? FakeWorkerRoute)
        let forwarded = try #require(fake.requests.first)
        #expect(forwarded.model == "llama")
        #expect(forwarded.route == .chatCompletions)
        #expect(forwarded.requestID == "a:relay:req-a")
        #expect(forwarded.headers?["X-Request-Id"] == "req-a")
        let models = try await f.test { client in
            try await client.execute(uri: "/v1/models", method: .get, headers: [.authorization: "Bearer \(f.alice)"])
        }
        #expect(String(buffer: models.body).contains(#""id":"qwen""#))
        #expect(String(buffer: models.body).contains(#""id":"llama""#))
    }

    @Test("a worker failing before the first byte is retried on another", arguments: [
        FakeAnswer.error(code: "local_request_failed", message: "backend down"), .hangUp, .raw("{not json\n"),
    ])
    func retryBeforeFirstByte(failure: FakeAnswer) async throws {
        let f = try await HubFixture.make()
        let (_, broken) = try f.hub.registry.addFake("broken", models: ["m"]) { _ in failure }
        let (fine, good) = try f.hub.registry.addFake("fine", models: ["m"]) { _ in .respond(body: "ok") }
        _ = fine.begin(requestID: "keeps it second")  // the less loaded worker is tried first
        try await f.test { client in
            let response = try await client.post(token: f.alice, json: chat("m"))
            #expect(response.status == .ok)
            #expect(String(buffer: response.body) == "ok")
        }
        #expect(broken.requests.count == 1)
        #expect(good.requests.count == 1)
    }

    @Test("every line the hub logs for a request carries its request id")
    func requestIDOnLogLines() async throws {
        let f = try await HubFixture.make()
        try f.hub.registry.addFake("broken", models: ["m"]) { _ in .hangUp }
        let (fine, _) = try f.hub.registry.addFake("fine", models: ["m"]) { _ in .respond(body: "ok") }
        _ = fine.begin(requestID: "keeps it second")  // the broken worker is tried first, and logged
        let events = CapturedLogEvents()
        var logger = Logger(label: "test.app") { _ in CapturingLogHandler(events: events) }
        logger.logLevel = .debug
        try await f.test(logger: logger) { client in
            let response = try await client.post(token: f.alice, json: chat("m"), headers: [.xRequestID: "req-trace-1"])
            #expect(response.status == .ok)
        }
        let hubLines = events.all.filter { $0.source == "TokiHub" }
        #expect(hubLines.contains { $0.message.contains("trying the next") }, "\(hubLines.map(\.message))")
        for line in hubLines {
            #expect(line.requestID == "req-trace-1", "without the request id: \(line.message)")
        }
    }

    @Test("a worker answering an error, nothing, or garbage with nobody else: 502 in OpenAI's shape", arguments: [
        (FakeAnswer.error(code: "target_not_found", message: "no such model here"), "target_not_found"),
        (.hangUp, "truncated_response"),
        (.raw("{not json\n"), "malformed_worker_response"),
        (.raw(#"{"request_id":"x","status_code":42}"# + "\n"), "malformed_worker_response"),
    ])
    func badGateway(answer: FakeAnswer, code: String) async throws {
        let f = try await HubFixture.make()
        try f.hub.registry.addFake("w", models: ["m"]) { _ in answer }
        let response = try await f.test { client in try await client.post(token: f.alice, json: chat("m")) }
        #expect(response.status == .badGateway)
        let error = try ErrorBody(response).error
        #expect(error.type == "upstream_error")
        #expect(error.code == code)
        #expect(error.message.hasPrefix("All workers failed: "))
    }

    @Test("a worker that does not answer in time: 504, the worker told to cancel, no retry")
    func deadline() async throws {
        let f = try await HubFixture.make { $0.responseTimeout = .milliseconds(300) }
        let (_, slow) = try f.hub.registry.addFake("slow", models: ["m"]) { _ in .silent }
        let (other, spare) = try f.hub.registry.addFake("spare", models: ["m"]) { _ in .respond(body: "late") }
        _ = other.begin(requestID: "keeps it second")
        let response = try await f.test { client in try await client.post(token: f.alice, json: chat("m")) }
        #expect(response.status == .gatewayTimeout)
        let error = try ErrorBody(response).error
        #expect(error == .init(message: "The worker did not answer within 0 s.", type: "upstream_error", code: "worker_timeout", param: nil))
        #expect(slow.cancelled.withLock { $0.count } == 1)
        #expect(spare.requests.isEmpty)
    }

    @Test("authentication: 401 missing_api_key and invalid_api_key; admin routes 403 for users")
    func authErrors() async throws {
        let f = try await HubFixture.make()
        try await f.test { client in
            for (path, method) in [("/v1/chat/completions", HTTPRequest.Method.post), ("/v1/models", .get), ("/admin/workers", .get)] {
                let missing = try await client.execute(uri: path, method: method, body: ByteBuffer(string: chat("m")))
                #expect(missing.status == .unauthorized)
                #expect(try ErrorBody(missing).error == .init(message: "You didn't provide an API key. Send it as 'Authorization: Bearer <token>'.",
                                                              type: "invalid_request_error", code: "missing_api_key", param: nil))
                let bad = try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer sk-toki-nope"],
                                                   body: ByteBuffer(string: chat("m")))
                #expect(bad.status == .unauthorized)
                #expect(try ErrorBody(bad).error == .init(message: "Incorrect API key provided.", type: "invalid_request_error",
                                                          code: "invalid_api_key", param: nil))
            }
            let forbidden = try await client.execute(uri: "/admin/workers", method: .get, headers: [.authorization: "Bearer \(f.alice)"])
            #expect(forbidden.status == .forbidden)
            #expect(try ErrorBody(forbidden).error.code == "admin_required")
            let allowed = try await client.execute(uri: "/admin/workers", method: .get, headers: [.authorization: "Bearer \(f.admin)"])
            #expect(allowed.status == .ok)
        }
    }

    @Test("unknown models reveal nothing: not served, unknown, and not on the token's allow-list look the same (404)")
    func unknownModel() async throws {
        let f = try await HubFixture.make()
        let limited = try await f.store.createToken(user: "carol", models: ["other"]).plaintext
        try f.hub.registry.addFake("w", models: ["secret"]) { _ in .respond(body: "leak") }
        try await f.test { client in
            for (token, model) in [(f.alice, "nope"), (limited, "secret")] {
                let response = try await client.post(token: token, json: chat(model))
                #expect(response.status == .notFound)
                #expect(try ErrorBody(response).error == .init(message: "The model `\(model)` does not exist or you do not have access to it.",
                                                               type: "invalid_request_error", code: "model_not_found", param: "model"))
            }
        }
    }

    @Test("a known model with no worker online: 503 no_worker_available")
    func noWorker() async throws {
        let f = try await HubFixture.make()
        _ = try await f.store.claimNamespace(namespace: "gone", userID: 1, models: ["m"])
        let response = try await f.test { client in try await client.post(token: f.alice, json: chat("m")) }
        #expect(response.status == .serviceUnavailable)
        #expect(try ErrorBody(response).error == .init(message: "No worker serving `m` is online right now.", type: "server_error",
                                                       code: "no_worker_available", param: nil))
    }

    @Test("bad bodies: 400 invalid_json / missing_model, 413 request_too_large")
    func badBodies() async throws {
        let f = try await HubFixture.make { $0.maxBodyBytes = 1024 }
        try await f.test { client in
            for body in ["{not json", "", "[1,2]"] {
                let response = try await client.post(token: f.alice, json: body)
                #expect(response.status == .badRequest)
                let error = try ErrorBody(response).error
                #expect(error.type == "invalid_request_error")
                #expect(error.code == "invalid_json")
                #expect(error.message.hasPrefix("We could not parse the JSON body of your request: "))
            }
            for body in [#"{"messages":[]}"#, #"{"model":""}"#, #"{"model":7}"#] {
                let response = try await client.post(token: f.alice, json: body)
                #expect(response.status == .badRequest)
                #expect(try ErrorBody(response).error == .init(message: "you must provide a model parameter", type: "invalid_request_error",
                                                               code: "missing_model", param: "model"))
            }
            let big = #"{"model":"m","pad":""# + String(repeating: "x", count: 2000) + #""}"#
            let response = try await client.post(token: f.alice, json: big)
            #expect(response.status == .contentTooLarge)
            #expect(try ErrorBody(response).error == .init(message: "Request body is larger than the limit of 1024 bytes.",
                                                           type: "invalid_request_error", code: "request_too_large", param: nil))
        }
    }

    @Test("multipart: the model comes from the form field; the body goes through untouched")
    func multipart() async throws {
        let f = try await HubFixture.make()
        let (_, whisper) = try f.hub.registry.addFake("asr", models: ["whisper-1"]) { _ in .respond(body: #"{"text":"hello"}"#) }
        let boundary = "toki-boundary-7"
        let form = "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n"
            + "--\(boundary)\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--\(boundary)--\r\n"
        try await f.test { client in
            let response = try await client.execute(
                uri: "/v1/audio/transcriptions", method: .post,
                headers: [.authorization: "Bearer \(f.alice)", .contentType: "multipart/form-data; boundary=\(boundary)"],
                body: ByteBuffer(string: form))
            #expect(response.status == .ok)
            #expect(String(buffer: response.body) == #"{"text":"hello"}"#)
            // A form without a model field is refused like a JSON body without one.
            let missing = try await client.execute(
                uri: "/v1/audio/transcriptions", method: .post,
                headers: [.authorization: "Bearer \(f.alice)", .contentType: "multipart/form-data; boundary=\(boundary)"],
                body: ByteBuffer(string: "--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--\(boundary)--\r\n"))
            #expect(missing.status == .badRequest)
            #expect(try ErrorBody(missing).error.code == "missing_model")
        }
        let request = try #require(whisper.requests.first)
        #expect(request.model == "whisper-1")
        #expect(request.route == .audioTranscription)
        #expect(request.headers?["Content-Type"] == "multipart/form-data; boundary=\(boundary)")
        #expect(request.body.map { String(buffer: $0) } == form)
    }

    @Test("while draining: POSTs get 503 shutting_down before authentication, readyz says draining")
    func draining() async throws {
        let f = try await HubFixture.make()
        f.hub.draining.withLock { $0 = true }
        try await f.test { client in
            let response = try await client.post(token: nil, json: chat("m"))
            #expect(response.status == .serviceUnavailable)
            #expect(try ErrorBody(response).error.code == "shutting_down")
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .serviceUnavailable)
        }
    }

    @Test("unknown paths: 404 unknown_url; the tunnel path without an upgrade: Tokilake's 401")
    func pathsAndTunnelRefusal() async throws {
        let f = try await HubFixture.make()
        try await f.test { client in
            let unknown = try await client.execute(uri: "/v1/nothing", method: .get)
            #expect(unknown.status == .notFound)
            #expect(try ErrorBody(unknown).error.code == "unknown_url")
            let missing = try await client.execute(uri: "/api/tokilake/connect", method: .get)
            #expect(missing.status == .unauthorized)
            #expect(String(buffer: missing.body) == #"{"success":false,"message":"missing authorization token"}"#)
            let bad = try await client.execute(uri: "/connect?token=sk-toki-nope", method: .get)
            #expect(bad.status == .unauthorized)
            #expect(String(buffer: bad.body) == #"{"success":false,"message":"invalid token"}"#)
        }
    }
}

/// Log events as a test reads them back: module, message, the `request_id` metadata.
final class CapturedLogEvents: Sendable {
    struct Event: Sendable {
        var source: String
        var message: String
        var requestID: String?
    }
    private let events = Locked<[Event]>([])
    func append(_ event: Event) { events.withLock { $0.append(event) } }
    var all: [Event] { events.value }
}

struct CapturingLogHandler: LogHandler {
    let events: CapturedLogEvents
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        events.append(.init(source: event.source, message: event.message.description, requestID: merged["request_id"].map { "\($0)" }))
    }
}
