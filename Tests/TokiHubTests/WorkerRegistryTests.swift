import Logging
import TokiMux
import TokiTunnel
import Testing
@testable import TokiHub

@Suite struct WorkerRegistryTests {
    func worker(_ namespace: String, models: Set<String>, groups: Set<String> = ["default"], userID: Int64 = 1) throws -> WorkerConnection {
        let session = try MuxSession(role: .server)
        return WorkerConnection(sessionID: 0, namespace: namespace, principal: WorkerPrincipal(userID: userID, userName: "u\(userID)", group: "default"), workerID: 1, nodeName: namespace, groups: groups,
                         models: models, hardwareInfo: nil,
                         route: SessionRoute(session: session, control: ControlChannel(try session.openStream()),
                                             link: WorkerLink(activity: LinkActivity(), ping: {}), namespace: namespace),
                         logger: Logger(label: "test"))
    }

    @Test("a new session of the same owner takes the namespace over; the stale one's departure changes nothing")
    func sameOwnerTakesOver() throws {
        let registry = WorkerRegistry()
        let stale = try worker("a", models: ["llama"])
        #expect(registry.claim(stale))
        let fresh = try worker("a", models: ["qwen"])
        #expect(registry.claim(fresh))
        #expect(registry.worker(namespace: "a") === fresh)
        #expect(registry.candidates(model: "llama", group: "default").isEmpty)
        #expect(registry.candidates(model: "qwen", group: "default").map(\.namespace) == ["a"])
        #expect(!stale.begin(requestID: "r1"))  // closed: no request starts on it
        #expect(!registry.release(stale))  // its late departure does not unregister the new one
        #expect(registry.worker(namespace: "a") === fresh)
        #expect(registry.release(fresh))
        #expect(registry.workers.isEmpty)
    }

    @Test func theIndexFollowsRegistrationChangesAndDeparture() throws {
        let registry = WorkerRegistry()
        let a = try worker("a", models: ["llama", "qwen"])
        let b = try worker("b", models: ["llama"], groups: ["vip"])
        #expect(registry.claim(a))
        #expect(registry.claim(b))
        #expect(!registry.claim(try worker("a", models: ["x"], userID: 2)))  // held by another user's live session
        #expect(registry.candidates(model: "llama", group: "default").map(\.namespace) == ["a"])
        #expect(registry.candidates(model: "llama", group: "vip").map(\.namespace) == ["b"])
        #expect(registry.models(group: "default") == ["llama", "qwen"])

        #expect(registry.update(a, models: ["qwen"]))
        #expect(!registry.update(a, models: ["qwen"]))
        #expect(registry.candidates(model: "llama", group: "default").isEmpty)
        #expect(registry.models(group: "default") == ["qwen"])

        registry.update(b, groups: ["default"])
        #expect(registry.candidates(model: "llama", group: "default").map(\.namespace) == ["b"])
        #expect(registry.models(group: "vip") == [])

        registry.release(a)
        #expect(registry.candidates(model: "qwen", group: "default").isEmpty)
        #expect(registry.models(group: "default") == ["llama"])
        #expect(registry.workers.map(\.namespace) == ["b"])
    }

    @Test func candidatesAreDistinctRoutableAndTheFirstIsTheLessLoadedOfTwo() throws {
        let registry = WorkerRegistry()
        var all: [WorkerConnection] = []
        for i in 0..<50 {
            let w = try worker("w\(i)", models: ["m"])
            for r in 0..<(i % 7) { _ = w.begin(requestID: "r\(r)") }
            #expect(registry.claim(w))
            all.append(w)
        }
        for _ in 0..<200 {
            let picked = registry.candidates(model: "m", group: "default", limit: 3)
            #expect(picked.count == 3)
            #expect(Set(picked.map(\.namespace)).count == 3)
            #expect(picked[0].inFlight <= picked[1].inFlight)
        }
        // Over many draws every worker gets picked first sometimes (no fixed order).
        var firsts = Set<String>()
        for _ in 0..<2000 { firsts.insert(registry.candidates(model: "m", group: "default")[0].namespace) }
        #expect(firsts.count > 40)
    }

    @Test func aWorkerUnderALivenessProbeComesLast() throws {
        let registry = WorkerRegistry()
        let frozen = try worker("frozen", models: ["m"])
        let fine = try worker("fine", models: ["m"])
        _ = fine.begin(requestID: "busy")
        #expect(registry.claim(frozen))
        #expect(registry.claim(fine))
        frozen.state.withLock { $0.probing = true }
        for _ in 0..<20 {
            #expect(registry.candidates(model: "m", group: "default").map(\.namespace) == ["fine", "frozen"])
        }
    }
}
