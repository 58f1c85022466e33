import Foundation
import GRDB

extension NamespaceClaim {
    init(row: Row, isNew: Bool) {
        workerID = row["id"]
        namespace = row["namespace"]
        ownerUserID = row["user_id"]
        nodeName = row["node_name"]
        group = row["group"]
        models = JSONColumn.decode(row["models"]) ?? []
        status = WorkerStatus(rawValue: row["status"] as String) ?? .offline
        createdAt = row["created_at"]
        lastSeenAt = row["last_seen_at"]
        self.isNew = isNew
    }
}

extension HubStore {
    /// Registers (or re-registers) a worker namespace for `userID` and marks it online.
    ///
    /// Ownership is permanent: the first user to claim a namespace owns it forever, and rows are
    /// never deleted. A different user gets ``StoreError/namespaceOwnedByAnotherUser(_:)``; the
    /// owner may re-claim it any number of times (each claim refreshes node name, group, models,
    /// status and last-seen). The namespace is trimmed; models are trimmed, deduplicated and
    /// sorted. `nodeName` defaults to the namespace, as in the Go hub.
    ///
    /// The store does not know which sessions are live: refusing a second concurrent session
    /// for the same namespace is the hub's job (its in-memory registry).
    public func claimNamespace(
        namespace: String, userID: Int64, nodeName: String? = nil, group: String = "default",
        models: [String] = [], now: Date = Date()
    ) async throws -> NamespaceClaim {
        let ns = try Validate.namespace(namespace)
        let node = nodeName.map { String(Substring($0).trimmingWhitespace()) }.flatMap { $0.isEmpty ? nil : $0 } ?? ns
        let modelsJSON = JSONColumn.encode(Validate.models(models))
        let claim: NamespaceClaim = try await run {
            try await db.write { db in
                var isNew = false
                if let owner = try Int64.fetchOne(db, sql: "SELECT user_id FROM workers WHERE namespace = ?", arguments: [ns]) {
                    guard owner == userID else { throw StoreError.namespaceOwnedByAnotherUser(ns) }
                    try db.execute(sql: """
                        UPDATE workers SET node_name = ?, "group" = ?, models = ?, status = 'online', last_seen_at = ?
                        WHERE namespace = ?
                        """, arguments: [node, group, modelsJSON, now, ns])
                } else {
                    guard try Self.fetchUser(db, id: userID) != nil else { throw StoreError.userIDNotFound(userID) }
                    try db.execute(sql: """
                        INSERT INTO workers (namespace, user_id, node_name, "group", models, status, created_at, last_seen_at)
                        VALUES (?, ?, ?, ?, ?, 'online', ?, ?)
                        """, arguments: [ns, userID, node, group, modelsJSON, now, now])
                    isNew = true
                }
                let row = try Row.fetchOne(db, sql: "SELECT * FROM workers WHERE namespace = ?", arguments: [ns])!
                return NamespaceClaim(row: row, isNew: isNew)
            }
        }
        logger.debug("claimed namespace", metadata: [
            "namespace": "\(ns)", "worker_id": "\(claim.workerID)", "user_id": "\(userID)", "new": "\(claim.isNew)",
        ])
        return claim
    }

    /// Heartbeat / models_sync: marks the namespace online, refreshes last-seen and, when given,
    /// replaces its models. Throws ``StoreError/namespaceNotFound(_:)``.
    public func touchNamespace(_ namespace: String, models: [String]? = nil, now: Date = Date()) async throws {
        let ns = try Validate.namespace(namespace)
        try await run {
            try await db.write { db in
                if let models {
                    try db.execute(
                        sql: "UPDATE workers SET status = 'online', last_seen_at = ?, models = ? WHERE namespace = ?",
                        arguments: [now, JSONColumn.encode(Validate.models(models)), ns])
                } else {
                    try db.execute(
                        sql: "UPDATE workers SET status = 'online', last_seen_at = ? WHERE namespace = ?",
                        arguments: [now, ns])
                }
                if db.changesCount == 0 { throw StoreError.namespaceNotFound(ns) }
            }
        }
    }

    /// Many presence changes in one write transaction: `.online` marks a namespace online and
    /// seen at `now` (replacing its models where given), `.offline` marks it offline. Unknown or
    /// invalid namespaces are skipped.
    public func recordPresence(_ updates: [String: WorkerPresence], now: Date = Date()) async throws {
        guard !updates.isEmpty else { return }
        try await run {
            try await db.write { db in
                // Statements prepared once and the date formatted once per batch: a fleet's
                // heartbeats land here, and preparing and formatting per row was most of the cost.
                let seen = DatabaseValue.storedDate(now)
                let online = try db.cachedStatement(sql: "UPDATE workers SET status = 'online', last_seen_at = ? WHERE namespace = ?")
                let onlineWithModels = try db.cachedStatement(
                    sql: "UPDATE workers SET status = 'online', last_seen_at = ?, models = ? WHERE namespace = ?")
                let offline = try db.cachedStatement(
                    sql: "UPDATE workers SET status = 'offline', last_seen_at = ? WHERE namespace = ? AND status = 'online'")
                for (namespace, presence) in updates {
                    guard let ns = try? Validate.namespace(namespace) else { continue }
                    switch presence {
                    case .online(let models?):
                        guard let valid = try? Validate.models(models) else { continue }
                        try onlineWithModels.run(seen, JSONColumn.encode(valid).databaseValue, ns.databaseValue)
                    case .online(nil):
                        try online.run(seen, ns.databaseValue)
                    case .offline:
                        try offline.run(seen, ns.databaseValue)
                    }
                }
            }
        }
    }

    /// Marks one namespace offline (its session ended). Unknown namespaces are ignored.
    public func markOffline(namespace: String, now: Date = Date()) async throws {
        let ns = String(Substring(namespace).trimmingWhitespace())
        try await run {
            try await db.write { db in
                try db.execute(
                    sql: "UPDATE workers SET status = 'offline', last_seen_at = ? WHERE namespace = ? AND status = 'online'",
                    arguments: [now, ns])
            }
        }
    }

    /// Marks every namespace offline. Call at hub start: no session survives a restart.
    /// Returns how many were online.
    @discardableResult
    public func markAllOffline() async throws -> Int {
        let n: Int = try await run {
            try await db.write { db in
                try db.execute(sql: "UPDATE workers SET status = 'offline' WHERE status = 'online'")
                return db.changesCount
            }
        }
        if n > 0 { logger.info("marked workers offline", metadata: ["count": "\(n)"]) }
        return n
    }

    /// The stable worker id of a namespace (the `worker_id` of register acks), or nil if unknown.
    public func workerID(namespace: String) async throws -> Int64? {
        let ns = String(Substring(namespace).trimmingWhitespace())
        return try await run {
            try await db.read { db in try Int64.fetchOne(db, sql: "SELECT id FROM workers WHERE namespace = ?", arguments: [ns]) }
        }
    }

    /// The user id owning a namespace, or nil if nobody has claimed it yet.
    public func namespaceOwner(_ namespace: String) async throws -> Int64? {
        let ns = String(Substring(namespace).trimmingWhitespace())
        return try await run {
            try await db.read { db in try Int64.fetchOne(db, sql: "SELECT user_id FROM workers WHERE namespace = ?", arguments: [ns]) }
        }
    }

    /// The stored record of a namespace (`isNew` is false), or nil.
    public func worker(namespace: String) async throws -> NamespaceClaim? {
        let ns = String(Substring(namespace).trimmingWhitespace())
        return try await run {
            try await db.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM workers WHERE namespace = ?", arguments: [ns])
                    .map { NamespaceClaim(row: $0, isNew: false) }
            }
        }
    }

    /// All namespaces (optionally only one user's), by worker id.
    public func listWorkers(userID: Int64? = nil) async throws -> [NamespaceClaim] {
        try await run {
            try await db.read { db in
                let rows = if let userID {
                    try Row.fetchAll(db, sql: "SELECT * FROM workers WHERE user_id = ? ORDER BY id", arguments: [userID])
                } else {
                    try Row.fetchAll(db, sql: "SELECT * FROM workers ORDER BY id")
                }
                return rows.map { NamespaceClaim(row: $0, isNew: false) }
            }
        }
    }
}
