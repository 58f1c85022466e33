import Foundation
import HTTPTypes
import Hummingbird
import TokiProtocol
import TokiStore

extension HTTPField.Name {
    static let xRequestID = HTTPField.Name("X-Request-Id")!
}

/// Gives every request an id (the client's `X-Request-Id` if sane, else a new one), returns it
/// in the response headers, and turns every error into OpenAI's error JSON.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let id = Self.requestID(from: request.headers[.xRequestID])
        context.requestID = id
        context.logger[metadataKey: "request_id"] = "\(id)"
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as OpenAIError {
            response = try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let mapped: OpenAIError =
                switch error.status {
                case .notFound: .unknownPath(request.uri.path)
                case .contentTooLarge: OpenAIError(.contentTooLarge, error.body ?? "request too large", type: "invalid_request_error", code: "request_too_large")
                case .methodNotAllowed: OpenAIError(.methodNotAllowed, "Method \(request.method) is not allowed on \(request.uri.path).", type: "invalid_request_error", code: "method_not_allowed")
                default: OpenAIError(error.status, error.body ?? error.status.reasonPhrase, type: error.status.code >= 500 ? "server_error" : "invalid_request_error")
                }
            response = try mapped.response(from: request, context: context)
        }
        response.headers[.xRequestID] = id
        return response
    }

    /// Accepts a client id of up to 128 visible ASCII characters; otherwise makes one.
    static func requestID(from header: String?) -> String {
        if let header, !header.isEmpty, header.utf8.count <= 128, header.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            return header
        }
        return "req-" + FastUUID.next().uuidString.lowercased()
    }
}

/// Checks the caller's `Authorization: Bearer` token and puts the caller in the context;
/// 401 in OpenAI's shape (`missing_api_key`, `invalid_api_key`) otherwise.
struct APIAuthentication: RouterMiddleware {
    typealias Context = HubRequestContext
    let tokens: TokenCache

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], !header.isEmpty else { throw OpenAIError.missingToken }
        let address = context.channel.remoteAddress.map(AddressKey.init)
        if let address, tokens.failures.isBlocked(address) { throw OpenAIError.tooManyFailures }
        var token = ASCII.hasPrefixIgnoringCase(header, "bearer ") ? String(header.dropFirst(7)) : header
        if !ASCII.hasVisibleEnds(token) { token = token.trimmingCharacters(in: .whitespaces) }
        guard let user = try await tokens.authenticate(token) else {
            if let address { tokens.failures.recordFailure(address) }
            throw OpenAIError.invalidToken
        }
        var context = context
        context.user = user
        return try await next(request, context)
    }
}

/// Admin routes: the caller (behind `APIAuthentication`) must be an admin (403 otherwise).
struct AdminOnly: RouterMiddleware {
    typealias Context = HubRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard try context.authenticatedUser().isAdmin else { throw OpenAIError.adminRequired }
        return try await next(request, context)
    }
}

/// While the hub drains (shutting down), new requests get 503 `shutting_down`.
struct RefuseWhileDraining: RouterMiddleware {
    typealias Context = HubRequestContext
    let draining: Locked<Bool>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if draining.value { throw OpenAIError.draining }
        return try await next(request, context)
    }
}

/// The outermost middleware of an API route: counts the requests refused before its handler
/// ran (draining, a missing or bad token) as `model="unknown"`. The handler counts its own
/// answers and wraps its errors in `Counted`, which is unwrapped here, so nothing counts twice.
struct CountRefusals: RouterMiddleware {
    typealias Context = HubRequestContext
    let route: RouteMetrics

    struct Counted: Error {
        let error: any Error
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let counted as Counted {
            throw counted.error
        } catch {
            route.unknown.answered(status: Self.status(of: error))
            throw error
        }
    }

    /// The status an error is answered with (`RequestIDMiddleware` answers the rest with 500).
    static func status(of error: any Error) -> Int {
        (error as? any HTTPResponseError).map { Int($0.status.code) } ?? 500
    }
}
