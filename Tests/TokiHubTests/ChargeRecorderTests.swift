import Foundation
import Logging
import Synchronization
import Testing
import TokiStore
@testable import TokiHub

/// A ledger that records the batches it is given (and can be told to fail).
final class BatchLedger: BillingLedger, Sendable {
    let batches = Mutex<[[String]]>([])
    let failing = Atomic<Bool>(false)

    func commitCharges(_ charges: [Charge], now: Date) async throws -> ChargeOutcome {
        // A write takes a while (others queue meanwhile), and a cancelled caller does not stop it.
        await Task.detached { try? await Task.sleep(for: .milliseconds(2)) }.value
        if failing.load(ordering: .relaxed) { throw StoreError.database("disk full") }
        batches.withLock { $0.append(charges.map(\.chargeID)) }
        return ChargeOutcome()
    }
    func balances(userIDs: [Int64]) async throws -> [Int64: Money] { [:] }
    func pricingTable() async throws -> PricingTable { PricingTable() }
    func usableGroups(userID: Int64, now: Date) async throws -> [String] { [] }
}

@Suite struct ChargeRecorderTests {
    static func charge(_ id: String, cost: Int64 = 1) -> Charge {
        Charge(chargeID: id, usage: UsageRecord(requestID: id, userID: 1, tokenID: 1, model: "m", namespace: nil, statusCode: 200, durationMS: 1),
               cost: Money(nanos: cost), creditUserID: nil)
    }

    static func running(_ recorder: ChargeRecorder, _ body: () async throws -> Void) async throws {
        let task = Task { try await recorder.run() }
        // `run` opens the queue; until then commits write inline.
        try await Task.sleep(for: .milliseconds(20))
        try await body()
        task.cancel()
    }

    @Test func concurrentCommitsAreWrittenOnceEachInFewerTransactions() async throws {
        let ledger = BatchLedger()
        let recorder = ChargeRecorder(ledger: ledger, billing: nil, logger: Logger(label: "test"))
        try await Self.running(recorder) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<200 { group.addTask { try await recorder.commit(Self.charge("c\(i)")) } }
                try await group.waitForAll()
            }
        }
        let batches = ledger.batches.withLock { $0 }
        let written = batches.flatMap { $0 }
        #expect(written.count == 200)
        #expect(Set(written).count == 200)
        #expect(batches.count < 200, "no batching: \(batches.count) transactions for 200 charges")
    }

    @Test func aFailedWriteFailsEveryWaiterInItAndTheNextWriteWorks() async throws {
        let ledger = BatchLedger()
        let recorder = ChargeRecorder(ledger: ledger, billing: nil, logger: Logger(label: "test"))
        try await Self.running(recorder) {
            ledger.failing.store(true, ordering: .relaxed)
            let failures = try await withThrowingTaskGroup(of: Bool.self) { group in
                for i in 0..<20 { group.addTask { (try? await recorder.commit(Self.charge("f\(i)"))) == nil } }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(failures == 20)
            ledger.failing.store(false, ordering: .relaxed)
            try await recorder.commit(Self.charge("after"))
        }
        #expect(ledger.batches.withLock { $0.flatMap { $0 } } == ["after"])
    }

    @Test func freeRowsAreWrittenWithoutAnyoneWaiting() async throws {
        let ledger = BatchLedger()
        let recorder = ChargeRecorder(ledger: ledger, billing: nil, logger: Logger(label: "test"), period: .milliseconds(20))
        try await Self.running(recorder) {
            try await recorder.settle(Self.charge("free", cost: 0))
            #expect(ledger.batches.withLock { $0.isEmpty })  // queued, not written in the request's path
            for _ in 0..<500 where ledger.batches.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(ledger.batches.withLock { $0.flatMap { $0 } } == ["free"])
    }
}
