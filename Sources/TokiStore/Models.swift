import Foundation

/// A user's role. Admins may manage other users and tokens through the hub's admin API.
public enum UserRole: String, Sendable, Codable, CaseIterable {
    case admin
    case user
}

public struct User: Sendable, Equatable, Identifiable {
    public var id: Int64
    public var name: String
    public var role: UserRole
    public var group: String
    public var createdAt: Date
}

/// What the store keeps about an API token. Never contains the plaintext or the hash.
public struct TokenRecord: Sendable, Equatable, Identifiable, Decodable {
    public var id: Int64
    public var userID: Int64
    public var name: String?
    /// Non-secret display prefix such as `sk-toki-Ab3x`; show it as `sk-toki-Ab3x…`.
    public var displayPrefix: String
    public var createdAt: Date
    public var expiresAt: Date?
    public var disabled: Bool
    /// Models this token may use; nil means every model.
    public var models: [String]?
    public var lastUsedAt: Date?
    public var scope: TokenScope = .both
    /// Groups the token is pinned to; nil means every group its user may use.
    public var groups: [String]?
    /// Most this token may spend in total; nil means no cap.
    public var spendLimit: Money?
    /// What was charged through this token so far.
    public var spent: Money = .zero
    /// Rate limits of this token; nil: the hub's defaults.
    public var rpm: Int? = nil
    public var tpm: Int? = nil
    public var maxConcurrent: Int? = nil

    /// True if the token is neither disabled nor expired at `now`.
    public func isUsable(at now: Date = Date()) -> Bool {
        if disabled { return false }
        if let expiresAt, expiresAt <= now { return false }
        return true
    }
}

/// The result of a successful ``HubStore/authenticate(token:now:)``.
public struct AuthenticatedToken: Sendable, Equatable {
    public var tokenID: Int64
    public var tokenName: String?
    public var userID: Int64
    public var userName: String
    public var role: UserRole
    /// The user's group (used for routing and pricing).
    public var group: String
    /// Model allow-list of the token; nil means every model.
    public var models: [String]?
    public var expiresAt: Date?
    public var scope: TokenScope = .both
    /// The groups this caller's requests may route to: the user's primary group and the private
    /// pools it was granted, narrowed to the token's pinned groups. Sorted, primary first.
    public var groups: [String] = []
    /// The token's spending cap and what it spent when it was looked up.
    public var spendLimit: Money?
    public var spent: Money = .zero
    /// The token's own rate limits (nil: the hub's defaults).
    public var rpm: Int? = nil
    public var tpm: Int? = nil
    public var maxConcurrent: Int? = nil

    public var isAdmin: Bool { role == .admin }

    /// Whether the token's allow-list permits `model` (exact match).
    public func allows(model: String) -> Bool {
        guard let models else { return true }
        return models.contains(model)
    }
}

public enum WorkerStatus: String, Sendable, Codable {
    case online
    case offline
}

/// A worker namespace as recorded by the store. `workerID` is stable forever for a namespace
/// (it is the row id; rows are never deleted) and is what the tunnel's `ack.worker_id` carries.
public struct NamespaceClaim: Sendable, Equatable {
    public var workerID: Int64
    public var namespace: String
    public var ownerUserID: Int64
    public var nodeName: String
    public var group: String
    public var models: [String]
    public var status: WorkerStatus
    public var createdAt: Date
    public var lastSeenAt: Date
    /// True when this call created the namespace (first registration ever).
    public var isNew: Bool
}

/// One row of the usage log.
public struct UsageRecord: Sendable, Equatable, Decodable {
    /// Assigned by the store; ignored when recording.
    public var id: Int64?
    public var requestID: String
    public var userID: Int64?
    public var tokenID: Int64?
    public var model: String
    public var namespace: String?
    public var statusCode: Int
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var durationMS: Int
    public var createdAt: Date
    /// The group the request was routed in.
    public var groupName: String? = nil
    /// `direct`, or the relays between the hub and the worker, nearest first, joined by `>`.
    public var path: String? = nil
    /// True when the backend reported no usage and the token counts are the hub's estimate.
    public var estimated: Bool = false
    /// What the caller was charged.
    public var cost: Money = .zero
    /// Time to the first response byte from the worker.
    public var ttftMS: Int? = nil
    /// The ledger transaction that charged it (nil: nothing was charged).
    public var transactionID: Int64? = nil

    public init(
        id: Int64? = nil, requestID: String, userID: Int64?, tokenID: Int64?, model: String,
        namespace: String?, statusCode: Int, promptTokens: Int? = nil, completionTokens: Int? = nil,
        durationMS: Int, createdAt: Date = Date(), groupName: String? = nil, path: String? = nil, estimated: Bool = false,
        cost: Money = .zero, ttftMS: Int? = nil
    ) {
        self.groupName = groupName
        self.path = path
        self.estimated = estimated
        self.cost = cost
        self.ttftMS = ttftMS
        self.id = id
        self.requestID = requestID
        self.userID = userID
        self.tokenID = tokenID
        self.model = model
        self.namespace = namespace
        self.statusCode = statusCode
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.durationMS = durationMS
        self.createdAt = createdAt
    }
}

/// A worker's presence as the hub reports it in batches (`HubStore.recordPresence`).
public enum WorkerPresence: Sendable, Equatable {
    /// Seen now; the models replace the stored list when given.
    case online(models: [String]?)
    case offline
}
