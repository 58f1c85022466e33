import Foundation
import Testing
import TokiStore

/// The hub sees the store only through the TokiStore protocols: the SQLite store works as one.
@Suite struct StorageProtocolTests {
    @Test func theSQLiteStoreServesTheHubThroughItsProtocols() async throws {
        try await withTempDataDir { dir in
            let store: any HubStorage = try HubStore(dataDirectory: dir, logger: quietLogger)
            let now = Date()
            let (plaintext, record) = try await store.createToken(user: "alice", name: "laptop", role: .user, group: "default",
                                                                  expiresAt: nil, models: nil, options: TokenOptions(), now: now)
            let user = try #require(try await store.authenticate(token: plaintext, now: now))
            #expect(user.tokenID == record.id)
            #expect(try await store.authenticate(token: "sk-toki-nope", now: now) == nil)

            let claim = try await store.claimNamespace(namespace: "gpu-1", userID: user.userID, nodeName: nil, group: "default",
                                                       models: ["m"], now: now)
            #expect(claim.isNew)
            #expect(try await store.listWorkers(userID: user.userID).map(\.namespace) == ["gpu-1"])
            try await store.recordPresence(["gpu-1": .offline], now: now)
            #expect(try await store.listWorkers(userID: nil).first?.status == .offline)
            try await store.recordPresence(["gpu-1": .online(models: ["m", "n"])], now: now)
            #expect(try await store.markAllOffline() == 1)

            try await store.recordUsage([UsageRecord(requestID: "r", userID: user.userID, tokenID: record.id, model: "m",
                                                     namespace: "gpu-1", statusCode: 200, durationMS: 5)])
            #expect(try await (store as! HubStore).listUsage().map(\.requestID) == ["r"])
        }
    }

    @Test("releaseMemory gives back SQLite's caches; the store answers the same afterwards")
    func releaseMemory() async throws {
        try await withTempDataDir { dir in
            let store: any HubStorage = try HubStore(dataDirectory: dir, logger: quietLogger)
            let now = Date()
            let (plaintext, _) = try await store.createToken(user: "alice", name: "box", role: .user, group: "default",
                                                             expiresAt: nil, models: nil, options: TokenOptions(), now: now)
            let alice = try #require(try await store.authenticate(token: plaintext, now: now)).userID
            for i in 0..<300 {
                _ = try await store.claimNamespace(namespace: "gpu-\(i)", userID: alice, nodeName: nil, group: "default", models: ["m"], now: now)
            }
            let before = try await store.listWorkers(userID: nil).map(\.namespace)
            store.releaseMemory()
            #expect(try await store.listWorkers(userID: nil).map(\.namespace) == before)
            #expect(before.count == 300)
        }
    }
}
