import Logging
import Testing
import TokiStore
@testable import TokiHub

@Suite struct PresenceRecorderTests {
    func recorder() throws -> PresenceRecorder {
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        return PresenceRecorder(store: try HubStore.inMemory(logger: logger), logger: logger, refreshInterval: .seconds(60))
    }

    /// 10,000 workers heartbeat every 15 s: only one heartbeat a minute each reaches the store,
    /// while registrations, model changes and departures always do.
    @Test func heartbeatsThatChangeNothingAreWrittenOnceAMinute() throws {
        let presence = try recorder()
        let t0 = ContinuousClock.now
        presence.seen("a", models: ["m"], now: t0)                      // registration
        #expect(presence.takePending().count == 1)
        presence.seen("a", models: nil, now: t0 + .seconds(15))         // heartbeat
        presence.seen("a", models: nil, now: t0 + .seconds(30))
        #expect(presence.takePending().isEmpty)
        presence.seen("a", models: ["m", "n"], now: t0 + .seconds(45))  // a model change
        presence.seen("a", models: nil, now: t0 + .seconds(46))         // keeps the pending change
        guard case .online(let models?)? = presence.takePending()["a"] else { Issue.record("model change lost"); return }
        #expect(models == ["m", "n"])
        presence.seen("a", models: nil, now: t0 + .seconds(110))        // over a minute since the change
        #expect(presence.takePending().count == 1)
        presence.departed("a")
        guard case .offline? = presence.takePending()["a"] else { Issue.record("departure not recorded"); return }
        presence.seen("a", models: nil, now: t0 + .seconds(111))        // back at once: written
        #expect(presence.takePending().count == 1)
    }

    @Test func modelListsAreNormalizedAndAlreadyNormalOnesKept() {
        #expect(WorkerSessionHandler.normalizeModels(["a", "b", "c"]) == ["a", "b", "c"])
        #expect(WorkerSessionHandler.normalizeModels([" b", "a", "a", "", "c\n"]) == ["a", "b", "c"])
        #expect(WorkerSessionHandler.normalizeModels(["b", "a"]) == ["a", "b"])
        #expect(WorkerSessionHandler.normalizeModels(["a", "a"]) == ["a"])
        #expect(WorkerSessionHandler.normalizeModels(["modèle ", "é"]) == ["modèle", "é"])
    }
}

@Suite struct FlushingTests {
    @Test("the recorders' writes never inherit the shutdown's cancellation (the store refused them, and the last records were lost)")
    func writesAreNotCancelled() async throws {
        let writes = Locked<[Bool]>([])
        let loop = Task {
            await runFlushing(every: .milliseconds(20)) { writes.withLock { $0.append(Task.isCancelled) } }
        }
        while writes.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(10)) }
        loop.cancel()
        await loop.value
        let seen = writes.withLock { $0 }
        #expect(seen.count >= 3, "the periodic writes and the last one after cancellation")
        #expect(!seen.contains(true), "a write ran cancelled: \(seen)")
    }
}
