import Foundation
import Hummingbird
import NIOCore
import TokiStore

/// The management API's reply shape, the original hub's: `{"success","message","data"}`.
/// Failures keep it, with `success:false`, a message that says what is wrong, and a 4xx status
/// (5xx only for the hub's own faults, whose details go to the log, not the client).
enum APIEnvelope {
    /// Largest management request body.
    static let maxBodyBytes = 64 * 1024

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        // Whole unix seconds, as the original's API writes them.
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Int64(date.timeIntervalSince1970.rounded(.down)))
        }
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .secondsSince1970
        return decoder
    }()

    /// `{"success":true,"message":"","data":…}`. Keys are snake case; dates unix seconds.
    static func ok<T: Encodable>(_ data: T, status: HTTPResponse.Status = .ok) throws -> Response {
        response(status: status, body: try encoder.encode(Success(data: data)))
    }

    private struct Success<T: Encodable>: Encodable {
        var success = true
        var message = ""
        var data: T
    }

    static func failure(_ status: HTTPResponse.Status, _ message: String) -> Response {
        var body = ByteBuffer(string: #"{"success":false,"message":"#)
        body.writeJSONString(message)
        body.writeString(#","data":null}"#)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    static func response(status: HTTPResponse.Status, body: Data) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// Reads a JSON object body into `T`, refusing (400, naming them) bodies that are not JSON
    /// objects, fields `T` does not know, and fields of the wrong type.
    static func decode<T: Decodable & APIBody>(_ type: T.Type, from request: Request) async throws -> T {
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: maxBodyBytes) } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "the request body is larger than \(maxBodyBytes) bytes")
        }
        let data = Data(body.readableBytesView)
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw APIError(.badRequest, "the request body must be a JSON object")
        }
        let unknown = object.keys.filter { !T.fields.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw APIError(.badRequest, "unknown field\(unknown.count > 1 ? "s" : "") \(unknown.joined(separator: ", ")); expected \(T.fields.sorted().joined(separator: ", "))")
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw APIError(.badRequest, "field \(context.codingPath.map(\.stringValue.snakeCased).joined(separator: ".")) has the wrong type")
        } catch let DecodingError.keyNotFound(key, _) {
            throw APIError(.badRequest, "field \(key.stringValue.snakeCased) is required")
        } catch let DecodingError.dataCorrupted(context) {
            throw APIError(.badRequest, "field \(context.codingPath.map(\.stringValue.snakeCased).joined(separator: ".")): \(context.debugDescription)")
        } catch {
            throw APIError(.badRequest, "the request body could not be read: \(error)")
        }
    }
}

extension APIEnvelope {
    /// A collection of management routes: errors in the envelope (auth failures included), the
    /// caller authenticated, `worker`-scoped tokens refused (403).
    static func routes(tokens: TokenCache) -> RouteCollection<HubRequestContext> {
        RouteCollection(context: HubRequestContext.self)
            .add(middleware: EnvelopeErrors())
            .add(middleware: APIAuthentication(tokens: tokens))
            .add(middleware: RefuseWorkerTokens())
    }

    /// The path parameter `name` as a positive integer, else 400.
    static func id(_ context: HubRequestContext, _ name: String = "id") throws -> Int64 {
        try positiveID(context.parameters.get(name) ?? "", field: name)
    }

    /// `raw` as a positive integer (at most 19 digits, nothing else), else 400 naming `field`.
    static func positiveID(_ raw: String, field: String) throws -> Int64 {
        guard raw.utf8.count <= 19, raw.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let id = Int64(raw), id > 0 else {
            throw APIError(.badRequest, "\(field) must be a positive integer")
        }
        return id
    }
}

/// A reply object as one table of its JSON fields (snake case, as sent), so a view of a record is
/// a single list of `key: value` rather than a struct, an init and an encoder repeating each field.
/// A nil value is written as null, not left out: every record of a kind has the same keys.
struct JSONFields: Encodable {
    var fields: KeyValuePairs<String, any Encodable>

    init(_ fields: KeyValuePairs<String, any Encodable>) {
        self.fields = fields
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: FieldKey.self)
        for (key, value) in fields { try container.encode(value, forKey: FieldKey(stringValue: key)) }
    }

    private struct FieldKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// The management API is for people: a token that may only register workers gets 403.
struct RefuseWorkerTokens: RouterMiddleware {
    typealias Context = HubRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard try context.authenticatedUser().scope.allowsInference else {
            throw APIError(.forbidden, "this token's scope is worker: it may only register workers")
        }
        return try await next(request, context)
    }
}

/// A management request body: the JSON fields it accepts (snake case), so unknown ones are refused.
protocol APIBody {
    static var fields: Set<String> { get }
}

/// A management API failure: its status and what to tell the caller.
struct APIError: Error, Sendable {
    var status: HTTPResponse.Status
    var message: String

    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    static func notFound(_ what: String) -> APIError { APIError(.notFound, "\(what) not found") }
    static let forbidden = APIError(.forbidden, "this needs an admin token")
}

/// Turns everything thrown under `/api` into the envelope: `APIError` as given, the store's
/// input and state errors as 400/404/409, authentication failures as 401/403, and anything
/// else as a 500 whose details are logged, not sent.
struct EnvelopeErrors: RouterMiddleware {
    typealias Context = HubRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return APIEnvelope.failure(error.status, error.message)
        } catch let error as StoreError {
            switch error {
            case .invalidInput, .invalidUserName, .invalidNamespace: return APIEnvelope.failure(.badRequest, error.description)
            case .notFound, .userNotFound, .userIDNotFound, .tokenNotFound, .namespaceNotFound:
                return APIEnvelope.failure(.notFound, error.description)
            case .conflict, .userExists, .namespaceOwnedByAnotherUser: return APIEnvelope.failure(.conflict, error.description)
            default:
                context.logger.error("management request failed", metadata: ["error": "\(error)"])
                return APIEnvelope.failure(.internalServerError, "internal error (request \(context.requestID))")
            }
        } catch let error as OpenAIError {
            return APIEnvelope.failure(error.status, error.message)
        } catch let error as HTTPError {
            return APIEnvelope.failure(error.status, error.body ?? error.status.reasonPhrase)
        }
    }
}

extension String {
    /// `maxUses` → `max_uses` (what the envelope's encoder does to keys).
    var snakeCased: String {
        var out = ""
        for ch in self {
            if ch.isUppercase {
                out += "_" + ch.lowercased()
            } else {
                out.append(ch)
            }
        }
        return out
    }
}
