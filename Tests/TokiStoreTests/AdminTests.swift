import Foundation
import Testing
@testable import TokiStore

@Suite struct AdminTests {
    @Test func bootstrapHappensExactlyOnce() async throws {
        try await withTempDataDir { dir in
            do {
                let store = try HubStore(dataDirectory: dir, logger: quietLogger)
                let token = try #require(try await store.ensureAdmin())
                #expect(TokenCrypto.isWellFormed(token))
                #expect(try await store.ensureAdmin() == nil)

                let auth = try #require(try await store.authenticate(token: token))
                #expect(auth.userName == "admin")
                #expect(auth.role == .admin)
                #expect(auth.isAdmin)
                let admin = try #require(try await store.user(named: "admin"))
                #expect(admin.role == .admin)
                #expect(try await store.listTokens(user: "admin").count == 1)
                try store.close()
            }
            // And not again after a restart.
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            #expect(try await store.ensureAdmin() == nil)
            #expect(try await store.listTokens(user: "admin").count == 1)
            try store.close()
        }
    }

    @Test func concurrentBootstrapCreatesOneAdmin() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            let results = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<8 { group.addTask { try await store.ensureAdmin() } }
                var out: [String?] = []
                for try await r in group { out.append(r) }
                return out
            }
            #expect(results.compactMap { $0 }.count == 1)
            #expect(try await store.listUsers().filter { $0.role == .admin }.count == 1)
            try store.close()
        }
    }

    @Test func nonAdminUserCalledAdminBlocksBootstrap() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        _ = try await store.createUser(name: "admin", role: .user)
        await #expect(throws: StoreError.adminNameTaken) { try await store.ensureAdmin() }
    }

    @Test func anyExistingAdminSkipsBootstrap() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        _ = try await store.createUser(name: "root", role: .admin)
        #expect(try await store.ensureAdmin() == nil)
        #expect(try await store.user(named: "admin") == nil)
    }

    @Test func duplicateUserIsRejected() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let u = try await store.createUser(name: "carol", group: "vip")
        #expect(u.group == "vip")
        #expect(u.role == .user)
        await #expect(throws: StoreError.userExists("carol")) { try await store.createUser(name: "carol") }
        await #expect(throws: StoreError.invalidUserName("  ")) { try await store.createUser(name: "  ") }
        #expect(try await store.user(id: u.id)?.name == "carol")
    }
}
