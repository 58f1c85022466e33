import Logging
import Testing
import TokiProtocol
import TokiStore
import TokiTunnel

@testable import TokiHub

@Suite("worker admission over the store")
struct WorkerAdmissionTests {
    func admission() async throws -> (any WorkerAdmission, HubStore, alice: String, bob: String) {
        let store = try HubStore.inMemory(logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let alice = try await store.createToken(user: "alice").plaintext
        let bob = try await store.createToken(user: "bob", group: "vip").plaintext
        return (StoreWorkerAdmission(tokens: TokenCache(store: store, ttl: .seconds(10)), directory: store), store, alice, bob)
    }

    @Test func tokensBecomePrincipals() async throws {
        let (admission, _, alice, _) = try await admission()
        let principal = try #require(await admission.authenticate(token: alice))
        #expect(principal.userName == "alice")
        #expect(principal.group == "default")
        #expect(principal.tokenID != nil)
        #expect(await admission.authenticate(token: "sk-toki-nope") == nil)
    }

    @Test func theVerdictCarriesUserWorkerAndGroups() async throws {
        let (admission, store, alice, _) = try await admission()
        let principal = try #require(await admission.authenticate(token: alice))
        let verdict = try await admission.admit(.init(namespace: "gpu-1", nodeName: "box", models: ["m"], groups: []), for: principal)
        #expect(verdict.userID == principal.userID)
        #expect(verdict.namespace == "gpu-1")
        #expect(verdict.groups == ["default"])
        #expect(verdict.workerID == (try await store.workerID(namespace: "gpu-1")))
        // The owner may come back; the same worker id.
        let again = try await admission.admit(.init(namespace: "gpu-1", nodeName: "box", models: ["m"], groups: ["default"]), for: principal)
        #expect(again.workerID == verdict.workerID)
    }

    @Test func namespacesBelongToTheirFirstUser() async throws {
        let (admission, _, alice, bob) = try await admission()
        let a = try #require(await admission.authenticate(token: alice))
        let b = try #require(await admission.authenticate(token: bob))
        _ = try await admission.admit(.init(namespace: "gpu-1", nodeName: "x", models: ["m"], groups: []), for: a)
        await #expect(throws: AdmissionRefusal.self) {
            _ = try await admission.admit(.init(namespace: "gpu-1", nodeName: "x", models: ["m"], groups: []), for: b)
        }
        do {
            _ = try await admission.admit(.init(namespace: "gpu-1", nodeName: "x", models: ["m"], groups: []), for: b)
        } catch {
            #expect(error.code == TunnelProtocol.HubErrorCode.namespaceNotOwned)
        }
    }

    @Test func groupsStayWithinTheOwnersGroup() async throws {
        let (admission, _, alice, _) = try await admission()
        let a = try #require(await admission.authenticate(token: alice))
        #expect(try await admission.authorizeGroups(["default"], for: a) == ["default"])
        do {
            _ = try await admission.authorizeGroups(["default", "vip"], for: a)
            Issue.record("vip was authorised for a default user")
        } catch {
            #expect(error == .groupNotAuthorized(group: "vip"))
            #expect(error.code == TunnelProtocol.HubErrorCode.groupNotAuthorized)
            #expect(error.message == "group vip is not authorized for current user")
        }
        do {
            _ = try await admission.admit(.init(namespace: "n", nodeName: "n", models: ["m"], groups: ["vip"]), for: a)
            Issue.record("vip was admitted for a default user")
        } catch {
            #expect(error.code == TunnelProtocol.HubErrorCode.groupNotAuthorized)
        }
    }
}
