import Foundation
import TestSupport
import Testing

/// Clients that try to hold the hub's HTTP server hostage, against a real `toki hub` with small
/// limits. Each case asserts the answer, that the hub closed the connection, and that the hub
/// still serves others afterwards.
@Suite("end to end: hostile HTTP clients", .serialized)
struct HostileClientTests {
    static let smallTimeouts = ["--header-timeout", "2", "--idle-timeout", "2", "--body-timeout", "2"]

    /// Runs `body` against a fresh hub, checks it still serves, and stops it, whatever happens.
    func withHub(_ arguments: [String] = smallTimeouts, _ body: (HubProcess) async throws -> Void) async throws {
        let hub = try await HubProcess(arguments: arguments)
        try await stopping({ await hub.stop() }) {
            try await body(hub)
            try await expectServing(hub)
        }
    }

    /// The same with a worker and a stub backend.
    func withDeployment(_ hubArguments: [String], _ body: (Deployment) async throws -> Void) async throws {
        let d = try await Deployment.start(.toki, hubArguments: hubArguments)
        try await stopping({ await d.stop() }) {
            try await body(d)
            try await expectServing(d.hub)
        }
    }

    func stopping(_ stop: () async -> Void, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            await stop()
            throw error
        }
        await stop()
    }

    /// A new connection gets `/healthz`.
    func expectServing(_ hub: HubProcess) async throws {
        let probe = try RawConnection(port: hub.port)
        await probe.sendAll("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        #expect(await probe.waitForResponse(), "the hub did not answer /healthz afterwards")
        #expect(probe.status == 200 && probe.body == "ok\n", "\(probe.text)")
    }

    /// Sends `request` and expects `status` with an OpenAI-shaped error, then the hub's close.
    func expectRejected(_ request: [UInt8], status: Int, code: String? = nil, hub: HubProcess) async throws {
        let connection = try RawConnection(port: hub.port)
        await connection.sendAll(request)
        #expect(await connection.waitUntilClosed(), "the hub kept the connection open")
        #expect(connection.status == status, "\(connection.text.prefix(300))")
        #expect(connection.text.contains("Connection: close"))
        if let code { #expect(connection.body.contains(#""code":"\#(code)""#), "\(connection.body)") }
    }

    // MARK: Slow and silent clients

    @Test("an idle connection is closed")
    func idleConnection() async throws {
        try await withHub { hub in
            let idle = try RawConnection(port: hub.port)
            #expect(await idle.waitUntilClosed())
            #expect(idle.received.isEmpty, "a connection that sent nothing gets no answer: \(idle.text)")
        }
    }

    @Test("a request line or headers trickled one byte at a time get 408 and a close", arguments: [
        "GET /v1/models HTTP/1.1\r\nHost: hub\r\n\r\n",
        "GET /v1/models HTTP/1.1\r\nHost: hub\r\nX-Slow: " + String(repeating: "a", count: 100) + "\r\n\r\n",
    ])
    func trickle(request: String) async throws {
        try await withHub { hub in
            let slow = try RawConnection(port: hub.port)
            // Byte by byte at 4 per second: the request needs longer than the header timeout.
            let sentAll = await slow.trickle(request, interval: .milliseconds(250))
            #expect(!sentAll, "the hub waited for the whole trickle")
            #expect(await slow.waitUntilClosed())
            #expect(slow.status == 408, "\(slow.text)")
        }
    }

    @Test("a kept-alive connection that sends no next request is closed")
    func keepAliveIdle() async throws {
        try await withHub { hub in
            let client = try RawConnection(port: hub.port)
            await client.sendAll("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            #expect(await client.waitForResponse())
            #expect(client.status == 200)
            #expect(await client.waitUntilClosed())
        }
    }

    @Test("a chunked body that stops, and a body shorter than its Content-Length, get 408 and a close", arguments: [
        "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\n",
        "Content-Length: 1000\r\n\r\n{\"model\":",
    ])
    func stalledBody(framing: String) async throws {
        try await withHub { hub in
            let token = try await hub.createToken(user: "mallory")
            let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\n" + framing
            try await expectRejected(Array(request.utf8), status: 408, code: "request_timeout", hub: hub)
        }
    }

    // MARK: Malformed requests

    @Test("malformed requests are answered and closed", arguments: [
        ("garbage request line", "\u{16}\u{03}\u{01}garbage\r\n\r\n", 400),
        ("unknown method", "BREW /pot HTTP/1.1\r\nHost: hub\r\n\r\n", 400),
        ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        ("Content-Length and Transfer-Encoding", "POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("negative Content-Length", "POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nContent-Length: -1\r\n\r\n", 400),
        ("non-numeric Content-Length", "POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nContent-Length: 12abc\r\n\r\n", 400),
        ("10,000 headers", "GET /healthz HTTP/1.1\r\n" + (0..<10_000).map { "X-\($0): y\r\n" }.joined() + "\r\n", 431),
    ])
    func malformed(name: String, request: String, status: Int) async throws {
        try await withHub { hub in
            try await expectRejected(Array(request.utf8), status: status, hub: hub)
        }
    }

    @Test("a 1 MB header gets 431 and a close, though the client is still sending")
    func hugeHeader() async throws {
        try await withHub { hub in
            let connection = try RawConnection(port: hub.port)
            let request = "GET /healthz HTTP/1.1\r\nHost: hub\r\nX-Big: " + String(repeating: "a", count: 1 << 20) + "\r\n\r\n"
            await connection.sendAll(Array(request.utf8))  // fails part-way once the hub has closed
            #expect(await connection.waitUntilClosed())
            #expect(connection.status == 431, "\(connection.text.prefix(300))")
            #expect(connection.body.contains(#""code":"headers_too_large""#))
        }
    }

    // MARK: Connection limit

    @Test("at --max-connections extra connections get 503 and a close; open ones, workers and later clients keep working")
    func connectionLimit() async throws {
        try await withDeployment(["--max-connections", "50", "--header-timeout", "120", "--idle-timeout", "120"]) { d in
            var idle: [RawConnection] = []
            for _ in 0..<60 { idle.append(try RawConnection(port: d.hub.port)) }
            // The refused ones are answered and closed at once; wait for at least the 10 over 50.
            let deadline = ContinuousClock.now + .seconds(20)
            func closed() -> [RawConnection] {
                idle.forEach { $0.pump() }
                return idle.filter(\.closedByPeer)
            }
            while closed().count < 10, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
            try await Task.sleep(for: .seconds(1))
            let refused = closed().count
            for connection in closed() { #expect(connection.status == 503, "\(connection.text)") }
            // The worker and the test's HTTP client hold a few of the 50 too.
            #expect(refused >= 10 && refused < 20, "\(refused) of 60 refused")
            let open = idle.filter { !$0.closedByPeer }
            #expect(open.count > 40)
            // An already-open connection is served, through the worker too.
            let client = try #require(open.first)
            let body = #"{"model":"stub-model"}"#
            await client.sendAll("POST /v1/chat/completions HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer \(d.token)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            #expect(await client.waitForResponse())
            #expect(client.status == 200, "\(client.text)")
            let health = try #require(open.last)
            await health.sendAll("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            #expect(await health.waitForResponse())
            #expect(health.status == 200)
            #expect(d.hub.process.stderr.contains("connection limit reached"), "no refusal line in the hub's log")
            // Freed slots are usable again.
            for connection in idle { connection.close() }
            var served = false
            let freed = ContinuousClock.now + .seconds(20)
            while !served, ContinuousClock.now < freed {
                let fresh = try RawConnection(port: d.hub.port)
                await fresh.sendAll("GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
                served = await fresh.waitForResponse(timeout: .seconds(2)) && fresh.status == 200
                if !served { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(served, "a new connection was not served after the idle ones closed")
        }
    }

    @Test("a worker tunnel outlives the HTTP header and idle timeouts")
    func tunnelOutlivesIdleTimeout() async throws {
        try await withDeployment(["--header-timeout", "1", "--idle-timeout", "1"]) { d in
            try await Task.sleep(for: .seconds(5))
            let r = try await d.post("/v1/chat/completions", #"{"model":"stub-model"}"#)
            #expect(r.status == 200, "\(r.body)")
            let registrations = d.hub.process.stderr.components(separatedBy: "worker registered").count - 1
            #expect(registrations == 1, "the worker had to reconnect: \(registrations) registrations")
        }
    }

    // MARK: Cases that already passed, kept passing

    @Test("bodies: malformed JSON 400, 100k nested brackets 400, over --max-body-mib 413")
    func bodies() async throws {
        try await withHub(Self.smallTimeouts + ["--max-body-mib", "1"]) { hub in
            let token = try await hub.createToken(user: "mallory")
            let url = hub.url + "/v1/chat/completions"
            let malformed = try await HTTP.post(url, token: token, body: #"{"model": "x", "#)
            #expect(malformed.status == 400 && malformed.errorCode == "invalid_json", "\(malformed.body)")
            let nested = try await HTTP.post(url, token: token, body: String(repeating: "[", count: 100_000))
            #expect(nested.status == 400 && nested.json?["error"] != nil, "\(nested.body.prefix(300))")
            let huge = try await HTTP.post(url, token: token, body: #"{"model":"x","pad":""# + String(repeating: "x", count: 2 << 20) + #""}"#)
            #expect(huge.status == 413 && huge.json?["error"] != nil)
        }
    }

    @Test("authentication: a bad bearer token 401; admin routes refuse user tokens and path tricks")
    func authentication() async throws {
        try await withHub { hub in
            let user = try await hub.createToken(user: "mallory")
            let bad = try await HTTP.post(hub.url + "/v1/chat/completions", token: "sk-toki-not-a-token", body: #"{"model":"x"}"#)
            #expect(bad.status == 401 && bad.errorCode == "invalid_api_key")
            let body = #"{"user":"mallory","name":"stolen"}"#
            for path in ["/admin/tokens", "/admin/../admin/tokens", "//admin/tokens", "/admin/%2e%2e/admin/tokens", "/v1/%2e%2e/admin/tokens", "/ADMIN/tokens"] {
                for token in [nil, user] {
                    let connection = try RawConnection(port: hub.port)
                    var request = "POST \(path) HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
                    if let token { request += "Authorization: Bearer \(token)\r\n" }
                    await connection.sendAll(request + "\r\n" + body)
                    #expect(await connection.waitForResponse(), "\(path): no answer")
                    let status = connection.status ?? 0
                    #expect([401, 403, 404].contains(status), "\(path) with \(token == nil ? "no" : "a user") token: \(connection.text.prefix(300))")
                    #expect(!connection.text.contains("sk-toki-"), "\(path) leaked a token")
                }
            }
        }
    }
}
