import Foundation
import Hummingbird
import TokiStore

/// `/api/user/private-groups…`: private GPU pools shared by invite codes (the original hub's
/// paths and JSON, tunnel-protocol.md §6.4), and the admins' `/api/user/admin/…` equivalents.
/// Every answer is the `{"success","message","data"}` envelope; another user's group is 404.
struct PrivateGroupRoutes: Sendable {
    let store: any PrivateGroupStore
    let tokens: TokenCache
    /// Called with each user whose usable groups changed (joined, removed, group disabled,
    /// renamed or deleted), so cached authentications can be dropped.
    var onAccessChanged: @Sendable (Int64) -> Void = { _ in }
    /// Whether a redeem attempt from this source address may go ahead (a rate limiter); 429 when not.
    var allowRedeem: @Sendable (String) -> Bool = { _ in true }

    static let base = "/api/user/private-groups"

    func collection() -> RouteCollection<HubRequestContext> {
        let routes = APIEnvelope.routes(tokens: tokens)
        let base = Self.base
        // Constant path components win over `:id` in Hummingbird's trie, whatever the order.
        routes.get(RouterPath(base)) { _, context in try await self.listOwned(context) }
        routes.post(RouterPath(base)) { request, context in try await self.create(request, context) }
        routes.get(RouterPath("\(base)/joined")) { _, context in try await self.joined(context) }
        routes.post(RouterPath("\(base)/redeem")) { request, context in try await self.redeem(request, context) }
        routes.get(RouterPath("\(base)/:id")) { _, context in try await self.show(context) }
        routes.put(RouterPath("\(base)/:id")) { request, context in try await self.update(request, context) }
        routes.delete(RouterPath("\(base)/:id")) { _, context in try await self.delete(context) }
        routes.get(RouterPath("\(base)/:id/invite-codes")) { _, context in try await self.listCodes(context) }
        routes.post(RouterPath("\(base)/:id/invite-codes")) { request, context in try await self.createCode(request, context) }
        routes.patch(RouterPath("\(base)/:id/invite-codes/:code_id")) { request, context in try await self.setCodeStatus(request, context) }
        routes.get(RouterPath("\(base)/:id/members")) { _, context in try await self.members(context) }
        routes.delete(RouterPath("\(base)/:id/members/:user_id")) { _, context in try await self.removeMember(context) }

        // Middleware applies to the routes added after it: only these need an admin.
        routes.add(middleware: AdminOnly())
        routes.get("/api/user/admin/private-groups") { _, _ in try APIEnvelope.ok(try await self.store.listAllGroups().map(JSONFields.group)) }
        routes.post("/api/user/admin/users/:id/private-groups") { request, context in try await self.adminGrant(request, context) }
        return routes
    }

    // MARK: handlers

    func listOwned(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        return try APIEnvelope.ok(try await store.listOwnedGroups(userID: user.userID).map(JSONFields.group))
    }

    func create(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let body = try await APIEnvelope.decode(CreateGroupBody.self, from: request)
        let group = try await store.createPrivateGroup(ownerUserID: user.userID, slug: body.groupSlug, now: Date())
        onAccessChanged(user.userID)
        return try APIEnvelope.ok(JSONFields.group(group))
    }

    func joined(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        return try APIEnvelope.ok(try await store.joinedGroups(userID: user.userID, now: Date()).map(JSONFields.joined))
    }

    func redeem(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let source = context.channel.remoteAddress?.ipAddress ?? ""
        guard allowRedeem(source) else { throw APIError(.tooManyRequests, "too many invite code attempts; wait a while and retry") }
        let body = try await APIEnvelope.decode(RedeemBody.self, from: request)
        let result = try await store.redeem(code: body.code, userID: user.userID, now: Date())
        if result.created { onAccessChanged(user.userID) }
        return try APIEnvelope.ok(JSONFields(["group": JSONFields.group(result.group), "grant": JSONFields.grant(result.grant), "created": result.created]))
    }

    func show(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        return try APIEnvelope.ok(JSONFields.group(try await store.group(id: try APIEnvelope.id(context, "id"), visibleTo: user.userID)))
    }

    func update(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let id = try APIEnvelope.id(context, "id")
        let body = try await APIEnvelope.decode(UpdateGroupBody.self, from: request)
        guard body.groupSlug != nil || body.status != nil else { throw APIError(.badRequest, "give group_slug and/or status") }
        // Members' usable groups change with the slug or the status: their cached tokens go.
        let members = try await store.listMembers(groupID: id, ownerUserID: user.userID)
        let group = try await store.updateGroup(id: id, ownerUserID: user.userID, slug: body.groupSlug, status: body.status, now: Date())
        members.forEach { onAccessChanged($0.userID) }
        return try APIEnvelope.ok(JSONFields.group(group))
    }

    func delete(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let revoked = try await store.deleteGroup(id: try APIEnvelope.id(context, "id"), ownerUserID: user.userID, now: Date())
        revoked.forEach(onAccessChanged)
        return try APIEnvelope.ok(Empty())
    }

    func listCodes(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        return try APIEnvelope.ok(try await store.listInviteCodes(groupID: try APIEnvelope.id(context, "id"), ownerUserID: user.userID).map(JSONFields.inviteCode))
    }

    func createCode(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let id = try APIEnvelope.id(context, "id")
        let body = try await APIEnvelope.decode(CreateCodeBody.self, from: request)
        let made = try await store.createInviteCode(groupID: id, ownerUserID: user.userID, maxUses: body.maxUses ?? 1,
                                                    expiresAt: try Self.expiry(body.expiresAt), now: Date())
        return try APIEnvelope.ok(JSONFields(["invite_code": made.code, "record": JSONFields.inviteCode(made.record)]))
    }

    func setCodeStatus(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let id = try APIEnvelope.id(context, "id")
        let codeID = try APIEnvelope.id(context, "code_id")
        let body = try await APIEnvelope.decode(CodeStatusBody.self, from: request)
        let code = try await store.setInviteCodeStatus(codeID: codeID, groupID: id, ownerUserID: user.userID, status: body.status, now: Date())
        return try APIEnvelope.ok(JSONFields.inviteCode(code))
    }

    func members(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        return try APIEnvelope.ok(try await store.listMembers(groupID: try APIEnvelope.id(context, "id"), ownerUserID: user.userID).map(JSONFields.member))
    }

    func removeMember(_ context: HubRequestContext) async throws -> Response {
        let user = try context.authenticatedUser()
        let id = try APIEnvelope.id(context, "id")
        let member = try APIEnvelope.id(context, "user_id")
        try await store.removeMember(groupID: id, ownerUserID: user.userID, memberUserID: member, now: Date())
        onAccessChanged(member)
        return try APIEnvelope.ok(Empty())
    }

    func adminGrant(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let admin = try context.authenticatedUser()
        let userID = try APIEnvelope.id(context, "id")
        let body = try await APIEnvelope.decode(AdminGrantBody.self, from: request)
        guard body.groupId > 0 else { throw APIError(.badRequest, "group_id must be a positive integer") }
        let grant = try await store.adminGrant(groupID: body.groupId, userID: userID, expiresAt: try Self.expiry(body.expiresAt),
                                               adminUserID: admin.userID, now: Date())
        onAccessChanged(userID)
        return try APIEnvelope.ok(JSONFields.grant(grant))
    }

    // MARK: inputs

    /// `expires_at` in unix seconds: absent or 0 means never; negative is refused (the store
    /// refuses the past).
    static func expiry(_ seconds: Int64?) throws -> Date? {
        guard let seconds, seconds != 0 else { return nil }
        guard seconds > 0 else { throw APIError(.badRequest, "expires_at must be unix seconds in the future, or 0 for never") }
        return Date(timeIntervalSince1970: TimeInterval(seconds))
    }

    struct CreateGroupBody: Decodable, APIBody {
        static let fields: Set<String> = ["group_slug"]
        var groupSlug: String
    }

    struct UpdateGroupBody: Decodable, APIBody {
        static let fields: Set<String> = ["group_slug", "status"]
        var groupSlug: String?
        var status: Int?
    }

    struct RedeemBody: Decodable, APIBody {
        static let fields: Set<String> = ["code"]
        var code: String
    }

    struct CreateCodeBody: Decodable, APIBody {
        static let fields: Set<String> = ["max_uses", "expires_at"]
        var maxUses: Int?
        var expiresAt: Int64?
    }

    struct CodeStatusBody: Decodable, APIBody {
        static let fields: Set<String> = ["status"]
        var status: Int
    }

    struct AdminGrantBody: Decodable, APIBody {
        static let fields: Set<String> = ["group_id", "expires_at"]
        var groupId: Int64
        var expiresAt: Int64?
    }
}

// MARK: - JSON (the original's fields; times in unix seconds, 0 for never)

private func unix(_ date: Date?) -> Int64 { date.map { Int64($0.timeIntervalSince1970.rounded(.down)) } ?? 0 }

private struct Empty: Encodable {}

extension JSONFields {
    static func group(_ group: PrivateGroup) -> JSONFields {
        JSONFields([
            "id": group.id, "owner_user_id": group.ownerUserID, "group_slug": group.slug, "status": group.status,
            "created_at": unix(group.createdAt), "updated_at": unix(group.updatedAt),
        ])
    }

    static func grant(_ grant: GroupGrant) -> JSONFields {
        JSONFields([
            "id": grant.id, "group_id": grant.groupID, "user_id": grant.userID, "role": grant.role.rawValue,
            "source": grant.source.rawValue, "source_ref": grant.sourceRef, "granted_by": grant.grantedBy,
            "expires_at": unix(grant.expiresAt), "revoked_at": unix(grant.revokedAt),
            "created_at": unix(grant.createdAt), "updated_at": unix(grant.updatedAt),
        ])
    }

    static func inviteCode(_ code: InviteCode) -> JSONFields {
        JSONFields([
            "id": code.id, "group_id": code.groupID, "created_by": code.createdBy, "status": code.status,
            "max_uses": code.maxUses, "used_count": code.usedCount, "expires_at": unix(code.expiresAt),
            "created_at": unix(code.createdAt), "updated_at": unix(code.updatedAt),
        ])
    }

    static func member(_ member: GroupMember) -> JSONFields {
        JSONFields([
            "user_id": member.userID, "user_name": member.userName, "role": member.grant.role.rawValue,
            "source": member.grant.source.rawValue, "source_ref": member.grant.sourceRef,
            "expires_at": unix(member.grant.expiresAt), "created_at": unix(member.grant.createdAt),
        ])
    }

    static func joined(_ joined: JoinedGroup) -> JSONFields {
        JSONFields([
            "group_id": joined.group.id, "group_slug": joined.group.slug, "owner_user_id": joined.group.ownerUserID,
            "role": joined.grant.role.rawValue, "source": joined.grant.source.rawValue,
            "expires_at": unix(joined.grant.expiresAt), "created_at": unix(joined.grant.createdAt),
        ])
    }
}
