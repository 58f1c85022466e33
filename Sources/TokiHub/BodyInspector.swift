import Foundation
import NIOCore
import TokiProtocol

/// What the hub needs out of a request body: the model and whether it streams.
/// (Public, like `BodyInspector`, for the fuzz targets in Tests/Fuzz.)
public struct RoutedBody: Sendable, Equatable {
    public var model: String
    public var stream: Bool
    /// `stream_options.include_usage` as the client sent it (nil: no `stream_options` object).
    public var includeUsage: Bool? = nil
}

/// Reads the routing fields out of a client's request body. Public only so that the fuzz
/// package (Tests/Fuzz) can drive it; the hub is its only other caller.
public enum BodyInspector {
    /// JSON bodies: a top-level object with a non-empty string `model`. One validating pass
    /// over the body that keeps only the routing fields (`RoutingFields`).
    public static func inspectJSON(_ body: ByteBuffer) throws -> RoutedBody {
        guard body.readableBytes > 0 else { throw OpenAIError.malformedJSON("the body is empty") }
        let fields: RoutingFields
        do { fields = try RoutingFields.read(body) } catch let error as JSONReadError {
            if case .typeMismatch = error.reason, error.offset == 0 || body.readableBytesView.prefix(error.offset).allSatisfy(Self.isSpace) {
                throw OpenAIError.malformedJSON("expected a JSON object")
            }
            throw OpenAIError.malformedJSON(error.description)
        }
        guard let model = fields.model, !isBlank(model) else { throw OpenAIError.missingModel }
        let includeUsage: Bool? = switch fields.streamOptions {
        case nil: nil
        case .notAnObject: false
        case .object(let includeUsage): includeUsage ?? false
        }
        return RoutedBody(model: model, stream: fields.stream ?? false, includeUsage: includeUsage)
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    /// Empty or only whitespace (the common case, visible ASCII ends, without Foundation).
    static func isBlank(_ model: String) -> Bool {
        ASCII.hasVisibleEnds(model) ? false : model.trimmingCharacters(in: .whitespaces).isEmpty
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
