// The accounts and billing management API in-process (HummingbirdTesting's router framework)
// over an in-memory store.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
@testable import TokiStore

@testable import TokiHub

/// A router with only the account routes, over an in-memory store with alice, bob and an admin.
private struct AccountFixture {
    let store: HubStore
    let alice: String
    let aliceID: Int64
    let bob: String
    let bobID: Int64
    let admin: String
    let pricesChanged = Locked(0)
    let revoked = Locked(0)

    static func make() async throws -> AccountFixture {
        let logger = Logger(label: "test.accounts", factory: { _ in SwiftLogNoOpLogHandler() })
        let store = try HubStore.inMemory(logger: logger)
        let alice = try await store.createToken(user: "alice")
        let bob = try await store.createToken(user: "bob", group: "vip")
        let admin = try await store.createToken(user: "root", role: .admin).plaintext
        return AccountFixture(store: store, alice: alice.plaintext, aliceID: alice.record.userID, bob: bob.plaintext, bobID: bob.record.userID,
                              admin: admin)
    }

    func test<R: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> R) async throws -> R {
        let router = Router(context: HubRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        let (pricesChanged, revoked) = (pricesChanged, revoked)
        router.addRoutes(AccountRoutes(store: store, tokens: TokenCache(store: store, ttl: .zero),
                                       onPricesChanged: { pricesChanged.withLock { $0 += 1 } },
                                       onTokenRevoked: { _ in revoked.withLock { $0 += 1 } }).collection())
        let app = Application(router: router, logger: Logger(label: "test.app", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try await app.test(.router) { client in try await body(client) }
    }
}

/// The envelope of a reply, its data as loose JSON.
private struct Envelope {
    var status: HTTPResponse.Status
    var success: Bool
    var message: String
    var data: Any?

    init(_ response: TestResponse) throws {
        status = response.status
        let object = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
        success = try #require(object["success"] as? Bool)
        message = try #require(object["message"] as? String)
        data = object["data"].flatMap { $0 is NSNull ? nil : $0 }
    }

    var object: [String: Any] { data as? [String: Any] ?? [:] }
    var array: [[String: Any]] { data as? [[String: Any]] ?? [] }
}

extension TestClientProtocol {
    fileprivate func call(_ method: HTTPRequest.Method, _ uri: String, token: String?, json: String? = nil) async throws -> Envelope {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        if json != nil { headers[.contentType] = "application/json" }
        return try Envelope(try await execute(uri: uri, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) }))
    }
}

private func usage(_ requestID: String, user: Int64, model: String = "m", group: String = "default") -> UsageRecord {
    UsageRecord(requestID: requestID, userID: user, tokenID: nil, model: model, namespace: "ns", statusCode: 200, promptTokens: 3,
                completionTokens: 4, durationMS: 1, groupName: group)
}

@Suite("account routes in-process")
struct AccountRoutesTests {
    @Test("self shows the balance after a top-up, and the caller's groups and token")
    func selfAfterTopUp() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            let topUp = try await client.call(.post, "/api/admin/users/\(f.aliceID)/topup", token: f.admin, json: #"{"amount":12.5,"memo":"hi"}"#)
            #expect(topUp.status == .ok)
            #expect(topUp.success)
            #expect(topUp.object["balance"] as? Double == 12.5)
            let me = try await client.call(.get, "/api/user/self", token: f.alice)
            #expect(me.status == .ok)
            #expect(me.object["username"] as? String == "alice")
            #expect(me.object["balance"] as? Double == 12.5)
            #expect(me.object["groups"] as? [String] == ["default"])
            let token = try #require(me.object["token"] as? [String: Any])
            #expect(token["scope"] as? String == "both")
            #expect(token["spent"] as? Double == 0)
            #expect(token["spend_limit"] is NSNull)
            // Top-ups are validated: negative, zero, too large, wrong type, unknown user.
            for body in [#"{"amount":-1}"#, #"{"amount":0}"#, #"{"amount":1e12}"#, #"{"amount":"x"}"#, #"{}"#] {
                let refused = try await client.call(.post, "/api/admin/users/\(f.aliceID)/topup", token: f.admin, json: body)
                #expect(refused.status == .badRequest, "\(body)")
                #expect(!refused.success)
            }
            #expect(try await client.call(.post, "/api/admin/users/999/topup", token: f.admin, json: #"{"amount":1}"#).status == .notFound)
            let view = try await client.call(.get, "/api/admin/users/\(f.aliceID)", token: f.admin)
            #expect(view.object["balance"] as? Double == 12.5)
            // An adjustment may go either way (not zero).
            let adjusted = try await client.call(.post, "/api/admin/users/\(f.aliceID)/adjust", token: f.admin, json: #"{"amount":-2.5,"memo":"refund"}"#)
            #expect(adjusted.object["balance"] as? Double == 10)
            #expect(try await client.call(.post, "/api/admin/users/\(f.aliceID)/adjust", token: f.admin, json: #"{"amount":0}"#).status == .badRequest)
            #expect(try await client.call(.post, "/api/admin/users/\(f.aliceID)/adjust", token: f.alice, json: #"{"amount":5}"#).status == .forbidden)
            #expect(try await f.store.checkLedger().isConsistent)
        }
    }

    @Test("usage filtered by request_id returns only the caller's rows")
    func usageIsOwnOnly() async throws {
        let f = try await AccountFixture.make()
        _ = try await f.store.commitCharges([
            Charge(chargeID: "shared-a", usage: usage("shared", user: f.aliceID), cost: Money(units: 0.5)!, creditUserID: nil),
            Charge(chargeID: "shared-b", usage: usage("shared", user: f.bobID), cost: .zero, creditUserID: nil),
            Charge(chargeID: "other", usage: usage("other", user: f.aliceID), cost: .zero, creditUserID: nil),
        ], now: Date())
        try await f.test { client in
            let mine = try await client.call(.get, "/api/user/usage?request_id=shared", token: f.alice)
            #expect(mine.status == .ok)
            #expect(mine.array.count == 1)
            #expect(mine.array.first?["user_id"] as? Int == Int(f.aliceID))
            #expect(mine.array.first?["cost"] as? Double == 0.5)
            #expect(try await client.call(.get, "/api/user/usage", token: f.alice).array.count == 2)
            // A user cannot widen the filter to others.
            #expect(try await client.call(.get, "/api/user/usage?user_id=\(f.bobID)", token: f.alice).status == .badRequest)
            #expect(try await client.call(.get, "/api/user/usage?limit=0", token: f.alice).status == .badRequest)
            #expect(try await client.call(.get, "/api/user/usage?since=yesterday", token: f.alice).status == .badRequest)
            let all = try await client.call(.get, "/api/admin/usage?request_id=shared", token: f.admin)
            #expect(all.array.count == 2)
            #expect(try await client.call(.get, "/api/admin/usage?user_id=\(f.bobID)", token: f.admin).array.count == 1)
        }
    }

    @Test("a token with scope worker and pinned groups; pins must be usable groups; worker tokens get 403")
    func workerToken() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            let created = try await client.call(.post, "/api/user/tokens", token: f.alice,
                                                json: #"{"name":"gpu box","scope":"worker","groups":["default"],"spend_limit":2}"#)
            #expect(created.status == .ok)
            let key = try #require(created.object["key"] as? String)
            let record = try #require(created.object["token"] as? [String: Any])
            #expect(record["scope"] as? String == "worker")
            #expect(record["groups"] as? [String] == ["default"])
            #expect(record["spend_limit"] as? Double == 2)
            #expect(String(key.prefix(12)) == record["key_prefix"] as? String)
            let stored = try #require(try await f.store.authenticate(token: key))
            #expect(stored.scope == .worker)
            #expect(stored.groups == ["default"])
            // The worker token cannot use the management API.
            let refused = try await client.call(.get, "/api/user/self", token: key)
            #expect(refused.status == .forbidden)
            #expect(!refused.success)
            // alice is not in vip.
            let pinned = try await client.call(.post, "/api/user/tokens", token: f.alice, json: #"{"groups":["vip"]}"#)
            #expect(pinned.status == .badRequest)
            #expect(pinned.message.contains("vip"))
            for body in [#"{"scope":"root"}"#, #"{"spend_limit":-1}"#, #"{"expires_at":1}"#, #"{"models":[""]}"#, #"{"groups":[]}"#] {
                #expect(try await client.call(.post, "/api/user/tokens", token: f.alice, json: body).status == .badRequest, "\(body)")
            }
            #expect(try await client.call(.get, "/api/user/tokens", token: f.alice).array.count == 2)
        }
    }

    @Test("a user cannot see or revoke another's token (404)")
    func othersTokens() async throws {
        let f = try await AccountFixture.make()
        let bobTokens = try await f.store.listTokens(userID: f.bobID)
        let bobToken = try #require(bobTokens.first)
        try await f.test { client in
            let revoke = try await client.call(.delete, "/api/user/tokens/\(bobToken.id)", token: f.alice)
            #expect(revoke.status == .notFound)
            #expect(!revoke.success)
            #expect(try await f.store.token(id: bobToken.id)?.disabled == false)
            let list = try await client.call(.get, "/api/user/tokens", token: f.alice)
            #expect(!list.array.contains { $0["id"] as? Int == Int(bobToken.id) })
            #expect(try await client.call(.delete, "/api/user/tokens/abc", token: f.alice).status == .badRequest)
            #expect(try await client.call(.delete, "/api/user/tokens/-1", token: f.alice).status == .badRequest)
            #expect(f.revoked.value == 0)
            // bob can, and then his token no longer works.
            let own = try await client.call(.delete, "/api/user/tokens/\(bobToken.id)", token: f.bob)
            #expect(own.status == .ok)
            #expect(own.object["disabled"] as? Bool == true)
            #expect(f.revoked.value == 1)
            #expect(try await client.call(.get, "/api/user/self", token: f.bob).status == .unauthorized)
        }
    }

    @Test("an admin's negative price is refused (400) and nothing changes")
    func negativePrice() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            let ok = try await client.call(.put, "/api/admin/prices", token: f.admin,
                                           json: #"{"model":"llama","input_per_million":0.5,"output_per_million":"1.25"}"#)
            #expect(ok.status == .ok)
            #expect(f.pricesChanged.value == 1)
            for body in [#"{"model":"llama","input_per_million":-1}"#, #"{"model":"llama","per_request":1e7}"#, #"{"model":""}"#,
                         #"{"input_per_million":1}"#] {
                let refused = try await client.call(.put, "/api/admin/prices", token: f.admin, json: body)
                #expect(refused.status == .badRequest, "\(body)")
            }
            #expect(f.pricesChanged.value == 1)
            let prices = try await client.call(.get, "/api/admin/prices", token: f.admin)
            #expect(prices.array.count == 1)
            #expect(prices.array.first?["input_per_million"] as? Double == 0.5)
            #expect(prices.array.first?["output_per_million"] as? Double == 1.25)
            #expect(try await f.store.listPrices(group: "") == [ModelPrice(model: "llama", inputPerMillion: Money(units: 0.5)!, outputPerMillion: Money(units: 1.25)!)])
            // Ratios too.
            #expect(try await client.call(.put, "/api/admin/group-ratios", token: f.admin, json: #"{"group":"vip","ratio":-2}"#).status == .badRequest)
            #expect(try await client.call(.put, "/api/admin/group-ratios", token: f.admin, json: #"{"group":"vip","ratio":2}"#).status == .ok)
            #expect(try await client.call(.get, "/api/admin/group-ratios", token: f.admin).array.first?["ratio"] as? Double == 2)
            #expect(try await client.call(.delete, "/api/admin/prices?model=llama", token: f.admin).status == .ok)
            #expect(try await client.call(.delete, "/api/admin/prices?model=llama", token: f.admin).status == .notFound)
            #expect(f.pricesChanged.value == 3)
        }
    }

    @Test("a SQL wildcard in the model filter matches literally")
    func wildcardIsLiteral() async throws {
        let f = try await AccountFixture.make()
        _ = try await f.store.commitCharges([
            Charge(chargeID: "1", usage: usage("1", user: f.aliceID, model: "llama"), cost: .zero, creditUserID: nil),
            Charge(chargeID: "2", usage: usage("2", user: f.aliceID, model: "ll%"), cost: .zero, creditUserID: nil),
        ], now: Date())
        try await f.test { client in
            let literal = try await client.call(.get, "/api/user/usage?model=ll%25", token: f.alice)
            #expect(literal.array.map { $0["model"] as? String } == ["ll%"])
            #expect(try await client.call(.get, "/api/user/usage?model=%25", token: f.alice).array.isEmpty)
            #expect(try await client.call(.get, "/api/admin/usage?model=ll_ma", token: f.admin).array.isEmpty)
        }
    }

    @Test("unknown body fields and query parameters are refused (400)")
    func unknownFields() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            let body = try await client.call(.post, "/api/user/tokens", token: f.alice, json: #"{"name":"x","admin":true}"#)
            #expect(body.status == .badRequest)
            #expect(body.message.contains("admin"))
            #expect(try await client.call(.post, "/api/user/tokens", token: f.alice, json: "[1]").status == .badRequest)
            let query = try await client.call(.get, "/api/user/usage?modle=x", token: f.alice)
            #expect(query.status == .badRequest)
            #expect(query.message.contains("modle"))
            #expect(try await f.store.listTokens(userID: f.aliceID).count == 1)
        }
    }

    @Test("a non-admin gets a 403 envelope on admin routes; no token gets 401")
    func nonAdmin() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            for (method, uri) in [(HTTPRequest.Method.get, "/api/admin/users"), (.get, "/api/admin/ledger/check"), (.get, "/api/admin/usage"),
                                  (.post, "/api/admin/users/\(f.aliceID)/topup")] {
                let refused = try await client.call(method, uri, token: f.alice, json: method == .post ? #"{"amount":5}"# : nil)
                #expect(refused.status == .forbidden, "\(uri)")
                #expect(!refused.success)
                #expect(!refused.message.isEmpty)
            }
            #expect(try await f.store.balance(userID: f.aliceID) == .zero)
            let anonymous = try await client.call(.get, "/api/user/self", token: nil)
            #expect(anonymous.status == .unauthorized)
            #expect(!anonymous.success)
        }
    }

    @Test("the ledger check answers 200 with the report, 500 with the problems")
    func ledgerCheck() async throws {
        let f = try await AccountFixture.make()
        _ = try await f.store.topUp(userID: f.aliceID, amount: Money(units: 3)!, memo: nil, adminUserID: nil, now: Date())
        try await f.test { client in
            let check = try await client.call(.get, "/api/admin/ledger/check", token: f.admin)
            #expect(check.status == .ok)
            #expect(check.object["transactions"] as? Int == 1)
            #expect((check.object["problems"] as? [Any])?.isEmpty == true)
            try await f.store.executeRaw("UPDATE accounts SET balance = 7 WHERE user_id = ?", [f.aliceID])
            let broken = try await client.call(.get, "/api/admin/ledger/check", token: f.admin)
            #expect(broken.status == .internalServerError)
            #expect(!broken.success)
            #expect((broken.object["problems"] as? [String])?.isEmpty == false)
        }
    }

    @Test("admins manage users and their tokens")
    func adminUsers() async throws {
        let f = try await AccountFixture.make()
        try await f.test { client in
            let created = try await client.call(.post, "/api/admin/users", token: f.admin, json: #"{"username":"carol","group":"vip"}"#)
            #expect(created.status == .ok)
            let carol = try #require(created.object["id"] as? Int)
            #expect(created.object["role"] as? String == "user")
            #expect(try await client.call(.post, "/api/admin/users", token: f.admin, json: #"{"username":"carol"}"#).status == .conflict)
            #expect(try await client.call(.post, "/api/admin/users", token: f.admin, json: #"{"username":"x","role":"god"}"#).status == .badRequest)
            let token = try await client.call(.post, "/api/admin/users/\(carol)/tokens", token: f.admin, json: #"{"groups":["vip"]}"#)
            #expect(token.status == .ok)
            #expect(try await client.call(.get, "/api/admin/users/\(carol)/tokens", token: f.admin).array.count == 1)
            let tokenID = try #require((token.object["token"] as? [String: Any])?["id"] as? Int)
            #expect(try await client.call(.delete, "/api/admin/tokens/\(tokenID)", token: f.admin).status == .ok)
            #expect(try await client.call(.get, "/api/admin/users/4242", token: f.admin).status == .notFound)
            #expect(try await client.call(.put, "/api/admin/users/\(carol)", token: f.admin, json: #"{"group":"default"}"#).object["group"] as? String == "default")
            #expect(try await client.call(.get, "/api/admin/users", token: f.admin).array.count == 4)
        }
    }

    @Test("a pool owner sets its prices and sees members' spend; others get 404")
    func poolOwner() async throws {
        let f = try await AccountFixture.make()
        let now = Date()
        try await f.store.executeRaw("INSERT INTO private_groups (owner_user_id, group_slug, created_at, updated_at) VALUES (?, 'alice-gpus', ?, ?)",
                                     [f.aliceID, now, now])
        _ = try await f.store.commitCharges([
            Charge(chargeID: "p", usage: usage("p", user: f.bobID, group: "alice-gpus"), cost: Money(units: 1)!, creditUserID: f.aliceID),
        ], now: now)
        try await f.test { client in
            let put = try await client.call(.put, "/api/user/private-groups/1/prices", token: f.alice, json: #"{"model":"qwen","per_request":0.01}"#)
            #expect(put.status == .ok)
            #expect(put.object["group"] as? String == "alice-gpus")
            #expect(try await client.call(.get, "/api/user/private-groups/1/prices", token: f.alice).array.count == 1)
            #expect(try await client.call(.put, "/api/user/private-groups/1/prices", token: f.bob, json: #"{"model":"qwen"}"#).status == .notFound)
            #expect(try await client.call(.get, "/api/user/private-groups/2/prices", token: f.alice).status == .notFound)
            let spend = try await client.call(.get, "/api/user/private-groups/1/usage", token: f.alice)
            #expect(spend.array.first?["user_name"] as? String == "bob")
            #expect(spend.array.first?["cost"] as? Double == 1)
            #expect(try await client.call(.get, "/api/user/private-groups/1/usage", token: f.bob).status == .notFound)
            #expect(try await client.call(.delete, "/api/user/private-groups/1/prices?model=qwen", token: f.alice).status == .ok)
            #expect(try await f.store.pricingTable().poolPrices.isEmpty)
        }
    }
}
