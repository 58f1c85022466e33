import Foundation
import Testing
@testable import TokiStore

/// SplitMix64 (as in Tests/Support, which this target does not link): a seeded PRNG so the
/// property test reproduces.
private struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func units(_ value: Double) -> Money { Money(units: value)! }

private func usage(_ requestID: String, user: Int64?, token: Int64? = nil, model: String = "m", group: String? = "default",
                   prompt: Int = 10, completion: Int = 20, at date: Date = Date()) -> UsageRecord {
    UsageRecord(requestID: requestID, userID: user, tokenID: token, model: model, namespace: "ns", statusCode: 200,
                promptTokens: prompt, completionTokens: completion, durationMS: 5, createdAt: date, groupName: group)
}

/// Inserts a private group owned by `owner` (the groups API is another part of the store).
private func makePool(_ store: HubStore, slug: String, owner: Int64, now: Date = Date()) async throws -> Int64 {
    try await store.executeRaw("INSERT INTO private_groups (owner_user_id, group_slug, created_at, updated_at) VALUES (?, ?, ?, ?)",
                               [owner, slug, now, now])
    return Int64(try await store.queryStrings("SELECT id FROM private_groups WHERE group_slug = '\(slug)'").first!)!
}

@Suite struct LedgerTests {
    @Test func aCancelledCallerStillCommits() async throws {
        // Other requests may wait for the same batch: the caller's cancellation must not stop it.
        let store = try HubStore.inMemory(logger: quietLogger)
        let (_, token) = try await store.createToken(user: "alice")
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await store.commitCharges([
                Charge(chargeID: "c1", usage: usage("c1", user: token.userID, token: token.id), cost: units(1), creditUserID: nil),
            ], now: Date())
        }
        let outcome = try await task.value
        #expect(outcome.balances == [token.userID: units(-1)])
        #expect(try await store.balance(userID: token.userID) == units(-1))
    }

    @Test func chargeDebitsCallerAndCreditsRevenue() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (_, token) = try await store.createToken(user: "alice")
        let alice = token.userID
        #expect(try await store.topUp(userID: alice, amount: units(10), memo: "welcome", adminUserID: nil, now: Date()) == units(10))
        let outcome = try await store.commitCharges([
            Charge(chargeID: "r1", usage: usage("r1", user: alice, token: token.id), cost: units(1.5), creditUserID: nil),
        ], now: Date())
        #expect(outcome.balances == [alice: units(8.5)])
        #expect(outcome.tokenSpent == [token.id: units(1.5)])
        #expect(outcome.duplicates == 0)
        #expect(try await store.balance(userID: alice) == units(8.5))
        #expect(try await store.token(id: token.id)?.spent == units(1.5))
        #expect(try await store.queryStrings("SELECT balance FROM accounts WHERE name = 'revenue'") == ["1500000000"])
        let rows = try await store.listUsage(filter: UsageFilter(userID: alice))
        #expect(rows.count == 1)
        #expect(rows[0].cost == units(1.5))
        #expect(rows[0].transactionID != nil)
        #expect(try await store.checkLedger().isConsistent)
    }

    @Test func pricedPoolCreditsItsOwner() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let owner = try await store.createUser(name: "owner")
        let member = try await store.createUser(name: "member")
        _ = try await makePool(store, slug: "gpu-club", owner: owner.id)
        _ = try await store.topUp(userID: member.id, amount: units(5), memo: nil, adminUserID: nil, now: Date())
        _ = try await store.commitCharges([
            Charge(chargeID: "p1", usage: usage("p1", user: member.id, group: "gpu-club"), cost: units(2), creditUserID: owner.id),
        ], now: Date())
        #expect(try await store.balances(userIDs: [owner.id, member.id, 999]) == [owner.id: units(2), member.id: units(3), 999: .zero])
        #expect(try await store.queryStrings("SELECT balance FROM accounts WHERE name = 'revenue'") == ["0"])
        let pool = try await store.poolUsage(groupSlug: "gpu-club", since: nil)
        #expect(pool == [PoolMemberUsage(userID: member.id, userName: "member", requests: 1, promptTokens: 10, completionTokens: 20, cost: units(2))])
        #expect(try await store.checkLedger().isConsistent)
    }

    @Test func chargesAreIdempotentPerChargeID() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (_, token) = try await store.createToken(user: "alice")
        let alice = token.userID
        let charge = Charge(chargeID: "same", usage: usage("same", user: alice, token: token.id), cost: units(1), creditUserID: nil)
        let first = try await store.commitCharges([charge, charge], now: Date())
        #expect(first.duplicates == 1)
        #expect(first.balances[alice] == units(-1))  // balances may go negative: charged in full
        let second = try await store.commitCharges([charge], now: Date())
        #expect(second.duplicates == 1)
        #expect(second.balances[alice] == units(-1))
        #expect(second.tokenSpent[token.id] == units(1))
        #expect(try await store.listUsage(filter: UsageFilter()).count == 1)
        #expect(try await store.queryStrings("SELECT COUNT(*) FROM ledger_transactions") == ["1"])
        #expect(try await store.checkLedger().isConsistent)
    }

    @Test func zeroCostWritesOnlyTheUsageRow() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (_, token) = try await store.createToken(user: "alice")
        let outcome = try await store.commitCharges([
            Charge(chargeID: "free", usage: usage("free", user: token.userID, token: token.id), cost: .zero, creditUserID: nil),
        ], now: Date())
        #expect(outcome.balances == [token.userID: .zero])
        #expect(outcome.tokenSpent == [token.id: .zero])
        let rows = try await store.listUsage(filter: UsageFilter())
        #expect(rows.count == 1)
        #expect(rows[0].transactionID == nil)
        #expect(rows[0].cost == .zero)
        #expect(try await store.queryStrings("SELECT COUNT(*) FROM ledger_transactions") == ["0"])
        // No account is opened for a free request.
        #expect(try await store.queryStrings("SELECT COUNT(*) FROM accounts") == ["2"])
    }

    @Test func topUpValidatesAmount() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        for bad in [units(-1), .zero, HubStore.maxTransfer + Money(nanos: 1)] {
            await #expect(throws: StoreError.self) {
                try await store.topUp(userID: alice.id, amount: bad, memo: nil, adminUserID: nil, now: Date())
            }
        }
        await #expect(throws: StoreError.userIDNotFound(4242)) {
            try await store.topUp(userID: 4242, amount: units(1), memo: nil, adminUserID: nil, now: Date())
        }
        #expect(try await store.topUp(userID: alice.id, amount: HubStore.maxTransfer, memo: nil, adminUserID: nil, now: Date()) == HubStore.maxTransfer)
        #expect(try await store.adjust(userID: alice.id, amount: units(-0.25), memo: "refund reversal", adminUserID: nil, now: Date())
            == HubStore.maxTransfer - units(0.25))
        #expect(try await store.queryStrings("SELECT balance FROM accounts WHERE name = 'funding'") == ["-999999999750000000"])
        #expect(try await store.userSummary(userID: alice.id)?.balance == HubStore.maxTransfer - units(0.25))
        let report = try await store.checkLedger()
        #expect(report.isConsistent)
        #expect(report.transactions == 2)
        #expect(report.entries == 4)
        #expect(report.accounts == 3)
    }

    @Test func ledgerStaysConsistentUnderARandomMix() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        var rng = SeededRNG(state: 0x70C1)
        var users: [Int64] = []
        var tokens: [Int64: Int64] = [:]  // user → token
        for i in 0..<8 {
            let (_, token) = try await store.createToken(user: "u\(i)")
            users.append(token.userID)
            tokens[token.userID] = token.id
        }
        var expected: [Int64: Int64] = [:]  // user → nanos
        var spent: [Int64: Int64] = [:]  // token → nanos
        var batch: [Charge] = []
        var used: [Charge] = []
        for i in 0..<1000 {
            let user = users[Int(rng.next() % UInt64(users.count))]
            switch rng.next() % 10 {
            case 0:
                let amount = Int64(rng.next() % 50_000_000_000) + 1
                _ = try await store.topUp(userID: user, amount: Money(nanos: amount), memo: nil, adminUserID: nil, now: Date())
                expected[user, default: 0] += amount
            default:
                // Now and then replay an earlier charge: it must be ignored.
                if !used.isEmpty, rng.next() % 20 == 0 {
                    batch.append(used[Int(rng.next() % UInt64(used.count))])
                } else {
                    let cost = rng.next() % 4 == 0 ? 0 : Int64(rng.next() % 3_000_000_000)
                    let creditor: Int64? = rng.next() % 3 == 0 ? users[Int(rng.next() % UInt64(users.count))] : nil
                    let charge = Charge(chargeID: "c\(i)", usage: usage("c\(i)", user: user, token: tokens[user]), cost: Money(nanos: cost),
                                        creditUserID: creditor)
                    batch.append(charge)
                    used.append(charge)
                    expected[user, default: 0] -= cost
                    if let creditor { expected[creditor, default: 0] += cost }
                    spent[tokens[user]!, default: 0] += cost
                }
                if batch.count >= Int(rng.next() % 16) + 1 {
                    _ = try await store.commitCharges(batch, now: Date())
                    batch.removeAll()
                }
            }
        }
        _ = try await store.commitCharges(batch, now: Date())
        let report = try await store.checkLedger()
        #expect(report.problems == [])
        #expect(report.balanceSum == .zero)
        let balances = try await store.balances(userIDs: users)
        for user in users {
            #expect(balances[user]?.nanos == expected[user] ?? 0, "user \(user)")
            #expect(try await store.token(id: tokens[user]!)?.spent.nanos == spent[tokens[user]!] ?? 0)
        }
    }

    @Test func checkDetectsTamperedBooks() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        _ = try await store.topUp(userID: alice.id, amount: units(3), memo: nil, adminUserID: nil, now: Date())
        _ = try await store.commitCharges([
            Charge(chargeID: "x", usage: usage("x", user: alice.id), cost: units(1), creditUserID: nil),
        ], now: Date())
        #expect(try await store.checkLedger().isConsistent)

        try await store.executeRaw("UPDATE accounts SET balance = balance + 1 WHERE user_id = ?", [alice.id])
        var report = try await store.checkLedger()
        #expect(!report.isConsistent)
        #expect(report.balanceSum == Money(nanos: 1))
        #expect(report.problems.contains { $0.contains("user #\(alice.id)") && $0.contains("entries sum to") })
        try await store.executeRaw("UPDATE accounts SET balance = balance - 1 WHERE user_id = ?", [alice.id])
        #expect(try await store.checkLedger().isConsistent)

        try await store.executeRaw("UPDATE usage SET cost = cost * 2")
        report = try await store.checkLedger()
        #expect(report.problems.count == 1)
        #expect(report.problems.first?.contains("request x") == true)
        try await store.executeRaw("UPDATE usage SET cost = cost / 2")

        try await store.executeRaw("UPDATE ledger_entries SET amount = amount - 5 WHERE id = (SELECT MAX(id) FROM ledger_entries)")
        report = try await store.checkLedger()
        #expect(report.problems.contains { $0.contains("entries sum to") && $0.contains("not 0") })
    }

    @Test func pricesAndRatiosAreValidated() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        await #expect(throws: StoreError.self) { try await store.setPrice(ModelPrice(model: "m", inputPerMillion: Money(nanos: -1)), now: Date()) }
        await #expect(throws: StoreError.self) { try await store.setPrice(ModelPrice(model: "m", perRequest: HubStore.maxPrice + Money(nanos: 1)), now: Date()) }
        await #expect(throws: StoreError.self) { try await store.setPrice(ModelPrice(model: ""), now: Date()) }
        await #expect(throws: StoreError.self) { try await store.setPrice(ModelPrice(model: "a\u{7}b"), now: Date()) }
        await #expect(throws: StoreError.self) { try await store.setPrice(ModelPrice(model: String(repeating: "x", count: 257)), now: Date()) }
        await #expect(throws: StoreError.notFound("private group nope not found")) {
            try await store.setPrice(ModelPrice(group: "nope", model: "m"), now: Date())
        }
        #expect(try await store.listPrices(group: "").isEmpty)
        for bad in [-0.5, 1000.5, .nan, .infinity] {
            await #expect(throws: StoreError.self) { try await store.setGroupRatio(name: "vip", ratio: bad) }
        }
        #expect(try await store.listGroupRatios().isEmpty)

        let owner = try await store.createUser(name: "owner")
        let poolID = try await makePool(store, slug: "pool-a", owner: owner.id)
        #expect(try await store.ownedPoolSlug(groupID: poolID, ownerUserID: owner.id) == "pool-a")
        await #expect(throws: StoreError.self) { try await store.ownedPoolSlug(groupID: poolID, ownerUserID: owner.id + 1) }

        try await store.setPrice(ModelPrice(model: "llama", inputPerMillion: units(1), outputPerMillion: units(2)), now: Date())
        try await store.setPrice(ModelPrice(model: "llama", inputPerMillion: units(0.5), outputPerMillion: units(2)), now: Date())
        try await store.setPrice(ModelPrice(group: "pool-a", model: "qwen", perRequest: units(0.01)), now: Date())
        try await store.setGroupRatio(name: "vip", ratio: 1.5)
        #expect(try await store.listPrices(group: "") == [ModelPrice(model: "llama", inputPerMillion: units(0.5), outputPerMillion: units(2))])
        #expect(try await store.listGroupRatios() == [GroupRatio(group: "vip", ratio: 1.5)])

        let table = try await store.pricingTable()
        #expect(table.hubPrices.keys.sorted() == ["llama"])
        #expect(table.poolPrices["pool-a"]?["qwen"]?.perRequest == units(0.01))
        #expect(table.ratios == ["vip": 1.5])
        #expect(table.poolOwners == ["pool-a": owner.id])
        #expect(table.price(model: "llama", group: "vip")?.ratio == 1.5)
        #expect(table.price(model: "llama", group: "pool-a") == nil)

        #expect(try await store.deletePrice(group: "", model: "llama"))
        #expect(try await store.deletePrice(group: "", model: "llama") == false)
        #expect(try await store.listPrices(group: "").isEmpty)
    }

    @Test func usableGroupsFollowGrants() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let owner = try await store.createUser(name: "owner")
        let now = Date()
        let pool = try await makePool(store, slug: "pool-b", owner: owner.id)
        try await store.executeRaw("""
            INSERT INTO private_group_grants (group_id, user_id, role, source, source_ref, granted_by, created_at, updated_at)
            VALUES (?, ?, 'owner', 'create', ?, ?, ?, ?)
            """, [pool, owner.id, "group:\(pool)", owner.id, now, now])
        #expect(try await store.usableGroups(userID: owner.id, now: now) == ["pool-b"])
        try await store.executeRaw("UPDATE private_groups SET status = 2")
        #expect(try await store.usableGroups(userID: owner.id, now: now) == [])
    }

    @Test func usageFilterIsLiteral() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        let base = Date(timeIntervalSince1970: 1_700_000_000)
        _ = try await store.commitCharges([
            Charge(chargeID: "a", usage: usage("a", user: alice.id, model: "llama%", at: base), cost: .zero, creditUserID: nil),
            Charge(chargeID: "b", usage: usage("b", user: alice.id, model: "llama-3", at: base.addingTimeInterval(10)), cost: .zero, creditUserID: nil),
            Charge(chargeID: "c", usage: usage("c", user: nil, model: "l_ama", group: "vip", at: base.addingTimeInterval(20)), cost: .zero, creditUserID: nil),
        ], now: base)
        #expect(try await store.listUsage(filter: UsageFilter(model: "llama%")).map(\.requestID) == ["a"])
        #expect(try await store.listUsage(filter: UsageFilter(model: "l_ama")).map(\.requestID) == ["c"])
        #expect(try await store.listUsage(filter: UsageFilter(model: "%")).isEmpty)
        #expect(try await store.listUsage(filter: UsageFilter(userID: alice.id)).map(\.requestID) == ["b", "a"])
        #expect(try await store.listUsage(filter: UsageFilter(since: base.addingTimeInterval(5))).map(\.requestID) == ["c", "b"])
        #expect(try await store.listUsage(filter: UsageFilter(group: "vip")).map(\.requestID) == ["c"])
        #expect(try await store.listUsage(filter: UsageFilter(requestID: "b")).map(\.requestID) == ["b"])
        #expect(try await store.listUsage(filter: UsageFilter(limit: 1)).map(\.requestID) == ["c"])
        for bad in [0, 1001, -1] {
            await #expect(throws: StoreError.self) { try await store.listUsage(filter: UsageFilter(limit: bad)) }
        }
    }

    @Test func pruneKeepsTheLedger() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        let old = Date(timeIntervalSince1970: 1_600_000_000)
        let recent = Date(timeIntervalSince1970: 1_700_000_000)
        _ = try await store.commitCharges([
            Charge(chargeID: "old", usage: usage("old", user: alice.id, at: old), cost: units(1), creditUserID: nil),
            Charge(chargeID: "new", usage: usage("new", user: alice.id, at: recent), cost: units(2), creditUserID: nil),
        ], now: recent)
        #expect(try await store.pruneUsage(olderThan: recent.addingTimeInterval(-1)) == 1)
        #expect(try await store.listUsage(filter: UsageFilter()).map(\.requestID) == ["new"])
        #expect(try await store.balance(userID: alice.id) == units(-3))
        #expect(try await store.checkLedger().isConsistent)
        // The pruned request's charge id is still recorded: a replay is still ignored.
        let replay = try await store.commitCharges([
            Charge(chargeID: "old", usage: usage("old", user: alice.id, at: old), cost: units(1), creditUserID: nil),
        ], now: recent)
        #expect(replay.duplicates == 1)
        #expect(try await store.pruneUsage(olderThan: old) == 0)
    }

    @Test func setUserGroupAndSummary() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        #expect(try await store.setUserGroup(userID: alice.id, group: " vip ").group == "vip")
        await #expect(throws: StoreError.self) { try await store.setUserGroup(userID: alice.id, group: "a,b") }
        await #expect(throws: StoreError.userIDNotFound(99)) { try await store.setUserGroup(userID: 99, group: "vip") }
        let summary = try #require(try await store.userSummary(userID: alice.id))
        #expect(summary.user.group == "vip")
        #expect(summary.balance == .zero)
        #expect(try await store.userSummary(userID: 99) == nil)
    }
}
