import Foundation
import Testing
@testable import TokiStore

@Suite struct CheckpointTests {
    @Test func commitsLeaveTheLogToCheckpointWhichCopiesAllOfIt() async throws {
        try await withTempDataDir { dir in
            let store = try HubStore(dataDirectory: dir, logger: quietLogger)
            let (_, token) = try await store.createToken(user: "alice")
            // One transaction per row, as under light load: SQLite's default would have
            // checkpointed inside a commit after 1000 pages.
            for i in 0..<400 {
                try await store.recordUsage(requestID: "r\(i)", userID: token.userID, tokenID: token.id, model: "m",
                                            namespace: nil, statusCode: 200, durationMS: 1)
            }
            let first = try #require(try await store.checkpoint())
            #expect(first.logFrames > 1000)
            #expect(first.checkpointed == first.logFrames)
            // Nothing new: a second checkpoint copies nothing more.
            let second = try #require(try await store.checkpoint())
            #expect(second.checkpointed == second.logFrames)
            #expect(try await store.listUsage(limit: 1000).count == 400)
            try store.close()
        }
    }

    @Test func anInMemoryStoreHasNoLog() async throws {
        let store = try HubStore.inMemory(logger: quietLogger)
        #expect(try await store.checkpoint() == nil)
    }
}
