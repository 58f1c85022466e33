import Foundation
import Testing
@testable import TokiStore

/// A store with three users: alice (who will own groups), bob and carol.
private struct Fixture {
    let store: HubStore
    let alice: Int64
    let bob: Int64
    let carol: Int64
    /// Whole seconds, so records returned by a call equal those read back from SQLite (ms precision).
    let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))

    static func make() async throws -> Fixture {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice").id
        let bob = try await store.createUser(name: "bob").id
        let carol = try await store.createUser(name: "carol", group: "vip").id
        return Fixture(store: store, alice: alice, bob: bob, carol: carol)
    }

    /// alice's group `pool` and a code for it.
    func poolWithCode(maxUses: Int = 1, expiresAt: Date? = nil) async throws -> (PrivateGroup, String, InviteCode) {
        let group = try await store.createPrivateGroup(ownerUserID: alice, slug: "pool", now: now)
        let (code, record) = try await store.createInviteCode(groupID: group.id, ownerUserID: alice, maxUses: maxUses,
                                                              expiresAt: expiresAt, now: now)
        return (group, code, record)
    }
}

private func expectStoreError(_ body: () async throws -> Void, _ check: (StoreError) -> Bool,
                              sourceLocation: SourceLocation = #_sourceLocation) async {
    do {
        try await body()
        Issue.record("expected a StoreError", sourceLocation: sourceLocation)
    } catch let error as StoreError {
        #expect(check(error), "unexpected \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

private func isInvalid(_ e: StoreError) -> Bool { if case .invalidInput = e { true } else { false } }
private func isNotFound(_ e: StoreError) -> Bool { if case .notFound = e { true } else { false } }
private func isConflict(_ e: StoreError) -> Bool { if case .conflict = e { true } else { false } }

@Suite struct PrivateGroupTests {
    @Test func createMakesTheGroupAndTheOwnerGrant() async throws {
        let f = try await Fixture.make()
        let group = try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: "  My-Pool-1 ", now: f.now)
        #expect(group.slug == "my-pool-1")
        #expect(group.status == 1)
        #expect(group.ownerUserID == f.alice)
        let members = try await f.store.listMembers(groupID: group.id, ownerUserID: f.alice)
        #expect(members.map(\.userName) == ["alice"])
        let grant = try #require(members.first?.grant)
        #expect(grant.role == .owner)
        #expect(grant.source == .create)
        #expect(grant.sourceRef == "group:\(group.id)")
        #expect(grant.grantedBy == f.alice)
        #expect(try await f.store.listOwnedGroups(userID: f.alice) == [group])
        #expect(try await f.store.joinedGroups(userID: f.alice, now: f.now).map(\.group.slug) == ["my-pool-1"])
        #expect(try await f.store.joinedGroups(userID: f.alice, now: f.now).first?.role == .owner)
    }

    @Test func slugRules() async throws {
        let f = try await Fixture.make()
        try await f.store.executeSQL("INSERT INTO group_ratios (name, ratio) VALUES ('Premium', 2)")
        for bad in ["ab", "", "   ", String(repeating: "a", count: 65), String(repeating: "x", count: 100_000), "has space", "under_score",
                    "dot.dot", "semi;colon", "pct%", "under\u{0}nul", "new\nline", "émoji😀", "default", "AUTO", "a'b", "%%%"] {
            await expectStoreError({ _ = try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: bad, now: f.now) }, isInvalid)
        }
        // A huge slug is not echoed back.
        do {
            _ = try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: String(repeating: "q", count: 10_000), now: f.now)
        } catch let error as StoreError {
            #expect(error.description.count < 200)
        }
        #expect(try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: String(repeating: "a", count: 64), now: f.now).slug.count == 64)
        _ = try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: "abc", now: f.now)
        for taken in ["abc", "ABC", "vip", "premium", "VIP "] {
            await expectStoreError({ _ = try await f.store.createPrivateGroup(ownerUserID: f.bob, slug: taken, now: f.now) }, isConflict)
        }
        await expectStoreError({ _ = try await f.store.createPrivateGroup(ownerUserID: 999, slug: "nobody", now: f.now) }, isNotFound)
        #expect(try await f.store.listAllGroups().count == 2)
    }

    @Test func otherUsersGroupsAreNotFound() async throws {
        let f = try await Fixture.make()
        let (group, _, code) = try await f.poolWithCode()
        let (store, bob, id) = (f.store, f.bob, group.id)
        await expectStoreError({ _ = try await store.group(id: id, visibleTo: bob) }, isNotFound)
        await expectStoreError({ _ = try await store.updateGroup(id: id, ownerUserID: bob, slug: "mine", status: nil, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await store.deleteGroup(id: id, ownerUserID: bob, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await store.createInviteCode(groupID: id, ownerUserID: bob, maxUses: 1, expiresAt: nil, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await store.listInviteCodes(groupID: id, ownerUserID: bob) }, isNotFound)
        await expectStoreError({ _ = try await store.setInviteCodeStatus(codeID: code.id, groupID: id, ownerUserID: bob, status: 2, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await store.listMembers(groupID: id, ownerUserID: bob) }, isNotFound)
        await expectStoreError({ try await store.removeMember(groupID: id, ownerUserID: bob, memberUserID: f.alice, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await store.group(id: 12345, visibleTo: f.alice) }, isNotFound)
        #expect(try await store.listOwnedGroups(userID: bob).isEmpty)
        // A code of one of alice's groups cannot be changed through another of her groups.
        let other = try await store.createPrivateGroup(ownerUserID: f.alice, slug: "other", now: f.now)
        await expectStoreError({ _ = try await store.setInviteCodeStatus(codeID: code.id, groupID: other.id, ownerUserID: f.alice, status: 2, now: f.now) }, isNotFound)
    }

    @Test func inviteCodeFormatAndHashStorage() async throws {
        let f = try await Fixture.make()
        let (group, code, record) = try await f.poolWithCode(maxUses: 3)
        #expect(code.count == 14)
        #expect(code.count == 14 && InviteCodeCrypto.canonicalize(code) == code)
        #expect(record.maxUses == 3 && record.usedCount == 0 && record.status == 1 && record.groupID == group.id)
        let hashes = try await f.store.queryStrings("SELECT code_hash FROM private_group_invite_codes")
        #expect(hashes == [TokenCrypto.hashHex(code)])
        let everything = try await f.store.queryStrings("""
            SELECT group_concat(code_hash || created_by || status || max_uses || used_count || created_at) FROM private_group_invite_codes
            """).joined()
        #expect(!everything.contains(code))
        #expect(!everything.contains(code.replacingOccurrences(of: "-", with: "")))
        // Many codes: the right shape, all distinct, every symbol of the alphabet appears.
        var seen = Set<Character>()
        var codes = Set<String>()
        for _ in 0..<200 {
            let c = try InviteCodeCrypto.generate()
            #expect(c.count == 14 && InviteCodeCrypto.canonicalize(c) == c)
            codes.insert(c)
            seen.formUnion(c.filter { $0 != "-" })
        }
        #expect(codes.count == 200)
        #expect(seen.count == 36)
        #expect(InviteCodeCrypto.canonicalize(" abcd-EFGH-1234\n") == "ABCD-EFGH-1234")
        for bad in ["", "ABCD-EFGH-123", "ABCD-EFGH-12345", "ABCDEFGH1234ab", "ABCD_EFGH_1234", "ABCD-EFGH-12%4", "ÄBCD-EFGH-1234",
                    "ABCD-EFGH-123\u{0}", String(repeating: "A", count: 100_000)] {
            #expect(InviteCodeCrypto.canonicalize(bad) == nil, "\(bad.prefix(20).debugDescription)")
        }
    }

    @Test func inviteCodeLimits() async throws {
        let f = try await Fixture.make()
        let group = try await f.store.createPrivateGroup(ownerUserID: f.alice, slug: "pool", now: f.now)
        for uses in [0, -1, 100_001, Int.max, Int.min] {
            await expectStoreError({ _ = try await f.store.createInviteCode(groupID: group.id, ownerUserID: f.alice, maxUses: uses, expiresAt: nil, now: f.now) }, isInvalid)
        }
        for past in [f.now, f.now - 1, Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1e12)] {
            await expectStoreError({ _ = try await f.store.createInviteCode(groupID: group.id, ownerUserID: f.alice, maxUses: 1, expiresAt: past, now: f.now) }, isInvalid)
        }
        let made = try await f.store.createInviteCode(groupID: group.id, ownerUserID: f.alice, maxUses: 100_000, expiresAt: f.now + 3600, now: f.now)
        #expect(made.record.maxUses == 100_000)
        #expect(try await f.store.listInviteCodes(groupID: group.id, ownerUserID: f.alice).map(\.id) == [made.record.id])
        await expectStoreError({ _ = try await f.store.setInviteCodeStatus(codeID: made.record.id, groupID: group.id, ownerUserID: f.alice, status: 3, now: f.now) }, isInvalid)
    }

    @Test func redeemJoinsOnceAndConsumesNothingTheSecondTime() async throws {
        let f = try await Fixture.make()
        let (group, code, record) = try await f.poolWithCode(maxUses: 5)
        let first = try await f.store.redeem(code: code.lowercased(), userID: f.bob, now: f.now)
        #expect(first.created)
        #expect(first.group == group)
        #expect(first.grant.role == .member && first.grant.source == .invite && first.grant.sourceRef == "invite_code:\(record.id)")
        #expect(first.grant.userID == f.bob && first.grant.grantedBy == f.alice && first.grant.revokedAt == nil)
        let second = try await f.store.redeem(code: "  \(code) ", userID: f.bob, now: f.now)
        #expect(!second.created)
        #expect(second.grant == first.grant)
        #expect(try await f.store.listInviteCodes(groupID: group.id, ownerUserID: f.alice).first?.usedCount == 1)
        // The owner redeeming their own code consumes nothing either.
        #expect(try await f.store.redeem(code: code, userID: f.alice, now: f.now).created == false)
        #expect(try await f.store.listInviteCodes(groupID: group.id, ownerUserID: f.alice).first?.usedCount == 1)
        #expect(try await f.store.listMembers(groupID: group.id, ownerUserID: f.alice).map(\.userName) == ["alice", "bob"])
        #expect(try await f.store.joinedGroups(userID: f.bob, now: f.now).map(\.group.slug) == ["pool"])
        #expect(try await f.store.joinedGroups(userID: f.bob, now: f.now).first?.role == .member)
    }

    @Test func usedUpExpiredDisabledAndUnknownCodesAreRefusedAlike() async throws {
        let f = try await Fixture.make()
        let (group, code, record) = try await f.poolWithCode(maxUses: 1, expiresAt: f.now + 60)
        func refused(_ code: String, _ user: Int64, at now: Date) async {
            do {
                _ = try await f.store.redeem(code: code, userID: user, now: now)
                Issue.record("redeemed \(code)")
            } catch let error as StoreError {
                #expect(error == .invalidInput(HubStore.redeemRefusal))
            } catch { Issue.record("\(error)") }
        }
        await refused(code, f.bob, at: f.now + 61)  // expired
        #expect(try await f.store.redeem(code: code, userID: f.bob, now: f.now).created)
        let used = try #require(try await f.store.listInviteCodes(groupID: group.id, ownerUserID: f.alice).first)
        #expect(used.usedCount == 1 && used.status == 2)  // used up: disabled
        await refused(code, f.carol, at: f.now)
        await expectStoreError({ _ = try await f.store.setInviteCodeStatus(codeID: record.id, groupID: group.id, ownerUserID: f.alice, status: 1, now: f.now) }, isConflict)
        await refused("AAAA-BBBB-CCCC", f.carol, at: f.now)  // unknown

        let (fresh, freshRecord) = try await f.store.createInviteCode(groupID: group.id, ownerUserID: f.alice, maxUses: 2, expiresAt: nil, now: f.now)
        _ = try await f.store.setInviteCodeStatus(codeID: freshRecord.id, groupID: group.id, ownerUserID: f.alice, status: 2, now: f.now)
        await refused(fresh, f.carol, at: f.now)  // revoked
        _ = try await f.store.setInviteCodeStatus(codeID: freshRecord.id, groupID: group.id, ownerUserID: f.alice, status: 1, now: f.now)
        // A disabled group refuses its codes the same way, without naming it.
        _ = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: nil, status: 2, now: f.now)
        await refused(fresh, f.carol, at: f.now)
        _ = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: nil, status: 1, now: f.now)
        #expect(try await f.store.redeem(code: fresh, userID: f.carol, now: f.now).created)

        for malformed in ["", "nope", "AAAA-BBBB-CCC%", "AAAA BBBB CCCC", String(repeating: "A", count: 1_000_000)] {
            await expectStoreError({ _ = try await f.store.redeem(code: malformed, userID: f.carol, now: f.now) }, isInvalid)
        }
    }

    @Test func concurrentRedeemsOfAOneUseCodeAdmitExactlyOne() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            let alice = try await store.createUser(name: "alice").id
            let users = try await (0..<8).asyncMap { try await store.createUser(name: "u\($0)").id }
            let group = try await store.createPrivateGroup(ownerUserID: alice, slug: "pool", now: Date())
            let (code, _) = try await store.createInviteCode(groupID: group.id, ownerUserID: alice, maxUses: 1, expiresAt: nil, now: Date())
            let outcomes = await withTaskGroup(of: Bool.self) { tasks in
                for user in users {
                    tasks.addTask { (try? await store.redeem(code: code, userID: user, now: Date()))?.created == true }
                }
                return await tasks.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1)
            let codes = try await store.listInviteCodes(groupID: group.id, ownerUserID: alice)
            #expect(codes.first?.usedCount == 1)
            #expect(try await store.listMembers(groupID: group.id, ownerUserID: alice).count == 2)
        }
    }

    @Test func removedMemberLosesTheGroupWhenAuthenticating() async throws {
        let f = try await Fixture.make()
        let (group, code, _) = try await f.poolWithCode(maxUses: 2)
        let (token, _) = try await f.store.createToken(userID: f.bob, now: f.now)
        #expect(try await f.store.authenticate(token: token, now: f.now)?.groups == ["default"])
        _ = try await f.store.redeem(code: code, userID: f.bob, now: f.now)
        #expect(try await f.store.authenticate(token: token, now: f.now)?.groups == ["default", "pool"])

        await expectStoreError({ try await f.store.removeMember(groupID: group.id, ownerUserID: f.alice, memberUserID: f.alice, now: f.now) }, isInvalid)
        await expectStoreError({ try await f.store.removeMember(groupID: group.id, ownerUserID: f.alice, memberUserID: f.carol, now: f.now) }, isNotFound)
        try await f.store.removeMember(groupID: group.id, ownerUserID: f.alice, memberUserID: f.bob, now: f.now)
        try await f.store.removeMember(groupID: group.id, ownerUserID: f.alice, memberUserID: f.bob, now: f.now)  // idempotent
        #expect(try await f.store.authenticate(token: token, now: f.now)?.groups == ["default"])
        #expect(try await f.store.joinedGroups(userID: f.bob, now: f.now).isEmpty)
        #expect(try await f.store.listMembers(groupID: group.id, ownerUserID: f.alice).map(\.userName) == ["alice"])

        // Redeeming again reactivates the same row and consumes a use.
        let back = try await f.store.redeem(code: code, userID: f.bob, now: f.now)
        #expect(back.created && back.grant.revokedAt == nil)
        #expect(try await f.store.listInviteCodes(groupID: group.id, ownerUserID: f.alice).first?.usedCount == 2)
        #expect(try await f.store.authenticate(token: token, now: f.now)?.groups == ["default", "pool"])
    }

    @Test func renameAndDeleteAreRefusedWhileReferenced() async throws {
        let f = try await Fixture.make()
        let (group, code, _) = try await f.poolWithCode(maxUses: 3)
        _ = try await f.store.redeem(code: code, userID: f.bob, now: f.now)
        let (_, pinned) = try await f.store.createToken(userID: f.bob, options: TokenOptions(groups: ["pool"]), now: f.now)
        await expectStoreError({ _ = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: "renamed", status: nil, now: f.now) }, isConflict)
        await expectStoreError({ _ = try await f.store.deleteGroup(id: group.id, ownerUserID: f.alice, now: f.now) }, isConflict)
        // Status changes and a "rename" to the same slug are fine while pinned.
        #expect(try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: "POOL", status: 2, now: f.now).status == 2)
        try await f.store.revokeToken(id: pinned.id)

        // A worker serving it (in a comma list) blocks too; a similarly named group does not.
        _ = try await f.store.claimNamespace(namespace: "gpu", userID: f.bob, group: "default,pool", now: f.now)
        _ = try await f.store.claimNamespace(namespace: "gpu2", userID: f.bob, group: "pool-2", now: f.now)
        await expectStoreError({ _ = try await f.store.deleteGroup(id: group.id, ownerUserID: f.alice, now: f.now) }, isConflict)
        _ = try await f.store.claimNamespace(namespace: "gpu", userID: f.bob, group: "default", now: f.now)

        let renamed = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: "renamed", status: 1, now: f.now)
        #expect(renamed.slug == "renamed" && renamed.status == 1)
        await expectStoreError({ _ = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: "vip", status: nil, now: f.now) }, isConflict)
        await expectStoreError({ _ = try await f.store.updateGroup(id: group.id, ownerUserID: f.alice, slug: nil, status: 0, now: f.now) }, isInvalid)
        #expect(try await f.store.joinedGroups(userID: f.bob, now: f.now).map(\.group.slug) == ["renamed"])
    }

    @Test func deleteRevokesGrantsAndDisablesCodes() async throws {
        let f = try await Fixture.make()
        let (group, code, _) = try await f.poolWithCode(maxUses: 3)
        _ = try await f.store.redeem(code: code, userID: f.bob, now: f.now)
        let revoked = try await f.store.deleteGroup(id: group.id, ownerUserID: f.alice, now: f.now)
        #expect(Set(revoked) == [f.alice, f.bob])
        #expect(try await f.store.joinedGroups(userID: f.bob, now: f.now).isEmpty)
        #expect(try await f.store.joinedGroups(userID: f.alice, now: f.now).isEmpty)
        #expect(try await f.store.listOwnedGroups(userID: f.alice).isEmpty)
        #expect(try await f.store.listAllGroups().isEmpty)
        #expect(try await f.store.queryStrings("SELECT DISTINCT status FROM private_group_invite_codes") == ["2"])
        await expectStoreError({ _ = try await f.store.group(id: group.id, visibleTo: f.alice) }, isNotFound)
        await expectStoreError({ _ = try await f.store.redeem(code: code, userID: f.carol, now: f.now) }, isInvalid)
        // The slug of a deleted group stays reserved.
        await expectStoreError({ _ = try await f.store.createPrivateGroup(ownerUserID: f.carol, slug: "pool", now: f.now) }, isConflict)
    }

    @Test func adminGrantsExpireAndNeverNarrowTheOwner() async throws {
        let f = try await Fixture.make()
        let (group, _, _) = try await f.poolWithCode()
        let admin = try await f.store.createUser(name: "root", role: .admin).id
        let grant = try await f.store.adminGrant(groupID: group.id, userID: f.carol, expiresAt: f.now + 60, adminUserID: admin, now: f.now)
        #expect(grant.source == .admin && grant.sourceRef == "admin:\(admin)" && grant.role == .member && grant.grantedBy == admin)
        #expect(try await f.store.joinedGroups(userID: f.carol, now: f.now).map(\.group.slug) == ["pool"])
        #expect(try await f.store.joinedGroups(userID: f.carol, now: f.now + 120).isEmpty)
        let owner = try await f.store.adminGrant(groupID: group.id, userID: f.alice, expiresAt: f.now + 60, adminUserID: admin, now: f.now)
        #expect(owner.role == .owner && owner.expiresAt == nil)
        await expectStoreError({ _ = try await f.store.adminGrant(groupID: 999, userID: f.carol, expiresAt: nil, adminUserID: admin, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await f.store.adminGrant(groupID: group.id, userID: 999, expiresAt: nil, adminUserID: admin, now: f.now) }, isNotFound)
        await expectStoreError({ _ = try await f.store.adminGrant(groupID: group.id, userID: f.carol, expiresAt: f.now - 1, adminUserID: admin, now: f.now) }, isInvalid)
        // Making it permanent.
        #expect(try await f.store.adminGrant(groupID: group.id, userID: f.carol, expiresAt: nil, adminUserID: admin, now: f.now).expiresAt == nil)
        #expect(try await f.store.joinedGroups(userID: f.carol, now: f.now + 120).count == 1)
    }

    @Test func theStoreServesGroupsThroughItsProtocol() async throws {
        let store: any PrivateGroupStore = try HubStore.inMemory(logger: quietLogger)
        let alice = try await (store as! HubStore).createUser(name: "alice").id
        let group = try await store.createPrivateGroup(ownerUserID: alice, slug: "p-1", now: Date(timeIntervalSince1970: 1_800_000_000))
        #expect(try await store.group(id: group.id, visibleTo: alice) == group)
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { try await out.append(transform(element)) }
        return out
    }
}
