import Foundation
import TokiStore

/// Remembers successful token lookups briefly so the hot path does not hit SQLite on every
/// request. Keyed by the token's SHA-256 (the plaintext is never kept); failures are not
/// cached, and the map is bounded.
final class TokenCache: Sendable {
    let store: any TokenAuthenticating
    let ttl: Duration
    let entries = Locked<[String: (token: AuthenticatedToken, expires: ContinuousClock.Instant)]>([:])
    static let maxEntries = 10_000
    /// Failed authentications per source address: a guesser is refused (429) for the rest of
    /// the minute after `failuresPerMinute` misses.
    let failures = AddressLimiter(limit: TokenCache.failuresPerMinute)
    static let failuresPerMinute = 20

    init(store: any TokenAuthenticating, ttl: Duration) {
        self.store = store
        self.ttl = ttl
    }

    func authenticate(_ presented: String) async throws -> AuthenticatedToken? {
        guard let canonical = TokenCrypto.canonicalize(presented) else { return nil }
        let key = TokenCrypto.hashHex(canonical)
        let now = ContinuousClock.now
        if let hit = entries.withLock({ $0[key] }), hit.expires > now, hit.token.expiresAt.map({ $0 > Date() }) ?? true {
            return hit.token
        }
        guard let token = try await store.authenticate(token: canonical, now: Date()) else {
            entries.withLock { _ = $0.removeValue(forKey: key) }
            return nil
        }
        entries.withLock { entries in
            if entries.count >= Self.maxEntries { entries.removeAll(keepingCapacity: true) }
            entries[key] = (token, now + ttl)
        }
        return token
    }

    /// Forgets every cached lookup of `userID`'s tokens (its groups or tokens changed).
    func invalidate(userID: Int64) {
        entries.withLock { entries in entries = entries.filter { $0.value.token.userID != userID } }
    }

    /// Forgets every cached lookup (a token was revoked: it stops working at once).
    func invalidateAll() {
        entries.withLock { $0.removeAll() }
    }
}
