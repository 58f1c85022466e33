import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// An error answered in OpenAI's JSON shape: `{"error":{"message","type","param","code"}}`.
public struct OpenAIError: HTTPResponseError, CustomStringConvertible, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var code: String?
    public var param: String?
    /// Sent with the error (a 429's rate-limit headers).
    public var headers: [(String, String)] = []

    public init(_ status: HTTPResponse.Status, _ message: String, type: String, code: String? = nil, param: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    public var json: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString(#"{"error":{"message":"#)
        buffer.writeJSONString(message)
        buffer.writeString(#","type":"#)
        buffer.writeJSONString(type)
        buffer.writeString(#","param":"#)
        if let param { buffer.writeJSONString(param) } else { buffer.writeString("null") }
        buffer.writeString(#","code":"#)
        if let code { buffer.writeJSONString(code) } else { buffer.writeString("null") }
        buffer.writeString("}}")
        return buffer
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var fields: HTTPFields = [.contentType: "application/json"]
        for (name, value) in headers {
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        return Response(status: status, headers: fields, body: .init(byteBuffer: json))
    }

    // The errors the hub answers with, in one place.
    static let missingToken = OpenAIError(.unauthorized, "You didn't provide an API key. Send it as 'Authorization: Bearer <token>'.", type: "invalid_request_error", code: "missing_api_key")
    static let invalidToken = OpenAIError(.unauthorized, "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key")
    static let adminRequired = OpenAIError(.forbidden, "This endpoint needs an admin token.", type: "invalid_request_error", code: "admin_required")
    static let tooManyFailures = OpenAIError(.tooManyRequests, "Too many failed authentications from this address; wait a minute.", type: "invalid_request_error", code: "too_many_failed_authentications")
    static let workerScopeOnly = OpenAIError(.forbidden, "This API key may only register workers; use a key with the inference scope.", type: "invalid_request_error", code: "token_scope")
    static let draining = OpenAIError(.serviceUnavailable, "The hub is shutting down; retry on another instance.", type: "server_error", code: "shutting_down")

    static func malformedJSON(_ detail: String) -> OpenAIError {
        OpenAIError(.badRequest, "We could not parse the JSON body of your request: \(detail)", type: "invalid_request_error", code: "invalid_json")
    }
    /// A priced answer arrived but its charge could not be committed: it is not delivered.
    static let chargeFailed = OpenAIError(.internalServerError, "The answer could not be billed, so it was not delivered; please retry",
                                          type: "server_error", code: "billing_unavailable")
    static let missingModel = OpenAIError(.badRequest, "you must provide a model parameter", type: "invalid_request_error", code: "missing_model", param: "model")
    static func bodyTooLarge(limit: Int) -> OpenAIError {
        OpenAIError(.contentTooLarge, "Request body is larger than the limit of \(limit) bytes.", type: "invalid_request_error", code: "request_too_large")
    }
    static func unknownModel(_ model: String) -> OpenAIError {
        OpenAIError(.notFound, "The model `\(model)` does not exist or you do not have access to it.", type: "invalid_request_error", code: "model_not_found", param: "model")
    }
    static func noWorker(_ model: String) -> OpenAIError {
        OpenAIError(.serviceUnavailable, "No worker serving `\(model)` is online right now.", type: "server_error", code: "no_worker_available")
    }
    static func unknownPath(_ path: String) -> OpenAIError {
        OpenAIError(.notFound, "Unknown request URL: \(path).", type: "invalid_request_error", code: "unknown_url")
    }
    static func upstream(_ message: String, code: String?) -> OpenAIError {
        OpenAIError(.badGateway, message, type: "upstream_error", code: code ?? "worker_error")
    }
    static func timeout(_ seconds: Int) -> OpenAIError {
        OpenAIError(.gatewayTimeout, "The worker did not answer within \(seconds) s.", type: "upstream_error", code: "worker_timeout")
    }
}
