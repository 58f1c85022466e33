import Synchronization
import Testing
@testable import TokiHub

@Suite struct DeadlineSweeperTests {
    final class Fired: Sendable {
        let ids = Mutex<[Int]>([])
        func record(_ id: Int) -> @Sendable () -> Void { { self.ids.withLock { $0.append(id) } } }
        var all: [Int] { ids.withLock { $0 } }
    }

    @Test func firesOnlyWhatCameDueOnce() {
        let sweeper = DeadlineSweeper()
        let fired = Fired()
        let start = ContinuousClock.now
        let a = sweeper.makeID(), b = sweeper.makeID()
        sweeper.arm(a, after: .seconds(1), action: fired.record(1))
        sweeper.arm(b, after: .seconds(3), action: fired.record(2))
        #expect(sweeper.sweep(now: start) == 0)
        #expect(sweeper.sweep(now: start + .milliseconds(1600)) == 1)
        #expect(fired.all == [1])
        #expect(sweeper.sweep(now: start + .milliseconds(1700)) == 0)  // not twice
        #expect(sweeper.sweep(now: start + .seconds(10)) == 1)
        #expect(fired.all == [1, 2])
        #expect(sweeper.count == (0, 0))
    }

    @Test func rearmingMovesTheDeadlineAndDisarmingForgetsIt() {
        let sweeper = DeadlineSweeper()
        let fired = Fired()
        let start = ContinuousClock.now
        let id = sweeper.makeID()
        sweeper.arm(id, after: .seconds(1), action: fired.record(1))
        sweeper.arm(id, after: .seconds(5), action: fired.record(2))   // a heartbeat re-arms
        #expect(sweeper.count == (1, 1))
        #expect(sweeper.sweep(now: start + .seconds(2)) == 0)
        #expect(sweeper.sweep(now: start + .seconds(6)) == 1)
        #expect(fired.all == [2])
        let other = sweeper.makeID()
        sweeper.arm(other, after: .seconds(1), action: fired.record(3))
        sweeper.disarm(other)
        #expect(sweeper.sweep(now: start + .seconds(60)) == 0)
        #expect(sweeper.count == (0, 0))
    }

    @Test func aDeadlineInTheSweptPastFiresAtTheNextSweep() {
        let sweeper = DeadlineSweeper()
        let fired = Fired()
        sweeper.sweep(now: .now + .seconds(5))   // the wheel is ahead of the clock
        sweeper.arm(sweeper.makeID(), after: .zero, action: fired.record(1))
        #expect(sweeper.sweep(now: .now + .seconds(6)) == 1)
    }

    /// 10,000 sessions re-armed by heartbeats and requests armed and disarmed leave nothing
    /// behind, and a sweep that finds nothing due touches no entry.
    @Test func manyArmsAndDisarmsLeaveNothingBehind() {
        let sweeper = DeadlineSweeper()
        let fired = Fired()
        let start = ContinuousClock.now
        let sessions = (0..<10_000).map { _ in sweeper.makeID() }
        for round in 0..<3 {
            for id in sessions { sweeper.arm(id, after: .seconds(45), action: fired.record(round)) }
            for _ in 0..<1_000 {
                let request = sweeper.makeID()
                sweeper.arm(request, after: .seconds(300), action: fired.record(-1))
                sweeper.disarm(request)
            }
        }
        #expect(sweeper.count.entries == 10_000)
        #expect(sweeper.sweep(now: start + .seconds(1)) == 0)
        for id in sessions { sweeper.disarm(id) }
        #expect(sweeper.count == (0, 0))
        #expect(fired.all.isEmpty)
    }
}
