import Foundation
import GRDB

extension TokenRecord: StoredRecord {
    static let renamedColumns = ["key_prefix": "displayPrefix"]
}

/// What `authenticate` reads, copied out of the row inside the read transaction.
private struct TokenLookup: Sendable {
    var storedHash: String
    var record: TokenRecord
    var user: User
    /// Slugs of the private groups the user holds an active grant to.
    var privateGroups: [String]
}

/// A token's scope, pinned groups and spending cap, given when it is issued.
public struct TokenOptions: Sendable, Equatable {
    public var scope: TokenScope
    /// Groups the token is pinned to; nil: every group its user may use.
    public var groups: [String]?
    public var spendLimit: Money?
    /// Requests and tokens per minute, requests at once; nil: the hub's defaults.
    public var rpm: Int?
    public var tpm: Int?
    public var maxConcurrent: Int?

    public init(scope: TokenScope = .both, groups: [String]? = nil, spendLimit: Money? = nil, rpm: Int? = nil, tpm: Int? = nil,
                maxConcurrent: Int? = nil) {
        self.scope = scope
        self.groups = groups
        self.spendLimit = spendLimit
        self.rpm = rpm
        self.tpm = tpm
        self.maxConcurrent = maxConcurrent
    }
}

extension HubStore {
    /// `last_used_at` is rewritten at most this often per token, to keep authentication read-only
    /// on the hot path.
    public static let lastUsedGranularity: TimeInterval = 60

    /// Issues a token for the user called `user`, creating that user (with `role` and `group`)
    /// if it does not exist; `role`/`group` are ignored for an existing user.
    ///
    /// - Parameters:
    ///   - models: allow-list of model names; nil or empty (after trimming) means all models.
    /// - Returns: the plaintext (show it once: only its SHA-256 is stored) and the record.
    public func createToken(
        user: String, name: String? = nil, role: UserRole = .user, group: String = "default",
        expiresAt: Date? = nil, models: [String]? = nil, options: TokenOptions = TokenOptions(), now: Date = Date()
    ) async throws -> (plaintext: String, record: TokenRecord) {
        let userName = try Validate.userName(user)
        let plaintext = try TokenCrypto.generate()
        let record: TokenRecord = try await run {
            try await db.write { db in
                let owner = try Self.fetchUser(db, name: userName)
                    ?? Self.insertUser(db, name: userName, role: role, group: group, now: now)
                return try Self.insertToken(
                    db, plaintext: plaintext, userID: owner.id, name: name,
                    expiresAt: expiresAt, models: models, options: options, now: now)
            }
        }
        logger.info("created API token", metadata: [
            "user": "\(userName)", "token_id": "\(record.id)", "prefix": "\(record.displayPrefix)",
        ])
        return (plaintext, record)
    }

    /// Issues a token for an existing user. Throws ``StoreError/userIDNotFound(_:)``.
    public func createToken(
        userID: Int64, name: String? = nil, expiresAt: Date? = nil, models: [String]? = nil,
        options: TokenOptions = TokenOptions(), now: Date = Date()
    ) async throws -> (plaintext: String, record: TokenRecord) {
        let plaintext = try TokenCrypto.generate()
        let record: TokenRecord = try await run {
            try await db.write { db in
                guard try Self.fetchUser(db, id: userID) != nil else { throw StoreError.userIDNotFound(userID) }
                return try Self.insertToken(
                    db, plaintext: plaintext, userID: userID, name: name,
                    expiresAt: expiresAt, models: models, options: options, now: now)
            }
        }
        logger.info("created API token", metadata: [
            "user_id": "\(userID)", "token_id": "\(record.id)", "prefix": "\(record.displayPrefix)",
        ])
        return (plaintext, record)
    }

    /// Resolves a presented API token. Accepts `sk-toki-…`, `toki-…` (what the Go hub leaves
    /// after stripping `sk-`) and either with a `Bearer ` prefix (see ``TokenCrypto``).
    /// Returns nil for unknown, malformed, disabled (revoked) or expired tokens.
    public func authenticate(token presented: String, now: Date = Date()) async throws -> AuthenticatedToken? {
        guard let canonical = TokenCrypto.canonicalize(presented) else { return nil }
        let hash = TokenCrypto.hashHex(canonical)
        let found: TokenLookup? = try await run {
            try await db.read { db in
                guard let row = try Row.fetchOne(db, sql: """
                    SELECT t.*, u.name AS u_name, u.role AS u_role, u."group" AS u_group, u.created_at AS u_created_at
                    FROM tokens t JOIN users u ON u.id = t.user_id
                    WHERE t.key_hash = ?
                    """, arguments: [hash])
                else { return nil }
                let user = User(
                    id: row["user_id"], name: row["u_name"],
                    role: UserRole(rawValue: row["u_role"] as String) ?? .user,
                    group: row["u_group"], createdAt: row["u_created_at"])
                let pools = try String.fetchAll(db, sql: Self.activeGroupsSQL, arguments: [user.id, now])
                return try TokenLookup(storedHash: row["key_hash"], record: TokenRecord(row: row), user: user, privateGroups: pools)
            }
        }
        guard let found else { return nil }
        // Defence in depth: the row was found through the unique index on key_hash, so the
        // comparison should always succeed. We still compare in constant time (CRYPTO_memcmp)
        // so that no code path ever compares secret-derived bytes with an early-exit `==`. The
        // index lookup itself is not constant-time, but what it can leak is timing about the
        // SHA-256 of the presented token, never about a stored token's plaintext: an attacker
        // learning hash prefixes of their own guesses gains nothing against a 238-bit secret.
        guard TokenCrypto.constantTimeEquals(found.storedHash, hash) else { return nil }
        let record = found.record
        guard record.isUsable(at: now) else { return nil }

        if record.lastUsedAt.map({ now.timeIntervalSince($0) >= Self.lastUsedGranularity }) ?? true {
            do {
                try await db.write { db in
                    try db.execute(
                        sql: "UPDATE tokens SET last_used_at = ? WHERE id = ?", arguments: [now, record.id])
                }
            } catch {
                // Bookkeeping only: never fail a request because of it.
                logger.warning("could not update token last_used_at", metadata: [
                    "token_id": "\(record.id)", "error": "\(error)",
                ])
            }
        }
        var groups = [found.user.group] + found.privateGroups.filter { $0 != found.user.group }.sorted()
        if let pinned = record.groups { groups = groups.filter(pinned.contains) }
        return AuthenticatedToken(
            tokenID: record.id, tokenName: record.name, userID: found.user.id, userName: found.user.name,
            role: found.user.role, group: found.user.group, models: record.models, expiresAt: record.expiresAt,
            scope: record.scope, groups: groups, spendLimit: record.spendLimit, spent: record.spent,
            rpm: record.rpm, tpm: record.tpm, maxConcurrent: record.maxConcurrent)
    }

    /// Slugs of the enabled private groups a user (`?`) holds a grant to that is neither revoked
    /// nor expired at `?`: the original's "active" rule.
    static let activeGroupsSQL = """
        SELECT g.group_slug FROM private_group_grants r JOIN private_groups g ON g.id = r.group_id
        WHERE r.user_id = ? AND r.revoked_at IS NULL AND (r.expires_at IS NULL OR r.expires_at >= ?)
          AND g.status = 1 AND g.deleted_at IS NULL
        ORDER BY g.group_slug
        """

    /// Tokens of the user called `user` (revoked ones included), oldest first. Empty if no such user.
    public func listTokens(user: String) async throws -> [TokenRecord] {
        let name = String(Substring(user).trimmingWhitespace())
        return try await run {
            try await db.read { db in
                try TokenRecord.fetchAll(db, sql: """
                    SELECT t.* FROM tokens t JOIN users u ON u.id = t.user_id
                    WHERE u.name = ? ORDER BY t.id
                    """, arguments: [name])
            }
        }
    }

    /// Tokens of the user with this id (revoked ones included), oldest first.
    public func listTokens(userID: Int64) async throws -> [TokenRecord] {
        try await run {
            try await db.read { db in
                try TokenRecord.fetchAll(db, sql: "SELECT * FROM tokens WHERE user_id = ? ORDER BY id", arguments: [userID])
            }
        }
    }

    public func token(id: Int64) async throws -> TokenRecord? {
        try await run {
            try await db.read { db in
                try TokenRecord.fetchOne(db, sql: "SELECT * FROM tokens WHERE id = ?", arguments: [id])
            }
        }
    }

    /// Disables a token for good (it stays listed, marked disabled). Idempotent.
    /// With `ownedBy`, only that user's token can be revoked; otherwise the token is reported
    /// as not found (so users cannot probe other users' token ids).
    /// Throws ``StoreError/tokenNotFound(_:)``.
    public func revokeToken(id: Int64, ownedBy userID: Int64? = nil) async throws {
        try await run {
            try await db.write { db in
                if let userID {
                    try db.execute(
                        sql: "UPDATE tokens SET disabled = 1 WHERE id = ? AND user_id = ?", arguments: [id, userID])
                } else {
                    try db.execute(sql: "UPDATE tokens SET disabled = 1 WHERE id = ?", arguments: [id])
                }
                if db.changesCount == 0 { throw StoreError.tokenNotFound(id) }
            }
        }
        logger.info("revoked API token", metadata: ["token_id": "\(id)"])
    }

    // MARK: synchronous helpers

    static func insertToken(
        _ db: Database, plaintext: String, userID: Int64, name: String?, expiresAt: Date?,
        models: [String]?, options: TokenOptions = TokenOptions(), now: Date
    ) throws -> TokenRecord {
        let hash = TokenCrypto.hashHex(plaintext)
        let prefix = TokenCrypto.displayPrefix(plaintext)
        let allowed = models.map(Validate.models).flatMap { $0.isEmpty ? nil : $0 }
        let pinned = options.groups.map(Validate.models).flatMap { $0.isEmpty ? nil : $0 }
        if let limit = options.spendLimit, limit.nanos < 0 { throw StoreError.invalidInput("spend_limit must not be negative") }
        for (field, value) in [("rpm", options.rpm), ("tpm", options.tpm), ("max_concurrent", options.maxConcurrent)] {
            if let value, value < 0 || value > 1_000_000_000 { throw StoreError.invalidInput("\(field) must be between 0 and 1000000000") }
        }
        try db.execute(sql: """
            INSERT INTO tokens (user_id, name, key_hash, key_prefix, created_at, expires_at, disabled, models, scope, groups, spend_limit,
                                rpm, tpm, max_concurrent)
            VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [userID, name, hash, prefix, now, expiresAt, allowed.map(JSONColumn.encode), options.scope,
                             pinned.map(JSONColumn.encode), options.spendLimit, options.rpm, options.tpm, options.maxConcurrent])
        return TokenRecord(
            id: db.lastInsertedRowID, userID: userID, name: name, displayPrefix: prefix, createdAt: now,
            expiresAt: expiresAt, disabled: false, models: allowed, lastUsedAt: nil, scope: options.scope, groups: pinned,
            spendLimit: options.spendLimit, rpm: options.rpm, tpm: options.tpm, maxConcurrent: options.maxConcurrent)
    }
}
