import Foundation
import Testing
@testable import TokiStore

@Suite struct MigrationTests {
    @Test func freshDirectoryIsCreatedAndMigrated() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            #expect(store.path == dir + "/toki.db")
            #expect(try await store.appliedMigrations() == ["v1", "v2-tenancy"])
            #expect(try posixMode(dir) == 0o700)
            #expect(try posixMode(dir + "/toki.db") == 0o600)
            #expect(try await store.listUsers().isEmpty)
            #expect(try await store.queryStrings("PRAGMA journal_mode") == ["wal"])
            #expect(try await store.queryStrings("PRAGMA synchronous") == ["1"])  // NORMAL
            #expect(try await store.queryStrings("PRAGMA foreign_keys") == ["1"])
            let tables = try await store.queryStrings(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%' ORDER BY name")
            #expect(tables == ["accounts", "group_ratios", "ledger_entries", "ledger_transactions", "model_prices", "private_group_grants",
                               "private_group_invite_codes", "private_groups", "tokens", "usage", "users", "workers"])
            try store.close()
        }
    }

    @Test func reopeningKeepsDataAndDoesNotRemigrate() async throws {
        try await withTempDataDir { dir in
            let tokenID: Int64
            let plaintext: String
            do {
                let store = try HubStore(dataDirectory: dir, logger: quietLogger)
                let issued = try await store.createToken(user: "alice", name: "laptop")
                tokenID = issued.record.id
                plaintext = issued.plaintext
                _ = try await store.claimNamespace(namespace: "gpu-a", userID: issued.record.userID, models: ["m"])
                try store.close()
            }
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            #expect(try await store.appliedMigrations() == ["v1", "v2-tenancy"])
            let auth = try #require(try await store.authenticate(token: plaintext))
            #expect(auth.tokenID == tokenID)
            #expect(auth.userName == "alice")
            #expect(try await store.workerID(namespace: "gpu-a") != nil)
            try store.close()
        }
    }

    @Test func existingDirectoryIsAcceptedAndAFileIsRejected() async throws {
        try await withTempDataDir { dir in
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            try store.close()

            let file = dir + "/not-a-dir"
            #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
            #expect(throws: StoreError.self) { try HubStore(dataDirectory: file, logger: quietLogger) }
        }
    }

    @Test func inMemoryStoreWorks() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        #expect(store.path == nil)
        #expect(try await store.appliedMigrations() == ["v1", "v2-tenancy"])
        let issued = try await store.createToken(user: "bob")
        #expect(try await store.authenticate(token: issued.plaintext)?.userName == "bob")
    }
}
