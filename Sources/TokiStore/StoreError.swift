/// Errors thrown by ``HubStore``.
///
/// Database-level failures (I/O, corruption, constraint violations we did not anticipate) are
/// wrapped in ``database(_:)`` so callers can treat everything the store throws as `StoreError`.
public enum StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A worker namespace is already registered to a different user. Ownership is permanent.
    case namespaceOwnedByAnotherUser(String)
    /// The namespace is empty after trimming, too long, or contains control characters.
    case invalidNamespace(String)
    /// No worker has ever registered this namespace.
    case namespaceNotFound(String)
    /// A user name is empty, too long, or contains control characters.
    case invalidUserName(String)
    /// A user with this name already exists.
    case userExists(String)
    /// No user with this name.
    case userNotFound(String)
    /// No user with this id.
    case userIDNotFound(Int64)
    /// No token with this id (or it belongs to another user).
    case tokenNotFound(Int64)
    /// `ensureAdmin()` found a user called "admin" that is not an admin, and no admin at all.
    case adminNameTaken
    /// The system CSPRNG (`RAND_bytes`) failed. Never fall back to a weaker source.
    case randomFailure
    /// The data directory could not be created or has unusable permissions.
    case dataDirectory(path: String, reason: String)
    /// A value the caller gave is out of range or malformed; the message says which and why.
    case invalidInput(String)
    /// Something the caller named does not exist (or is not theirs to see).
    case notFound(String)
    /// The request conflicts with the current state (a taken slug, a group still in use, …).
    case conflict(String)
    /// Any other SQLite/GRDB error, described.
    case database(String)

    public var description: String {
        switch self {
        case .namespaceOwnedByAnotherUser(let ns):
            return "namespace \(ns) is already owned by another user"
        case .invalidNamespace(let ns):
            return "invalid namespace \(ns.debugDescription): it must be 1-256 characters without control characters"
        case .namespaceNotFound(let ns):
            return "namespace \(ns) is not registered"
        case .invalidUserName(let name):
            return "invalid user name \(name.debugDescription): it must be 1-64 characters without control characters"
        case .userExists(let name):
            return "user \(name) already exists"
        case .userNotFound(let name):
            return "user \(name) does not exist"
        case .userIDNotFound(let id):
            return "user #\(id) does not exist"
        case .tokenNotFound(let id):
            return "token #\(id) does not exist"
        case .adminNameTaken:
            return "no admin user exists, but a non-admin user is called \"admin\"; promote it or rename it"
        case .randomFailure:
            return "the system random number generator (RAND_bytes) failed"
        case .dataDirectory(let path, let reason):
            return "data directory \(path): \(reason)"
        case .invalidInput(let message), .notFound(let message), .conflict(let message):
            return message
        case .database(let message):
            return "database error: \(message)"
        }
    }
}
