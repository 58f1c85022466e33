import ServiceLifecycle

/// Deadlines for many sessions and requests with one task: a worker that does not answer in time,
/// a silent worker to probe, a session past its heartbeat deadline. 10,000 idle sessions each hold
/// one entry, so nothing here may cost per entry per tick: entries sit in 250 ms buckets (a hashed
/// timing wheel keyed by tick number), and a sweep visits only the buckets that came due.
/// Arm, re-arm and disarm are O(1) under one short lock.
final class DeadlineSweeper: Service, Sendable {
    static let resolution: Duration = .milliseconds(250)

    private struct Entry {
        var tick: Int64
        var action: @Sendable () -> Void
    }

    private struct Wheel {
        var entries: [UInt64: Entry] = [:]
        var buckets: [Int64: Set<UInt64>] = [:]
        var nextID: UInt64 = 0
        /// Every bucket up to and including this tick has been swept.
        var swept: Int64 = 0

        mutating func remove(_ id: UInt64) -> Entry? {
            guard let entry = entries.removeValue(forKey: id) else { return nil }
            buckets[entry.tick]?.remove(id)
            if buckets[entry.tick]?.isEmpty == true { buckets[entry.tick] = nil }
            return entry
        }
    }

    private let origin = ContinuousClock.now
    private let wheel = Locked(Wheel())

    func makeID() -> UInt64 { wheel.withLock { $0.nextID += 1; return $0.nextID } }

    /// Arms `id` (replacing an earlier deadline of the same id): `action` runs once, between
    /// `delay` and `delay` + one resolution from now, unless disarmed first.
    func arm(_ id: UInt64, after delay: Duration, action: @escaping @Sendable () -> Void) {
        let tick = self.tick(of: .now + delay, roundingUp: true)
        wheel.withLock { wheel in
            _ = wheel.remove(id)
            // A deadline in a bucket already swept goes to the next sweep.
            let due = max(tick, wheel.swept + 1)
            wheel.entries[id] = Entry(tick: due, action: action)
            wheel.buckets[due, default: []].insert(id)
        }
    }

    func disarm(_ id: UInt64) {
        wheel.withLock { _ = $0.remove(id) }
    }

    /// Armed deadlines and non-empty buckets (tests: both return to zero).
    var count: (entries: Int, buckets: Int) { wheel.withLock { ($0.entries.count, $0.buckets.count) } }

    /// Runs every action whose deadline is at or before `now`; returns how many ran.
    @discardableResult
    func sweep(now: ContinuousClock.Instant = .now) -> Int {
        let current = tick(of: now, roundingUp: false)
        let due = wheel.withLock { wheel -> [@Sendable () -> Void] in
            guard current > wheel.swept else { return [] }
            var actions: [@Sendable () -> Void] = []
            // Visit only ticks that have buckets: after a long pause, don't walk every empty tick.
            let ticks: [Int64] = current - wheel.swept > Int64(wheel.buckets.count)
                ? wheel.buckets.keys.filter { $0 <= current }
                : Array((wheel.swept + 1)...current)
            for tick in ticks {
                for id in wheel.buckets.removeValue(forKey: tick) ?? [] {
                    if let entry = wheel.entries.removeValue(forKey: id) { actions.append(entry.action) }
                }
            }
            wheel.swept = current
            if wheel.entries.isEmpty, wheel.entries.capacity > 1024 {  // give back a departed fleet's capacity
                wheel.entries = [:]
                wheel.buckets = [:]
            }
            return actions
        }
        for action in due { action() }
        return due.count
    }

    /// Until graceful shutdown (or cancellation).
    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.resolution)
                self.sweep()
            }
        }
    }

    private func tick(of instant: ContinuousClock.Instant, roundingUp: Bool) -> Int64 {
        let resolution = Self.nanoseconds(Self.resolution)
        let nanos = Self.nanoseconds(instant - origin)
        var tick = nanos / resolution
        if roundingUp, nanos % resolution != 0 { tick += 1 }
        return tick
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }
}
