import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

/// The management API as a script would use it: `{"success","message","data"}` replies.
struct ManagementAPI {
    let base: String

    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var envelope: [String: Any]
        var success: Bool { envelope["success"] as? Bool ?? false }
        var message: String { envelope["message"] as? String ?? "" }
        var data: [String: Any] { envelope["data"] as? [String: Any] ?? [:] }
        var list: [[String: Any]] { envelope["data"] as? [[String: Any]] ?? [] }
    }

    func call(_ method: HTTPMethod, _ path: String, token: String, body: [String: Any]? = nil) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await HTTP.client.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        let envelope = (try? JSONSerialization.jsonObject(with: Data(buffer: collected))) as? [String: Any] ?? [:]
        return Reply(status: Int(response.status.code), headers: response.headers, envelope: envelope)
    }

    func balance(_ token: String) async throws -> Double {
        try await call(.GET, "/api/user/self", token: token).data["balance"] as? Double ?? .nan
    }
}

func chatBody(_ model: String, stream: Bool, chunks: Int = 5) -> String {
    #"{"model":"\#(model)","stream":\#(stream),"stub_chunks":\#(chunks),"messages":[{"role":"user","content":"hi"}]}"#
}

/// Ids and timestamps differ between two answers of the stub; the rest must not.
func normalisedStream(_ text: String) -> String {
    text.replacingOccurrences(of: #""id":"[^"]*""#, with: #""id":"x""#, options: .regularExpression)
}

@Suite(.serialized) struct TenancyTests {
    /// A shares a GPU pool with B by invite code; C sees nothing of it; prices, charges and the
    /// ledger follow every call; removing B stops B at once.
    @Test func aPrivatePoolSharedByAnInviteCode() async throws {
        let hub = try await HubProcess()
        defer { Task { await hub.stop() } }
        let admin = try #require(hub.adminToken)
        let api = ManagementAPI(base: hub.url)
        let alice = try await hub.createToken(user: "alice")
        let bob = try await hub.createToken(user: "bob")
        let carol = try await hub.createToken(user: "carol")

        // A makes a pool and a worker-scoped token for the GPU box, and connects it.
        let pool = try await api.call(.POST, "/api/user/private-groups", token: alice, body: ["group_slug": "alice-gpus"])
        #expect(pool.status == 200 || pool.status == 201, "\(pool.envelope)")
        let poolID = try #require(pool.data["id"] as? Int)
        let workerKey = try await api.call(.POST, "/api/user/tokens", token: alice,
                                           body: ["name": "gpu-box", "scope": "worker", "groups": ["alice-gpus"]])
        let boxToken = try #require(workerKey.data["key"] as? String, "\(workerKey.envelope)")
        let backend = try await StubBackend(models: ["pool-llm"])
        defer { Task { await backend.stop() } }
        let worker = try await WorkerProcess(.toki, tunnelURL: hub.tunnelURL, token: boxToken, backend: backend, namespace: "alice-box",
                                             models: ["pool-llm"], group: "alice-gpus")
        defer { Task { await worker.stop() } }
        try await hub.waitForModel("pool-llm", token: alice)

        // The box's token cannot call the API; C sees nothing of the pool.
        #expect(try await HTTP.post(hub.url + "/v1/chat/completions", token: boxToken, body: chatBody("pool-llm", stream: false)).status == 403)
        let (_, carolModels) = try await HTTP.get(hub.url + "/v1/models", token: carol)
        #expect(!carolModels.contains("pool-llm"))
        let carolCall = try await HTTP.post(hub.url + "/v1/chat/completions", token: carol, body: chatBody("pool-llm", stream: false))
        #expect(carolCall.status == 404)
        #expect(carolCall.errorCode == "model_not_found")
        #expect(try await api.call(.GET, "/api/user/private-groups/\(poolID)/members", token: carol).status == 404)

        // A invites B; B redeems once (a second redeem consumes nothing); a revoked code is refused to C.
        let invite = try await api.call(.POST, "/api/user/private-groups/\(poolID)/invite-codes", token: alice, body: ["max_uses": 2])
        let code = try #require(invite.data["invite_code"] as? String, "\(invite.envelope)")
        let codeID = try #require((invite.data["record"] as? [String: Any])?["id"] as? Int)
        #expect(code.range(of: #"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$"#, options: .regularExpression) != nil)
        let redeemed = try await api.call(.POST, "/api/user/private-groups/redeem", token: bob, body: ["code": code])
        #expect(redeemed.data["created"] as? Bool == true, "\(redeemed.envelope)")
        let again = try await api.call(.POST, "/api/user/private-groups/redeem", token: bob, body: ["code": code.lowercased()])
        #expect(again.data["created"] as? Bool == false, "\(again.envelope)")
        let codes = try await api.call(.GET, "/api/user/private-groups/\(poolID)/invite-codes", token: alice).list
        #expect(codes.first?["used_count"] as? Int == 1)
        #expect(try await api.call(.PATCH, "/api/user/private-groups/\(poolID)/invite-codes/\(codeID)", token: alice, body: ["status": 2]).success)
        let revoked = try await api.call(.POST, "/api/user/private-groups/redeem", token: carol, body: ["code": code])
        #expect(revoked.status == 400 && !revoked.success)
        #expect(try await api.call(.POST, "/api/user/private-groups/redeem", token: carol, body: ["code": "not a code"]).status == 400)

        // B calls the pool's model, plain and streamed; the pool is free by default.
        try await hub.waitForModel("pool-llm", token: bob)
        let plain = try await HTTP.post(hub.url + "/v1/chat/completions", token: bob, body: chatBody("pool-llm", stream: false))
        #expect(plain.status == 200, "\(plain.body)")
        // Without include_usage the client's stream is the backend's own (the hub's usage request taken back out).
        let streamed = try await HTTP.stream(hub.url + "/v1/chat/completions", token: bob, body: chatBody("pool-llm", stream: true))
        let direct = try await HTTP.stream(backend.url + "/v1/chat/completions", token: "x", body: chatBody("pool-llm", stream: true))
        #expect(streamed.status == 200 && streamed.failure == nil)
        #expect(normalisedStream(streamed.text) == normalisedStream(direct.text))
        #expect(!streamed.text.contains("usage"))
        // With include_usage the client gets the usage chunk.
        let withUsage = try await HTTP.stream(hub.url + "/v1/chat/completions", token: bob,
                                              body: #"{"model":"pool-llm","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#)
        #expect(withUsage.text.contains(#""completion_tokens":5"#))

        // A prices the pool: B, with no balance, is refused before routing; after a top-up B
        // pays and A is credited, by the backend's reported usage.
        let price = try await api.call(.PUT, "/api/user/private-groups/\(poolID)/prices", token: alice,
                                       body: ["model": "pool-llm", "input_per_million": 1000, "output_per_million": 2000])
        #expect(price.success, "\(price.envelope)")
        try await Task.sleep(for: .milliseconds(300))
        let completedBefore = try await backend.completedCount()
        let broke = try await HTTP.post(hub.url + "/v1/chat/completions", token: bob, body: chatBody("pool-llm", stream: false))
        #expect(broke.status == 429)
        #expect(broke.errorCode == "insufficient_quota")
        #expect(try await backend.completedCount() == completedBefore)
        let bobID = try #require(try await api.call(.GET, "/api/user/self", token: bob).data["id"] as? Int)
        let topUp = try await api.call(.POST, "/api/admin/users/\(bobID)/topup", token: admin, body: ["amount": 1, "memo": "test"])
        #expect(topUp.success, "\(topUp.envelope)")
        try await Task.sleep(for: .seconds(6))  // balances are re-read after 5 s
        let paid = try await HTTP.stream(hub.url + "/v1/chat/completions", token: bob, body: chatBody("pool-llm", stream: true, chunks: 5))
        #expect(paid.status == 200 && paid.text.contains("[DONE]"))
        // 8 prompt tokens × 1000/M + 5 completion tokens × 2000/M = 0.018
        #expect(abs(try await api.balance(bob) - (1 - 0.018)) < 1e-9)
        #expect(abs(try await api.balance(alice) - 0.018) < 1e-9)
        let usage = try await api.call(.GET, "/api/user/usage?limit=1", token: bob).list.first ?? [:]
        #expect(usage["group"] as? String == "alice-gpus")
        #expect(usage["prompt_tokens"] as? Int == 8 && usage["completion_tokens"] as? Int == 5)
        #expect(usage["estimated"] as? Bool == false)
        #expect(usage["path"] as? String == "direct")
        let check = try await api.call(.GET, "/api/admin/ledger/check", token: admin)
        #expect(check.status == 200 && (check.data["problems"] as? [Any])?.isEmpty == true, "\(check.envelope)")

        // Removing B stops B's calls at once.
        let removed = try await api.call(.DELETE, "/api/user/private-groups/\(poolID)/members/\(bobID)", token: alice)
        #expect(removed.success, "\(removed.envelope)")
        let afterRemoval = try await HTTP.post(hub.url + "/v1/chat/completions", token: bob, body: chatBody("pool-llm", stream: false))
        #expect(afterRemoval.status == 404)
    }

    /// Requests per minute: the third call in a minute gets 429 in OpenAI's shape with the headers.
    @Test func requestsPerMinuteAreLimited() async throws {
        let hub = try await HubProcess(arguments: ["--token-rpm", "2"])
        defer { Task { await hub.stop() } }
        let token = try await hub.createToken(user: "dave")
        let backend = try await StubBackend(models: ["m"])
        defer { Task { await backend.stop() } }
        let worker = try await WorkerProcess(.toki, hub: hub, token: token, backend: backend, namespace: "dave-box", models: ["m"])
        defer { Task { await worker.stop() } }
        try await hub.waitForModel("m", token: token)
        let first = try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: chatBody("m", stream: false))
        #expect(first.status == 200)
        #expect(first.headers.first(name: "x-ratelimit-limit-requests") == "2")
        #expect(first.headers.first(name: "x-ratelimit-remaining-requests") == "1")
        _ = try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: chatBody("m", stream: false))
        let third = try await HTTP.post(hub.url + "/v1/chat/completions", token: token, body: chatBody("m", stream: false))
        #expect(third.status == 429)
        #expect(third.errorCode == "rate_limit_exceeded")
        #expect(third.headers.first(name: "x-ratelimit-remaining-requests") == "0")
        #expect(Int(third.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
    }

    /// kill -9 during a burst of priced requests: after the restart every request the client saw
    /// complete is charged exactly once, and the books balance.
    @Test func chargesSurviveAKillDuringABurst() async throws {
        let first = try await HubProcess()
        let hub = first
        let admin = try #require(hub.adminToken)
        let api = ManagementAPI(base: hub.url)
        let token = try await hub.createToken(user: "erin")
        let backend = try await StubBackend(models: ["priced"])
        defer { Task { await backend.stop() } }
        let worker = try await WorkerProcess(.toki, hub: hub, token: token, backend: backend, namespace: "erin-box", models: ["priced"])
        defer { Task { await worker.stop() } }
        try await hub.waitForModel("priced", token: token)
        #expect(try await api.call(.PUT, "/api/admin/prices", token: admin, body: ["model": "priced", "per_request": 0.001]).success)
        let erinID = try #require(try await api.call(.GET, "/api/user/self", token: token).data["id"] as? Int)
        #expect(try await api.call(.POST, "/api/admin/users/\(erinID)/topup", token: admin, body: ["amount": 100]).success)
        try await Task.sleep(for: .milliseconds(500))

        let completed = Locked<[String]>([])
        let url = hub.url
        let burst = Task {
            await withTaskGroup(of: Void.self) { group in
                for lane in 0..<4 {
                    group.addTask {
                        for i in 0..<1000 {
                            let id = "burst-\(lane)-\(i)"
                            guard let reply = try? await HTTP.post(url + "/v1/chat/completions", token: token,
                                                                   body: chatBody("priced", stream: i % 2 == 0, chunks: 3),
                                                                   headers: [("X-Request-Id", id)], timeout: .seconds(10)) else { return }
                            // Complete: a 200 whose body ended (a stream with its [DONE]).
                            if reply.status == 200, i % 2 == 1 || reply.body.contains("[DONE]") { completed.withLock { $0.append(id) } }
                            if reply.status != 200 { return }
                        }
                    }
                }
            }
        }
        while completed.value.count < 40 { try await Task.sleep(for: .milliseconds(20)) }
        let second = try await first.restarted(sigkill: true)
        await burst.value
        defer { Task { await second.stop() } }
        let seen = completed.value
        #expect(seen.count >= 40)
        let restarted = ManagementAPI(base: second.url)
        var charged = 0
        for id in seen {
            let rows = try await restarted.call(.GET, "/api/admin/usage?request_id=\(id)", token: admin).list
            #expect(rows.count == 1, "request \(id): \(rows.count) usage rows")
            if let cost = rows.first?["cost"] as? Double, abs(cost - 0.001) < 1e-12 { charged += 1 }
        }
        #expect(charged == seen.count)
        let check = try await restarted.call(.GET, "/api/admin/ledger/check", token: admin)
        #expect(check.status == 200 && (check.data["problems"] as? [Any])?.isEmpty == true, "\(check.envelope)")
    }
}

/// `toki admin` against a live hub, as an owner, a member and an admin would use it.
@Suite(.serialized) struct AdminCLITests {
    struct Run {
        var status: Int32
        var stdout: [String]
        var stderr: String
    }

    static func admin(_ hub: HubProcess, token: String, _ arguments: [String]) async throws -> Run {
        let cli = try ChildProcess(Products.path("toki"), ["admin"] + arguments + ["--hub", hub.url, "--token", token], name: "toki admin")
        let status = try await cli.waitForExit()
        return Run(status: status, stdout: cli.stdoutLines, stderr: cli.stderr)
    }

    @Test func ownersMembersAndAdminsUseTheCLI() async throws {
        let hub = try await HubProcess()
        defer { Task { await hub.stop() } }
        let admin = try #require(hub.adminToken)
        let alice = try await hub.createToken(user: "alice")
        let bob = try await hub.createToken(user: "bob")
        let carol = try await hub.createToken(user: "carol")

        let created = try await Self.admin(hub, token: alice, ["group", "create", "cli-pool", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        let group = try #require(try JSONSerialization.jsonObject(with: Data(created.stdout.joined(separator: "\n").utf8)) as? [String: Any])
        let id = try #require(group["id"] as? Int)

        // The code alone on stdout, so CODE=$(toki admin invite create …) works.
        let invite = try await Self.admin(hub, token: alice, ["invite", "create", "\(id)", "--max-uses", "1"])
        #expect(invite.status == 0, "\(invite.stderr)")
        #expect(invite.stdout.count == 1)
        let code = try #require(invite.stdout.first)
        #expect(code.range(of: #"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$"#, options: .regularExpression) != nil)
        #expect(try await Self.admin(hub, token: bob, ["redeem", code]).status == 0)
        let members = try await Self.admin(hub, token: alice, ["group", "members", "\(id)"])
        #expect(members.status == 0 && members.stdout.contains { $0.contains("bob") }, "\(members.stdout)")

        // Another user's group: a clear error and exit 1.
        let foreign = try await Self.admin(hub, token: carol, ["group", "show", "\(id)"])
        #expect(foreign.status == 1)
        #expect(foreign.stderr.contains("error:") && foreign.stderr.contains("404"), "\(foreign.stderr)")

        // The admin prices a model, tops bob up; the books balance.
        #expect(try await Self.admin(hub, token: admin, ["price", "set", "m", "--input", "1", "--output", "2"]).status == 0)
        let prices = try await Self.admin(hub, token: admin, ["price", "list"])
        #expect(prices.stdout.contains { $0.contains("m") && $0.contains("2") }, "\(prices.stdout)")
        let bobID = try #require(try await ManagementAPI(base: hub.url).call(.GET, "/api/user/self", token: bob).data["id"] as? Int)
        #expect(try await Self.admin(hub, token: admin, ["user", "topup", "\(bobID)", "2.5"]).status == 0)
        let me = try await Self.admin(hub, token: bob, ["self", "--json"])
        #expect(me.stdout.joined().contains("2.5"), "\(me.stdout)")
        let check = try await Self.admin(hub, token: admin, ["ledger", "check"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        // A non-admin cannot.
        #expect(try await Self.admin(hub, token: bob, ["price", "set", "m", "--input", "0"]).status == 1)
    }
}
