import Foundation
import Testing
@testable import TokiStore

@Suite struct NamespaceTests {
    @Test func firstUserOwnsNamespaceForever() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        let bob = try await store.createUser(name: "bob")

        let first = try await store.claimNamespace(namespace: " gpu-1 ", userID: alice.id, nodeName: "box", models: ["b", " a ", "b", ""])
        #expect(first.isNew)
        #expect(first.namespace == "gpu-1")
        #expect(first.ownerUserID == alice.id)
        #expect(first.nodeName == "box")
        #expect(first.models == ["a", "b"])
        #expect(first.status == .online)

        await #expect(throws: StoreError.namespaceOwnedByAnotherUser("gpu-1")) {
            try await store.claimNamespace(namespace: "gpu-1", userID: bob.id)
        }
        #expect(StoreError.namespaceOwnedByAnotherUser("gpu-1").description == "namespace gpu-1 is already owned by another user")

        let again = try await store.claimNamespace(namespace: "gpu-1", userID: alice.id, models: ["c"])
        #expect(!again.isNew)
        #expect(again.workerID == first.workerID)
        #expect(again.nodeName == "gpu-1")  // defaults to the namespace
        #expect(again.models == ["c"])
        #expect(try await store.namespaceOwner("gpu-1") == alice.id)

        // Offline and back: still the same owner and id; bob still refused.
        try await store.markOffline(namespace: "gpu-1")
        #expect(try await store.worker(namespace: "gpu-1")?.status == .offline)
        await #expect(throws: StoreError.namespaceOwnedByAnotherUser("gpu-1")) {
            try await store.claimNamespace(namespace: "gpu-1", userID: bob.id)
        }
        let bobs = try await store.claimNamespace(namespace: "gpu-2", userID: bob.id)
        #expect(bobs.isNew)
        #expect(bobs.workerID != first.workerID)
        #expect(try await store.listWorkers(userID: bob.id).map(\.namespace) == ["gpu-2"])
        #expect(try await store.listWorkers().map(\.namespace) == ["gpu-1", "gpu-2"])
    }

    @Test func invalidNamespacesAndUnknownUsers() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        let alice = try await store.createUser(name: "alice")
        await #expect(throws: StoreError.invalidNamespace("   ")) { try await store.claimNamespace(namespace: "   ", userID: alice.id) }
        await #expect(throws: StoreError.invalidNamespace("a\nb")) { try await store.claimNamespace(namespace: "a\nb", userID: alice.id) }
        await #expect(throws: StoreError.userIDNotFound(77)) { try await store.claimNamespace(namespace: "x", userID: 77) }
        #expect(try await store.workerID(namespace: "x") == nil)
        #expect(try await store.namespaceOwner("x") == nil)
    }

    @Test func statusHeartbeatAndMarkAllOffline() async throws {
        try await withTempDataDir { dir in
            var ids: [String: Int64] = [:]
            do {
                let store = try HubStore(dataDirectory: dir, logger: quietLogger)
                let u = try await store.createUser(name: "alice")
                for ns in ["n1", "n2", "n3"] {
                    ids[ns] = try await store.claimNamespace(namespace: ns, userID: u.id, models: ["m"]).workerID
                }
                let t = Date().addingTimeInterval(5)
                try await store.touchNamespace("n1", models: ["m2", "m1"], now: t)
                let n1 = try #require(try await store.worker(namespace: "n1"))
                #expect(n1.models == ["m1", "m2"])
                #expect(abs(n1.lastSeenAt.timeIntervalSince(t)) < 0.01)
                await #expect(throws: StoreError.namespaceNotFound("nope")) { try await store.touchNamespace("nope") }

                try await store.markOffline(namespace: "n2")
                try await store.markOffline(namespace: "unknown")  // ignored
                // "Crash": close without marking the others offline.
                try store.close()
            }
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            #expect(try await store.listWorkers().filter { $0.status == .online }.count == 2)
            #expect(try await store.markAllOffline() == 2)
            #expect(try await store.listWorkers().allSatisfy { $0.status == .offline })
            #expect(try await store.markAllOffline() == 0)
            for (ns, id) in ids { #expect(try await store.workerID(namespace: ns) == id) }
            try store.close()
        }
    }

    /// The hub batches heartbeats and departures into one transaction.
    @Test func presenceIsRecordedInBatches() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            let u = try await store.createUser(name: "alice")
            for ns in ["n1", "n2", "n3"] { _ = try await store.claimNamespace(namespace: ns, userID: u.id, models: ["m"]) }
            let t = Date().addingTimeInterval(5)
            try await store.recordPresence([
                "n1": .online(models: ["b", "a"]), "n2": .online(models: nil), "n3": .offline,
                "unknown": .online(models: nil), "  ": .offline,
            ], now: t)
            let n1 = try #require(try await store.worker(namespace: "n1"))
            #expect(n1.models == ["a", "b"])
            #expect(n1.status == .online)
            #expect(abs(n1.lastSeenAt.timeIntervalSince(t)) < 0.01)
            let n2 = try #require(try await store.worker(namespace: "n2"))
            #expect(n2.models == ["m"])
            #expect(abs(n2.lastSeenAt.timeIntervalSince(t)) < 0.01)
            #expect(try await store.worker(namespace: "n3")?.status == .offline)
            try store.close()
        }
    }

    @Test func concurrentClaimsHaveOneWinner() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        var users: [Int64] = []
        for i in 0..<6 { users.append(try await store.createUser(name: "u\(i)").id) }
        let winners = await withTaskGroup(of: Int64?.self) { group in
            for u in users {
                group.addTask { (try? await store.claimNamespace(namespace: "contested", userID: u)).map { _ in u } }
            }
            var out: [Int64] = []
            for await w in group { if let w { out.append(w) } }
            return out
        }
        #expect(winners.count == 1)
        #expect(try await store.namespaceOwner("contested") == winners.first)
    }
}

@Suite struct UsageTests {
    @Test func usageRowsAreRecordedAndListed() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            let (_, tok) = try await store.createToken(user: "alice")
            let t0 = Date(timeIntervalSince1970: 1_800_000_000)
            let id = try await store.recordUsage(
                requestID: "req-1", userID: tok.userID, tokenID: tok.id, model: "llama3", namespace: "gpu-1",
                statusCode: 200, promptTokens: 12, completionTokens: 34, durationMS: 567, createdAt: t0)
            #expect(id > 0)
            try await store.recordUsage([
                UsageRecord(requestID: "req-2", userID: tok.userID, tokenID: tok.id, model: "llama3", namespace: nil,
                            statusCode: 502, durationMS: 8, createdAt: t0.addingTimeInterval(1)),
                UsageRecord(requestID: "req-3", userID: 999, tokenID: nil, model: "qwen", namespace: "gpu-2",
                            statusCode: 200, promptTokens: 1, completionTokens: nil, durationMS: 9, createdAt: t0.addingTimeInterval(2)),
            ])
            try await store.recordUsage([])

            let all = try await store.listUsage()
            #expect(all.map(\.requestID) == ["req-3", "req-2", "req-1"])
            let mine = try await store.listUsage(userID: tok.userID)
            #expect(mine.map(\.requestID) == ["req-2", "req-1"])
            let first = try #require(mine.last)
            #expect(first.id == id)
            #expect(first.tokenID == tok.id)
            #expect(first.model == "llama3")
            #expect(first.namespace == "gpu-1")
            #expect(first.statusCode == 200)
            #expect(first.promptTokens == 12)
            #expect(first.completionTokens == 34)
            #expect(first.durationMS == 567)
            #expect(first.createdAt == t0)
            let failed = try #require(mine.first)
            #expect(failed.promptTokens == nil && failed.completionTokens == nil && failed.namespace == nil)
            #expect(try await store.listUsage(since: t0.addingTimeInterval(1)).count == 2)
            #expect(try await store.listUsage(limit: 1).count == 1)
            try store.close()
        }
    }

    @Test func concurrentUsageWritesAllLand() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<200 {
                    group.addTask {
                        try await store.recordUsage(
                            requestID: "r\(i)", userID: 1, tokenID: 1, model: "m", namespace: "n",
                            statusCode: 200, durationMS: i)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await store.listUsage(limit: 1000).count == 200)
            try store.close()
        }
    }
}
