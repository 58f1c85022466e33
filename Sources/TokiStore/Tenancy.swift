import Foundation

// Tenancy and billing: private groups shared by invite codes, prices, the ledger (issue 9).
// The hub reads these through the protocols at the end; `HubStore` implements them over SQLite.

/// An amount of the hub's currency in nano-units (1 unit = 1,000,000,000 nanos), so sums are
/// exact. The HTTP API writes amounts as decimal numbers of units (`12.5`), read to the nano.
public struct Money: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var nanos: Int64
    public static let nanosPerUnit: Int64 = 1_000_000_000
    public static let zero = Money(nanos: 0)

    public init(nanos: Int64) { self.nanos = nanos }

    /// From a decimal number of units, rounded to the nearest nano; nil if not finite or too large.
    public init?(units: Double) {
        guard units.isFinite, abs(units) < 9_000_000_000 else { return nil }
        nanos = Int64((units * Double(Self.nanosPerUnit)).rounded())
    }

    /// From a decimal string such as `12.5` or `-0.000000001` (at most 9 decimals), exactly.
    public init?(decimal text: String) {
        var s = Substring(text)
        let negative = s.hasPrefix("-")
        if negative { s = s.dropFirst() }
        let parts = s.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 10, whole.allSatisfy(\.isASCIIDigit),
              let units = Int64(whole) else { return nil }
        var fraction: Int64 = 0
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy(\.isASCIIDigit) else { return nil }
            fraction = Int64(digits + String(repeating: "0", count: 9 - digits.count))!
        }
        let (product, overflow) = units.multipliedReportingOverflow(by: Self.nanosPerUnit)
        guard !overflow else { return nil }
        nanos = (product + fraction) * (negative ? -1 : 1)
    }

    /// Exact decimal text: `12.5`, `0.000001`, `-3`.
    public var description: String {
        let magnitude = nanos.magnitude
        let whole = magnitude / UInt64(Self.nanosPerUnit)
        var fraction = String(magnitude % UInt64(Self.nanosPerUnit))
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return (nanos < 0 ? "-" : "") + "\(whole)" + (fraction.isEmpty ? "" : ".\(fraction)")
    }

    public static func < (a: Money, b: Money) -> Bool { a.nanos < b.nanos }
    public static func + (a: Money, b: Money) -> Money { Money(nanos: a.nanos &+ b.nanos) }
    public static func - (a: Money, b: Money) -> Money { Money(nanos: a.nanos &- b.nanos) }

    /// Decodes a JSON number (or a decimal string) of units.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self), let money = Money(decimal: text) {
            self = money
            return
        }
        let units = try container.decode(Double.self)
        guard let money = Money(units: units) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "amount out of range")
        }
        self = money
    }

    /// Encodes as a JSON number of units, exact to the nano.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Decimal(string: description) ?? 0)
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// What a token may be used for. A GPU box should hold a `worker` token: it can register
/// workers but not spend its owner's balance.
public enum TokenScope: String, Sendable, Codable, CaseIterable {
    case inference
    case worker
    case both

    public var allowsInference: Bool { self != .worker }
    public var allowsWorkers: Bool { self != .inference }
}

/// A private GPU pool (the original's `private_groups`).
public struct PrivateGroup: Sendable, Equatable, Codable {
    public var id: Int64
    public var ownerUserID: Int64
    public var slug: String
    /// 1 enabled, 2 disabled.
    public var status: Int
    public var createdAt: Date
    public var updatedAt: Date
}

public enum GrantRole: String, Sendable, Codable { case owner, member }
public enum GrantSource: String, Sendable, Codable { case create, invite, admin }

/// A user's access to a private group (the original's `private_group_grants`).
public struct GroupGrant: Sendable, Equatable, Codable {
    public var id: Int64
    public var groupID: Int64
    public var userID: Int64
    public var role: GrantRole
    public var source: GrantSource
    /// `group:<id>`, `invite_code:<id>` or `admin:<uid>`.
    public var sourceRef: String
    public var grantedBy: Int64
    public var expiresAt: Date?
    public var revokedAt: Date?
    public var createdAt: Date
    public var updatedAt: Date

    public func isActive(at now: Date) -> Bool {
        revokedAt == nil && (expiresAt.map { $0 >= now } ?? true)
    }
}

/// An invite code's record; the code itself is shown once, when made, and stored hashed.
public struct InviteCode: Sendable, Equatable, Codable {
    public var id: Int64
    public var groupID: Int64
    public var createdBy: Int64
    /// 1 enabled, 2 disabled (revoked or used up).
    public var status: Int
    public var maxUses: Int
    public var usedCount: Int
    public var expiresAt: Date?
    public var createdAt: Date
    public var updatedAt: Date
}

/// What a model costs in one group. Hub-wide prices have `group` empty; a private pool's own
/// prices name the pool. A model without a price is free.
public struct ModelPrice: Sendable, Equatable, Codable {
    public var group: String
    public var model: String
    public var inputPerMillion: Money
    public var outputPerMillion: Money
    public var perRequest: Money

    public init(group: String = "", model: String, inputPerMillion: Money = .zero, outputPerMillion: Money = .zero,
                perRequest: Money = .zero) {
        self.group = group
        self.model = model
        self.inputPerMillion = inputPerMillion
        self.outputPerMillion = outputPerMillion
        self.perRequest = perRequest
    }

    public var isFree: Bool { inputPerMillion.nanos == 0 && outputPerMillion.nanos == 0 && perRequest.nanos == 0 }

    /// The cost of a request with these token counts at `ratio`, rounded up to the nano (a
    /// priced request never costs nothing).
    public func cost(promptTokens: Int, completionTokens: Int, ratio: Double = 1) -> Money {
        let tokens = Double(promptTokens) * Double(inputPerMillion.nanos) + Double(completionTokens) * Double(outputPerMillion.nanos)
        let nanos = (tokens / 1_000_000 + Double(perRequest.nanos)) * ratio
        guard nanos > 0 else { return .zero }
        return Money(nanos: Int64(min(nanos.rounded(.up), Double(Int64.max / 2))))
    }
}

/// Everything the hub's router needs to price and route one caller, loaded in one read:
/// the groups it may use and what the models cost there. Cached briefly by the hub.
public struct PricingTable: Sendable, Equatable {
    /// Hub-wide prices by model.
    public var hubPrices: [String: ModelPrice]
    /// Private pools' prices: pool slug → model → price.
    public var poolPrices: [String: [String: ModelPrice]]
    /// Ratios of the hub's own groups (absent: 1).
    public var ratios: [String: Double]
    /// Private pool slug → owner user id (a priced pool credits its owner).
    public var poolOwners: [String: Int64]

    public init(hubPrices: [String: ModelPrice] = [:], poolPrices: [String: [String: ModelPrice]] = [:], ratios: [String: Double] = [:],
                poolOwners: [String: Int64] = [:]) {
        self.hubPrices = hubPrices
        self.poolPrices = poolPrices
        self.ratios = ratios
        self.poolOwners = poolOwners
    }

    /// The price of `model` in `group` and its ratio: a pool's own price (ratio 1; free when
    /// the owner set none), or the hub's price times the group's ratio.
    public func price(model: String, group: String) -> (price: ModelPrice, ratio: Double)? {
        if poolOwners[group] != nil {
            return poolPrices[group]?[model].map { ($0, 1) }
        }
        return hubPrices[model].map { ($0, ratios[group] ?? 1) }
    }
}

/// One finished client request to bill: its usage row and, when it costs anything, the ledger
/// transaction that pays for it. Written together in one SQLite transaction.
public struct Charge: Sendable, Equatable {
    /// The hub's unique id of the client request: a second charge with the same id is ignored.
    public var chargeID: String
    public var usage: UsageRecord
    /// Debited from the caller (`usage.userID`); zero writes the usage row alone.
    public var cost: Money
    /// Credited with the cost: a private pool's owner, or nil for the hub's `revenue` account.
    public var creditUserID: Int64?

    public init(chargeID: String, usage: UsageRecord, cost: Money, creditUserID: Int64?) {
        self.chargeID = chargeID
        self.usage = usage
        self.cost = cost
        self.creditUserID = creditUserID
    }
}

/// What a batch of charges left: the charged users' balances and tokens' totals spent.
public struct ChargeOutcome: Sendable, Equatable {
    public var balances: [Int64: Money]
    public var tokenSpent: [Int64: Money]
    /// Charges skipped because their id was already recorded.
    public var duplicates: Int

    public init(balances: [Int64: Money] = [:], tokenSpent: [Int64: Money] = [:], duplicates: Int = 0) {
        self.balances = balances
        self.tokenSpent = tokenSpent
        self.duplicates = duplicates
    }
}

/// What `ledger check` found: every transaction sums to zero, every balance equals its entries,
/// all balances sum to zero, and every charged usage row has its transaction.
public struct LedgerReport: Sendable, Equatable, Codable {
    public var transactions: Int
    public var entries: Int
    public var accounts: Int
    /// Sum of all account balances (zero when the books balance).
    public var balanceSum: Money
    /// Human-readable problems; empty when the books are consistent.
    public var problems: [String]

    public var isConsistent: Bool { problems.isEmpty }
}

/// The hot path's billing: charges written in batches (group commit), and what the router reads
/// before routing.
public protocol BillingLedger: Sendable {
    /// Writes each charge's usage row and ledger transaction (caller debited, `creditUserID` or
    /// revenue credited, the token's `spent` raised) in one SQLite transaction for the whole batch.
    /// A charge whose `chargeID` is already recorded is skipped. Returns the balances and token
    /// totals after the batch, for the hub's in-memory pre-checks. Runs to its end even if the
    /// caller is cancelled: other requests may be waiting for the same batch.
    func commitCharges(_ charges: [Charge], now: Date) async throws -> ChargeOutcome
    /// The balances of these users (zero for a user without an account yet).
    func balances(userIDs: [Int64]) async throws -> [Int64: Money]
    /// Prices, ratios and pool owners, for the router's cache.
    func pricingTable() async throws -> PricingTable
    /// The active private-group slugs `userID` may use (owner or member; grant active, group enabled).
    func usableGroups(userID: Int64, now: Date) async throws -> [String]
}
