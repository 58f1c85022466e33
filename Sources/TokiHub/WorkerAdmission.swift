import Foundation
import TokiProtocol
import TokiStore
import TokiTunnel

/// Who a worker connection acts for: the owner of the token it presented.
public struct WorkerPrincipal: Sendable, Equatable {
    public var userID: Int64
    public var userName: String
    /// The owner's primary group: what its workers serve unless they ask for other groups.
    public var group: String
    /// The token presented (nil where the principal was vouched for by a parent hub).
    public var tokenID: Int64?
    /// The token itself, kept only by relays (which re-announce their workers upstream after
    /// a reconnect); nil at the root.
    public var token: String?
    /// Every group the owner's workers may serve: the primary group and the private pools the
    /// owner holds an active grant to (a grant confers both calling and providing, as in the
    /// original), narrowed to the token's pinned groups. Empty: the primary group only.
    public var groups: [String]

    public init(userID: Int64, userName: String, group: String, tokenID: Int64? = nil, token: String? = nil, groups: [String] = []) {
        self.userID = userID
        self.userName = userName
        self.group = group
        self.tokenID = tokenID
        self.token = token
        self.groups = groups
    }
}

/// What a worker asks to be registered as (already checked for shape: non-empty namespace,
/// normalised models). Made by the hub's session handler; admission only reads it.
public struct WorkerAdmissionRequest: Sendable, Equatable {
    public var namespace: String
    public var nodeName: String
    public var models: [String]
    /// Groups asked for; empty: the principal's primary group.
    public var groups: [String]
    /// The relays the worker sits behind, nearest this node first (empty: direct).
    public var via: [String] = []
    /// The worker's `hardware_info` (passed up a chain with the worker).
    public var hardwareInfo: RawJSON?

    public init(namespace: String, nodeName: String, models: [String], groups: [String], via: [String] = [], hardwareInfo: RawJSON? = nil) {
        self.hardwareInfo = hardwareInfo
        self.namespace = namespace
        self.nodeName = nodeName
        self.models = models
        self.groups = groups
        self.via = via
    }
}

/// Group lists as the protocol carries them: comma separated (`register.group`, relay lines).
public enum GroupList {
    /// The groups named (trimmed, empty entries dropped).
    public static func parse(_ list: String?) -> [String] {
        (list ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// The groups as one list, sorted.
    public static func format(_ groups: some Sequence<String>) -> String {
        groups.sorted().joined(separator: ",")
    }
}

/// Admission granted: what the registry records about the worker.
public struct WorkerAdmissionVerdict: Sendable, Equatable {
    public var userID: Int64
    /// Stable id of the namespace (the `worker_id` of the register ack).
    public var workerID: Int64
    public var namespace: String
    /// Groups the worker serves.
    public var groups: Set<String>

    public init(userID: Int64, workerID: Int64, namespace: String, groups: Set<String>) {
        self.userID = userID
        self.workerID = workerID
        self.namespace = namespace
        self.groups = groups
    }
}

/// Why admission was refused. The worker is sent `code` (`TunnelProtocol.HubErrorCode`) and
/// `message`, then its session closes.
public enum AdmissionRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// The namespace belongs to another user (the store's reason).
    case namespaceNotOwned(String)
    /// The principal may not serve this group.
    case groupNotAuthorized(group: String)
    /// Anything else (invalid namespace, the store failing, …).
    case failed(String)
    /// A parent hub's refusal, passed on as it was said (a relay's admission).
    case relayed(code: String, message: String)

    public var code: String {
        switch self {
        case .namespaceNotOwned: TunnelProtocol.HubErrorCode.namespaceNotOwned
        case .groupNotAuthorized: TunnelProtocol.HubErrorCode.groupNotAuthorized
        case .failed: TunnelProtocol.HubErrorCode.registerFailed
        case .relayed(let code, _): code
        }
    }

    public var message: String {
        switch self {
        case .namespaceNotOwned(let reason), .failed(let reason): reason
        case .groupNotAuthorized(let group): "group \(group) is not authorized for current user"
        case .relayed(_, let message): message
        }
    }

    public var description: String { "\(code): \(message)" }
}

/// Decides which workers may join and as what: token → principal, namespace ownership, groups.
/// The hub's implementation sits over its store (`StoreWorkerAdmission`); a relay would ask
/// its parent hub instead.
public protocol WorkerAdmission: Sendable {
    /// The principal a worker's token stands for; nil for a missing, unknown or revoked token
    /// (or when it cannot be checked now).
    func authenticate(token: String) async -> WorkerPrincipal?
    /// The groups a worker of `principal` may serve out of `requested` (non-empty).
    func authorizeGroups(_ requested: [String], for principal: WorkerPrincipal) async throws(AdmissionRefusal) -> Set<String>
    /// Registers a worker: authorises its groups and claims its namespace for `principal`.
    func admit(_ request: WorkerAdmissionRequest, for principal: WorkerPrincipal) async throws(AdmissionRefusal) -> WorkerAdmissionVerdict
    /// Like `authenticate`, but tells a refused token from one that cannot be checked right
    /// now (a relay without its parent), so the worker hears the real reason.
    func check(token: String) async -> TokenCheck
    /// The root revoked token `tokenID`: forget what is cached about it.
    func revoked(tokenID: Int64)
}

/// A token check's outcome.
public enum TokenCheck: Sendable {
    case valid(WorkerPrincipal)
    case invalid
    /// Nobody can say now (why, for the worker).
    case unavailable(String)
}

extension WorkerAdmission {
    public func check(token: String) async -> TokenCheck {
        await authenticate(token: token).map { .valid($0) } ?? .invalid
    }

    public func revoked(tokenID: Int64) {}
}

/// Admission over the hub's own store: tokens with the `worker` scope (or both) through the
/// hub's token cache, namespaces owned forever by their first user, groups limited to the
/// owner's primary group and the private pools it was granted (the original's rule).
struct StoreWorkerAdmission: WorkerAdmission {
    let tokens: TokenCache
    let directory: any WorkerDirectory

    func authenticate(token: String) async -> WorkerPrincipal? {
        guard let user = try? await tokens.authenticate(token), user.scope.allowsWorkers else { return nil }
        return WorkerPrincipal(userID: user.userID, userName: user.userName, group: user.group, tokenID: user.tokenID, groups: user.groups)
    }

    func authorizeGroups(_ requested: [String], for principal: WorkerPrincipal) throws(AdmissionRefusal) -> Set<String> {
        let allowed = principal.groups.isEmpty ? [principal.group] : principal.groups
        for group in requested where !allowed.contains(group) {
            throw .groupNotAuthorized(group: group)
        }
        return Set(requested)
    }

    func admit(_ request: WorkerAdmissionRequest, for principal: WorkerPrincipal) async throws(AdmissionRefusal) -> WorkerAdmissionVerdict {
        let groups = request.groups.isEmpty ? [principal.group] : try authorizeGroups(request.groups, for: principal)
        do {
            let claim = try await directory.claimNamespace(namespace: request.namespace, userID: principal.userID, nodeName: request.nodeName,
                                                           group: GroupList.format(groups), models: request.models, now: Date())
            return WorkerAdmissionVerdict(userID: principal.userID, workerID: claim.workerID, namespace: request.namespace, groups: groups)
        } catch let error as StoreError {
            if case .namespaceOwnedByAnotherUser = error { throw .namespaceNotOwned(error.description) }
            throw .failed(error.description)
        } catch {
            throw .failed("\(error)")
        }
    }
}
