import CCrypto
import Foundation
import GRDB

// Private groups (GPU pools) shared by invite codes: the original hub's rules
// (tunnel-protocol.md §6.4), with codes from the CSPRNG and every owner check inside the query
// (another user's group is "not found", never "forbidden").

/// A member of a private group as its owner sees it.
public struct GroupMember: Sendable, Equatable {
    public var userID: Int64
    public var userName: String
    public var grant: GroupGrant
}

/// A private group a user may use, and the grant that lets them.
public struct JoinedGroup: Sendable, Equatable {
    public var group: PrivateGroup
    public var grant: GroupGrant
    public var role: GrantRole { grant.role }
}

/// Private groups, their members and invite codes. Every method taking an owner answers
/// ``StoreError/notFound(_:)`` when the group is not that user's (or is deleted), so ids of other
/// users' groups reveal nothing. Throws ``StoreError/invalidInput(_:)`` for malformed input and
/// ``StoreError/conflict(_:)`` for state conflicts (a taken slug, a slug still in use).
public protocol PrivateGroupStore: Sendable {
    /// Creates a group owned by `ownerUserID` and its owner grant, in one transaction.
    func createPrivateGroup(ownerUserID: Int64, slug: String, now: Date) async throws -> PrivateGroup
    /// The user's own groups (not deleted), by id.
    func listOwnedGroups(userID: Int64) async throws -> [PrivateGroup]
    /// One of the user's own groups.
    func group(id: Int64, visibleTo userID: Int64) async throws -> PrivateGroup
    /// Renames (`slug`) and/or enables (1) or disables (2) a group. A rename is refused while
    /// tokens are pinned to the old slug or workers serve it.
    func updateGroup(id: Int64, ownerUserID: Int64, slug: String?, status: Int?, now: Date) async throws -> PrivateGroup
    /// Soft-deletes a group: revokes every grant, disables every code. Refused while tokens are
    /// pinned to its slug or workers serve it. Returns the users whose grants were revoked.
    func deleteGroup(id: Int64, ownerUserID: Int64, now: Date) async throws -> [Int64]
    /// A new code `XXXX-XXXX-XXXX` (returned once; only its SHA-256 is stored) and its record.
    func createInviteCode(groupID: Int64, ownerUserID: Int64, maxUses: Int, expiresAt: Date?, now: Date) async throws
        -> (code: String, record: InviteCode)
    /// The group's codes, newest first.
    func listInviteCodes(groupID: Int64, ownerUserID: Int64) async throws -> [InviteCode]
    /// Enables (1) or disables (2) one of the group's codes.
    func setInviteCodeStatus(codeID: Int64, groupID: Int64, ownerUserID: Int64, status: Int, now: Date) async throws -> InviteCode
    /// Joins `userID` to the code's group. A user who already has an active grant gets it back with
    /// `created == false` and the code is not consumed.
    func redeem(code: String, userID: Int64, now: Date) async throws -> (group: PrivateGroup, grant: GroupGrant, created: Bool)
    /// The group's grants that are not revoked (owner included), with user names.
    func listMembers(groupID: Int64, ownerUserID: Int64) async throws -> [GroupMember]
    /// Revokes a member's grant (idempotent). The owner cannot remove themselves.
    func removeMember(groupID: Int64, ownerUserID: Int64, memberUserID: Int64, now: Date) async throws
    /// The groups `userID` may use now (owned ones included), by slug.
    func joinedGroups(userID: Int64, now: Date) async throws -> [JoinedGroup]
    /// An admin's grant of `groupID` to `userID` (expiring at `expiresAt`, nil: never).
    func adminGrant(groupID: Int64, userID: Int64, expiresAt: Date?, adminUserID: Int64, now: Date) async throws -> GroupGrant
    /// Every group that is not deleted, by id.
    func listAllGroups() async throws -> [PrivateGroup]
}

extension HubStore: PrivateGroupStore {}

extension PrivateGroup: StoredRecord {
    static let renamedColumns = ["group_slug": "slug"]
}

extension GroupGrant: StoredRecord {}
extension InviteCode: StoredRecord {}

/// Invite codes: `XXXX-XXXX-XXXX` over `[0-9A-Z]` (62 bits), stored as the SHA-256 hex of the
/// trimmed, upper-cased code (the original's hash, so its codes keep working).
public enum InviteCodeCrypto {
    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
    static let chunks = 3
    static let chunkLength = 4

    /// A fresh code from `RAND_bytes`, uniform over the alphabet (bytes ≥ 252 = 7 × 36 are rejected).
    public static func generate() throws -> String {
        let count = chunks * chunkLength
        var out: [UInt8] = []
        out.reserveCapacity(count + chunks - 1)
        var buffer = [UInt8](repeating: 0, count: 32)
        var drawn = 0
        while drawn < count {
            let ok = buffer.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
            guard ok == 1 else { throw StoreError.randomFailure }
            for byte in buffer where byte < 252 && drawn < count {
                if drawn > 0, drawn % chunkLength == 0 { out.append(UInt8(ascii: "-")) }
                out.append(alphabet[Int(byte % 36)])
                drawn += 1
            }
        }
        buffer.withUnsafeMutableBufferPointer { OPENSSL_cleanse($0.baseAddress, $0.count) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The code trimmed and upper-cased, or nil unless it is three groups of four `[0-9A-Za-z]`
    /// joined by `-`.
    public static func canonicalize(_ presented: String) -> String? {
        let trimmed = Substring(presented).trimmingWhitespace()
        let bytes = Array(trimmed.utf8)
        guard bytes.count == chunks * chunkLength + chunks - 1 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for (i, b) in bytes.enumerated() {
            if (i + 1) % (chunkLength + 1) == 0 {
                guard b == UInt8(ascii: "-") else { return nil }
                out.append(b)
                continue
            }
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"): out.append(b)
            case UInt8(ascii: "a")...UInt8(ascii: "z"): out.append(b - 32)
            default: return nil
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// What the database stores: SHA-256 hex of the canonical code.
    public static func hash(canonical: String) -> String { TokenCrypto.hashHex(canonical) }
}

extension HubStore {
    /// Most uses one invite code may allow.
    public static let maxInviteCodeUses = 100_000
    /// Latest expiry accepted (the end of year 9999), so stored dates stay well-formed.
    static let latestExpiry = Date(timeIntervalSince1970: 253_402_300_799)
    static let redeemRefusal = "invalid or expired invite code"

    public func createPrivateGroup(ownerUserID: Int64, slug: String, now: Date = Date()) async throws -> PrivateGroup {
        let slug = try Validate.groupSlug(slug)
        let group: PrivateGroup = try await run {
            try await db.write { db in
                guard try Self.fetchUser(db, id: ownerUserID) != nil else { throw StoreError.notFound("user #\(ownerUserID) not found") }
                try Self.checkSlugFree(db, slug)
                try db.execute(sql: """
                    INSERT INTO private_groups (owner_user_id, group_slug, status, created_at, updated_at) VALUES (?, ?, 1, ?, ?)
                    """, arguments: [ownerUserID, slug, now, now])
                let id = db.lastInsertedRowID
                try db.execute(sql: """
                    INSERT INTO private_group_grants (group_id, user_id, role, source, source_ref, granted_by, created_at, updated_at)
                    VALUES (?, ?, 'owner', 'create', ?, ?, ?, ?)
                    """, arguments: [id, ownerUserID, "group:\(id)", ownerUserID, now, now])
                return PrivateGroup(id: id, ownerUserID: ownerUserID, slug: slug, status: 1, createdAt: now, updatedAt: now)
            }
        }
        logger.info("created private group", metadata: ["group_id": "\(group.id)", "slug": "\(slug)", "owner": "\(ownerUserID)"])
        return group
    }

    public func listOwnedGroups(userID: Int64) async throws -> [PrivateGroup] {
        try await run {
            try await db.read { db in
                try PrivateGroup.fetchAll(db, sql: """
                    SELECT * FROM private_groups WHERE owner_user_id = ? AND deleted_at IS NULL ORDER BY id
                    """, arguments: [userID])
            }
        }
    }

    public func group(id: Int64, visibleTo userID: Int64) async throws -> PrivateGroup {
        try await run { try await db.read { db in try Self.ownedGroup(db, id: id, ownerUserID: userID) } }
    }

    public func updateGroup(id: Int64, ownerUserID: Int64, slug: String?, status: Int?, now: Date = Date()) async throws -> PrivateGroup {
        let newSlug = try slug.map(Validate.groupSlug)
        if let status { try Validate.status(status) }
        let updated: PrivateGroup = try await run {
            try await db.write { db in
                var group = try Self.ownedGroup(db, id: id, ownerUserID: ownerUserID)
                if let newSlug, newSlug != group.slug {
                    try Self.checkUnreferenced(db, group.slug, doing: "renamed", now: now)
                    try Self.checkSlugFree(db, newSlug)
                    group.slug = newSlug
                }
                if let status { group.status = status }
                group.updatedAt = now
                try db.execute(sql: "UPDATE private_groups SET group_slug = ?, status = ?, updated_at = ? WHERE id = ?",
                               arguments: [group.slug, group.status, now, id])
                return group
            }
        }
        logger.info("updated private group", metadata: ["group_id": "\(id)", "slug": "\(updated.slug)", "status": "\(updated.status)"])
        return updated
    }

    public func deleteGroup(id: Int64, ownerUserID: Int64, now: Date = Date()) async throws -> [Int64] {
        let revoked: [Int64] = try await run {
            try await db.write { db in
                let group = try Self.ownedGroup(db, id: id, ownerUserID: ownerUserID)
                try Self.checkUnreferenced(db, group.slug, doing: "deleted", now: now)
                let users = try Int64.fetchAll(db, sql: """
                    SELECT user_id FROM private_group_grants WHERE group_id = ? AND revoked_at IS NULL ORDER BY user_id
                    """, arguments: [id])
                try db.execute(sql: "UPDATE private_groups SET deleted_at = ?, updated_at = ? WHERE id = ?", arguments: [now, now, id])
                try db.execute(sql: """
                    UPDATE private_group_grants SET revoked_at = ?, updated_at = ? WHERE group_id = ? AND revoked_at IS NULL
                    """, arguments: [now, now, id])
                try db.execute(sql: "UPDATE private_group_invite_codes SET status = 2, updated_at = ? WHERE group_id = ? AND status = 1",
                               arguments: [now, id])
                return users
            }
        }
        logger.info("deleted private group", metadata: ["group_id": "\(id)", "revoked_grants": "\(revoked.count)"])
        return revoked
    }

    public func createInviteCode(groupID: Int64, ownerUserID: Int64, maxUses: Int = 1, expiresAt: Date? = nil,
                                 now: Date = Date()) async throws -> (code: String, record: InviteCode) {
        guard (1...Self.maxInviteCodeUses).contains(maxUses) else {
            throw StoreError.invalidInput("max_uses must be between 1 and \(Self.maxInviteCodeUses)")
        }
        try Validate.expiry(expiresAt, now: now)
        // 62 random bits: a collision with a stored code is not expected, but is retried, not failed.
        for attempt in 1...3 {
            let code = try InviteCodeCrypto.generate()
            let hash = InviteCodeCrypto.hash(canonical: code)
            let record: InviteCode? = try await run {
                try await db.write { db in
                    _ = try Self.ownedGroup(db, id: groupID, ownerUserID: ownerUserID)
                    if attempt < 3, try Bool.fetchOne(db, sql: "SELECT 1 FROM private_group_invite_codes WHERE code_hash = ?",
                                                     arguments: [hash]) == true {
                        return nil
                    }
                    try db.execute(sql: """
                        INSERT INTO private_group_invite_codes (group_id, code_hash, created_by, status, max_uses, used_count, expires_at, created_at, updated_at)
                        VALUES (?, ?, ?, 1, ?, 0, ?, ?, ?)
                        """, arguments: [groupID, hash, ownerUserID, maxUses, expiresAt, now, now])
                    return InviteCode(id: db.lastInsertedRowID, groupID: groupID, createdBy: ownerUserID, status: 1, maxUses: maxUses,
                                      usedCount: 0, expiresAt: expiresAt, createdAt: now, updatedAt: now)
                }
            }
            if let record {
                logger.info("created invite code", metadata: ["group_id": "\(groupID)", "code_id": "\(record.id)", "max_uses": "\(maxUses)"])
                return (code, record)
            }
        }
        throw StoreError.database("could not make a unique invite code")
    }

    public func listInviteCodes(groupID: Int64, ownerUserID: Int64) async throws -> [InviteCode] {
        try await run {
            try await db.read { db in
                _ = try Self.ownedGroup(db, id: groupID, ownerUserID: ownerUserID)
                return try InviteCode.fetchAll(db, sql: "SELECT * FROM private_group_invite_codes WHERE group_id = ? ORDER BY id DESC",
                                               arguments: [groupID])
            }
        }
    }

    public func setInviteCodeStatus(codeID: Int64, groupID: Int64, ownerUserID: Int64, status: Int,
                                    now: Date = Date()) async throws -> InviteCode {
        try Validate.status(status)
        return try await run {
            try await db.write { db in
                _ = try Self.ownedGroup(db, id: groupID, ownerUserID: ownerUserID)
                guard var code = try InviteCode.fetchOne(db, sql: "SELECT * FROM private_group_invite_codes WHERE id = ? AND group_id = ?",
                                                         arguments: [codeID, groupID])
                else { throw StoreError.notFound("invite code #\(codeID) not found") }
                if status == 1, code.usedCount >= code.maxUses {
                    throw StoreError.conflict("invite code #\(codeID) is used up (\(code.usedCount) of \(code.maxUses)); make a new one")
                }
                code.status = status
                code.updatedAt = now
                try db.execute(sql: "UPDATE private_group_invite_codes SET status = ?, updated_at = ? WHERE id = ?",
                               arguments: [status, now, codeID])
                return code
            }
        }
    }

    public func redeem(code presented: String, userID: Int64, now: Date = Date()) async throws
        -> (group: PrivateGroup, grant: GroupGrant, created: Bool) {
        guard let canonical = InviteCodeCrypto.canonicalize(presented) else {
            throw StoreError.invalidInput("malformed invite code: it looks like XXXX-XXXX-XXXX (letters and digits)")
        }
        let hash = InviteCodeCrypto.hash(canonical: canonical)
        let result: (group: PrivateGroup, grant: GroupGrant, created: Bool) = try await run {
            try await db.write { db in
                let refusal = StoreError.invalidInput(Self.redeemRefusal)
                guard try Self.fetchUser(db, id: userID) != nil else { throw StoreError.notFound("user #\(userID) not found") }
                guard let code = try InviteCode.fetchOne(db, sql: "SELECT * FROM private_group_invite_codes WHERE code_hash = ?",
                                                         arguments: [hash]),
                      code.status == 1, code.usedCount < code.maxUses, code.expiresAt.map({ $0 > now }) ?? true
                else { throw refusal }
                guard let group = try PrivateGroup.fetchOne(db, sql: """
                    SELECT * FROM private_groups WHERE id = ? AND status = 1 AND deleted_at IS NULL
                    """, arguments: [code.groupID])
                else { throw refusal }
                let existing = try GroupGrant.fetchOne(db, sql: "SELECT * FROM private_group_grants WHERE group_id = ? AND user_id = ?",
                                                       arguments: [group.id, userID])
                if let existing, existing.isActive(at: now) { return (group, existing, false) }
                // Consume one use first: the guarded UPDATE is what admits exactly max_uses users.
                try db.execute(sql: """
                    UPDATE private_group_invite_codes
                    SET used_count = used_count + 1,
                        status = CASE WHEN used_count + 1 >= max_uses THEN 2 ELSE status END,
                        updated_at = ?
                    WHERE id = ? AND status = 1 AND used_count < max_uses
                    """, arguments: [now, code.id])
                guard db.changesCount == 1 else { throw refusal }
                let ref = "invite_code:\(code.id)"
                if existing != nil {
                    try db.execute(sql: """
                        UPDATE private_group_grants
                        SET role = CASE role WHEN 'owner' THEN 'owner' ELSE 'member' END, source = 'invite', source_ref = ?,
                            granted_by = ?, expires_at = NULL, revoked_at = NULL, updated_at = ?
                        WHERE group_id = ? AND user_id = ?
                        """, arguments: [ref, code.createdBy, now, group.id, userID])
                } else {
                    try db.execute(sql: """
                        INSERT INTO private_group_grants (group_id, user_id, role, source, source_ref, granted_by, created_at, updated_at)
                        VALUES (?, ?, 'member', 'invite', ?, ?, ?, ?)
                        """, arguments: [group.id, userID, ref, code.createdBy, now, now])
                }
                let grant = try GroupGrant.fetchOne(db, sql: "SELECT * FROM private_group_grants WHERE group_id = ? AND user_id = ?",
                                                    arguments: [group.id, userID])!
                return (group, grant, true)
            }
        }
        if result.created {
            logger.info("redeemed invite code", metadata: ["group_id": "\(result.group.id)", "user_id": "\(userID)"])
        }
        return result
    }

    public func listMembers(groupID: Int64, ownerUserID: Int64) async throws -> [GroupMember] {
        try await run {
            try await db.read { db in
                _ = try Self.ownedGroup(db, id: groupID, ownerUserID: ownerUserID)
                let rows = try Row.fetchAll(db, sql: """
                    SELECT r.*, u.name AS user_name FROM private_group_grants r JOIN users u ON u.id = r.user_id
                    WHERE r.group_id = ? AND r.revoked_at IS NULL
                    ORDER BY CASE r.role WHEN 'owner' THEN 0 ELSE 1 END, r.id
                    """, arguments: [groupID])
                return try rows.map { row in
                    let grant = try GroupGrant(row: row)
                    return GroupMember(userID: grant.userID, userName: row["user_name"], grant: grant)
                }
            }
        }
    }

    public func removeMember(groupID: Int64, ownerUserID: Int64, memberUserID: Int64, now: Date = Date()) async throws {
        guard memberUserID != ownerUserID else {
            throw StoreError.invalidInput("the owner cannot leave their own group; delete the group instead")
        }
        try await run {
            try await db.write { db in
                _ = try Self.ownedGroup(db, id: groupID, ownerUserID: ownerUserID)
                guard let grant = try GroupGrant.fetchOne(db, sql: "SELECT * FROM private_group_grants WHERE group_id = ? AND user_id = ?",
                                                          arguments: [groupID, memberUserID])
                else { throw StoreError.notFound("user #\(memberUserID) is not a member of this group") }
                if grant.revokedAt == nil {
                    try db.execute(sql: "UPDATE private_group_grants SET revoked_at = ?, updated_at = ? WHERE id = ?",
                                   arguments: [now, now, grant.id])
                }
            }
        }
        logger.info("removed private group member", metadata: ["group_id": "\(groupID)", "user_id": "\(memberUserID)"])
    }

    public func joinedGroups(userID: Int64, now: Date = Date()) async throws -> [JoinedGroup] {
        try await run {
            try await db.read { db in
                // The active rule of `activeGroupsSQL`: these are the groups `authenticate` grants.
                let rows = try Row.fetchAll(db, sql: """
                    SELECT r.*, g.owner_user_id AS g_owner_user_id, g.group_slug AS g_group_slug, g.status AS g_status,
                           g.created_at AS g_created_at, g.updated_at AS g_updated_at
                    FROM private_group_grants r JOIN private_groups g ON g.id = r.group_id
                    WHERE r.user_id = ? AND r.revoked_at IS NULL AND (r.expires_at IS NULL OR r.expires_at >= ?)
                      AND g.status = 1 AND g.deleted_at IS NULL
                    ORDER BY g.group_slug
                    """, arguments: [userID, now])
                return try rows.map { row in
                    let grant = try GroupGrant(row: row)
                    let group = PrivateGroup(id: grant.groupID, ownerUserID: row["g_owner_user_id"], slug: row["g_group_slug"],
                                             status: row["g_status"], createdAt: row["g_created_at"], updatedAt: row["g_updated_at"])
                    return JoinedGroup(group: group, grant: grant)
                }
            }
        }
    }

    public func adminGrant(groupID: Int64, userID: Int64, expiresAt: Date? = nil, adminUserID: Int64,
                           now: Date = Date()) async throws -> GroupGrant {
        try Validate.expiry(expiresAt, now: now)
        let grant: GroupGrant = try await run {
            try await db.write { db in
                guard try Self.fetchUser(db, id: userID) != nil else { throw StoreError.notFound("user #\(userID) not found") }
                guard try PrivateGroup.fetchOne(db, sql: "SELECT * FROM private_groups WHERE id = ? AND deleted_at IS NULL",
                                                arguments: [groupID]) != nil
                else { throw StoreError.notFound("private group #\(groupID) not found") }
                let fetch = { try GroupGrant.fetchOne(db, sql: "SELECT * FROM private_group_grants WHERE group_id = ? AND user_id = ?",
                                                      arguments: [groupID, userID]) }
                let ref = "admin:\(adminUserID)"
                if let existing = try fetch() {
                    // The owner's own grant is never narrowed by an admin grant.
                    if existing.role == .owner, existing.revokedAt == nil { return existing }
                    try db.execute(sql: """
                        UPDATE private_group_grants SET source = 'admin', source_ref = ?, granted_by = ?, expires_at = ?, revoked_at = NULL,
                            updated_at = ?
                        WHERE id = ?
                        """, arguments: [ref, adminUserID, expiresAt, now, existing.id])
                } else {
                    try db.execute(sql: """
                        INSERT INTO private_group_grants (group_id, user_id, role, source, source_ref, granted_by, expires_at, created_at, updated_at)
                        VALUES (?, ?, 'member', 'admin', ?, ?, ?, ?, ?)
                        """, arguments: [groupID, userID, ref, adminUserID, expiresAt, now, now])
                }
                return try fetch()!
            }
        }
        logger.info("admin granted private group", metadata: ["group_id": "\(groupID)", "user_id": "\(userID)", "admin": "\(adminUserID)"])
        return grant
    }

    public func listAllGroups() async throws -> [PrivateGroup] {
        try await run {
            try await db.read { db in
                try PrivateGroup.fetchAll(db, sql: "SELECT * FROM private_groups WHERE deleted_at IS NULL ORDER BY id")
            }
        }
    }

    // MARK: synchronous helpers (run inside a transaction)

    /// The group if `ownerUserID` owns it and it is not deleted; not found otherwise.
    static func ownedGroup(_ db: Database, id: Int64, ownerUserID: Int64) throws -> PrivateGroup {
        guard let group = try PrivateGroup.fetchOne(db, sql: """
            SELECT * FROM private_groups WHERE id = ? AND owner_user_id = ? AND deleted_at IS NULL
            """, arguments: [id, ownerUserID])
        else { throw StoreError.notFound("private group #\(id) not found") }
        return group
    }

    /// Refuses a slug that is a hub group (a user's primary group or a priced group) or another
    /// private group's (deleted ones keep theirs).
    static func checkSlugFree(_ db: Database, _ slug: String) throws {
        if try Bool.fetchOne(db, sql: "SELECT 1 FROM private_groups WHERE group_slug = ?", arguments: [slug]) == true {
            throw StoreError.conflict("the group name \(slug) is taken")
        }
        if try Bool.fetchOne(db, sql: #"SELECT 1 FROM users WHERE lower(trim("group")) = ? LIMIT 1"#, arguments: [slug]) == true
            || Bool.fetchOne(db, sql: "SELECT 1 FROM group_ratios WHERE lower(trim(name)) = ? LIMIT 1", arguments: [slug]) == true {
            throw StoreError.conflict("the group name \(slug) is one of the hub's own groups")
        }
    }

    /// Refuses while a usable token is pinned to `slug` or a worker row serves it.
    static func checkUnreferenced(_ db: Database, _ slug: String, doing action: String, now: Date) throws {
        // `instr` narrows the rows (slugs are [a-z0-9-], so the JSON spelling is "slug"); the
        // decoded list decides.
        let pinned = try String.fetchAll(db, sql: """
            SELECT groups FROM tokens
            WHERE groups IS NOT NULL AND instr(groups, ?) > 0 AND disabled = 0 AND (expires_at IS NULL OR expires_at > ?)
            """, arguments: ["\"\(slug)\"", now])
            .filter { JSONColumn.decode($0)?.contains(slug) ?? false }.count
        let workers = try String.fetchAll(db, sql: #"SELECT "group" FROM workers WHERE instr("group", ?) > 0"#, arguments: [slug])
            .filter { $0.split(separator: ",").contains { $0.trimmingWhitespace() == slug } }.count
        guard pinned == 0, workers == 0 else {
            var uses: [String] = []
            if pinned > 0 { uses.append("\(pinned) token\(pinned == 1 ? " is" : "s are") pinned to it") }
            if workers > 0 { uses.append("\(workers) worker\(workers == 1 ? "" : "s") registered into it") }
            throw StoreError.conflict("group \(slug) cannot be \(action) while \(uses.joined(separator: " and "))")
        }
    }
}

extension Validate {
    /// Lower-cased and trimmed; `^[a-z0-9-]{3,64}$`, not `default` or `auto`. The message never
    /// echoes the input (it may be huge or hold control characters).
    static func groupSlug(_ raw: String) throws -> String {
        let slug = String(Substring(raw).trimmingWhitespace()).lowercased()
        let valid = (3...64).contains(slug.utf8.count) && slug.utf8.allSatisfy { b in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || b == UInt8(ascii: "-")
        }
        guard valid else { throw StoreError.invalidInput("group_slug must be 3-64 characters of a-z, 0-9 and -") }
        guard slug != "default", slug != "auto" else { throw StoreError.invalidInput("group_slug \(slug) is reserved") }
        return slug
    }

    static func status(_ status: Int) throws {
        guard status == 1 || status == 2 else { throw StoreError.invalidInput("status must be 1 (enabled) or 2 (disabled)") }
    }

    static func expiry(_ expiresAt: Date?, now: Date) throws {
        guard let expiresAt else { return }
        guard expiresAt > now else { throw StoreError.invalidInput("expires_at must be in the future") }
        guard expiresAt <= HubStore.latestExpiry else { throw StoreError.invalidInput("expires_at is too far in the future") }
    }
}

// MARK: - For tests (internal)

extension HubStore {
    /// Runs literal SQL in a write transaction. Used by tests (`@testable`) to set up rows no
    /// public method writes yet (group ratios) or to age rows.
    func executeSQL(_ sql: String) async throws {
        try await run { try await db.write { db in try db.execute(sql: sql) } }
    }
}
