import Foundation
import GRDB

extension User {
    init(row: Row) {
        id = row["id"]
        name = row["name"]
        role = UserRole(rawValue: row["role"] as String) ?? .user
        group = row["group"]
        createdAt = row["created_at"]
    }
}

extension HubStore {
    /// Name of the user `ensureAdmin()` creates.
    public static let adminUserName = "admin"

    /// Creates a user. Throws ``StoreError/userExists(_:)`` if the name is taken.
    public func createUser(
        name: String, role: UserRole = .user, group: String = "default", now: Date = Date()
    ) async throws -> User {
        let name = try Validate.userName(name)
        return try await run {
            try await db.write { db in
                if try Self.fetchUser(db, name: name) != nil { throw StoreError.userExists(name) }
                return try Self.insertUser(db, name: name, role: role, group: group, now: now)
            }
        }
    }

    public func user(named name: String) async throws -> User? {
        let name = String(Substring(name).trimmingWhitespace())
        return try await run { try await db.read { db in try Self.fetchUser(db, name: name) } }
    }

    public func user(id: Int64) async throws -> User? {
        try await run { try await db.read { db in try Self.fetchUser(db, id: id) } }
    }

    public func listUsers() async throws -> [User] {
        try await run {
            try await db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM users ORDER BY id").map(User.init(row:))
            }
        }
    }

    /// First-start bootstrap. If no user has the admin role, creates the user "admin" (role admin)
    /// and an admin token named "bootstrap", and returns that token's plaintext: print it once,
    /// it cannot be recovered. Returns nil when an admin already exists. Check and insert run in
    /// one write transaction, so concurrent calls create at most one admin.
    public func ensureAdmin(now: Date = Date()) async throws -> String? {
        let plaintext = try TokenCrypto.generate()
        let created: Bool = try await run {
            try await db.write { db in
                let admins = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM users WHERE role = 'admin'") ?? 0
                if admins > 0 { return false }
                if try Self.fetchUser(db, name: Self.adminUserName) != nil { throw StoreError.adminNameTaken }
                let admin = try Self.insertUser(db, name: Self.adminUserName, role: .admin, group: "default", now: now)
                _ = try Self.insertToken(
                    db, plaintext: plaintext, userID: admin.id, name: "bootstrap",
                    expiresAt: nil, models: nil, now: now)
                return true
            }
        }
        if created {
            logger.notice("created the admin user and its bootstrap token", metadata: ["user": "\(Self.adminUserName)"])
            return plaintext
        }
        return nil
    }

    // MARK: synchronous helpers (run inside a transaction)

    static func fetchUser(_ db: Database, name: String) throws -> User? {
        try Row.fetchOne(db, sql: "SELECT * FROM users WHERE name = ?", arguments: [name]).map(User.init(row:))
    }

    static func fetchUser(_ db: Database, id: Int64) throws -> User? {
        try Row.fetchOne(db, sql: "SELECT * FROM users WHERE id = ?", arguments: [id]).map(User.init(row:))
    }

    static func insertUser(_ db: Database, name: String, role: UserRole, group: String, now: Date) throws -> User {
        try db.execute(
            sql: #"INSERT INTO users (name, role, "group", created_at) VALUES (?, ?, ?, ?)"#,
            arguments: [name, role.rawValue, group, now])
        return User(id: db.lastInsertedRowID, name: name, role: role, group: group, createdAt: now)
    }
}
