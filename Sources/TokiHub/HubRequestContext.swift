import Hummingbird
import NIOCore
import TokiStore

/// Per-request context: the request id that follows the request to the worker and back, and
/// the caller once `APIAuthentication` has checked its token.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    /// The authenticated caller (set by `APIAuthentication`; nil on routes without it).
    public internal(set) var user: AuthenticatedToken?
    /// The client's connection: its socket is tuned for streaming, and it is closed when the
    /// client is cut off (a blocked write would otherwise hold the response forever).
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The caller, on routes behind `APIAuthentication`.
    func authenticatedUser() throws -> AuthenticatedToken {
        guard let user else { throw OpenAIError.missingToken }
        return user
    }
}
