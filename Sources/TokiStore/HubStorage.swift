import Foundation

// What the hub needs from its persistent state, as narrow protocols. `HubStore` (SQLite through
// GRDB) conforms to all of them; another backend (PostgreSQL) conforms to the same protocols and
// the hub does not change. Every method is async, callable from any task, and throws
// `StoreError` for invalid input and database failures.

/// Resolves presented API tokens (the hub's authentication, users' and workers' alike).
public protocol TokenAuthenticating: Sendable {
    /// The token's owner and limits, or nil for an unknown, malformed, revoked or expired token.
    /// Accepts the same spellings as ``HubStore/authenticate(token:now:)``.
    func authenticate(token presented: String, now: Date) async throws -> AuthenticatedToken?
}

/// Issues API tokens (the admin API).
public protocol TokenIssuing: Sendable {
    /// Issues a token for the user called `user`, creating that user (with `role` and `group`) if
    /// it does not exist. Returns the plaintext (shown once) and the record.
    func createToken(user: String, name: String?, role: UserRole, group: String, expiresAt: Date?, models: [String]?,
                     options: TokenOptions, now: Date) async throws -> (plaintext: String, record: TokenRecord)
}

extension TokenIssuing {
    /// A token with the default options (both scopes, every usable group, no spending cap).
    public func createToken(user: String, name: String?, role: UserRole, group: String, expiresAt: Date?, models: [String]?,
                            now: Date) async throws -> (plaintext: String, record: TokenRecord) {
        try await createToken(user: user, name: name, role: role, group: group, expiresAt: expiresAt, models: models, options: TokenOptions(), now: now)
    }
}

/// Worker namespaces: ownership, presence and what they served.
public protocol WorkerDirectory: Sendable {
    /// Claims (or re-claims) `namespace` for `userID` and marks it online. Throws
    /// ``StoreError/namespaceOwnedByAnotherUser(_:)`` when another user owns it.
    func claimNamespace(namespace: String, userID: Int64, nodeName: String?, group: String, models: [String],
                        now: Date) async throws -> NamespaceClaim
    /// Many presence changes in one write.
    func recordPresence(_ updates: [String: WorkerPresence], now: Date) async throws
    /// Marks every namespace offline (hub start: no session survives a restart); returns how many were online.
    @discardableResult
    func markAllOffline() async throws -> Int
    /// All namespaces (optionally only one user's), by worker id.
    func listWorkers(userID: Int64?) async throws -> [NamespaceClaim]
}

/// The usage log.
public protocol UsageLog: Sendable {
    /// Appends rows in one write.
    func recordUsage(_ entries: [UsageRecord]) async throws
}

/// Caches a store can rebuild and give back when asked (after a fleet left: SQLite's page cache).
public protocol MemoryReleasing: Sendable {
    /// Frees what can be rebuilt on demand; may block briefly (call off the event loops).
    func releaseMemory()
}

extension MemoryReleasing {
    public func releaseMemory() {}
}

/// Housekeeping a store wants run in the background.
public protocol StoreMaintenance: Sendable {
    /// Moves what the store logged into its main file, off the write path (SQLite: a WAL checkpoint).
    func checkpointLog() async throws
    /// Throws unless the store answers a query (readiness probes).
    func checkReachable() async throws
}

extension StoreMaintenance {
    public func checkpointLog() async throws {}
}

/// Everything the hub uses.
public typealias HubStorage = TokenAuthenticating & TokenIssuing & WorkerDirectory & UsageLog & BillingLedger & PrivateGroupStore
    & AccountAdministration & MemoryReleasing & StoreMaintenance

extension HubStore: TokenAuthenticating, TokenIssuing, WorkerDirectory, UsageLog, MemoryReleasing, StoreMaintenance {}
