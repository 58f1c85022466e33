import Foundation
import GRDB

extension UsageRecord: StoredRecord {}

extension HubStore {
    /// Appends one usage row and returns its id.
    @discardableResult
    public func recordUsage(_ entry: UsageRecord) async throws -> Int64 {
        try await run {
            try await db.write { db in
                try Self.insertUsage(db, entry)
                return db.lastInsertedRowID
            }
        }
    }

    /// Appends several usage rows in one transaction (all or nothing). This is the batched path:
    /// a hub that buffers usage in memory should flush it through here.
    public func recordUsage(_ entries: [UsageRecord]) async throws {
        guard !entries.isEmpty else { return }
        try await run {
            try await db.write { db in
                for entry in entries { try Self.insertUsage(db, entry) }
            }
        }
    }

    /// Convenience form of ``recordUsage(_:)-(UsageRecord)``.
    @discardableResult
    public func recordUsage(
        requestID: String, userID: Int64?, tokenID: Int64?, model: String, namespace: String?,
        statusCode: Int, promptTokens: Int? = nil, completionTokens: Int? = nil, durationMS: Int,
        createdAt: Date = Date()
    ) async throws -> Int64 {
        try await recordUsage(UsageRecord(
            requestID: requestID, userID: userID, tokenID: tokenID, model: model, namespace: namespace,
            statusCode: statusCode, promptTokens: promptTokens, completionTokens: completionTokens,
            durationMS: durationMS, createdAt: createdAt))
    }

    /// Usage rows, newest first, optionally for one user and/or since a date.
    public func listUsage(userID: Int64? = nil, since: Date? = nil, limit: Int = 100) async throws -> [UsageRecord] {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let userID { conditions.append("user_id = ?"); arguments += [userID] }
        if let since { conditions.append("created_at >= ?"); arguments += [since] }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        arguments += [max(0, limit)]
        let sql = "SELECT * FROM usage \(whereClause) ORDER BY created_at DESC, id DESC LIMIT ?"
        let args = arguments
        return try await run {
            try await db.read { db in try UsageRecord.fetchAll(db, sql: sql, arguments: args) }
        }
    }

    static func insertUsage(_ db: Database, _ e: UsageRecord) throws {
        try db.cachedStatement(sql: """
            INSERT INTO usage (request_id, user_id, token_id, model, namespace, status_code,
                               prompt_tokens, completion_tokens, duration_ms, created_at,
                               group_name, path, estimated, cost, ttft_ms, transaction_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).run(
                e.requestID.databaseValue, e.userID?.databaseValue ?? .null, e.tokenID?.databaseValue ?? .null,
                e.model.databaseValue, e.namespace?.databaseValue ?? .null, e.statusCode.databaseValue,
                e.promptTokens?.databaseValue ?? .null, e.completionTokens?.databaseValue ?? .null,
                e.durationMS.databaseValue, .storedDate(e.createdAt), e.groupName?.databaseValue ?? .null,
                e.path?.databaseValue ?? .null, e.estimated.databaseValue, e.cost.databaseValue,
                e.ttftMS?.databaseValue ?? .null, e.transactionID?.databaseValue ?? .null)
    }
}
