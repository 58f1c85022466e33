import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization
import TokiMux
import TokiProtocol
import TokiStore
import TokiTunnel

/// Per-request context: the request id that follows the request to the worker and back.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var requestID = ""
    /// The client's connection: its socket is tuned for streaming, and it is closed when the
    /// client is cut off (a blocked write would otherwise hold the response forever).
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

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
        return "req-" + UUID().uuidString.lowercased()
    }
}

/// What the hub needs out of a request body: the model and whether it streams.
/// (Public, like `BodyInspector`, for the fuzz targets in Tests/Fuzz.)
public struct RoutedBody: Sendable, Equatable {
    public var model: String
    public var stream: Bool
}

/// Reads the routing fields out of a client's request body. Public only so that the fuzz
/// package (Tests/Fuzz) can drive it; the hub is its only other caller.
public enum BodyInspector {
    /// JSON bodies: a top-level object with a non-empty string `model`.
    public static func inspectJSON(_ body: ByteBuffer) throws -> RoutedBody {
        guard body.readableBytes > 0 else { throw OpenAIError.malformedJSON("the body is empty") }
        let object: Any
        do {
            object = try body.withUnsafeReadableBytes { raw in
                try JSONSerialization.jsonObject(with: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress!), count: raw.count, deallocator: .none), options: [.fragmentsAllowed])
            }
        } catch {
            throw OpenAIError.malformedJSON("\((error as NSError).localizedDescription)")
        }
        guard let dictionary = object as? [String: Any] else { throw OpenAIError.malformedJSON("expected a JSON object") }
        guard let model = dictionary["model"] as? String, !model.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw OpenAIError.missingModel
        }
        let stream = (dictionary["stream"] as? Bool) ?? false
        return RoutedBody(model: model, stream: stream)
    }

    /// multipart/form-data bodies: the `model` field.
    public static func inspectMultipart(_ body: ByteBuffer, contentType: String) throws -> RoutedBody {
        guard let boundary = contentType.split(separator: ";").compactMap({ part -> String? in
            let kv = part.trimmingCharacters(in: .whitespaces)
            guard kv.lowercased().hasPrefix("boundary=") else { return nil }
            return String(kv.dropFirst(9)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }).first, !boundary.isEmpty else {
            throw OpenAIError(.badRequest, "multipart body without a boundary", type: "invalid_request_error", code: "invalid_multipart")
        }
        let bytes = body.readableBytesView
        let delimiter = Array(("--" + boundary).utf8)
        var searchFrom = bytes.startIndex
        while let start = bytes.firstRange(of: delimiter, in: searchFrom) {
            let headersStart = start.upperBound
            guard let headersEnd = bytes.firstRange(of: Array("\r\n\r\n".utf8), in: headersStart) else { break }
            let headerText = String(decoding: bytes[headersStart..<headersEnd.lowerBound], as: UTF8.self).lowercased()
            let valueStart = headersEnd.upperBound
            let next = bytes.firstRange(of: Array(("\r\n--" + boundary).utf8), in: valueStart)
            if headerText.contains("name=\"model\""), let next {
                let value = String(decoding: bytes[valueStart..<next.lowerBound], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !value.isEmpty else { throw OpenAIError.missingModel }
                return RoutedBody(model: value, stream: false)
            }
            guard let next else { break }
            searchFrom = next.lowerBound + 2
        }
        throw OpenAIError.missingModel
    }
}

extension ByteBufferView {
    func firstRange(of needle: [UInt8], in from: Index) -> Range<Index>? {
        guard !needle.isEmpty, count >= needle.count, from <= endIndex - needle.count else { return nil }
        var i = from
        let last = endIndex - needle.count
        while i <= last {
            if self[i] == needle[0] {
                var j = 1
                while j < needle.count, self[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i..<(i + needle.count) }
            }
            i += 1
        }
        return nil
    }
}

/// Keeps the tail of a response body to read the `usage` the backend reported (for SSE, the
/// last chunk carries it) without parsing every chunk.
struct UsageSniffer: Sendable {
    private var tail = ByteBuffer()
    private static let keep = 8192

    mutating func observe(_ chunk: ByteBuffer) {
        if chunk.readableBytes >= Self.keep {
            tail = chunk.getSlice(at: chunk.readerIndex + chunk.readableBytes - Self.keep, length: Self.keep)!
            return
        }
        tail.writeImmutableBuffer(chunk)
        if tail.readableBytes > 2 * Self.keep {
            tail.moveReaderIndex(forwardBy: tail.readableBytes - Self.keep)
            tail.discardReadBytes()
        }
    }

    /// The last `prompt_tokens` / `completion_tokens` values in the tail.
    var usage: (prompt: Int?, completion: Int?) {
        let text = String(decoding: tail.readableBytesView, as: UTF8.self)
        func last(_ key: String) -> Int? {
            guard let range = text.range(of: "\"\(key)\":", options: .backwards) else { return nil }
            let digits = text[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
            return Int(digits)
        }
        return (last("prompt_tokens"), last("completion_tokens"))
    }
}
