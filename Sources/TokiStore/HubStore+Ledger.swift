import Foundation
import GRDB
import GRDBSQLite

// Billing over SQLite (issue 9): the double-entry ledger, prices and ratios, and the usage
// queries of the management API.
//
// The ledger is the permanent record of money: usage rows may be pruned (`pruneUsage`), ledger
// transactions and entries never are. Balances are a cache of the entries, kept in the same
// transaction, and `checkLedger` proves they agree.
//
// A charge may leave a balance negative: the hub pre-checks a caller's balance before routing,
// but a stream's cost is known only at its end, and what was generated is charged in full.

/// What the management API needs from the store besides the hot path's ``BillingLedger``:
/// users, tokens, top-ups, prices, ratios, usage. `HubStore` implements it over SQLite.
public protocol AccountAdministration: BillingLedger, TokenIssuing {
    // Users
    func createUser(name: String, role: UserRole, group: String, now: Date) async throws -> User
    func user(id: Int64) async throws -> User?
    func listUsers() async throws -> [User]
    /// Changes a user's primary group. Throws ``StoreError/userIDNotFound(_:)``.
    func setUserGroup(userID: Int64, group: String) async throws -> User
    /// The user with its balance, or nil.
    func userSummary(userID: Int64) async throws -> UserSummary?

    // Tokens
    func createToken(userID: Int64, name: String?, expiresAt: Date?, models: [String]?, options: TokenOptions,
                     now: Date) async throws -> (plaintext: String, record: TokenRecord)
    func listTokens(userID: Int64) async throws -> [TokenRecord]
    func token(id: Int64) async throws -> TokenRecord?
    /// With `ownedBy`, another user's token is reported as not found.
    func revokeToken(id: Int64, ownedBy userID: Int64?) async throws

    // Money
    /// Credits `userID` from the funding account; returns the new balance.
    func topUp(userID: Int64, amount: Money, memo: String?, adminUserID: Int64?, now: Date) async throws -> Money
    /// Corrects a balance by `amount` (either sign) against the funding account; returns the new balance.
    func adjust(userID: Int64, amount: Money, memo: String?, adminUserID: Int64?, now: Date) async throws -> Money
    func balance(userID: Int64) async throws -> Money
    func checkLedger() async throws -> LedgerReport

    // Prices and ratios
    func setPrice(_ price: ModelPrice, now: Date) async throws
    /// False when there was no such price.
    func deletePrice(group: String, model: String) async throws -> Bool
    func listPrices(group: String) async throws -> [ModelPrice]
    func setGroupRatio(name: String, ratio: Double) async throws
    func listGroupRatios() async throws -> [GroupRatio]

    // Usage
    func listUsage(filter: UsageFilter) async throws -> [UsageRecord]
    func poolUsage(groupSlug: String, since: Date?) async throws -> [PoolMemberUsage]
    func pruneUsage(olderThan date: Date) async throws -> Int

    /// The slug of private group `groupID` if `ownerUserID` owns it (not deleted); throws
    /// ``StoreError/notFound(_:)`` otherwise, the same whether it does not exist or is another's.
    func ownedPoolSlug(groupID: Int64, ownerUserID: Int64) async throws -> String
}

/// A user and its balance (zero before its first top-up or charge).
public struct UserSummary: Sendable, Equatable {
    public var user: User
    public var balance: Money
}

/// The price ratio of one of the hub's own groups.
public struct GroupRatio: Sendable, Equatable, Codable {
    public var group: String
    public var ratio: Double
}

/// Which usage rows to list. Every field is compared exactly (bound parameters: `%` and `_` are
/// literal characters). Newest first.
public struct UsageFilter: Sendable, Equatable {
    public static let maxLimit = 1000

    public var userID: Int64?
    public var requestID: String?
    public var since: Date?
    public var model: String?
    public var group: String?
    /// 1…1000.
    public var limit: Int

    public init(userID: Int64? = nil, requestID: String? = nil, since: Date? = nil, model: String? = nil, group: String? = nil,
                limit: Int = 100) {
        self.userID = userID
        self.requestID = requestID
        self.since = since
        self.model = model
        self.group = group
        self.limit = limit
    }
}

/// What one member spent on a private pool.
public struct PoolMemberUsage: Sendable, Equatable, Codable {
    public var userID: Int64?
    public var userName: String?
    public var requests: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var cost: Money
}

extension HubStore: BillingLedger, AccountAdministration {
    /// Largest top-up or adjustment: one billion units.
    public static let maxTransfer = Money(nanos: 1_000_000_000 * Money.nanosPerUnit)
    /// Largest price (per million tokens or per request): one million units.
    public static let maxPrice = Money(nanos: 1_000_000 * Money.nanosPerUnit)
    /// Largest group ratio.
    public static let maxRatio: Double = 1000

    // MARK: - Hot path

    public func commitCharges(_ charges: [Charge], now: Date) async throws -> ChargeOutcome {
        guard !charges.isEmpty else { return ChargeOutcome() }
        let (outcome, skipped) = try await uncancellableWrite { db -> (ChargeOutcome, [String]) in
            var outcome = ChargeOutcome()
            var skipped: [String] = []
            // Charge ids of this batch as they are written; ids of earlier batches are caught by
            // the UNIQUE charge id (a free request has no ledger transaction, so a free charge is
            // deduplicated within its batch only).
            var seen = Set<String>(minimumCapacity: charges.count)
            var accounts: [Int64: Int64] = [:]  // user id → account id
            var revenue: Int64?
            // Balances and token totals move once per account and token, at the end.
            var accountDeltas: [Int64: Int64] = [:]
            var tokenDeltas: [Int64: Int64] = [:]
            var callers = Set<Int64>()
            for charge in charges {
                if let userID = charge.usage.userID { callers.insert(userID) }
                if let tokenID = charge.usage.tokenID, tokenDeltas[tokenID] == nil { tokenDeltas[tokenID] = 0 }
                guard seen.insert(charge.chargeID).inserted else {
                    outcome.duplicates += 1
                    continue
                }
                var usage = charge.usage
                usage.cost = .zero
                usage.transactionID = nil
                if charge.cost.nanos > 0 {
                    if let callerID = charge.usage.userID, let debit = try Self.accountID(db, userID: callerID, cache: &accounts) {
                        // The pool owner's account, or revenue (also when the owner no longer exists).
                        let credit: Int64
                        if let owner = charge.creditUserID, let ownerAccount = try Self.accountID(db, userID: owner, cache: &accounts) {
                            credit = ownerAccount
                        } else {
                            if revenue == nil { revenue = try Self.systemAccount(db, "revenue") }
                            credit = revenue!
                        }
                        let cost = charge.cost.nanos
                        guard let transaction = try Self.insertTransaction(
                            db, kind: "charge", chargeID: charge.chargeID, memo: nil, createdBy: nil, now: now,
                            entries: [(debit, -cost), (credit, cost)], moveBalances: false)
                        else {
                            outcome.duplicates += 1  // charged by an earlier batch
                            continue
                        }
                        usage.transactionID = transaction
                        accountDeltas[debit, default: 0] &-= cost
                        accountDeltas[credit, default: 0] &+= cost
                        if let tokenID = charge.usage.tokenID { tokenDeltas[tokenID, default: 0] &+= cost }
                        usage.cost = charge.cost
                    } else {
                        // A cost without a (known) payer: the usage row is kept, nothing is charged.
                        skipped.append(charge.chargeID)
                    }
                } else if charge.cost.nanos < 0 {
                    skipped.append(charge.chargeID)
                }
                try Self.insertUsage(db, usage)
            }
            // The new balances come back from the updates themselves; callers whose balance did
            // not move (free requests) are read.
            let moveBalance = try db.cachedStatement(sql: "UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING user_id, balance")
            for (account, delta) in accountDeltas where delta != 0 {
                try moveBalance.run(delta.databaseValue, account.databaseValue) { row in
                    if sqlite3_column_type(row, 0) != SQLITE_NULL {
                        outcome.balances[sqlite3_column_int64(row, 0)] = Money(nanos: sqlite3_column_int64(row, 1))
                    }
                }
            }
            let readBalance = try db.cachedStatement(sql: "SELECT balance FROM accounts WHERE user_id = ?")
            for caller in callers where outcome.balances[caller] == nil {
                outcome.balances[caller] = Money(nanos: try readBalance.int64(caller.databaseValue) ?? 0)
            }
            let moveSpent = try db.cachedStatement(sql: "UPDATE tokens SET spent = spent + ? WHERE id = ? RETURNING spent")
            let readSpent = try db.cachedStatement(sql: "SELECT spent FROM tokens WHERE id = ?")
            for (token, delta) in tokenDeltas {
                let spent = delta != 0 ? try moveSpent.int64(delta.databaseValue, token.databaseValue) : try readSpent.int64(token.databaseValue)
                if let spent { outcome.tokenSpent[token] = Money(nanos: spent) }
            }
            return (outcome, skipped)
        }
        if !skipped.isEmpty {
            logger.error("charges not billed: negative cost, or no such payer", metadata: ["charge_ids": "\(skipped)"])
        }
        return outcome
    }

    public func balances(userIDs: [Int64]) async throws -> [Int64: Money] {
        guard !userIDs.isEmpty else { return [:] }
        return try await run { try await db.read { db in try Self.fetchBalances(db, userIDs: userIDs) } }
    }

    public func pricingTable() async throws -> PricingTable {
        try await run {
            try await db.read { db in
                var table = PricingTable()
                for price in try Self.fetchPrices(db, group: nil) {
                    if price.group.isEmpty {
                        table.hubPrices[price.model] = price
                    } else {
                        table.poolPrices[price.group, default: [:]][price.model] = price
                    }
                }
                for row in try Row.fetchAll(db, sql: "SELECT name, ratio FROM group_ratios") {
                    table.ratios[row["name"]] = row["ratio"]
                }
                for row in try Row.fetchAll(db, sql: "SELECT group_slug, owner_user_id FROM private_groups WHERE deleted_at IS NULL") {
                    table.poolOwners[row["group_slug"]] = row["owner_user_id"]
                }
                return table
            }
        }
    }

    public func usableGroups(userID: Int64, now: Date) async throws -> [String] {
        try await run {
            try await db.read { db in try String.fetchAll(db, sql: Self.activeGroupsSQL, arguments: [userID, now]) }
        }
    }

    // MARK: - Users

    public func setUserGroup(userID: Int64, group: String) async throws -> User {
        let group = try Validate.groupLabel(group, field: "group")
        return try await run {
            try await db.write { db in
                try db.execute(sql: #"UPDATE users SET "group" = ? WHERE id = ?"#, arguments: [group, userID])
                guard let user = try Self.fetchUser(db, id: userID) else { throw StoreError.userIDNotFound(userID) }
                return user
            }
        }
    }

    public func userSummary(userID: Int64) async throws -> UserSummary? {
        try await run {
            try await db.read { db in
                guard let user = try Self.fetchUser(db, id: userID) else { return nil }
                return UserSummary(user: user, balance: try Self.fetchBalances(db, userIDs: [userID])[userID] ?? .zero)
            }
        }
    }

    // MARK: - Money

    public func topUp(userID: Int64, amount: Money, memo: String? = nil, adminUserID: Int64? = nil, now: Date = Date()) async throws -> Money {
        guard amount.nanos > 0, amount <= Self.maxTransfer else {
            throw StoreError.invalidInput("amount must be more than 0 and at most \(Self.maxTransfer) (was \(amount))")
        }
        return try await transfer(kind: "topup", userID: userID, amount: amount, memo: memo, adminUserID: adminUserID, now: now)
    }

    public func adjust(userID: Int64, amount: Money, memo: String? = nil, adminUserID: Int64? = nil, now: Date = Date()) async throws -> Money {
        guard amount.nanos != 0, amount.nanos.magnitude <= Self.maxTransfer.nanos.magnitude else {
            throw StoreError.invalidInput("amount must not be 0 and at most \(Self.maxTransfer) either way (was \(amount))")
        }
        return try await transfer(kind: "adjustment", userID: userID, amount: amount, memo: memo, adminUserID: adminUserID, now: now)
    }

    private func transfer(kind: String, userID: Int64, amount: Money, memo: String?, adminUserID: Int64?, now: Date) async throws -> Money {
        let memo = try memo.flatMap { $0.allSatisfy(\.isWhitespace) ? nil : try Validate.boundedText($0, field: "memo", max: 1024) }
        let balance: Money = try await run {
            try await db.write { db in
                var cache: [Int64: Int64] = [:]
                guard let account = try Self.accountID(db, userID: userID, cache: &cache) else { throw StoreError.userIDNotFound(userID) }
                let funding = try Self.systemAccount(db, "funding")
                _ = try Self.insertTransaction(db, kind: kind, chargeID: nil, memo: memo, createdBy: adminUserID, now: now,
                                               entries: [(funding, -amount.nanos), (account, amount.nanos)])
                return try Money.fetchOne(db, sql: "SELECT balance FROM accounts WHERE id = ?", arguments: [account]) ?? .zero
            }
        }
        logger.info("ledger \(kind)", metadata: [
            "user_id": "\(userID)", "amount": "\(amount)", "balance": "\(balance)", "by": "\(adminUserID.map(String.init) ?? "-")",
        ])
        return balance
    }

    public func balance(userID: Int64) async throws -> Money {
        try await balances(userIDs: [userID])[userID] ?? .zero
    }

    /// Proves the books balance: every transaction's entries sum to zero, each account's balance
    /// equals the sum of its entries, all balances sum to zero, every charged usage row matches
    /// its transaction's debit, and no charge id is recorded twice. Read in one snapshot.
    public func checkLedger() async throws -> LedgerReport {
        try await run {
            try await db.read { db in
                var problems: [String] = []
                let transactions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ledger_transactions") ?? 0
                let entries = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ledger_entries") ?? 0
                let accounts = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM accounts") ?? 0
                // Sums as REAL would lose nanos; TOTAL() never overflows but is a double, so sum in SQL as integers.
                let balanceSum = try Money.fetchOne(db, sql: "SELECT COALESCE(SUM(balance), 0) FROM accounts") ?? .zero
                if balanceSum != .zero { problems.append("account balances sum to \(balanceSum), not 0") }

                for row in try Row.fetchAll(db, sql: """
                    SELECT transaction_id, SUM(amount) AS total FROM ledger_entries
                    GROUP BY transaction_id HAVING SUM(amount) <> 0 ORDER BY transaction_id LIMIT 101
                    """) {
                    problems.append("transaction #\(row["transaction_id"] as Int64)'s entries sum to \(row["total"] as Money), not 0")
                }
                for row in try Row.fetchAll(db, sql: """
                    SELECT t.id, t.kind FROM ledger_transactions t
                    WHERE NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = t.id) ORDER BY t.id LIMIT 101
                    """) {
                    problems.append("\(row["kind"] as String) transaction #\(row["id"] as Int64) has no entries")
                }
                for row in try Row.fetchAll(db, sql: """
                    SELECT a.id, a.user_id, a.name, a.balance, COALESCE(SUM(e.amount), 0) AS total
                    FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
                    GROUP BY a.id HAVING a.balance <> COALESCE(SUM(e.amount), 0) ORDER BY a.id LIMIT 101
                    """) {
                    let owner = (row["name"] as String?) ?? "user #\((row["user_id"] as Int64?) ?? 0)"
                    problems.append("account #\(row["id"] as Int64) (\(owner)) has balance \(row["balance"] as Money) but its entries sum to \(row["total"] as Money)")
                }
                for row in try Row.fetchAll(db, sql: """
                    SELECT u.id, u.request_id, u.cost, u.transaction_id, t.id AS found, t.kind,
                           (SELECT COALESCE(-SUM(e.amount), 0) FROM ledger_entries e WHERE e.transaction_id = u.transaction_id AND e.amount < 0) AS debit
                    FROM usage u LEFT JOIN ledger_transactions t ON t.id = u.transaction_id
                    WHERE u.transaction_id IS NOT NULL
                      AND (t.id IS NULL OR t.kind <> 'charge'
                           OR u.cost <> (SELECT COALESCE(-SUM(e.amount), 0) FROM ledger_entries e WHERE e.transaction_id = u.transaction_id AND e.amount < 0))
                    ORDER BY u.id LIMIT 101
                    """) {
                    let usage = "usage row #\(row["id"] as Int64) (request \(row["request_id"] as String))"
                    let transaction = row["transaction_id"] as Int64
                    if (row["found"] as Int64?) == nil {
                        problems.append("\(usage) names transaction #\(transaction), which does not exist")
                    } else if (row["kind"] as String) != "charge" {
                        problems.append("\(usage) names transaction #\(transaction), which is a \(row["kind"] as String), not a charge")
                    } else {
                        problems.append("\(usage) cost \(row["cost"] as Money) but transaction #\(transaction) debited \(row["debit"] as Money)")
                    }
                }
                for row in try Row.fetchAll(db, sql: """
                    SELECT charge_id, COUNT(*) AS n FROM ledger_transactions WHERE charge_id IS NOT NULL
                    GROUP BY charge_id HAVING COUNT(*) > 1 LIMIT 101
                    """) {
                    problems.append("charge \(row["charge_id"] as String) was recorded \(row["n"] as Int) times")
                }
                return LedgerReport(transactions: transactions, entries: entries, accounts: accounts, balanceSum: balanceSum,
                                    problems: problems)
            }
        }
    }

    // MARK: - Prices and ratios

    public func setPrice(_ price: ModelPrice, now: Date = Date()) async throws {
        let model = try Validate.boundedText(price.model, field: "model", max: 256)
        let group = price.group.isEmpty ? "" : try Validate.groupLabel(price.group, field: "group")
        for (field, value) in [("input_per_million", price.inputPerMillion), ("output_per_million", price.outputPerMillion),
                               ("per_request", price.perRequest)] {
            guard value.nanos >= 0, value <= Self.maxPrice else {
                throw StoreError.invalidInput("\(field) must be between 0 and \(Self.maxPrice) (was \(value))")
            }
        }
        try await run {
            try await db.write { db in
                if !group.isEmpty, try Bool.fetchOne(db, sql: "SELECT 1 FROM private_groups WHERE group_slug = ? AND deleted_at IS NULL",
                                                     arguments: [group]) != true {
                    throw StoreError.notFound("private group \(group) not found")
                }
                try db.execute(sql: """
                    INSERT INTO model_prices (group_slug, model, input_per_million, output_per_million, per_request, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (group_slug, model) DO UPDATE SET input_per_million = excluded.input_per_million,
                        output_per_million = excluded.output_per_million, per_request = excluded.per_request, updated_at = excluded.updated_at
                    """, arguments: [group, model, price.inputPerMillion, price.outputPerMillion, price.perRequest, now])
            }
        }
        logger.info("set model price", metadata: [
            "group": "\(group)", "model": "\(model)", "input": "\(price.inputPerMillion)", "output": "\(price.outputPerMillion)",
            "per_request": "\(price.perRequest)",
        ])
    }

    public func deletePrice(group: String = "", model: String) async throws -> Bool {
        try await run {
            try await db.write { db in
                try db.execute(sql: "DELETE FROM model_prices WHERE group_slug = ? AND model = ?", arguments: [group, model])
                return db.changesCount > 0
            }
        }
    }

    /// Prices of one group (`""`: the hub's), by model.
    public func listPrices(group: String = "") async throws -> [ModelPrice] {
        try await run { try await db.read { db in try Self.fetchPrices(db, group: group) } }
    }

    public func setGroupRatio(name: String, ratio: Double) async throws {
        let name = try Validate.groupLabel(name, field: "group")
        guard ratio.isFinite, ratio >= 0, ratio <= Self.maxRatio else {
            throw StoreError.invalidInput("ratio must be a number from 0 to \(Int(Self.maxRatio)) (was \(ratio))")
        }
        try await run {
            try await db.write { db in
                try db.execute(sql: "INSERT INTO group_ratios (name, ratio) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET ratio = excluded.ratio",
                               arguments: [name, ratio])
            }
        }
        logger.info("set group ratio", metadata: ["group": "\(name)", "ratio": "\(ratio)"])
    }

    public func listGroupRatios() async throws -> [GroupRatio] {
        try await run {
            try await db.read { db in
                try Row.fetchAll(db, sql: "SELECT name, ratio FROM group_ratios ORDER BY name").map {
                    GroupRatio(group: $0["name"], ratio: $0["ratio"])
                }
            }
        }
    }

    // MARK: - Usage

    public func listUsage(filter: UsageFilter) async throws -> [UsageRecord] {
        guard (1...UsageFilter.maxLimit).contains(filter.limit) else {
            throw StoreError.invalidInput("limit must be from 1 to \(UsageFilter.maxLimit) (was \(filter.limit))")
        }
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let userID = filter.userID { conditions.append("user_id = ?"); arguments += [userID] }
        if let requestID = filter.requestID { conditions.append("request_id = ?"); arguments += [requestID] }
        if let since = filter.since { conditions.append("created_at >= ?"); arguments += [since] }
        if let model = filter.model { conditions.append("model = ?"); arguments += [model] }
        if let group = filter.group { conditions.append("group_name = ?"); arguments += [group] }
        arguments += [filter.limit]
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let sql = "SELECT * FROM usage \(whereClause) ORDER BY created_at DESC, id DESC LIMIT ?"
        let args = arguments
        return try await run { try await db.read { db in try UsageRecord.fetchAll(db, sql: sql, arguments: args) } }
    }

    /// What each caller spent on the pool `groupSlug` (from the usage rows that remain after
    /// pruning), most spent first.
    public func poolUsage(groupSlug: String, since: Date? = nil) async throws -> [PoolMemberUsage] {
        try await run {
            try await db.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT u.user_id, us.name, COUNT(*) AS requests, COALESCE(SUM(u.prompt_tokens), 0) AS prompt,
                           COALESCE(SUM(u.completion_tokens), 0) AS completion, COALESCE(SUM(u.cost), 0) AS cost
                    FROM usage u LEFT JOIN users us ON us.id = u.user_id
                    WHERE u.group_name = ? AND u.created_at >= ?
                    GROUP BY u.user_id ORDER BY cost DESC, u.user_id
                    """, arguments: [groupSlug, since ?? Date(timeIntervalSince1970: 0)]).map {
                    PoolMemberUsage(userID: $0["user_id"], userName: $0["name"], requests: $0["requests"], promptTokens: $0["prompt"],
                                    completionTokens: $0["completion"], cost: $0["cost"])
                }
            }
        }
    }

    /// Deletes usage rows created before `date` and returns how many. The ledger is untouched:
    /// it is the permanent record of what was charged; usage rows are the detail, kept as long
    /// as the retention setting says.
    public func pruneUsage(olderThan date: Date) async throws -> Int {
        let count: Int = try await run {
            try await db.write { db in
                try db.execute(sql: "DELETE FROM usage WHERE created_at < ?", arguments: [date])
                return db.changesCount
            }
        }
        if count > 0 { logger.info("pruned usage rows", metadata: ["rows": "\(count)", "before": "\(date)"]) }
        return count
    }

    // MARK: - Pools

    public func ownedPoolSlug(groupID: Int64, ownerUserID: Int64) async throws -> String {
        let slug: String? = try await run {
            try await db.read { db in
                try String.fetchOne(db, sql: "SELECT group_slug FROM private_groups WHERE id = ? AND owner_user_id = ? AND deleted_at IS NULL",
                                    arguments: [groupID, ownerUserID])
            }
        }
        guard let slug else { throw StoreError.notFound("private group #\(groupID) not found") }
        return slug
    }

    // MARK: - Synchronous helpers

    /// The account of `userID`, created if missing; nil when there is no such user.
    static func accountID(_ db: Database, userID: Int64, cache: inout [Int64: Int64]) throws -> Int64? {
        if let id = cache[userID] { return id }
        if let id = try db.cachedStatement(sql: "SELECT id FROM accounts WHERE user_id = ?").int64(userID.databaseValue) {
            cache[userID] = id
            return id
        }
        guard try Bool.fetchOne(db, sql: "SELECT 1 FROM users WHERE id = ?", arguments: [userID]) == true else { return nil }
        try db.execute(sql: "INSERT INTO accounts (user_id) VALUES (?)", arguments: [userID])
        cache[userID] = db.lastInsertedRowID
        return db.lastInsertedRowID
    }

    static func systemAccount(_ db: Database, _ name: String) throws -> Int64 {
        guard let id = try db.cachedStatement(sql: "SELECT id FROM accounts WHERE name = ?").int64(name.databaseValue) else {
            throw StoreError.database("the system account \(name) is missing")
        }
        return id
    }

    /// Inserts a transaction and its entries (which must sum to zero) and, unless the caller
    /// moves them itself (a batch, once per account), the balances. Nil when `chargeID` is
    /// already recorded (nothing is written then).
    @discardableResult
    static func insertTransaction(_ db: Database, kind: String, chargeID: String?, memo: String?, createdBy: Int64?, now: Date,
                                  entries: [(account: Int64, amount: Int64)], moveBalances: Bool = true) throws -> Int64? {
        precondition(entries.reduce(0) { $0 &+ $1.amount } == 0, "ledger entries must sum to zero")
        try db.cachedStatement(sql: """
            INSERT INTO ledger_transactions (kind, charge_id, memo, created_by, created_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (charge_id) DO NOTHING
            """).run(kind.databaseValue, chargeID?.databaseValue ?? .null, memo?.databaseValue ?? .null,
                     createdBy?.databaseValue ?? .null, .storedDate(now))
        guard db.changesCount > 0 else { return nil }
        let transaction = db.lastInsertedRowID
        let insertEntry = try db.cachedStatement(sql: "INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES (?, ?, ?)")
        let moveBalance = try db.cachedStatement(sql: "UPDATE accounts SET balance = balance + ? WHERE id = ?")
        for entry in entries {
            try insertEntry.run(transaction.databaseValue, entry.account.databaseValue, entry.amount.databaseValue)
            if moveBalances { try moveBalance.run(entry.amount.databaseValue, entry.account.databaseValue) }
        }
        return transaction
    }

    /// Slices of at most 500, under SQLite's limit on bound parameters.
    static func chunks<T>(_ values: [T]) -> [[T]] {
        stride(from: 0, to: values.count, by: 500).map { Array(values[$0..<min($0 + 500, values.count)]) }
    }

    static func fetchBalances(_ db: Database, userIDs: [Int64]) throws -> [Int64: Money] {
        var out: [Int64: Money] = [:]
        for id in userIDs { out[id] = .zero }
        for chunk in chunks(userIDs) {
            let rows = try Row.fetchAll(db, sql: "SELECT user_id, balance FROM accounts WHERE user_id IN (\(placeholders(chunk.count)))",
                                        arguments: StatementArguments(chunk))
            for row in rows { out[row["user_id"]] = row["balance"] }
        }
        return out
    }

    /// Prices of one group, or of all groups when `group` is nil.
    static func fetchPrices(_ db: Database, group: String?) throws -> [ModelPrice] {
        let rows: [Row]
        if let group {
            rows = try Row.fetchAll(db, sql: "SELECT * FROM model_prices WHERE group_slug = ? ORDER BY model", arguments: [group])
        } else {
            rows = try Row.fetchAll(db, sql: "SELECT * FROM model_prices ORDER BY group_slug, model")
        }
        return rows.map {
            ModelPrice(group: $0["group_slug"], model: $0["model"], inputPerMillion: $0["input_per_million"],
                       outputPerMillion: $0["output_per_million"], perRequest: $0["per_request"])
        }
    }

    static func placeholders(_ count: Int) -> String {
        Array(repeating: "?", count: count).joined(separator: ",")
    }
}

extension Validate {
    /// Trimmed, 1…`max` characters, no control characters.
    static func boundedText(_ raw: String, field: String, max: Int) throws -> String {
        let text = String(Substring(raw).trimmingWhitespace())
        guard !text.isEmpty, text.count <= max, !hasControlCharacters(text) else {
            throw StoreError.invalidInput("\(field) must be 1-\(max) characters without control characters")
        }
        return text
    }

    /// A group name: 1…64 characters, no control characters, no commas (lists of groups are comma-separated).
    static func groupLabel(_ raw: String, field: String) throws -> String {
        let name = try boundedText(raw, field: field, max: 64)
        guard !name.contains(",") else { throw StoreError.invalidInput("\(field) must not contain commas") }
        return name
    }
}

// MARK: - Raw statements for tests (internal)

extension HubStore {
    /// Runs one raw write statement. Tests (`@testable`) use it to set up rows another part of the
    /// store owns and to tamper with the books.
    func executeRaw(_ sql: String, _ arguments: [(any DatabaseValueConvertible)?] = []) async throws {
        let args = StatementArguments(arguments)
        try await run { try await db.write { db in try db.execute(sql: sql, arguments: args) } }
    }
}
