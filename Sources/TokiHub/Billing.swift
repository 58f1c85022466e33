import Foundation
import Logging
import ServiceLifecycle
import TokiProtocol
import TokiStore

/// What the router knows about money, in memory: prices and ratios (re-read every
/// `refreshInterval` and whenever the management API changes them), callers' balances (read on
/// first use, then kept current by the charges this hub commits, and re-read after `balanceTTL`
/// so top-ups elsewhere show), and tokens' totals spent.
final class Billing: Service, Sendable {
    let ledger: any BillingLedger
    let logger: Logger
    let refreshInterval: Duration
    let balanceTTL: Duration
    private let table = Locked(PricingTable())
    private let balances = Locked<[Int64: (balance: Money, read: ContinuousClock.Instant)]>([:])
    private let tokenSpent = Locked<[Int64: Money]>([:])
    private let refreshSignal: AsyncStream<Void>.Continuation
    private let refreshRequests: AsyncStream<Void>
    static let maxCachedBalances = 100_000

    init(ledger: any BillingLedger, logger: Logger, refreshInterval: Duration = .seconds(10), balanceTTL: Duration = .seconds(5)) {
        self.ledger = ledger
        self.logger = logger
        self.refreshInterval = refreshInterval
        self.balanceTTL = balanceTTL
        (refreshRequests, refreshSignal) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Reads prices now (the hub does this before it serves).
    func loadPrices() async {
        do {
            let fresh = try await ledger.pricingTable()
            table.withLock { $0 = fresh }
        } catch {
            logger.error("could not read prices; keeping the previous ones", metadata: ["error": "\(error)"])
        }
    }

    /// Prices changed through the management API: read them again soon.
    func pricesChanged() { refreshSignal.yield() }

    /// A user's balance changed outside the charges (a top-up): read it again on next use.
    func balanceChanged(userID: Int64) {
        balances.withLock { _ = $0.removeValue(forKey: userID) }
    }

    func run() async throws {
        await loadPrices()
        let ticker = Task { [refreshSignal, refreshInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: refreshInterval)
                refreshSignal.yield()
            }
        }
        defer { ticker.cancel() }
        await cancelWhenGracefulShutdown {
            for await _ in self.refreshRequests {
                await self.loadPrices()
            }
        }
    }

    /// The price of `model` in `group` and the ratio applied; nil: free.
    func price(model: String, group: String) -> BillingPrice? {
        let found = table.withLock { table -> BillingPrice? in
            guard let (price, ratio) = table.price(model: model, group: group), !price.isFree, ratio > 0 else { return nil }
            return BillingPrice(price: price, ratio: ratio, creditUserID: table.poolOwners[group])
        }
        return found
    }

    /// The caller's balance as this hub knows it.
    func balance(userID: Int64) async throws -> Money {
        let now = ContinuousClock.now
        if let cached = balances.withLock({ $0[userID] }), now - cached.read < balanceTTL { return cached.balance }
        let read = try await ledger.balances(userIDs: [userID])[userID] ?? .zero
        balances.withLock { entries in
            if entries.count >= Self.maxCachedBalances { entries.removeAll(keepingCapacity: true) }
            entries[userID] = (read, now)
        }
        return read
    }

    /// What the token spent, the newer of the lookup's figure and this hub's last commit.
    func spent(by token: AuthenticatedToken) -> Money {
        max(token.spent, tokenSpent.withLock { $0[token.tokenID] } ?? .zero)
    }

    /// Why `caller` may not start a request priced `price` whose prompt is about
    /// `promptEstimate` tokens; nil when it may. Free models need no balance.
    func refusal(for caller: AuthenticatedToken, price: BillingPrice?, promptEstimate: Int) async throws -> OpenAIError? {
        guard let price else { return nil }
        if let limit = caller.spendLimit, spent(by: caller) >= limit {
            return .insufficientQuota("This API key reached its spending limit of \(limit).")
        }
        let balance = try await balance(userID: caller.userID)
        let least = price.price.cost(promptTokens: promptEstimate, completionTokens: 0, ratio: price.ratio)
        if balance.nanos <= 0 || balance < least {
            return .insufficientQuota("Your balance (\(balance)) cannot cover this request to a priced model; top up to continue.")
        }
        return nil
    }

    /// Takes in what a batch of charges left (so the next pre-check sees it without a read).
    func applied(_ outcome: ChargeOutcome) {
        let now = ContinuousClock.now
        balances.withLock { entries in
            for (user, balance) in outcome.balances where entries[user] != nil || entries.count < Self.maxCachedBalances {
                entries[user] = (balance, now)
            }
        }
        tokenSpent.withLock { spent in
            if spent.count >= Self.maxCachedBalances { spent.removeAll(keepingCapacity: true) }
            for (token, total) in outcome.tokenSpent { spent[token] = total }
        }
    }
}

/// A priced model in one group: the price, the group's ratio, and who is paid (a private pool's
/// owner, or nil for the hub).
struct BillingPrice: Sendable, Equatable {
    var price: ModelPrice
    var ratio: Double
    var creditUserID: Int64?

    func cost(_ usage: TokenCounts) -> Money {
        price.cost(promptTokens: usage.prompt, completionTokens: usage.completion, ratio: ratio)
    }
}

/// Token counts for a charge, and whether the hub estimated them.
struct TokenCounts: Sendable, Equatable {
    var prompt: Int
    var completion: Int
    var estimated: Bool

    /// The documented estimate when the backend reports nothing: a token per 4 bytes of the
    /// request body, and per streamed event (an SSE response) or 4 bytes of the body.
    static func estimate(requestBytes: Int, responseEvents: Int?, responseBytes: Int) -> TokenCounts {
        TokenCounts(prompt: promptEstimate(requestBytes: requestBytes), completion: responseEvents ?? (responseBytes + 3) / 4, estimated: true)
    }

    /// The prompt's share of the estimate, what the pre-checks count before anything is known.
    static func promptEstimate(requestBytes: Int) -> Int { (requestBytes + 3) / 4 }
}

extension OpenAIError {
    static func insufficientQuota(_ message: String) -> OpenAIError {
        OpenAIError(.tooManyRequests, message, type: "insufficient_quota", code: "insufficient_quota")
    }
}

/// A forwarded call's billing: its charge id, the group it was routed in and that group's price,
/// and what the usage report and estimate need.
struct CallBilling: Sendable {
    /// The hub's unique id of this client request (the ledger charges it once).
    var chargeID: String
    var group: String
    var price: BillingPrice?
    /// The hub added `include_usage`: its report is taken out of the client's stream.
    var stripUsage: Bool
    /// The client's request body size.
    var requestBytes: Int
    /// When the response head arrived (time to first token).
    var headAt: ContinuousClock.Instant
    /// The rate limiter's permit, completed with the tokens used when the answer is done.
    var permit: RateLimiter.Permit = .unlimited
}

extension Charge {
    /// A request that failed before any response: its usage row, nothing charged.
    static func unbilled(requestID: String, user: AuthenticatedToken, model: String, status: Int, started: ContinuousClock.Instant) -> Charge {
        Charge(chargeID: FastUUID.next().uuidString, usage: UsageRecord(
            requestID: requestID, userID: user.userID, tokenID: user.tokenID, model: model, namespace: nil, statusCode: status,
            durationMS: (ContinuousClock.now - started).milliseconds), cost: .zero, creditUserID: nil)
    }
}

extension Duration {
    var milliseconds: Int { Int(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000) }
}
