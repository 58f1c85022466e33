// The private-group management API in-process: a router holding only PrivateGroupRoutes over an
// in-memory store, driven through HummingbirdTesting.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing
import TokiStore

@testable import TokiHub

/// Users alice (owns groups), bob, carol (group vip) and root (admin), with a token each, and a
/// worker-scoped token of alice's.
private struct GroupsFixture {
    let store: HubStore
    let alice: String
    let bob: String
    let carol: String
    let admin: String
    let aliceWorker: String
    let bobID: Int64
    let carolID: Int64
    let accessChanged = Locked<[Int64]>([])
    let redeemAllowed = Locked(true)

    static func make() async throws -> GroupsFixture {
        let store = try HubStore.inMemory(logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let alice = try await store.createToken(user: "alice").plaintext
        let bob = try await store.createToken(user: "bob")
        let carol = try await store.createToken(user: "carol", group: "vip")
        let admin = try await store.createToken(user: "root", role: .admin).plaintext
        let worker = try await store.createToken(user: "alice", options: TokenOptions(scope: .worker)).plaintext
        return GroupsFixture(store: store, alice: alice, bob: bob.plaintext, carol: carol.plaintext, admin: admin, aliceWorker: worker,
                             bobID: bob.record.userID, carolID: carol.record.userID)
    }

    func test<R: Sendable>(_ body: @Sendable (any TestClientProtocol) async throws -> R) async throws -> R {
        let router = Router(context: HubRequestContext.self)
        let changed = accessChanged, allowed = redeemAllowed
        router.addRoutes(PrivateGroupRoutes(store: store, tokens: TokenCache(store: store, ttl: .zero),
                                            onAccessChanged: { id in changed.withLock { $0.append(id) } },
                                            allowRedeem: { _ in allowed.value }).collection())
        let app = Application(router: router, logger: Logger(label: "test.app", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try await app.test(.router) { client in try await body(client) }
    }
}

extension TestClientProtocol {
    fileprivate func call(_ method: HTTPRequest.Method, _ path: String, token: String?, json: String? = nil) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let token { headers[.authorization] = "Bearer \(token)" }
        if json != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: path, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }
}

/// The envelope of a response: success, message, data (as JSON).
private struct Envelope {
    var success: Bool
    var message: String
    var data: Any?

    init(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(response.headers[.contentType] == "application/json", sourceLocation: sourceLocation)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView), options: [.fragmentsAllowed]) as? [String: Any],
                                  sourceLocation: sourceLocation)
        #expect(Set(object.keys) == ["success", "message", "data"], sourceLocation: sourceLocation)
        success = try #require(object["success"] as? Bool, sourceLocation: sourceLocation)
        message = try #require(object["message"] as? String, sourceLocation: sourceLocation)
        data = object["data"] is NSNull ? nil : object["data"]
    }

    var object: [String: Any] { data as? [String: Any] ?? [:] }
    var array: [[String: Any]] { data as? [[String: Any]] ?? [] }
}

/// Expects an error envelope with this status; returns its message.
@discardableResult
private func expectFailure(_ response: TestResponse, _ status: HTTPResponse.Status,
                           sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    #expect(response.status == status, "body: \(String(buffer: response.body).prefix(300))", sourceLocation: sourceLocation)
    let envelope = try Envelope(response, sourceLocation: sourceLocation)
    #expect(!envelope.success, sourceLocation: sourceLocation)
    #expect(!envelope.message.isEmpty, sourceLocation: sourceLocation)
    #expect(envelope.data == nil, sourceLocation: sourceLocation)
    return envelope.message
}

private func expectOK(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) throws -> Envelope {
    #expect(response.status == .ok, "body: \(String(buffer: response.body).prefix(300))", sourceLocation: sourceLocation)
    let envelope = try Envelope(response, sourceLocation: sourceLocation)
    #expect(envelope.success && envelope.message.isEmpty, sourceLocation: sourceLocation)
    return envelope
}

private let base = "/api/user/private-groups"

@Suite("private group routes in-process")
struct PrivateGroupRoutesTests {
    @Test("an owner makes a group and a code; a user redeems it once; a second redeem consumes nothing")
    func createInviteRedeem() async throws {
        let f = try await GroupsFixture.make()
        try await f.test { client in
            let created = try expectOK(try await client.call(.post, base, token: f.alice, json: #"{"group_slug":" GPU-Pool "}"#)).object
            #expect(created["group_slug"] as? String == "gpu-pool")
            #expect(created["status"] as? Int == 1)
            #expect(created["owner_user_id"] is Int)
            #expect((created["created_at"] as? Int ?? 0) > 1_700_000_000)
            let id = try #require(created["id"] as? Int)

            let listed = try expectOK(try await client.call(.get, base, token: f.alice)).array
            #expect(listed.map { $0["group_slug"] as? String } == ["gpu-pool"])
            #expect(try expectOK(try await client.call(.get, "\(base)/\(id)", token: f.alice)).object["group_slug"] as? String == "gpu-pool")

            let made = try expectOK(try await client.call(.post, "\(base)/\(id)/invite-codes", token: f.alice, json: #"{"max_uses":3}"#)).object
            let code = try #require(made["invite_code"] as? String)
            #expect(code.count == 14 && InviteCodeCrypto.canonicalize(code) == code)
            let record = try #require(made["record"] as? [String: Any])
            #expect(record["max_uses"] as? Int == 3 && record["used_count"] as? Int == 0 && record["status"] as? Int == 1)
            #expect(record["expires_at"] as? Int == 0)
            #expect(record["code_hash"] == nil && record["code"] == nil)

            let first = try expectOK(try await client.call(.post, "\(base)/redeem", token: f.bob, json: #"{"code":"\#(code.lowercased())"}"#)).object
            #expect(first["created"] as? Bool == true)
            #expect((first["group"] as? [String: Any])?["group_slug"] as? String == "gpu-pool")
            let grant = try #require(first["grant"] as? [String: Any])
            #expect(grant["role"] as? String == "member" && grant["source"] as? String == "invite")
            #expect(grant["source_ref"] as? String == "invite_code:\(record["id"] as? Int ?? -1)")
            #expect(f.accessChanged.value.contains(f.bobID))

            let again = try expectOK(try await client.call(.post, "\(base)/redeem", token: f.bob, json: #"{"code":"\#(code)"}"#)).object
            #expect(again["created"] as? Bool == false)
            let codes = try expectOK(try await client.call(.get, "\(base)/\(id)/invite-codes", token: f.alice)).array
            #expect(codes.count == 1 && codes.first?["used_count"] as? Int == 1)
            #expect(!String(buffer: try await client.call(.get, "\(base)/\(id)/invite-codes", token: f.alice).body).contains(code))

            let joined = try expectOK(try await client.call(.get, "\(base)/joined", token: f.bob)).array
            #expect(joined.map { $0["group_slug"] as? String } == ["gpu-pool"])
            #expect(joined.first?["role"] as? String == "member")
            let members = try expectOK(try await client.call(.get, "\(base)/\(id)/members", token: f.alice)).array
            #expect(members.map { $0["user_name"] as? String } == ["alice", "bob"])
            #expect(try await f.store.authenticate(token: f.bob, now: Date())?.groups == ["default", "gpu-pool"])

            // Remove bob: he loses the group.
            f.accessChanged.withLock { $0.removeAll() }
            _ = try expectOK(try await client.call(.delete, "\(base)/\(id)/members/\(f.bobID)", token: f.alice))
            #expect(f.accessChanged.value == [f.bobID])
            #expect(try expectOK(try await client.call(.get, "\(base)/joined", token: f.bob)).array.isEmpty)
            #expect(try await f.store.authenticate(token: f.bob, now: Date())?.groups == ["default"])

            // Disable the code, then rename, disable and delete the group.
            let codeID = try #require(record["id"] as? Int)
            let patched = try expectOK(try await client.call(.patch, "\(base)/\(id)/invite-codes/\(codeID)", token: f.alice, json: #"{"status":2}"#))
            #expect(patched.object["status"] as? Int == 2)
            try expectFailure(try await client.call(.post, "\(base)/redeem", token: f.carol, json: #"{"code":"\#(code)"}"#), .badRequest)
            let renamed = try expectOK(try await client.call(.put, "\(base)/\(id)", token: f.alice, json: #"{"group_slug":"renamed","status":2}"#))
            #expect(renamed.object["group_slug"] as? String == "renamed" && renamed.object["status"] as? Int == 2)
            _ = try expectOK(try await client.call(.delete, "\(base)/\(id)", token: f.alice))
            try expectFailure(try await client.call(.get, "\(base)/\(id)", token: f.alice), .notFound)
        }
    }

    @Test("another user's group id is 404 on every route, exactly like an id that does not exist")
    func otherUsersGroupIsNotFound() async throws {
        let f = try await GroupsFixture.make()
        try await f.test { client in
            let id = try #require(try expectOK(try await client.call(.post, base, token: f.alice, json: #"{"group_slug":"mine"}"#)).object["id"] as? Int)
            for target in [id, 999_999] {
                let attempts: [(HTTPRequest.Method, String, String?)] = [
                    (.get, "\(base)/\(target)", nil),
                    (.put, "\(base)/\(target)", #"{"status":2}"#),
                    (.delete, "\(base)/\(target)", nil),
                    (.get, "\(base)/\(target)/invite-codes", nil),
                    (.post, "\(base)/\(target)/invite-codes", "{}"),
                    (.patch, "\(base)/\(target)/invite-codes/1", #"{"status":2}"#),
                    (.get, "\(base)/\(target)/members", nil),
                    (.delete, "\(base)/\(target)/members/1", nil),
                ]
                for (method, path, json) in attempts {
                    let message = try expectFailure(try await client.call(method, path, token: f.carol, json: json), .notFound)
                    #expect(!message.contains("mine"))
                }
            }
            #expect(try expectOK(try await client.call(.get, base, token: f.carol)).array.isEmpty)
            // Still alice's, unchanged.
            #expect(try expectOK(try await client.call(.get, "\(base)/\(id)", token: f.alice)).object["status"] as? Int == 1)
        }
    }

    @Test("malformed input is a 400 envelope naming the problem")
    func badInput() async throws {
        let f = try await GroupsFixture.make()
        try await f.test { client in
            let id = try #require(try expectOK(try await client.call(.post, base, token: f.alice, json: #"{"group_slug":"pool"}"#)).object["id"] as? Int)
            let cases: [(HTTPRequest.Method, String, String?)] = [
                (.post, "\(base)/redeem", #"{"code":"not-a-code"}"#),
                (.post, "\(base)/redeem", #"{"code":"ABCD-EFGH-12%4"}"#),
                (.post, "\(base)/redeem", #"{"code":7}"#),
                (.post, "\(base)/redeem", #"{}"#),
                (.post, "\(base)/redeem", #"{"code":"ABCD-EFGH-1234","extra":1}"#),
                (.post, "\(base)/redeem", "not json"),
                (.post, "\(base)/redeem", nil),
                (.post, base, #"{"group_slug":"pool","owner_user_id":3}"#),
                (.post, base, #"{"group_slug":"\#(String(repeating: "a", count: 60_000))"}"#),
                (.post, base, #"{"group_slug":"a%b_c"}"#),
                (.post, base, #"{"group_slug":"bad\u0000slug"}"#),
                (.post, base, #"{"group_slug":"default"}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"max_uses":-1}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"max_uses":0}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"max_uses":1000000}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"max_uses":1.5}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"max_uses":1e300}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"expires_at":-5}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"expires_at":1000}"#),
                (.post, "\(base)/\(id)/invite-codes", #"{"expires_at":9223372036854775807}"#),
                (.put, "\(base)/\(id)", #"{}"#),
                (.put, "\(base)/\(id)", #"{"status":3}"#),
                (.patch, "\(base)/\(id)/invite-codes/1", #"{"status":0}"#),
                (.delete, "\(base)/\(id)/members/1", nil),  // alice herself: the owner cannot leave
            ]
            for (method, path, json) in cases {
                let message = try expectFailure(try await client.call(method, path, token: f.alice, json: json), .badRequest)
                #expect(message.count < 300, "\(path): \(message.prefix(80))")
            }
            // Path ids that are not positive integers.
            for bad in ["0", "-1", "abc", "1.5", "99999999999999999999", "%20", "1e3"] {
                try expectFailure(try await client.call(.get, "\(base)/\(bad)", token: f.alice), .badRequest)
                try expectFailure(try await client.call(.delete, "\(base)/\(id)/members/\(bad)", token: f.alice), .badRequest)
                try expectFailure(try await client.call(.patch, "\(base)/\(id)/invite-codes/\(bad)", token: f.alice, json: #"{"status":2}"#), .badRequest)
            }
            try expectFailure(try await client.call(.post, base, token: f.alice, json: #"{"group_slug":"\#(String(repeating: "a", count: 70_000))"}"#), .contentTooLarge)
            try expectFailure(try await client.call(.post, base, token: f.bob, json: #"{"group_slug":"pool"}"#), .conflict)
            try expectFailure(try await client.call(.post, base, token: f.bob, json: #"{"group_slug":"vip"}"#), .conflict)
        }
    }

    @Test("authentication, worker-scoped tokens, admin routes and the redeem limiter answer in the envelope")
    func accessControl() async throws {
        let f = try await GroupsFixture.make()
        try await f.test { client in
            try expectFailure(try await client.call(.get, base, token: nil), .unauthorized)
            try expectFailure(try await client.call(.get, base, token: "sk-toki-wrong"), .unauthorized)
            try expectFailure(try await client.call(.get, "\(base)/joined", token: nil), .unauthorized)
            let message = try expectFailure(try await client.call(.post, base, token: f.aliceWorker, json: #"{"group_slug":"pool"}"#), .forbidden)
            #expect(message == "this token's scope is worker: it may only register workers")
            try expectFailure(try await client.call(.get, "\(base)/joined", token: f.aliceWorker), .forbidden)

            let id = try #require(try expectOK(try await client.call(.post, base, token: f.alice, json: #"{"group_slug":"pool"}"#)).object["id"] as? Int)
            try expectFailure(try await client.call(.get, "/api/user/admin/private-groups", token: f.alice), .forbidden)
            try expectFailure(try await client.call(.post, "/api/user/admin/users/\(f.carolID)/private-groups", token: f.bob,
                                                    json: #"{"group_id":\#(id)}"#), .forbidden)
            try expectFailure(try await client.call(.get, "/api/user/admin/private-groups", token: nil), .unauthorized)

            let all = try expectOK(try await client.call(.get, "/api/user/admin/private-groups", token: f.admin)).array
            #expect(all.map { $0["group_slug"] as? String } == ["pool"])
            let future = Int(Date().timeIntervalSince1970) + 3600
            let grant = try expectOK(try await client.call(.post, "/api/user/admin/users/\(f.carolID)/private-groups", token: f.admin,
                                                            json: #"{"group_id":\#(id),"expires_at":\#(future)}"#)).object
            #expect(grant["source"] as? String == "admin" && grant["expires_at"] as? Int == future)
            #expect(f.accessChanged.value.contains(f.carolID))
            #expect(try expectOK(try await client.call(.get, "\(base)/joined", token: f.carol)).array.count == 1)
            try expectFailure(try await client.call(.post, "/api/user/admin/users/\(f.carolID)/private-groups", token: f.admin,
                                                    json: #"{"group_id":0}"#), .badRequest)
            try expectFailure(try await client.call(.post, "/api/user/admin/users/999/private-groups", token: f.admin,
                                                    json: #"{"group_id":\#(id)}"#), .notFound)

            f.redeemAllowed.withLock { $0 = false }
            try expectFailure(try await client.call(.post, "\(base)/redeem", token: f.bob, json: #"{"code":"ABCD-EFGH-1234"}"#), .tooManyRequests)
            f.redeemAllowed.withLock { $0 = true }
            let refused = try expectFailure(try await client.call(.post, "\(base)/redeem", token: f.bob, json: #"{"code":"ABCD-EFGH-1234"}"#), .badRequest)
            #expect(refused == "invalid or expired invite code")
        }
    }
}
