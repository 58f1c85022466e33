import Foundation
import Hummingbird
import TokiStore

/// The management API of accounts and billing (issue 9), in the original's envelope
/// `{"success","message","data"}`: a user's own balance, usage and tokens, a pool owner's prices
/// and what members spent on the pool; and for admins users, tokens, top-ups, prices, group
/// ratios, all usage and the ledger check. `docs/openapi.yaml` describes every route.
///
/// Keys are snake case, dates unix seconds, amounts JSON numbers of units (exact to the nano).
/// Bodies are validated by ``APIEnvelope/decode(_:from:)`` (unknown fields: 400); ids in paths
/// must be positive integers and query parameters known, in range (400 otherwise). A token of
/// scope `worker` gets 403 on all of these: it may only register workers.
struct AccountRoutes: Sendable {
    let store: any AccountAdministration
    let tokens: TokenCache
    /// Called after any price or ratio changed (the router's pricing cache reloads).
    var onPricesChanged: @Sendable () -> Void = {}
    /// Called after a token was revoked (cached authentications are dropped).
    var onTokenRevoked: @Sendable (Int64) -> Void = { _ in }
    /// A user's balance changed outside the charges (a top-up or an adjustment).
    var onBalanceChanged: @Sendable (Int64) -> Void = { _ in }
    var now: @Sendable () -> Date = { Date() }

    func collection() -> RouteCollection<HubRequestContext> {
        let routes = APIEnvelope.routes(tokens: tokens)

        // The caller's own account.
        routes.get("/api/user/self") { _, context in try await self.me(context) }
        routes.get("/api/user/usage") { request, context in
            let caller = try context.authenticatedUser()
            return try await self.usage(request, allowed: ["request_id", "since", "model", "limit"], userID: caller.userID)
        }
        routes.get("/api/user/tokens") { _, context in
            try APIEnvelope.ok(try await self.store.listTokens(userID: try context.authenticatedUser().userID).map(JSONFields.token))
        }
        routes.post("/api/user/tokens") { request, context in
            try await self.createToken(request, for: try context.authenticatedUser().userID)
        }
        routes.delete("/api/user/tokens/:id") { _, context in
            try await self.revokeToken(try APIEnvelope.id(context), ownedBy: try context.authenticatedUser().userID)
        }
        // A pool owner's prices and the pool's usage.
        routes.get("/api/user/private-groups/:id/prices") { _, context in
            try APIEnvelope.ok(try await self.store.listPrices(group: try await self.ownedPool(context)))
        }
        routes.put("/api/user/private-groups/:id/prices") { request, context in
            try await self.setPrice(request, group: try await self.ownedPool(context))
        }
        routes.delete("/api/user/private-groups/:id/prices") { request, context in
            try await self.deletePrice(request, group: try await self.ownedPool(context))
        }
        routes.get("/api/user/private-groups/:id/usage") { request, context in
            let slug = try await self.ownedPool(context)
            try Self.onlyKnownQuery(request, ["since"])
            return try APIEnvelope.ok(try await self.store.poolUsage(groupSlug: slug, since: try Self.since(request)))
        }

        // Admins.
        routes.get("/api/admin/users") { _, context in
            try Self.requireAdmin(context)
            let users = try await self.store.listUsers()
            let balances = try await self.store.balances(userIDs: users.map(\.id))
            return try APIEnvelope.ok(users.map { JSONFields.user($0, balance: balances[$0.id] ?? .zero) })
        }
        routes.post("/api/admin/users") { request, context in
            try Self.requireAdmin(context)
            let body = try await APIEnvelope.decode(NewUserBody.self, from: request)
            let group = try Self.groupName(body.group ?? "default", field: "group")
            let user = try await self.store.createUser(name: body.username, role: body.role ?? .user, group: group, now: self.now())
            return try APIEnvelope.ok(JSONFields.user(user, balance: .zero))
        }
        routes.get("/api/admin/users/:id") { _, context in
            try Self.requireAdmin(context)
            let id = try APIEnvelope.id(context)
            guard let summary = try await self.store.userSummary(userID: id) else { throw APIError.notFound("user #\(id)") }
            return try APIEnvelope.ok(JSONFields.user(summary.user, balance: summary.balance))
        }
        routes.put("/api/admin/users/:id") { request, context in
            try Self.requireAdmin(context)
            let id = try APIEnvelope.id(context)
            let body = try await APIEnvelope.decode(UserUpdateBody.self, from: request)
            let user = try await self.store.setUserGroup(userID: id, group: body.group)
            return try APIEnvelope.ok(JSONFields.user(user, balance: try await self.store.balance(userID: id)))
        }
        routes.get("/api/admin/users/:id/tokens") { _, context in
            try Self.requireAdmin(context)
            let id = try APIEnvelope.id(context)
            guard try await self.store.user(id: id) != nil else { throw APIError.notFound("user #\(id)") }
            return try APIEnvelope.ok(try await self.store.listTokens(userID: id).map(JSONFields.token))
        }
        routes.post("/api/admin/users/:id/tokens") { request, context in
            try Self.requireAdmin(context)
            return try await self.createToken(request, for: try APIEnvelope.id(context))
        }
        routes.delete("/api/admin/tokens/:id") { _, context in
            try Self.requireAdmin(context)
            return try await self.revokeToken(try APIEnvelope.id(context), ownedBy: nil)
        }
        routes.post("/api/admin/users/:id/topup") { request, context in try await self.changeBalance(request, context, adjusting: false) }
        routes.post("/api/admin/users/:id/adjust") { request, context in try await self.changeBalance(request, context, adjusting: true) }
        routes.get("/api/admin/prices") { _, context in
            try Self.requireAdmin(context)
            return try APIEnvelope.ok(try await self.store.listPrices(group: ""))
        }
        routes.put("/api/admin/prices") { request, context in
            try Self.requireAdmin(context)
            return try await self.setPrice(request, group: "")
        }
        routes.delete("/api/admin/prices") { request, context in
            try Self.requireAdmin(context)
            return try await self.deletePrice(request, group: "")
        }
        routes.get("/api/admin/group-ratios") { _, context in
            try Self.requireAdmin(context)
            return try APIEnvelope.ok(try await self.store.listGroupRatios())
        }
        routes.put("/api/admin/group-ratios") { request, context in
            try Self.requireAdmin(context)
            let body = try await APIEnvelope.decode(RatioBody.self, from: request)
            try await self.store.setGroupRatio(name: body.group, ratio: body.ratio)
            self.onPricesChanged()
            return try APIEnvelope.ok(JSONFields(["group": try Self.groupName(body.group, field: "group"), "ratio": body.ratio]))
        }
        routes.get("/api/admin/usage") { request, context in
            try Self.requireAdmin(context)
            return try await self.usage(request, allowed: ["user_id", "request_id", "since", "model", "group", "limit"], userID: nil)
        }
        routes.get("/api/admin/ledger/check") { _, context in
            try Self.requireAdmin(context)
            let report = try await self.store.checkLedger()
            guard report.isConsistent else {
                context.logger.error("ledger check failed", metadata: ["problems": "\(report.problems)"])
                return APIEnvelope.response(status: .internalServerError, body: try APIEnvelope.encoder.encode(InconsistentLedger(
                    message: "the ledger is inconsistent: \(report.problems.count) problem\(report.problems.count == 1 ? "" : "s")", data: report)))
            }
            return try APIEnvelope.ok(report)
        }
        return routes
    }

    // MARK: - Handlers

    func me(_ context: HubRequestContext) async throws -> Response {
        let caller = try context.authenticatedUser()
        let record = try await store.token(id: caller.tokenID)
        let balance = try await store.balance(userID: caller.userID)
        // The stored record is fresher than the cached authentication.
        let spendLimit: Money? = record?.spendLimit ?? caller.spendLimit
        let spent: Money = record?.spent ?? caller.spent
        let token = JSONFields(["id": caller.tokenID, "name": caller.tokenName, "scope": caller.scope, "spend_limit": spendLimit, "spent": spent])
        return try APIEnvelope.ok(JSONFields([
            "id": caller.userID, "username": caller.userName, "role": caller.role, "group": caller.group, "balance": balance,
            "groups": caller.groups, "token": token,
        ]))
    }

    func usage(_ request: Request, allowed: Set<String>, userID: Int64?) async throws -> Response {
        try Self.onlyKnownQuery(request, allowed)
        let query = request.uri.queryParameters
        var filter = UsageFilter(userID: userID)
        if let raw = query["user_id"] { filter.userID = try APIEnvelope.positiveID(String(raw), field: "user_id") }
        filter.requestID = try query["request_id"].map { try Self.queryText(String($0), field: "request_id", max: 256) }
        filter.model = try query["model"].map { try Self.queryText(String($0), field: "model", max: 256) }
        filter.group = try query["group"].map { try Self.queryText(String($0), field: "group", max: 64) }
        filter.since = try Self.since(request)
        if let raw = query["limit"] {
            guard let limit = Int(raw), (1...UsageFilter.maxLimit).contains(limit) else {
                throw APIError(.badRequest, "limit must be an integer from 1 to \(UsageFilter.maxLimit)")
            }
            filter.limit = limit
        }
        return try APIEnvelope.ok(try await store.listUsage(filter: filter).map(JSONFields.usage))
    }

    func createToken(_ request: Request, for userID: Int64) async throws -> Response {
        let body = try await APIEnvelope.decode(TokenBody.self, from: request)
        let now = self.now()
        guard let user = try await store.user(id: userID) else { throw APIError.notFound("user #\(userID)") }
        let name = try body.name.map { try Self.text($0, field: "name", max: 64) }
        let models = try body.models.map { models in
            guard models.count <= 256 else { throw APIError(.badRequest, "models may list at most 256 models") }
            return try models.map { try Self.text($0, field: "models[]", max: 256) }
        }
        var groups: [String]?
        if let pinned = body.groups {
            guard !pinned.isEmpty, pinned.count <= 64 else { throw APIError(.badRequest, "groups must list 1-64 groups (omit it for all usable groups)") }
            let names = try pinned.map { try Self.groupName($0, field: "groups[]") }
            let usable = Set([user.group] + (try await store.usableGroups(userID: userID, now: now)))
            if let refused = names.first(where: { !usable.contains($0) }) {
                throw APIError(.badRequest, "group \(refused) is not one of the user's usable groups")
            }
            groups = names
        }
        var expiresAt = body.expiresAt
        if let date = expiresAt {
            if date.timeIntervalSince1970 == 0 {
                expiresAt = nil  // the original's "never"
            } else if date <= now || date.timeIntervalSince1970 > 253_402_300_799 {
                throw APIError(.badRequest, "expires_at must be a future unix time (0 or absent: never)")
            }
        }
        if let limit = body.spendLimit, limit.nanos < 0 || limit > HubStore.maxTransfer {
            throw APIError(.badRequest, "spend_limit must be from 0 to \(HubStore.maxTransfer)")
        }
        let created = try await store.createToken(
            userID: userID, name: name, expiresAt: expiresAt, models: models,
            options: TokenOptions(scope: body.scope ?? .both, groups: groups, spendLimit: body.spendLimit), now: now)
        return try APIEnvelope.ok(JSONFields(["key": created.plaintext, "token": JSONFields.token(created.record)]))
    }

    func revokeToken(_ id: Int64, ownedBy userID: Int64?) async throws -> Response {
        try await store.revokeToken(id: id, ownedBy: userID)
        onTokenRevoked(id)
        guard let record = try await store.token(id: id) else { throw APIError.notFound("token #\(id)") }
        return try APIEnvelope.ok(JSONFields.token(record))
    }

    /// A top-up (from the funding account) or an adjustment (either sign): one body, one reply.
    func changeBalance(_ request: Request, _ context: HubRequestContext, adjusting: Bool) async throws -> Response {
        let admin = try Self.requireAdmin(context)
        let id = try APIEnvelope.id(context)
        let body = try await APIEnvelope.decode(TopUpBody.self, from: request)
        let balance = if adjusting {
            try await store.adjust(userID: id, amount: body.amount, memo: body.memo, adminUserID: admin.userID, now: now())
        } else {
            try await store.topUp(userID: id, amount: body.amount, memo: body.memo, adminUserID: admin.userID, now: now())
        }
        onBalanceChanged(id)
        return try APIEnvelope.ok(JSONFields(["user_id": id, "balance": balance]))
    }

    func setPrice(_ request: Request, group: String) async throws -> Response {
        let body = try await APIEnvelope.decode(PriceBody.self, from: request)
        let price = ModelPrice(group: group, model: try Self.text(body.model, field: "model", max: 256),
                               inputPerMillion: body.inputPerMillion ?? .zero, outputPerMillion: body.outputPerMillion ?? .zero,
                               perRequest: body.perRequest ?? .zero)
        try await store.setPrice(price, now: now())
        onPricesChanged()
        return try APIEnvelope.ok(price)
    }

    func deletePrice(_ request: Request, group: String) async throws -> Response {
        try Self.onlyKnownQuery(request, ["model"])
        guard let raw = request.uri.queryParameters["model"] else { throw APIError(.badRequest, "the query parameter model is required") }
        let model = try Self.queryText(String(raw), field: "model", max: 256)
        guard try await store.deletePrice(group: group, model: model) else { throw APIError.notFound("price of \(model)") }
        onPricesChanged()
        return try APIEnvelope.ok(["model": model])
    }

    /// The slug of the pool `:id` if the caller owns it; 404 otherwise (as if it did not exist).
    func ownedPool(_ context: HubRequestContext) async throws -> String {
        try await store.ownedPoolSlug(groupID: try APIEnvelope.id(context), ownerUserID: try context.authenticatedUser().userID)
    }

    // MARK: - Validation

    @discardableResult
    static func requireAdmin(_ context: HubRequestContext) throws -> AuthenticatedToken {
        let caller = try context.authenticatedUser()
        guard caller.isAdmin else { throw APIError.forbidden }
        return caller
    }

    /// Refuses query parameters the route does not know (a typo would otherwise widen a filter).
    static func onlyKnownQuery(_ request: Request, _ allowed: Set<String>) throws {
        let unknown = Set(request.uri.queryParameters.map { String($0.key) }).subtracting(allowed).sorted()
        guard unknown.isEmpty else {
            throw APIError(.badRequest, "unknown query parameter\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")); expected \(allowed.sorted().joined(separator: ", "))")
        }
    }

    /// `since` as unix seconds.
    static func since(_ request: Request) throws -> Date? {
        guard let raw = request.uri.queryParameters["since"] else { return nil }
        guard let seconds = Double(raw), seconds.isFinite, seconds >= 0, seconds <= 253_402_300_799 else {
            throw APIError(.badRequest, "since must be a unix time in seconds")
        }
        return Date(timeIntervalSince1970: seconds)
    }

    static func text(_ raw: String, field: String, max: Int) throws -> String {
        let text = raw.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty, text.count <= max, !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError(.badRequest, "\(field) must be 1-\(max) characters without control characters")
        }
        return text
    }

    /// A filter value is compared exactly: no trimming, so what was asked is what is matched.
    static func queryText(_ raw: String, field: String, max: Int) throws -> String {
        guard !raw.isEmpty, raw.count <= max else { throw APIError(.badRequest, "\(field) must be 1-\(max) characters") }
        return raw
    }

    static func groupName(_ raw: String, field: String) throws -> String {
        let name = try text(raw, field: field, max: 64)
        guard !name.contains(",") else { throw APIError(.badRequest, "\(field) must not contain commas") }
        return name
    }
}

/// Worker-scoped tokens may only register workers: 403 on the management API.
// MARK: - Bodies

struct TokenBody: Decodable, APIBody {
    static let fields: Set<String> = ["name", "scope", "groups", "models", "expires_at", "spend_limit"]
    var name: String?
    var scope: TokenScope?
    var groups: [String]?
    var models: [String]?
    var expiresAt: Date?
    var spendLimit: Money?
}

struct PriceBody: Decodable, APIBody {
    static let fields: Set<String> = ["model", "input_per_million", "output_per_million", "per_request"]
    var model: String
    var inputPerMillion: Money?
    var outputPerMillion: Money?
    var perRequest: Money?
}

struct RatioBody: Decodable, APIBody {
    static let fields: Set<String> = ["group", "ratio"]
    var group: String
    var ratio: Double
}

struct NewUserBody: Decodable, APIBody {
    static let fields: Set<String> = ["username", "role", "group"]
    var username: String
    var role: UserRole?
    var group: String?
}

struct UserUpdateBody: Decodable, APIBody {
    static let fields: Set<String> = ["group"]
    var group: String
}

struct TopUpBody: Decodable, APIBody {
    static let fields: Set<String> = ["amount", "memo"]
    var amount: Money
    var memo: String?
}

// MARK: - Replies

extension JSONFields {
    static func user(_ user: User, balance: Money) -> JSONFields {
        JSONFields([
            "id": user.id, "username": user.name, "role": user.role, "group": user.group, "balance": balance,
            "created_at": user.createdAt,
        ])
    }

    /// `key_prefix` is the non-secret display prefix, e.g. `sk-toki-Ab3x`.
    static func token(_ token: TokenRecord) -> JSONFields {
        JSONFields([
            "id": token.id, "user_id": token.userID, "name": token.name, "key_prefix": token.displayPrefix,
            "created_at": token.createdAt, "expires_at": token.expiresAt, "disabled": token.disabled, "models": token.models,
            "last_used_at": token.lastUsedAt, "scope": token.scope, "groups": token.groups, "spend_limit": token.spendLimit,
            "spent": token.spent,
        ])
    }

    static func usage(_ usage: UsageRecord) -> JSONFields {
        JSONFields([
            "id": usage.id, "request_id": usage.requestID, "user_id": usage.userID, "token_id": usage.tokenID,
            "model": usage.model, "namespace": usage.namespace, "group": usage.groupName, "path": usage.path,
            "status_code": usage.statusCode, "prompt_tokens": usage.promptTokens, "completion_tokens": usage.completionTokens,
            "estimated": usage.estimated, "cost": usage.cost, "duration_ms": usage.durationMS, "ttft_ms": usage.ttftMS,
            "transaction_id": usage.transactionID, "created_at": usage.createdAt,
        ])
    }
}

/// The ledger check's failure: the envelope with `success:false` and the report as data.
struct InconsistentLedger: Encodable {
    var success = false
    var message: String
    var data: LedgerReport
}
