import CMalloc
import Testing

@testable import TokiHub

/// The limiter on a scripted clock: no test sleeps or measures time.
@Suite(.serialized) struct RateLimiterTests {
    static let t0: UInt64 = 1_000_000_000_000
    static func at(_ seconds: Double) -> UInt64 { t0 + UInt64(seconds * 1e9) }

    func admit(_ limiter: RateLimiter, user: Int64 = 1, _ userLimit: RateLimit = .unlimited, token: Int64? = 100,
               _ tokenLimit: RateLimit = .unlimited, estimate: Int = 0, at seconds: Double) -> Result<RateLimiter.Permit, RateLimitRefusal> {
        switch limiter.admit(user: user, userLimit: userLimit, token: token, tokenLimit: tokenLimit,
                             estimatedTokens: estimate, now: Self.at(seconds)) {
        case .admitted(let permit): .success(permit)
        case .refused(let refusal): .failure(refusal)
        }
    }

    @Test func rpmRefusesTheNextRequestInTheWindowAndAdmitsAsItSlides() throws {
        let limiter = RateLimiter()
        let limit = RateLimit(rpm: 3)
        for _ in 0..<3 { _ = try admit(limiter, token: 7, limit, at: 0).get() }
        let refused = try #require(admit(limiter, token: 7, limit, at: 0).failure)
        #expect(refused.kind == .requests)
        #expect(refused.scope == .token)
        #expect(refused.limit == 3)
        #expect(refused.remaining == 0)
        #expect(refused.retryAfter == 20)  // one request's share of the minute
        #expect(refused.resetSeconds == 60)
        #expect(!refused.exceedsLimit)
        #expect(admit(limiter, token: 7, limit, at: 19.9).failure != nil)
        _ = try admit(limiter, token: 7, limit, at: 20).get()  // one slid out
        #expect(admit(limiter, token: 7, limit, at: 20).failure?.kind == .requests)
        // A whole window later, the full limit again.
        for _ in 0..<3 { _ = try admit(limiter, token: 7, limit, at: 80).get() }
        #expect(admit(limiter, token: 7, limit, at: 80).failure != nil)
        // Another token is not affected.
        _ = try admit(limiter, token: 8, limit, at: 80).get()
    }

    @Test func tpmRefusesBeforeRoutingOnTheEstimateAndChargesTheActualCount() throws {
        let limiter = RateLimiter()
        let limit = RateLimit(tpm: 1000)
        let first = try admit(limiter, token: 1, limit, estimate: 600, at: 0).get()
        #expect(first.status.tokens?.remaining == 400)
        let refused = try #require(admit(limiter, token: 1, limit, estimate: 500, at: 0).failure)
        #expect(refused.kind == .tokens)
        #expect(refused.remaining == 400)
        #expect(refused.requested == 500)
        #expect(refused.retryAfter == 6)  // 100 tokens of a 1000-per-minute window
        #expect(refused.type == "tokens")
        // The request used less than estimated: the rest is given back.
        #expect(first.complete(tokens: 200, now: Self.at(0)))
        #expect(limiter.status(user: 1, userLimit: .unlimited, token: 1, tokenLimit: limit, now: Self.at(0)).tokens?.remaining == 800)
        let second = try admit(limiter, token: 1, limit, estimate: 500, at: 0).get()
        #expect(second.status.tokens?.remaining == 300)
        // It used more than estimated: the difference is charged, past the limit.
        second.complete(tokens: 900, now: Self.at(0))
        let after = limiter.status(user: 1, userLimit: .unlimited, token: 1, tokenLimit: limit, now: Self.at(0))
        #expect(after.tokens?.remaining == 0)
        #expect(after.tokens?.resetNanoseconds == 66_000_000_000)  // 1100 tokens at 1000/min
        #expect(admit(limiter, token: 1, limit, estimate: 0, at: 5).failure?.retryAfter == 1)
        _ = try admit(limiter, token: 1, limit, estimate: 0, at: 6).get()
        // An estimate larger than the whole limit can never pass.
        let tooLarge = try #require(admit(limiter, token: 2, limit, estimate: 1001, at: 0).failure)
        #expect(tooLarge.exceedsLimit)
        #expect(tooLarge.message.hasPrefix("Request too large"))
    }

    @Test func concurrencyRefusesTheNextAndReleasesOnceOnComplete() throws {
        let limiter = RateLimiter()
        let limit = RateLimit(concurrency: 2)
        let a = try admit(limiter, token: 1, limit, at: 0).get()
        let b = try admit(limiter, token: 1, limit, at: 0).get()
        let refused = try #require(admit(limiter, token: 1, limit, at: 0).failure)
        #expect(refused.kind == .concurrency)
        #expect(refused.limit == 2)
        #expect(refused.retryAfter == 1)
        #expect(refused.headers.map(\.0) == ["retry-after"])  // no per-minute limit configured
        #expect(a.complete(tokens: 10, now: Self.at(1)))
        let c = try admit(limiter, token: 1, limit, at: 1).get()
        // Completing again (this copy or another) releases nothing more.
        let copy = a
        #expect(!a.complete(tokens: 10, now: Self.at(1)))
        #expect(!copy.complete(tokens: nil, now: Self.at(1)))
        #expect(admit(limiter, token: 1, limit, at: 1).failure?.kind == .concurrency)
        #expect(limiter.permitsInFlight == 2)
        b.complete(tokens: nil, now: Self.at(2))
        c.complete(tokens: nil, now: Self.at(2))
        #expect(limiter.permitsInFlight == 0)
        // The released slot of `a` went to a new permit: `a` must not release that one.
        let d = try admit(limiter, token: 1, limit, at: 3).get()
        #expect(!a.complete(tokens: nil, now: Self.at(3)))
        #expect(limiter.permitsInFlight == 1)
        d.complete(tokens: nil, now: Self.at(3))
    }

    @Test func aForgottenPermitIsReclaimedAfterTheLease() throws {
        let limiter = RateLimiter(permitLease: .seconds(600), shards: 1)
        let limit = RateLimit(concurrency: 1)
        let forgotten = try admit(limiter, token: 1, limit, at: 0).get()
        #expect(admit(limiter, token: 1, limit, at: 599).failure?.kind == .concurrency)
        let next = try admit(limiter, token: 1, limit, at: 601).get()
        #expect(!forgotten.complete(tokens: nil, now: Self.at(602)))  // already reclaimed
        #expect(next.complete(tokens: nil, now: Self.at(602)))
    }

    @Test func theUserLimitAppliesAcrossItsTokens() throws {
        let limiter = RateLimiter()
        let user = RateLimit(rpm: 2, concurrency: 3)
        let token = RateLimit(rpm: 5)
        _ = try admit(limiter, user: 42, user, token: 1, token, at: 0).get()
        _ = try admit(limiter, user: 42, user, token: 2, token, at: 0).get()
        let refused = try #require(admit(limiter, user: 42, user, token: 1, token, at: 0).failure)
        #expect(refused.kind == .requests)
        #expect(refused.scope == .user)
        #expect(refused.limit == 2)
        // Nothing was charged to the token by the refused request; the headers show the tighter key.
        let status = limiter.status(user: 42, userLimit: .unlimited, token: 1, tokenLimit: token, now: Self.at(0))
        #expect(status.requests?.remaining == 4)
        #expect(refused.status.requests?.limit == 2)
        #expect(refused.status.requests?.remaining == 0)
        // Another user is not affected.
        _ = try admit(limiter, user: 43, user, token: 3, token, at: 0).get()
        // A token with no limits of its own still counts against its user.
        #expect(admit(limiter, user: 42, user, token: 4, .unlimited, at: 0).failure?.scope == .user)
    }

    @Test func headersForAScriptedSequence() throws {
        let limiter = RateLimiter()
        let limit = RateLimit(rpm: 3, tpm: 1000)
        let first = try admit(limiter, token: 1, limit, estimate: 100, at: 0).get()
        #expect(first.status.headers().map { "\($0.0): \($0.1)" } == [
            "x-ratelimit-limit-requests: 3", "x-ratelimit-remaining-requests: 2", "x-ratelimit-reset-requests: 20s",
            "x-ratelimit-limit-tokens: 1000", "x-ratelimit-remaining-tokens: 900", "x-ratelimit-reset-tokens: 6s",
        ])
        let second = try admit(limiter, token: 1, limit, at: 1.5).get()
        #expect(second.status.headers().map(\.1) == ["3", "1", "38.5s", "1000", "925", "4.5s"])
        let third = try admit(limiter, token: 1, limit, at: 1.5).get()
        #expect(third.status.headers().map(\.1) == ["3", "0", "58.5s", "1000", "925", "4.5s"])
        let refused = try #require(admit(limiter, token: 1, limit, at: 1.5).failure)
        #expect(refused.headers.map { "\($0.0): \($0.1)" } == [
            "x-ratelimit-limit-requests: 3", "x-ratelimit-remaining-requests: 0", "x-ratelimit-reset-requests: 58.5s",
            "x-ratelimit-limit-tokens: 1000", "x-ratelimit-remaining-tokens: 925", "x-ratelimit-reset-tokens: 4.5s",
            "retry-after: 19",
        ])
        #expect(refused.message == "Rate limit reached for this API key on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 19s.")
        // Only configured limits: RPM from the token, TPM from the user.
        let mixed = try admit(limiter, user: 9, RateLimit(tpm: 50_000), token: 2, RateLimit(rpm: 60), estimate: 1000, at: 0).get()
        #expect(mixed.status.headers().map(\.1) == ["60", "59", "1s", "50000", "49000", "1.2s"])
        // No limits: no headers.
        let free = try admit(limiter, token: 3, .unlimited, at: 0).get()
        #expect(free.status.headers().isEmpty)
        #expect(!free.complete(tokens: 5))

        #expect(RateLimitStatus.formatDuration(nanoseconds: 0) == "0s")
        #expect(RateLimitStatus.formatDuration(nanoseconds: 1) == "1ms")
        #expect(RateLimitStatus.formatDuration(nanoseconds: 7_000_000) == "7ms")
        #expect(RateLimitStatus.formatDuration(nanoseconds: 8_640_000_000) == "8.64s")
        #expect(RateLimitStatus.formatDuration(nanoseconds: 360_000_000_000) == "6m0s")
        #expect(RateLimitStatus.formatDuration(nanoseconds: 3_723_050_000_000) == "1h2m3.05s")
    }

    @Test func theTableStaysBoundedOverManyKeys() throws {
        // 100,000 users, 100 new ones a second: only the last two minutes' (plus the sweep's lag) stay.
        let limiter = RateLimiter()
        let limit = RateLimit(rpm: 60, tpm: 100_000, concurrency: 4)
        var peak = 0
        for user in 0..<100_000 {
            let seconds = Double(user) / 100
            let permit = try admit(limiter, user: Int64(user), limit, token: nil, estimate: 10, at: seconds).get()
            permit.complete(tokens: 20, now: Self.at(seconds))
            if user % 1000 == 0 { peak = max(peak, limiter.keyCount) }
        }
        #expect(peak > 12_000)  // at least the keys seen in the last two minutes
        #expect(peak < 30_000)
        #expect(limiter.permitsInFlight == 0)

        // The hard cap, with every key fresh: new keys displace idle ones.
        let capped = RateLimiter(maxKeys: 1024, shards: 1)
        for user in 0..<100_000 {
            let permit = try admit(capped, user: Int64(user), limit, token: nil, at: 0).get()
            permit.complete(tokens: 1, now: Self.at(0))
        }
        #expect(capped.keyCount == 1024)

        // At the cap with every key busy, a new key is refused rather than stored.
        let full = RateLimiter(maxKeys: 4, shards: 1)
        let busy = try (0..<4).map { try admit(full, user: Int64($0), limit, token: nil, at: 0).get() }
        let refused = try #require(admit(full, user: 99, limit, token: nil, at: 0).failure)
        #expect(refused.kind == .capacity)
        busy[0].complete(tokens: nil, now: Self.at(0))
        _ = try admit(full, user: 99, limit, token: nil, at: 0).get()
        #expect(full.keyCount == 4)
    }

    @Test func admitAndCompleteKeepNoMemoryForAKnownKey() throws {
        let limiter = RateLimiter()
        let user = RateLimit(rpm: 1_000_000_000, tpm: 1_000_000_000, concurrency: 10)
        let token = RateLimit(rpm: 1_000_000_000)
        var admitted = 0
        func cycle(_ i: Int) {
            if case .admitted(let permit) = limiter.admit(user: 5, userLimit: user, token: 6, tokenLimit: token,
                                                        estimatedTokens: 100, now: Self.t0 + UInt64(i)) {
                if permit.complete(tokens: 50, now: Self.t0 + UInt64(i)) { admitted += 1 }
            }
        }
        for i in 0..<1000 { cycle(i) }
        var deltas: [Int] = []
        deltas.reserveCapacity(3)
        for round in 0..<3 {
            let before = toki_heap_in_use()
            for i in 0..<10_000 { cycle(1000 + round * 10_000 + i) }
            deltas.append(Int(toki_heap_in_use()) - Int(before))
        }
        #expect(admitted == 31_000)
        // Retained growth only (glibc counts bytes in use, not calls): under 1 byte per 10 calls.
        // Transient allocations were checked once under heaptrack: none in admit/complete.
        #expect(deltas.min()! < 1000, "heap grew by \(deltas) bytes over 10,000 admit+complete")
    }

    @Test func addressWindows() {
        let redeem = AddressLimiter(limit: 3, window: .seconds(60))
        for _ in 0..<3 { #expect(redeem.allow("203.0.113.5", now: Self.at(0))) }
        #expect(!redeem.allow("203.0.113.5", now: Self.at(1)))
        #expect(!redeem.allow("203.0.113.5:5123", now: Self.at(1)))  // the port does not matter
        #expect(!redeem.allow("::ffff:203.0.113.5", now: Self.at(1)))  // nor the IPv4-mapped form
        #expect(redeem.retryAfter("203.0.113.5", now: Self.at(1.5)) == 59)
        #expect(redeem.allow("203.0.113.6", now: Self.at(1)))
        #expect(redeem.allow("203.0.113.5", now: Self.at(60)))  // a new window

        // IPv6 counts per /64.
        for i in 1...3 { #expect(redeem.allow("2001:db8:0:1::\(i)", now: Self.at(0))) }
        #expect(!redeem.allow("[2001:db8:0:1:ffff::9]:443", now: Self.at(0)))
        #expect(redeem.allow("2001:db8:0:2::1", now: Self.at(0)))
        #expect(AddressKey("fe80::1%eth0") == AddressKey("fe80::2"))
        #expect(AddressKey("localhost") != AddressKey("127.0.0.1"))

        let auth = AddressLimiter(limit: 2, window: .seconds(60))
        #expect(!auth.isBlocked("198.51.100.1", now: Self.at(0)))
        #expect(auth.count == 0)  // a check stores nothing
        auth.recordFailure("198.51.100.1", now: Self.at(0))
        #expect(!auth.isBlocked("198.51.100.1", now: Self.at(0)))
        auth.recordFailure("198.51.100.1", now: Self.at(10))
        #expect(auth.isBlocked("198.51.100.1", now: Self.at(10)))
        #expect(!auth.isBlocked("198.51.100.2", now: Self.at(10)))
        #expect(!auth.isBlocked("198.51.100.1", now: Self.at(60)))
    }

    @Test func addressTableStaysBounded() {
        let limiter = AddressLimiter(limit: 10, window: .seconds(60))
        var peak = 0
        for i in 0..<100_000 {
            let address = "10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)"
            _ = limiter.allow(address, now: Self.at(Double(i) / 100))
            if i % 1000 == 0 { peak = max(peak, limiter.count) }
        }
        #expect(peak > 6000)
        #expect(peak < 20_000)

        let capped = AddressLimiter(limit: 1, window: .seconds(60), maxAddresses: 1000)
        for i in 0..<100_000 { #expect(capped.allow("10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)", now: Self.at(0))) }
        #expect(capped.count == 1000)
    }
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
