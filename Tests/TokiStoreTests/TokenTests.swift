import Foundation
import Testing
@testable import TokiStore

@Suite struct TokenTests {
    @Test func createAndAuthenticate() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (plaintext, record) = try await store.createToken(user: "alice", name: "laptop")
        #expect(record.name == "laptop")
        #expect(!record.disabled)
        #expect(record.displayPrefix == String(plaintext.prefix(12)))
        #expect(try await store.user(named: "alice")?.id == record.userID)

        let auth = try #require(try await store.authenticate(token: plaintext))
        #expect(auth.tokenID == record.id)
        #expect(auth.userID == record.userID)
        #expect(auth.userName == "alice")
        #expect(auth.role == .user)
        #expect(auth.group == "default")
        #expect(auth.models == nil)
        #expect(auth.allows(model: "anything"))
    }

    @Test func acceptedSpellings() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (plaintext, record) = try await store.createToken(user: "alice")
        let bare = String(plaintext.dropFirst(3))  // "toki-…", what the Go hub passes on
        for form in [plaintext, bare, "Bearer \(plaintext)", "bearer \(bare)", "  \(plaintext)\n", "BEARER  \(plaintext)"] {
            #expect(try await store.authenticate(token: form)?.tokenID == record.id, "form \(form.debugDescription)")
        }
    }

    @Test func wrongTokensAreRejected() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (plaintext, _) = try await store.createToken(user: "alice")
        let other = try TokenCrypto.generate()
        #expect(try await store.authenticate(token: other) == nil)

        // Same token but the last character changed.
        let last = plaintext.last!
        let replacement: Character = last == "a" ? "b" : "a"
        let tweaked = String(plaintext.dropLast()) + String(replacement)
        #expect(tweaked != plaintext)
        #expect(try await store.authenticate(token: tweaked) == nil)

        for bad in ["", "sk-", "sk-toki-", "Bearer ", String(plaintext.dropLast()), plaintext + "x",
                    plaintext.uppercased(), "sk-" + plaintext, String(plaintext.dropFirst(8))] {
            #expect(try await store.authenticate(token: bad) == nil, "bad \(bad.debugDescription)")
        }
    }

    @Test func revokedTokenIsRejected() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (plaintext, record) = try await store.createToken(user: "alice")
        let (keep, _) = try await store.createToken(user: "alice")
        try await store.revokeToken(id: record.id)
        #expect(try await store.authenticate(token: plaintext) == nil)
        #expect(try await store.authenticate(token: keep) != nil)
        #expect(try await store.token(id: record.id)?.disabled == true)
        try await store.revokeToken(id: record.id)  // idempotent
        await #expect(throws: StoreError.tokenNotFound(9999)) { try await store.revokeToken(id: 9999) }
    }

    @Test func revokeWithOwnerCheck() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (p, rec) = try await store.createToken(user: "alice")
        let bob = try await store.createUser(name: "bob")
        await #expect(throws: StoreError.tokenNotFound(rec.id)) { try await store.revokeToken(id: rec.id, ownedBy: bob.id) }
        #expect(try await store.authenticate(token: p) != nil)
        try await store.revokeToken(id: rec.id, ownedBy: rec.userID)
        #expect(try await store.authenticate(token: p) == nil)
    }

    @Test func expiredTokenIsRejected() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let now = Date()
        let (expired, _) = try await store.createToken(user: "alice", expiresAt: now.addingTimeInterval(-1))
        #expect(try await store.authenticate(token: expired) == nil)

        let (soon, _) = try await store.createToken(user: "alice", expiresAt: now.addingTimeInterval(3600))
        #expect(try await store.authenticate(token: soon, now: now) != nil)
        #expect(try await store.authenticate(token: soon, now: now.addingTimeInterval(3601)) == nil)
    }

    @Test func modelAllowList() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let (p, rec) = try await store.createToken(user: "alice", models: [" llama3 ", "qwen", "qwen", ""])
        #expect(rec.models == ["llama3", "qwen"])
        let auth = try #require(try await store.authenticate(token: p))
        #expect(auth.allows(model: "qwen"))
        #expect(!auth.allows(model: "gpt-4"))
        let (p2, rec2) = try await store.createToken(user: "alice", models: [])
        #expect(rec2.models == nil)
        #expect(try await store.authenticate(token: p2)?.allows(model: "x") == true)
    }

    @Test func listTokensAndLastUsed() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let (a, ra) = try await store.createToken(user: "alice", name: "a", now: t0)
        _ = try await store.createToken(user: "alice", name: "b", now: t0)
        _ = try await store.createToken(user: "bob", name: "c", now: t0)
        let list = try await store.listTokens(user: "alice")
        #expect(list.map(\.name) == ["a", "b"])
        #expect(list.allSatisfy { $0.lastUsedAt == nil })
        #expect(try await store.listTokens(user: "nobody").isEmpty)
        #expect(try await store.listTokens(userID: ra.userID).count == 2)

        _ = try await store.authenticate(token: a, now: t0.addingTimeInterval(10))
        let used1 = try #require(try await store.token(id: ra.id)?.lastUsedAt)
        #expect(abs(used1.timeIntervalSince(t0.addingTimeInterval(10))) < 0.01)
        // Within the granularity: not rewritten.
        _ = try await store.authenticate(token: a, now: t0.addingTimeInterval(20))
        #expect(try await store.token(id: ra.id)?.lastUsedAt == used1)
        // After it: rewritten.
        _ = try await store.authenticate(token: a, now: t0.addingTimeInterval(100))
        let used2 = try #require(try await store.token(id: ra.id)?.lastUsedAt)
        #expect(abs(used2.timeIntervalSince(t0.addingTimeInterval(100))) < 0.01)
    }

    @Test func aTokenReadBackIsTheRecordCreated() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let (_, created) = try await store.createToken(
            user: "alice", name: "ci", expiresAt: t0.addingTimeInterval(3600), models: ["qwen", "llama3"], now: t0)
        #expect(try await store.token(id: created.id) == created)
        #expect(try await store.listTokens(user: "alice") == [created])
        #expect(try await store.listTokens(userID: created.userID) == [created])
        let (_, plain) = try await store.createToken(user: "alice", now: t0)
        #expect(try await store.token(id: plain.id) == plain)
    }

    @Test func createTokenForUnknownUserIDFails() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        await #expect(throws: StoreError.userIDNotFound(42)) { try await store.createToken(userID: 42) }
        let u = try await store.createUser(name: "dora", role: .admin)
        let (p, _) = try await store.createToken(userID: u.id, name: "x")
        #expect(try await store.authenticate(token: p)?.role == .admin)
    }

    @Test func plaintextIsNeverStored() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            var issued: [(plaintext: String, record: TokenRecord)] = []
            for i in 0..<20 { issued.append(try await store.createToken(user: "u\(i % 3)", name: "t\(i)")) }
            if let admin = try await store.ensureAdmin() { issued.append((admin, try await store.listTokens(user: "admin")[0])) }
            for t in issued { _ = try await store.authenticate(token: t.plaintext) }

            func scan() throws {
                var bytes = Data()
                for suffix in ["", "-wal", "-shm"] {
                    if let d = FileManager.default.contents(atPath: dir + "/toki.db" + suffix) { bytes.append(d) }
                }
                #expect(!bytes.isEmpty)
                for t in issued {
                    let secret = String(t.plaintext.dropFirst(TokenCrypto.prefix.count))
                    #expect(!bytes.contains(t.plaintext))
                    #expect(!bytes.contains(secret))
                    #expect(!bytes.contains(String(secret.suffix(20))))
                    // Positive control: the hash is in there, so the scan does see token rows.
                    #expect(bytes.contains(TokenCrypto.hashHex(t.plaintext)))
                }
            }
            try scan()

            // Every column of every token row, as text.
            let rows = try await store.queryStrings("""
                    SELECT COALESCE(id,'')||'|'||COALESCE(user_id,'')||'|'||COALESCE(name,'')||'|'||key_hash||'|'||
                           key_prefix||'|'||COALESCE(created_at,'')||'|'||COALESCE(expires_at,'')||'|'||disabled||'|'||
                           COALESCE(models,'')||'|'||COALESCE(last_used_at,'') FROM tokens
                    """)
            #expect(rows.count == issued.count)
            for t in issued {
                let secret = String(t.plaintext.dropFirst(TokenCrypto.prefix.count))
                #expect(rows.allSatisfy { !$0.contains(secret.suffix(36)) })
                #expect(t.record.displayPrefix.count == TokenCrypto.prefix.count + TokenCrypto.displayRandomCharacters)
            }
            try store.close()  // checkpoints the WAL into the main file
            try scan()
        }
    }
}

@Suite struct TokenCryptoTests {
    @Test func formatAndUniquenessOver1000Tokens() throws {
        var seen = Set<String>()
        var counts = [Character: Int]()
        for _ in 0..<1000 {
            let t = try TokenCrypto.generate()
            #expect(t.hasPrefix("sk-toki-"))
            #expect(t.count == 48)
            #expect(TokenCrypto.isWellFormed(t))
            #expect(TokenCrypto.canonicalize(t) == t)
            seen.insert(t)
            for c in t.dropFirst(8) { counts[c, default: 0] += 1 }
        }
        #expect(seen.count == 1000)
        #expect(Set(seen.map(TokenCrypto.hashHex)).count == 1000)
        // 40,000 characters over 62 symbols: ~645 each. Every symbol appears, none wildly off.
        #expect(counts.count == 62)
        #expect(counts.values.allSatisfy { $0 > 450 && $0 < 850 })
    }

    @Test func storeIssuedTokensAreUnique() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        var plaintexts = Set<String>()
        for _ in 0..<200 { plaintexts.insert(try await store.createToken(user: "bulk").plaintext) }
        #expect(plaintexts.count == 200)
        #expect(try await store.listTokens(user: "bulk").count == 200)
    }

    @Test func sha256KnownVector() {
        #expect(TokenCrypto.hashHex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(TokenCrypto.hashHex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func canonicalization() {
        let t = "sk-toki-" + String(repeating: "aB3", count: 13) + "z"
        #expect(TokenCrypto.isWellFormed(t))
        #expect(TokenCrypto.canonicalize(t) == t)
        #expect(TokenCrypto.canonicalize(String(t.dropFirst(3))) == t)
        #expect(TokenCrypto.canonicalize("Bearer " + t) == t)
        #expect(TokenCrypto.canonicalize("bEaReR toki-" + t.dropFirst(8)) == t)
        #expect(TokenCrypto.canonicalize("sk-sk-toki-" + t.dropFirst(8)) == nil)
        #expect(TokenCrypto.canonicalize("sk-toki-" + String(repeating: "a", count: 39) + "-") == nil)
        #expect(TokenCrypto.canonicalize("sk-toki-" + String(repeating: "é", count: 40)) == nil)
        #expect(TokenCrypto.canonicalize("") == nil)
    }

    @Test func constantTimeEquals() {
        #expect(TokenCrypto.constantTimeEquals("abcd", "abcd"))
        #expect(!TokenCrypto.constantTimeEquals("abcd", "abce"))
        #expect(!TokenCrypto.constantTimeEquals("abcd", "abc"))
        #expect(TokenCrypto.constantTimeEquals("", ""))
    }
}
