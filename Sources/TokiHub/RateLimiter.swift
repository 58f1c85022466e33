import HTTPTypes
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// In-memory rate limits: requests per minute, tokens per minute and concurrent requests per token
// and per user (`RateLimiter`), and fixed-window attempt counts per source address
// (`AddressLimiter`). Nothing here starts a task or a timer; state is swept lazily, a few entries
// per call. Times are monotonic nanoseconds (`RateLimiter.monotonicNow()`); every entry point takes
// a `now:` so tests script the clock.

/// Limits for one key (a token or a user). `nil` is unlimited; `0` refuses everything.
public struct RateLimit: Sendable, Hashable {
    /// Requests per minute.
    public var rpm: Int?
    /// Tokens (prompt + completion) per minute.
    public var tpm: Int?
    /// Requests in flight at once.
    public var concurrency: Int?

    public init(rpm: Int? = nil, tpm: Int? = nil, concurrency: Int? = nil) {
        self.rpm = rpm
        self.tpm = tpm
        self.concurrency = concurrency
    }

    public static let unlimited = RateLimit()
    public var isUnlimited: Bool { rpm == nil && tpm == nil && concurrency == nil }
}

/// Where a request stands against its per-minute limits, for OpenAI's `x-ratelimit-*` headers.
/// A window is nil when that limit is not configured for the token nor its user; when both are,
/// it is the more restrictive one (fewer remaining).
public struct RateLimitStatus: Sendable, Hashable {
    public struct Window: Sendable, Hashable {
        public var limit: Int
        public var remaining: Int
        /// Time until the window is back to its full `limit` (OpenAI's `x-ratelimit-reset-*`).
        public var resetNanoseconds: UInt64
        public var resetSeconds: Double { Double(resetNanoseconds) / 1e9 }
    }
    public var requests: Window?
    public var tokens: Window?

    public static let none = RateLimitStatus()

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the configured limits, and
    /// `retry-after` (whole seconds) when given.
    public func headers(retryAfter: Int? = nil) -> [(String, String)] {
        var out: [(String, String)] = []
        if let requests {
            out.append(("x-ratelimit-limit-requests", String(requests.limit)))
            out.append(("x-ratelimit-remaining-requests", String(requests.remaining)))
            out.append(("x-ratelimit-reset-requests", RateLimitStatus.formatDuration(nanoseconds: requests.resetNanoseconds)))
        }
        if let tokens {
            out.append(("x-ratelimit-limit-tokens", String(tokens.limit)))
            out.append(("x-ratelimit-remaining-tokens", String(tokens.remaining)))
            out.append(("x-ratelimit-reset-tokens", RateLimitStatus.formatDuration(nanoseconds: tokens.resetNanoseconds)))
        }
        if let retryAfter { out.append(("retry-after", String(retryAfter))) }
        return out
    }

    /// The same headers added to `fields`.
    public func add(to fields: inout HTTPFields, retryAfter: Int? = nil) {
        guard requests != nil || tokens != nil || retryAfter != nil else { return }
        for (name, value) in headers(retryAfter: retryAfter) {
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
    }

    /// A duration as OpenAI writes it (Go's style, to the millisecond, rounded up): `0s`, `7ms`,
    /// `1s`, `8.64s`, `6m0s`, `1h2m3.5s`.
    public static func formatDuration(nanoseconds: UInt64) -> String {
        if nanoseconds == 0 { return "0s" }
        let ms = nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
        if ms < 1000 { return "\(ms)ms" }
        let seconds = ms / 1000, fraction = ms % 1000
        let h = seconds / 3600, m = (seconds % 3600) / 60, s = seconds % 60
        var out = ""
        if h > 0 { out += "\(h)h" }
        if h > 0 || m > 0 { out += "\(m)m" }
        out += String(s)
        if fraction > 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            out += "." + digits
        }
        return out + "s"
    }
}

/// Why a request was refused (answer 429 with `headers`).
public struct RateLimitRefusal: Error, Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// Requests per minute.
        case requests
        /// Tokens per minute.
        case tokens
        /// Requests in flight.
        case concurrency
        /// The limiter's table is full of keys with requests in flight (see `RateLimiter.maxKeys`).
        case capacity
    }
    public enum Scope: String, Sendable, Hashable { case token, user }

    public var kind: Kind
    public var scope: Scope
    /// The configured limit that refused (RPM, TPM or concurrency).
    public var limit: Int
    /// What is left of it now (requests, tokens, or free concurrency slots).
    public var remaining: Int
    /// What the request asked for: 1 request, the token estimate, or 1 slot.
    public var requested: Int
    /// Time until that window is back to its full limit (0 for concurrency).
    public var resetNanoseconds: UInt64
    /// Whole seconds to wait before this request would be admitted, at least 1 (`retry-after`).
    public var retryAfter: Int
    /// The request alone is larger than the limit (an estimate above TPM, or a limit of 0):
    /// waiting does not help.
    public var exceedsLimit: Bool
    /// The per-minute windows at the time of the refusal, for the `x-ratelimit-*` headers.
    public var status: RateLimitStatus

    public var resetSeconds: Double { Double(resetNanoseconds) / 1e9 }

    /// The `x-ratelimit-*` headers of the configured limits plus `retry-after`.
    public var headers: [(String, String)] { status.headers(retryAfter: retryAfter) }

    /// OpenAI's error `type` for the 429 body (`requests` or `tokens`; the code is
    /// `rate_limit_exceeded`).
    public var type: String {
        switch kind {
        case .tokens: "tokens"
        case .requests, .concurrency, .capacity: "requests"
        }
    }

    /// A message in OpenAI's words.
    public var message: String {
        let whose = scope == .token ? "this API key" : "this user"
        let wait = RateLimitStatus.formatDuration(nanoseconds: UInt64(retryAfter) * 1_000_000_000)
        switch kind {
        case .requests where exceedsLimit, .tokens where exceedsLimit:
            let unit = kind == .requests ? "requests per min (RPM)" : "tokens per min (TPM)"
            return "Request too large for \(whose) on \(unit): Limit \(limit), Requested \(requested)."
        case .requests:
            return "Rate limit reached for \(whose) on requests per min (RPM): Limit \(limit), Used \(limit - remaining), Requested \(requested). Please try again in \(wait)."
        case .tokens:
            return "Rate limit reached for \(whose) on tokens per min (TPM): Limit \(limit), Used \(limit - remaining), Requested \(requested). Please try again in \(wait)."
        case .concurrency:
            return "Too many concurrent requests for \(whose): Limit \(limit). Please try again in \(wait)."
        case .capacity:
            return "The rate limiter is at capacity. Please try again in \(wait)."
        }
    }
}

/// A per-minute sliding limit as GCRA (a token bucket of `limit` refilled continuously over a
/// minute): the state is one "theoretical arrival time" `tat`, the instant at which the bucket is
/// full again. Charging `cost` moves it `cost × 60 s / limit` later; a charge is allowed when the
/// debt `tat − now` stays within the minute.
@usableFromInline
enum GCRA {
    static let window: UInt64 = 60_000_000_000
    /// Debt beyond this (an actual usage far above the estimate) is forgiven: a caller who
    /// overspent waits at most about one more minute, as with a sliding window.
    static let maxDebt: UInt64 = 2 * window

    /// `cost × window / limit`, saturating.
    @inline(__always)
    static func increment(_ cost: Int, limit: Int) -> UInt64 {
        guard cost > 0 else { return 0 }
        guard limit > 0 else { return .max / 4 }
        let (high, low) = window.multipliedFullWidth(by: UInt64(cost))
        if high >= UInt64(limit) { return .max / 4 }
        return min(UInt64(limit).dividingFullWidth((high, low)).quotient, .max / 4)
    }

    @inline(__always)
    static func debt(_ tat: UInt64, now: UInt64) -> UInt64 { tat > now ? tat - now : 0 }

    /// What is left of `limit` with this debt, rounded down.
    @inline(__always)
    static func remaining(debt: UInt64, limit: Int) -> Int {
        guard debt < window, limit > 0 else { return 0 }
        let (high, low) = (window - debt).multipliedFullWidth(by: UInt64(limit))
        return Int(window.dividingFullWidth((high, low)).quotient)
    }
}

/// Requests per minute, tokens per minute and concurrent requests per token and per user, in memory.
///
/// On each request the hub calls `admit(user:userLimit:token:tokenLimit:estimatedTokens:)` once
/// (both keys are checked and charged under one lock: nothing is charged when either refuses),
/// answers a `.refused` with 429 and `refusal.headers`, and otherwise adds `permit.status.headers()`
/// to the response and calls `permit.complete(tokens:)` when the request ends — with the usage's
/// total tokens, or `nil` when unknown (failure): then the estimate stays charged. `complete` is
/// idempotent (only the first call of any copy of the permit counts), so the hub can also call it in
/// a `defer`. A permit never completed is reclaimed after `permitLease` (its concurrency slot
/// released, its estimate kept), so a forgotten release cannot hold a slot forever.
///
/// Tokens per minute: the estimate is reserved at admission (so a caller whose estimate exceeds what
/// is left is refused before routing, and a burst cannot all pass on the same remainder), and
/// `complete(tokens:)` charges the difference to the actual count (or refunds it).
///
/// Cost: O(1) per call and no heap allocation for a key already in the table (the table, the permit
/// slots and the free lists only grow to their high-water marks). State lives in `shards` shards,
/// picked by user id; a token's entry lives in its user's shard, so one lock covers both.
///
/// Memory: only keys with a limit are stored (one entry ≈ 80 bytes with its index). A key with no
/// request in flight and full windows is evicted once idle `idleTimeout` (2 minutes), a few entries
/// checked per call; its state is then the same as a fresh key's, so eviction loses nothing. At most
/// `maxKeys` keys (default 1,000,000): a new key at the cap takes the place of one without a request
/// in flight (its windows forgotten); if the shard finds none nearby, the request is refused with
/// `.capacity`.
public final class RateLimiter: Sendable {
    public enum Admission: Sendable {
        case admitted(Permit)
        case refused(RateLimitRefusal)
    }

    /// The right to run one request; `complete` it when the request ends.
    public struct Permit: Sendable {
        @usableFromInline let limiter: RateLimiter?
        @usableFromInline let shard: Int32
        @usableFromInline let slot: Int32
        @usableFromInline let generation: UInt32
        /// The per-minute windows after this request's admission (for the response headers).
        public let status: RateLimitStatus

        /// A permit that tracks nothing (no limits configured).
        public static let unlimited = Permit(limiter: nil, shard: 0, slot: -1, generation: 0, status: .none)

        /// Releases the concurrency slot and settles the token charge with the actual `tokens`
        /// (`nil`: unknown, the estimate stays charged). Only the first call, from any copy of this
        /// permit, has an effect; returns whether this one did.
        @discardableResult
        public func complete(tokens: Int?, now: UInt64 = RateLimiter.monotonicNow()) -> Bool {
            guard let limiter, slot >= 0 else { return false }
            return limiter.complete(shard: Int(shard), slot: slot, generation: generation, tokens: tokens, now: now)
        }
    }

    public static let defaultMaxKeys = 1_000_000

    public let maxKeys: Int
    public let idleTimeout: Duration
    public let permitLease: Duration
    private let shards: [Shard]
    private let mask: UInt64

    /// - Parameters:
    ///   - maxKeys: hard cap on stored keys (tokens + users), spread over the shards.
    ///   - idleTimeout: a key idle this long (nothing in flight, windows full) is evicted.
    ///   - permitLease: a permit not completed after this long is reclaimed.
    ///   - shards: rounded up to a power of two.
    public init(maxKeys: Int = RateLimiter.defaultMaxKeys, idleTimeout: Duration = .seconds(120),
                permitLease: Duration = .seconds(3600), shards: Int = 16) {
        var count = 1
        while count < max(1, shards) { count <<= 1 }
        self.maxKeys = max(maxKeys, count)
        self.idleTimeout = idleTimeout
        self.permitLease = permitLease
        let idle = idleTimeout.nanoseconds, lease = permitLease.nanoseconds
        let perShard = max(1, self.maxKeys / count)
        self.shards = (0..<count).map { _ in Shard(maxKeys: perShard, idle: idle, lease: lease) }
        self.mask = UInt64(count - 1)
    }

    /// Monotonic nanoseconds (CLOCK_MONOTONIC); the default `now` of every call.
    public static func monotonicNow() -> UInt64 {
        NIODeadline.now().uptimeNanoseconds
    }

    /// Checks and charges one request against the token's and the user's limits.
    /// - Parameters:
    ///   - user: the user id (its limits apply across all its tokens).
    ///   - token: the token id, or nil when the request has no token of its own.
    ///   - estimatedTokens: what the request is expected to use (prompt estimate, plus `max_tokens`
    ///     if the hub wants to be strict), reserved against TPM until `complete`.
    public func admit(user: Int64, userLimit: RateLimit, token: Int64?, tokenLimit: RateLimit,
                      estimatedTokens: Int = 0, now: UInt64 = RateLimiter.monotonicNow()) -> Admission {
        let tokenKey: UInt64? = (token != nil && !tokenLimit.isUnlimited) ? Self.key(token!, user: false) : nil
        let userKey: UInt64? = userLimit.isUnlimited ? nil : Self.key(user, user: true)
        if tokenKey == nil && userKey == nil { return .admitted(.unlimited) }
        let index = Int(UInt64(bitPattern: user) & mask)
        let request = Request(tokenKey: tokenKey, tokenLimit: tokenLimit, userKey: userKey, userLimit: userLimit,
                              estimate: max(0, estimatedTokens))
        let outcome = shards[index].state.withLock { $0.admit(request, now: now) }
        switch outcome {
        case .admitted(let slot, let generation, let status):
            return .admitted(Permit(limiter: self, shard: Int32(index), slot: slot, generation: generation, status: status))
        case .refused(let refusal):
            return .refused(refusal)
        }
    }

    /// The current windows of a token and its user, without charging anything.
    public func status(user: Int64, userLimit: RateLimit, token: Int64?, tokenLimit: RateLimit,
                       now: UInt64 = RateLimiter.monotonicNow()) -> RateLimitStatus {
        let tokenKey: UInt64? = (token != nil && !tokenLimit.isUnlimited) ? Self.key(token!, user: false) : nil
        let userKey: UInt64? = userLimit.isUnlimited ? nil : Self.key(user, user: true)
        if tokenKey == nil && userKey == nil { return .none }
        let index = Int(UInt64(bitPattern: user) & mask)
        return shards[index].state.withLock { state in
            var status = RateLimitStatus()
            if let tokenKey { state.merge(into: &status, key: tokenKey, limit: tokenLimit, now: now) }
            if let userKey { state.merge(into: &status, key: userKey, limit: userLimit, now: now) }
            return status
        }
    }

    /// Keys stored (tokens + users), over all shards.
    public var keyCount: Int { shards.reduce(0) { $0 + $1.state.withLock { $0.table.count } } }
    /// Permits not yet completed, over all shards.
    public var permitsInFlight: Int { shards.reduce(0) { $0 + $1.state.withLock { $0.permitsInFlight } } }

    fileprivate func complete(shard: Int, slot: Int32, generation: UInt32, tokens: Int?, now: UInt64) -> Bool {
        shards[shard].state.withLock { $0.complete(slot: slot, generation: generation, tokens: tokens, now: now) }
    }

    /// A token or user id as one table key (ids are non-negative row ids).
    @inline(__always)
    static func key(_ id: Int64, user: Bool) -> UInt64 { UInt64(bitPattern: id) << 1 | (user ? 1 : 0) }

    // MARK: - Shard state

    fileprivate struct Request {
        var tokenKey: UInt64?
        var tokenLimit: RateLimit
        var userKey: UInt64?
        var userLimit: RateLimit
        var estimate: Int
    }

    fileprivate enum Outcome {
        case admitted(slot: Int32, generation: UInt32, status: RateLimitStatus)
        case refused(RateLimitRefusal)
    }

    fileprivate struct Entry: TableValue {
        var requestTAT: UInt64 = 0
        var tokenTAT: UInt64 = 0
        var lastSeen: UInt64 = 0
        var active: Int32 = 0
        /// The TPM the reservation was made with (0: none), for settling at `complete`.
        var tpm: Int = 0

        func isIdle(now: UInt64, idle: UInt64) -> Bool {
            active == 0 && requestTAT <= now && tokenTAT <= now && now &- lastSeen >= idle
        }
        var mayBeDisplaced: Bool { active == 0 }
    }

    fileprivate struct PermitRecord {
        var generation: UInt32 = 0
        var live = false
        var tokenSlot: Int32 = -1
        var userSlot: Int32 = -1
        var reserved = 0
        var admittedAt: UInt64 = 0
    }

    fileprivate struct State {
        var table: KeyTable<UInt64, Entry>
        var permits: [PermitRecord] = []
        var freePermits: [Int32] = []
        var permitCursor = 0
        var permitsInFlight = 0
        let idle: UInt64
        let lease: UInt64

        init(maxKeys: Int, idle: UInt64, lease: UInt64) {
            table = KeyTable(maxKeys: maxKeys)
            self.idle = idle
            self.lease = lease
        }

        mutating func admit(_ request: Request, now: UInt64) -> Outcome {
            table.sweep(steps: 2, now: now, idle: idle)
            reclaimStalePermit(now: now)

            var tokenSlot: Int32 = -1, userSlot: Int32 = -1
            if let key = request.tokenKey {
                guard let slot = table.findOrInsert(key, Entry(lastSeen: now)) else { return .refused(capacityRefusal(.token, request)) }
                tokenSlot = slot
            }
            if let key = request.userKey {
                guard let slot = table.findOrInsert(key, Entry(lastSeen: now)) else { return .refused(capacityRefusal(.user, request)) }
                userSlot = slot
                // Inserting the user at the cap may have displaced the token just inserted.
                if let tokenKey = request.tokenKey, !table.holds(tokenKey, at: tokenSlot) {
                    return .refused(capacityRefusal(.token, request))
                }
            }

            var refusal: RateLimitRefusal?
            if tokenSlot >= 0 {
                check(table.values[Int(tokenSlot)], request.tokenLimit, .token, request.estimate, now: now, worst: &refusal)
            }
            if userSlot >= 0 {
                check(table.values[Int(userSlot)], request.userLimit, .user, request.estimate, now: now, worst: &refusal)
            }
            if var refusal {
                var status = RateLimitStatus()
                if tokenSlot >= 0 { Self.merge(into: &status, table.values[Int(tokenSlot)], request.tokenLimit, now: now) }
                if userSlot >= 0 { Self.merge(into: &status, table.values[Int(userSlot)], request.userLimit, now: now) }
                refusal.status = status
                return .refused(refusal)
            }

            var status = RateLimitStatus()
            if tokenSlot >= 0 {
                Self.charge(&table.values[Int(tokenSlot)], request.tokenLimit, request.estimate, now: now)
                Self.merge(into: &status, table.values[Int(tokenSlot)], request.tokenLimit, now: now)
            }
            if userSlot >= 0 {
                Self.charge(&table.values[Int(userSlot)], request.userLimit, request.estimate, now: now)
                Self.merge(into: &status, table.values[Int(userSlot)], request.userLimit, now: now)
            }
            let slot: Int32
            if let free = freePermits.popLast() {
                slot = free
            } else {
                slot = Int32(permits.count)
                permits.append(PermitRecord())
            }
            permits[Int(slot)].live = true
            permits[Int(slot)].tokenSlot = tokenSlot
            permits[Int(slot)].userSlot = userSlot
            permits[Int(slot)].reserved = request.estimate
            permits[Int(slot)].admittedAt = now
            permitsInFlight += 1
            return .admitted(slot: slot, generation: permits[Int(slot)].generation, status: status)
        }

        mutating func complete(slot: Int32, generation: UInt32, tokens: Int?, now: UInt64) -> Bool {
            guard slot >= 0, Int(slot) < permits.count else { return false }
            let record = permits[Int(slot)]
            guard record.live, record.generation == generation else { return false }
            let extra = tokens.map { max(0, $0) - record.reserved } ?? 0
            if record.tokenSlot >= 0 { Self.settle(&table.values[Int(record.tokenSlot)], extra: extra, now: now) }
            if record.userSlot >= 0 { Self.settle(&table.values[Int(record.userSlot)], extra: extra, now: now) }
            permits[Int(slot)].live = false
            permits[Int(slot)].generation &+= 1
            freePermits.append(slot)
            permitsInFlight -= 1
            return true
        }

        /// Looks at one permit slot per call; one older than the lease is completed (estimate kept).
        mutating func reclaimStalePermit(now: UInt64) {
            guard !permits.isEmpty else { return }
            permitCursor = permitCursor + 1 < permits.count ? permitCursor + 1 : 0
            let record = permits[permitCursor]
            if record.live, now &- record.admittedAt > lease {
                _ = complete(slot: Int32(permitCursor), generation: record.generation, tokens: nil, now: now)
            }
        }

        func check(_ entry: Entry, _ limit: RateLimit, _ scope: RateLimitRefusal.Scope, _ estimate: Int, now: UInt64,
                   worst: inout RateLimitRefusal?) {
            func consider(_ candidate: RateLimitRefusal) {
                if let current = worst, current.retryAfter >= candidate.retryAfter { return }
                worst = candidate
            }
            if let concurrency = limit.concurrency, Int(entry.active) >= concurrency {
                consider(RateLimitRefusal(kind: .concurrency, scope: scope, limit: concurrency, remaining: 0, requested: 1,
                                          resetNanoseconds: 0, retryAfter: 1, exceedsLimit: concurrency <= 0, status: .none))
            }
            if let rpm = limit.rpm, let refusal = Self.gcraRefusal(.requests, scope, tat: entry.requestTAT, limit: rpm, cost: 1, now: now) {
                consider(refusal)
            }
            if let tpm = limit.tpm, let refusal = Self.gcraRefusal(.tokens, scope, tat: entry.tokenTAT, limit: tpm, cost: estimate, now: now) {
                consider(refusal)
            }
        }

        static func gcraRefusal(_ kind: RateLimitRefusal.Kind, _ scope: RateLimitRefusal.Scope, tat: UInt64, limit: Int,
                                cost: Int, now: UInt64) -> RateLimitRefusal? {
            let debt = GCRA.debt(tat, now: now)
            let increment = GCRA.increment(cost, limit: limit)
            let after = debt &+ increment
            if limit > 0 && after <= GCRA.window { return nil }
            let tooLarge = limit <= 0 || cost > limit
            // Admitted once the debt has fallen to `window − increment`; a request larger than the
            // limit is never admitted: tell it when the window is full again.
            let wait = tooLarge ? max(debt, GCRA.window) : after - GCRA.window
            let seconds = Int(min(wait / 1_000_000_000 + (wait % 1_000_000_000 == 0 ? 0 : 1), 86_400))
            return RateLimitRefusal(kind: kind, scope: scope, limit: max(0, limit), remaining: GCRA.remaining(debt: debt, limit: limit),
                                    requested: cost, resetNanoseconds: debt, retryAfter: max(1, seconds), exceedsLimit: tooLarge,
                                    status: .none)
        }

        static func charge(_ entry: inout Entry, _ limit: RateLimit, _ estimate: Int, now: UInt64) {
            if let rpm = limit.rpm { entry.requestTAT = max(entry.requestTAT, now) &+ GCRA.increment(1, limit: rpm) }
            if let tpm = limit.tpm {
                entry.tokenTAT = max(entry.tokenTAT, now) &+ GCRA.increment(estimate, limit: tpm)
                entry.tpm = tpm
            } else {
                entry.tpm = 0
            }
            entry.active += 1
            entry.lastSeen = now
        }

        /// Releases the slot; charges `extra` more tokens (or refunds `-extra`).
        static func settle(_ entry: inout Entry, extra: Int, now: UInt64) {
            entry.active -= 1
            entry.lastSeen = now
            guard entry.tpm > 0, extra != 0 else { return }
            if extra > 0 {
                let tat = max(entry.tokenTAT, now) &+ GCRA.increment(extra, limit: entry.tpm)
                entry.tokenTAT = min(tat, now &+ GCRA.maxDebt)
            } else {
                let refund = GCRA.increment(-extra, limit: entry.tpm)
                entry.tokenTAT = entry.tokenTAT > now &+ refund ? entry.tokenTAT - refund : now
            }
        }

        static func merge(into status: inout RateLimitStatus, _ entry: Entry, _ limit: RateLimit, now: UInt64) {
            func window(_ tat: UInt64, _ limit: Int) -> RateLimitStatus.Window {
                let debt = GCRA.debt(tat, now: now)
                return .init(limit: max(0, limit), remaining: GCRA.remaining(debt: debt, limit: limit), resetNanoseconds: debt)
            }
            func tighter(_ a: RateLimitStatus.Window?, _ b: RateLimitStatus.Window) -> RateLimitStatus.Window {
                guard let a else { return b }
                if b.remaining != a.remaining { return b.remaining < a.remaining ? b : a }
                return b.resetNanoseconds > a.resetNanoseconds ? b : a
            }
            if let rpm = limit.rpm { status.requests = tighter(status.requests, window(entry.requestTAT, rpm)) }
            if let tpm = limit.tpm { status.tokens = tighter(status.tokens, window(entry.tokenTAT, tpm)) }
        }

        func merge(into status: inout RateLimitStatus, key: UInt64, limit: RateLimit, now: UInt64) {
            let entry = table.slot(of: key).map { table.values[Int($0)] } ?? Entry()
            Self.merge(into: &status, entry, limit, now: now)
        }

        func capacityRefusal(_ scope: RateLimitRefusal.Scope, _ request: Request) -> RateLimitRefusal {
            RateLimitRefusal(kind: .capacity, scope: scope, limit: table.maxKeys, remaining: 0, requested: 1, resetNanoseconds: 0,
                             retryAfter: 1, exceedsLimit: false, status: .none)
        }
    }

    private final class Shard: Sendable {
        let state: Mutex<State>
        init(maxKeys: Int, idle: UInt64, lease: UInt64) { state = Mutex(State(maxKeys: maxKeys, idle: idle, lease: lease)) }
    }
}

// MARK: - Per-address attempts

/// A source address as a compact key: an IPv4 address, the /64 prefix of an IPv6 address (one
/// subscriber usually holds a whole /64, so limiting single IPv6 addresses would limit nothing), or
/// a hash of anything else.
public struct AddressKey: Hashable, Sendable {
    var high: UInt64
    var low: UInt64

    /// Parses `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`, `fe80::1%eth0` and
    /// `::ffff:1.2.3.4` (as IPv4); anything else is hashed.
    public init(_ address: String) {
        var text = Substring(address)
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            text = text[text.index(after: text.startIndex)..<close]
        } else if let colon = text.firstIndex(of: ":"), text[text.index(after: colon)...].firstIndex(of: ":") == nil {
            text = text[..<colon]  // IPv4 with a port
        }
        if let percent = text.firstIndex(of: "%") { text = text[..<percent] }
        let plain = String(text)
        var v4 = in_addr()
        if inet_pton(AF_INET, plain, &v4) == 1 {
            self.init(ipv4: UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, plain, &v6) == 1 {
            self.init(ipv6: withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        var hasher = Hasher()
        hasher.combine(address)
        self.init(high: .max, low: UInt64(bitPattern: Int64(hasher.finalize())))
    }

    /// The key of a connection's remote address.
    public init(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            self.init(ipv4: UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            var raw = v6.address.sin6_addr
            self.init(ipv6: withUnsafeBytes(of: &raw) { Array($0) })
        case .unixDomainSocket:
            self.init(high: .max - 1, low: 0)
        }
    }

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    init(ipv4: UInt32) { self.init(high: 0, low: 0xFFFF_0000_0000 | UInt64(ipv4)) }

    init(ipv6 bytes: [UInt8]) {
        var high: UInt64 = 0, low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(bytes[i]) }
        if high == 0, low >> 32 == 0xFFFF {  // ::ffff:a.b.c.d
            self.init(ipv4: UInt32(truncatingIfNeeded: low))
        } else {
            self.init(high: high, low: 1 << 63)  // the /64; the marker keeps `::/64` apart from IPv4
        }
    }
}

/// A fixed number of attempts per source address per window (e.g. 10 redeem attempts a minute, or
/// 20 failed authentications a minute).
///
/// Fixed windows: an address's window opens at its first attempt and lasts `window`; a new one opens
/// at the first attempt after it ends. Memory: an address whose window has ended is forgotten
/// (lazily, two entries checked per call — its state is then the same as a new address's); at most
/// `maxAddresses`: a new address at the cap takes the place of another (preferring one whose window
/// has ended), so someone cycling through more addresses than the cap in one window is not limited,
/// but nobody is ever refused because the table is full. `isBlocked` never inserts.
public final class AddressLimiter: Sendable {
    public let limit: Int
    public let window: Duration
    public let maxAddresses: Int
    private let windowNanoseconds: UInt64
    private let state: Mutex<KeyTable<AddressKey, Attempts>>

    fileprivate struct Attempts: TableValue {
        var windowStart: UInt64 = 0
        var count: Int32 = 0
        var windowEnd: UInt64 = 0
        func isIdle(now: UInt64, idle: UInt64) -> Bool { now >= windowEnd }
        var mayBeDisplaced: Bool { true }
    }

    public init(limit: Int, window: Duration = .seconds(60), maxAddresses: Int = 1_000_000) {
        self.limit = max(0, limit)
        self.window = window
        self.maxAddresses = max(1, maxAddresses)
        self.windowNanoseconds = window.nanoseconds
        self.state = Mutex(KeyTable(maxKeys: max(1, maxAddresses)))
    }

    /// Counts an attempt from `address`; false (refuse it) when the address has used its `limit` in
    /// this window (a refused attempt is not counted).
    public func allow(_ address: String, now: UInt64 = RateLimiter.monotonicNow()) -> Bool {
        allow(AddressKey(address), now: now)
    }

    public func allow(_ key: AddressKey, now: UInt64 = RateLimiter.monotonicNow()) -> Bool {
        state.withLock { table in
            table.sweep(steps: 2, now: now, idle: 0)
            guard let slot = table.findOrInsert(key, Attempts()) else { return false }
            let index = Int(slot)
            renew(&table.values[index], now: now)
            guard Int(table.values[index].count) < limit else { return false }
            table.values[index].count += 1
            return true
        }
    }

    /// Counts a failure (e.g. a failed authentication) from `address`.
    public func recordFailure(_ address: String, now: UInt64 = RateLimiter.monotonicNow()) {
        recordFailure(AddressKey(address), now: now)
    }

    public func recordFailure(_ key: AddressKey, now: UInt64 = RateLimiter.monotonicNow()) {
        state.withLock { table in
            table.sweep(steps: 2, now: now, idle: 0)
            guard let slot = table.findOrInsert(key, Attempts()) else { return }
            renew(&table.values[Int(slot)], now: now)
            if table.values[Int(slot)].count < Int32.max { table.values[Int(slot)].count += 1 }
        }
    }

    /// Whether `address` has reached `limit` in its current window (check before authenticating).
    public func isBlocked(_ address: String, now: UInt64 = RateLimiter.monotonicNow()) -> Bool {
        isBlocked(AddressKey(address), now: now)
    }

    public func isBlocked(_ key: AddressKey, now: UInt64 = RateLimiter.monotonicNow()) -> Bool {
        state.withLock { table in
            guard let slot = table.slot(of: key) else { return false }
            let attempts = table.values[Int(slot)]
            return now < attempts.windowEnd && Int(attempts.count) >= limit
        }
    }

    /// Whole seconds (at least 1) until `address`'s window ends, for `retry-after`.
    public func retryAfter(_ address: String, now: UInt64 = RateLimiter.monotonicNow()) -> Int {
        let key = AddressKey(address)
        let end = state.withLock { table in table.slot(of: key).map { table.values[Int($0)].windowEnd } ?? 0 }
        guard end > now else { return 1 }
        let wait = end - now
        return max(1, Int(wait / 1_000_000_000 + (wait % 1_000_000_000 == 0 ? 0 : 1)))
    }

    /// Addresses stored.
    public var count: Int { state.withLock { $0.count } }

    private func renew(_ attempts: inout Attempts, now: UInt64) {
        if now >= attempts.windowEnd {
            attempts.windowStart = now
            attempts.windowEnd = now &+ windowNanoseconds
            attempts.count = 0
        }
    }
}

// MARK: - Bounded key table

fileprivate protocol TableValue {
    /// Whether the entry carries nothing a fresh one would not (and has been idle long enough).
    func isIdle(now: UInt64, idle: UInt64) -> Bool
    /// Whether the entry may be dropped to make room at the cap.
    var mayBeDisplaced: Bool { get }
}

/// Keys mapped to slots of a value array, with a free list and a sweep cursor: lookups and inserts
/// are one hash operation, eviction is amortised (`sweep(steps:)` per call), the arrays only grow to
/// their high-water mark (at most `maxKeys`).
fileprivate struct KeyTable<Key: Hashable, Value: TableValue> {
    let maxKeys: Int
    private var index: [Key: Int32] = [:]
    private var keys: [Key?] = []
    var values: [Value] = []
    private var free: [Int32] = []
    private var cursor = 0

    init(maxKeys: Int) { self.maxKeys = maxKeys }

    var count: Int { index.count }

    func slot(of key: Key) -> Int32? { index[key] }

    func holds(_ key: Key, at slot: Int32) -> Bool { slot >= 0 && keys[Int(slot)] == key }

    /// The key's slot, inserting `fresh` if absent; nil when the table is full and nothing near the
    /// cursor may be displaced.
    mutating func findOrInsert(_ key: Key, _ fresh: Value) -> Int32? {
        if let slot = index[key] { return slot }
        if index.count >= maxKeys && !displaceOne() { return nil }
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            keys[Int(slot)] = key
            values[Int(slot)] = fresh
        } else {
            slot = Int32(values.count)
            keys.append(key)
            values.append(fresh)
        }
        index[key] = slot
        return slot
    }

    /// Checks `steps` slots at the cursor and evicts the idle ones.
    mutating func sweep(steps: Int, now: UInt64, idle: UInt64) {
        guard !values.isEmpty else { return }
        for _ in 0..<steps {
            cursor = cursor + 1 < values.count ? cursor + 1 : 0
            if keys[cursor] != nil, values[cursor].isIdle(now: now, idle: idle) { remove(at: cursor) }
        }
    }

    /// At the cap: drops the first displaceable entry within 64 slots of the cursor.
    private mutating func displaceOne() -> Bool {
        guard !values.isEmpty else { return false }
        for _ in 0..<min(64, values.count) {
            cursor = cursor + 1 < values.count ? cursor + 1 : 0
            if keys[cursor] != nil, values[cursor].mayBeDisplaced {
                remove(at: cursor)
                return true
            }
        }
        return false
    }

    private mutating func remove(at slot: Int) {
        guard let key = keys[slot] else { return }
        index.removeValue(forKey: key)
        keys[slot] = nil
        free.append(Int32(slot))
    }
}

extension Duration {
    fileprivate var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
    }
}
