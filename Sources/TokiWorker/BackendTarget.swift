// Target resolution for one tunnelled request: model → backend URL, headers, API key
// (spec §7.2, §7.4 steps 1-3). Pure and socket-free.

import Foundation
import Synchronization
import TokiProtocol
import TokiTunnel

/// A failure the worker reports as a `TunnelResponse` error frame (codes of spec §5.7).
public struct WorkerRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { "\(code): \(message)" }
    public var payload: ErrorPayload { ErrorPayload(code: code, message: message) }
}

/// Everything needed to call the local backend for one public model.
public struct ResolvedTarget: Sendable, Equatable {
    /// Public model name (the `model_targets` key).
    public var modelName: String
    /// Model name the backend expects (`mapped_name`, or the public name).
    public var upstreamModel: String
    /// Base URL of the backend.
    public var url: String
    /// Effective, normalised backend type.
    public var backendType: String
    /// Target headers plus the selected API key header (never `Host`).
    public var headers: [String: String]

    public init(modelName: String, upstreamModel: String, url: String, backendType: String,
                headers: [String: String]) {
        self.modelName = modelName
        self.upstreamModel = upstreamModel
        self.url = url
        self.backendType = backendType
        self.headers = headers
    }

    /// True when the body's `model` must be rewritten.
    public var needsModelRewrite: Bool { !upstreamModel.isEmpty && upstreamModel != modelName }
}

/// Resolves `TunnelRequest.model` against the configured targets, rotating API keys
/// round-robin per public model name. Thread-safe.
public final class TargetResolver: Sendable {
    public let config: TokiameConfig
    private let keyCursor = Mutex<[String: Int]>([:])
    /// Per public model: everything about its target that does not change between requests,
    /// worked out once (trimming, header merging) instead of per request.
    private let prepared: [String: PreparedTarget]

    private struct PreparedTarget: Sendable {
        var target: ResolvedTarget  // headers without the API key
        var apiKeys: [String]
        var apiKeyHeader: String
        var apiKeyPrefix: String
    }

    public init(config: TokiameConfig) {
        self.config = config
        var prepared: [String: PreparedTarget] = [:]
        for (model, target) in config.modelTargets {
            var headers: [String: String] = [:]
            for (k, v) in target.headers {
                let k = k.trimmingCharacters(in: .whitespaces), v = v.trimmingCharacters(in: .whitespaces)
                if k.isEmpty || v.isEmpty || k.lowercased() == "host" { continue }
                setHeader(&headers, k, v)
            }
            let mapped = target.mappedName.trimmingCharacters(in: .whitespacesAndNewlines)
            let resolved = ResolvedTarget(modelName: model, upstreamModel: mapped.isEmpty ? model : mapped, url: target.url,
                                          backendType: config.effectiveBackendType(for: target), headers: headers)
            prepared[model] = PreparedTarget(target: resolved, apiKeys: target.apiKeys, apiKeyHeader: target.apiKeyHeader,
                                             apiKeyPrefix: target.apiKeyPrefix)
        }
        self.prepared = prepared
    }

    public func resolve(model rawModel: String?) throws(WorkerRequestError) -> ResolvedTarget {
        let model = Self.trimmed(rawModel ?? "")
        guard !model.isEmpty else {
            throw WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.targetNotFound, message: "model is required")
        }
        guard let entry = prepared[model] else {
            throw WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.targetNotFound,
                                     message: "no local target configured for model \(model)")
        }
        var resolved = entry.target
        if let key = selectAPIKey(model: model, keys: entry.apiKeys) {
            let (name, value) = Self.apiKeyHeader(header: entry.apiKeyHeader, prefix: entry.apiKeyPrefix, key: key)
            if name.lowercased() != "host" { setHeader(&resolved.headers, name, value) }
        }
        return resolved
    }

    /// `model` without surrounding whitespace; Foundation only when an end is not plain ASCII.
    static func trimmed(_ model: String) -> String {
        ASCII.hasVisibleEnds(model) ? model : model.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Header name and value for an API key: header defaults to `Authorization`; the default
    /// prefix `"Bearer "` applies only to `Authorization` (case-insensitive); other headers get
    /// no prefix unless one is configured.
    public static func apiKeyHeader(header: String, prefix: String, key: String) -> (name: String, value: String) {
        var name = header.trimmingCharacters(in: .whitespaces)
        if name.isEmpty { name = "Authorization" }
        if name.lowercased() == "authorization" {
            return (name, (prefix.isEmpty ? "Bearer " : prefix) + key)
        }
        return (name, prefix + key)
    }

    /// One key is always used as is; several rotate round-robin per public model name.
    public func selectAPIKey(model: String, keys: [String]) -> String? {
        if keys.isEmpty { return nil }
        if keys.count == 1 { return keys[0] }
        return keyCursor.withLock { cursor in
            let index = cursor[model, default: 0]
            cursor[model] = (index + 1) % keys.count
            return keys[index % keys.count]
        }
    }
}

/// Sets a header, replacing any existing entry with the same name case-insensitively.
func setHeader(_ headers: inout [String: String], _ name: String, _ value: String) {
    let lower = name.lowercased()
    if let existing = headers.keys.first(where: { $0.lowercased() == lower }), existing != name {
        headers.removeValue(forKey: existing)
    }
    headers[name] = value
}

// MARK: - Headers

/// Headers for the local request (spec §7.4 step 3): of the tunnel headers only `Accept` and
/// `Content-Type` (case-insensitive) survive; then the target headers (API key included) are laid
/// over them, replacing case-insensitively. Empty names/values and `Host` are dropped. Names are
/// canonicalised like Go's `Header.Set` ("content-type" → "Content-Type").
public func mergeRequestHeaders(tunnelHeaders: [String: String]?, targetHeaders: [String: String]) -> [String: String] {
    var merged: [String: String] = [:]
    for (key, value) in tunnelHeaders ?? [:] {
        let k = trimmedSpaces(key)
        let name: String
        if ASCII.equalsIgnoringCase(k, "accept") { name = "Accept" } else if ASCII.equalsIgnoringCase(k, "content-type") { name = "Content-Type" } else { continue }
        let v = trimmedSpaces(value)
        if v.isEmpty { continue }
        merged[name] = v
    }
    for (key, value) in targetHeaders {
        let k = trimmedSpaces(key), v = trimmedSpaces(value)
        if k.isEmpty || v.isEmpty || ASCII.equalsIgnoringCase(k, "host") { continue }
        merged[TunnelHeaders.canonicalKey(k)] = v
    }
    return merged
}

/// `text` without surrounding whitespace; Foundation only when an end is not visible ASCII.
func trimmedSpaces(_ text: String) -> String {
    ASCII.hasVisibleEnds(text) ? text : text.trimmingCharacters(in: .whitespaces)
}

// MARK: - URL merge

/// Builds the backend URL (Go `buildLocalTargetURL`): the longest suffix of the target path that
/// equals a prefix of the request path is joined without repetition, and the target's query is
/// replaced by the request's (even when the request has none).
///
///     mergeTargetURL(target: "http://h:8000/v1", requestPath: "/v1/chat/completions")
///       == "http://h:8000/v1/chat/completions"
public func mergeTargetURL(target: String, requestPath: String) throws(WorkerRequestError) -> String {
    let raw = target.trimmingCharacters(in: .whitespacesAndNewlines)
    let invalid = { (why: String) in
        WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.invalidTargetURL, message: why)
    }
    guard let sep = raw.range(of: "://"), let comps = URLComponents(string: raw) else {
        throw invalid("base target must include scheme and host: \(target)")
    }
    let scheme = raw[..<sep.lowerBound].lowercased()
    guard !scheme.isEmpty, let host = comps.host, !host.isEmpty else {
        throw invalid("base target must include scheme and host: \(target)")
    }
    // Split the remainder into authority, path, query, fragment (keeping the raw encoding).
    let rest = raw[sep.upperBound...]
    let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
    let authority = rest[..<authorityEnd]
    var tail = rest[authorityEnd...]
    var fragment: Substring? = nil
    if let hash = tail.firstIndex(of: "#") {
        fragment = tail[tail.index(after: hash)...]
        tail = tail[..<hash]
    }
    let basePath = tail.firstIndex(of: "?").map { tail[..<$0] } ?? tail

    let req = requestPath.trimmingCharacters(in: .whitespacesAndNewlines)
    var reqNoFragment = Substring(req)
    if let hash = reqNoFragment.firstIndex(of: "#") { reqNoFragment = reqNoFragment[..<hash] }
    var reqPath = reqNoFragment
    var reqQuery: Substring = ""
    if let q = reqNoFragment.firstIndex(of: "?") {
        reqPath = reqNoFragment[..<q]
        reqQuery = reqNoFragment[reqNoFragment.index(after: q)...]
    }

    var out = scheme + "://" + authority + mergeTargetPath(String(basePath), String(reqPath))
    if !reqQuery.isEmpty { out += "?" + reqQuery }
    if let fragment, !fragment.isEmpty { out += "#" + fragment }
    return out
}

/// Go `mergeTargetPath`: segment-wise merge with the longest suffix/prefix overlap removed.
public func mergeTargetPath(_ basePath: String, _ requestPath: String) -> String {
    func segments(_ p: String) -> [Substring] {
        p.split(separator: "/").map { $0.trimmingCharacters(in: .whitespaces)[...] }.filter { !$0.isEmpty }
    }
    let base = segments(basePath)
    let request = segments(requestPath)
    if request.isEmpty { return "/" + base.joined(separator: "/") }
    if base.isEmpty { return "/" + request.joined(separator: "/") }
    var overlap = 0
    for size in stride(from: min(base.count, request.count), to: 0, by: -1)
    where base[(base.count - size)...].elementsEqual(request[..<size]) {
        overlap = size
        break
    }
    return "/" + (base + request[overlap...]).joined(separator: "/")
}
