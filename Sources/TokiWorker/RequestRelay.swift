// One tunnelled request: TunnelRequest line in, local HTTP call, TunnelResponse lines out
// (spec §5.1-5.4, §7.4).

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import TokiMux
import TokiProtocol
import TokiTunnel

// MARK: - In-flight requests

/// Data streams being served: bounded, addressable by `request_id` for `cancel_request`, and
/// observable for draining.
final class InFlightRegistry: Sendable {
    struct Entry: Sendable {
        var requestID: String?
        let cancel: AsyncEvent
        /// Until the request line is read: when to give up on it, and what to close then.
        var awaitingLine: (deadline: ContinuousClock.Instant, close: @Sendable () -> Void)?
        var lineTimedOut = false
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextToken: UInt64 = 0
    }

    let limit: Int
    private let state = AsyncCondition(State())

    init(limit: Int) { self.limit = limit }

    var count: Int { state.withLock { $0.entries.count } }

    /// A slot for a new stream, or nil when `limit` streams are already being served.
    func reserve() -> (token: UInt64, cancel: AsyncEvent)? {
        state.withLock { state in
            guard state.entries.count < limit else { return nil }
            state.nextToken += 1
            let event = AsyncEvent()
            state.entries[state.nextToken] = Entry(requestID: nil, cancel: event)
            return (state.nextToken, event)
        }
    }

    func setRequestID(_ requestID: String, for token: UInt64) {
        state.withLock { $0.entries[token]?.requestID = requestID }
    }

    /// The stream under `token` must deliver its request line by `deadline`, or `close` runs
    /// (from `closeLateStreams`). One sweep for every stream instead of a timer task each.
    func awaitLine(_ token: UInt64, by deadline: ContinuousClock.Instant, close: @escaping @Sendable () -> Void) {
        state.withLock { $0.entries[token]?.awaitingLine = (deadline, close) }
    }

    /// The request line arrived (or the stream ended): no deadline any more. True if the
    /// deadline had already passed and the stream was closed for it.
    func lineRead(_ token: UInt64) -> Bool {
        state.withLock { state in
            state.entries[token]?.awaitingLine = nil
            return state.entries[token]?.lineTimedOut ?? false
        }
    }

    /// Closes the streams whose request line is overdue at `now`.
    func closeLateStreams(now: ContinuousClock.Instant) {
        let late = state.withLock { state -> [@Sendable () -> Void] in
            var late: [@Sendable () -> Void] = []
            for (token, entry) in state.entries {
                guard let awaiting = entry.awaitingLine, awaiting.deadline <= now else { continue }
                state.entries[token]?.awaitingLine = nil
                state.entries[token]?.lineTimedOut = true
                late.append(awaiting.close)
            }
            return late
        }
        for close in late { close() }
    }

    func release(_ token: UInt64) {
        state.withLock { _ = $0.entries.removeValue(forKey: token) }
    }

    /// Cancels every stream serving `requestID`; false if none is known.
    func cancel(requestID: String) -> Bool {
        let events = state.withLock { state in state.entries.values.filter { $0.requestID == requestID }.map(\.cancel) }
        for event in events { event.set() }
        return !events.isEmpty
    }

    func cancelAll() {
        let events = state.withLock { state in state.entries.values.map(\.cancel) }
        for event in events { event.set() }
    }

    /// Returns when no stream is being served (or on cancellation).
    func waitUntilIdle() async {
        await state.wait { $0.entries.isEmpty }
    }
}

// MARK: - Building the local request

/// Request-building rules that keep the worker pointed at its configured backends.
public enum LocalRequestBuilder {
    /// Request headers never forwarded (hop-by-hop, framing, and anything identifying a host).
    static let droppedRequestHeaders: Set<String> = [
        "host", "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
        "te", "trailer", "transfer-encoding", "upgrade", "content-length",
    ]
    /// Response headers not copied into the head frame.
    static let droppedResponseHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "te", "trailer", "transfer-encoding", "upgrade", "content-length",
    ]

    /// The backend URL for `requestPath` under `target`, with the guarantee that scheme, host
    /// and port are the target's and that no credentials were introduced. Dot segments and
    /// control characters in the path are refused (`invalid_target_url`).
    public static func url(target: String, requestPath: String) throws(WorkerRequestError) -> String {
        let key = URLKey(target: target, requestPath: requestPath)
        if let known = builtURLs.withLock({ $0[key] }) { return known }
        let built = try checkedURL(target: target, requestPath: requestPath)
        builtURLs.withLock { cache in
            if cache.count >= maxCachedURLs { cache.removeAll(keepingCapacity: true) }
            cache[key] = built
        }
        return built
    }

    private struct URLKey: Hashable, Sendable {
        var target: String
        var requestPath: String
    }

    /// URLs already built and checked: the work is a pure function of (target, path), and a
    /// worker sees a handful of paths, so this saves URL parsing on every request. Bounded: a
    /// full cache starts over.
    private static let builtURLs = Mutex<[URLKey: String]>([:])
    static let maxCachedURLs = 256

    private static func checkedURL(target: String, requestPath: String) throws(WorkerRequestError) -> String {
        let invalid = { (why: String) in
            WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.invalidTargetURL, message: why)
        }
        if requestPath.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" }) {
            throw invalid("request path contains a control character, space or backslash")
        }
        let pathOnly = requestPath.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        for segment in pathOnly.split(separator: "/") {
            let decoded = segment.removingPercentEncoding ?? String(segment)
            if decoded == "." || decoded == ".." || decoded.contains("/") || decoded.contains("\\") {
                throw invalid("request path must not contain dot segments or encoded slashes: \(requestPath)")
            }
        }
        let merged = try mergeTargetURL(target: target, requestPath: requestPath)
        guard let built = URLComponents(string: merged), let base = URLComponents(string: target.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw invalid("cannot parse backend URL built from \(target) and \(requestPath)") }
        guard built.scheme?.lowercased() == base.scheme?.lowercased(),
              built.host?.lowercased() == base.host?.lowercased(),
              built.port == base.port,
              built.user == base.user, built.password == base.password
        else { throw invalid("request path \(requestPath) would leave the configured backend \(target)") }
        return merged
    }

    /// An HTTP method token (RFC 9110 `token`), upper-cased letters as sent by hubs.
    static func method(_ raw: String) throws(WorkerRequestError) -> HTTPMethod {
        let m = raw.isEmpty ? "POST" : raw
        guard m.utf8.count <= 32, m.utf8.allSatisfy(isTokenByte) else {
            throw WorkerRequestError(code: TunnelProtocol.WorkerErrorCode.localRequestFailed, message: "invalid method \(raw)")
        }
        return HTTPMethod(rawValue: m)
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// The full local request for `request` against `target`.
    static func build(_ request: TunnelRequest, target: ResolvedTarget) throws(WorkerRequestError) -> HTTPClientRequest {
        let url = try url(target: target.url, requestPath: request.path)
        var headers = mergeRequestHeaders(tunnelHeaders: request.headers, targetHeaders: target.headers)
        headers = headers.filter { !droppedRequestHeaders.contains($0.key.lowercased()) }
        let body = try RequestRewriter.prepareBody(request.body, headers: headers, target: target)
        var local = HTTPClientRequest(url: url)
        local.method = try method(request.method)
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) {
            // No CR/LF smuggling through configured or tunnelled values.
            guard !name.contains(where: { $0.isNewline }), !value.contains(where: { $0.isNewline }) else { continue }
            local.headers.replaceOrAdd(name: name, value: value)
        }
        if let body, body.readableBytes > 0 {
            local.body = .bytes(body)
        } else if local.method == .POST || local.method == .PUT || local.method == .PATCH {
            local.body = .bytes(ByteBuffer())
        }
        return local
    }

    /// The head frame's header map: flattened like Go, without hop-by-hop and framing headers.
    static func responseHeaders(_ headers: HTTPHeaders) -> [String: String] {
        TunnelHeaders.flatten(headers.lazy
            .filter { !droppedResponseHeaders.contains($0.name.lowercased()) }
            .map { (name: $0.name, value: $0.value) })
    }
}

// MARK: - Serving one stream

/// Why a data stream stopped being served.
enum StreamOutcome: String, Sendable {
    case completed  // eof written
    case failed  // error line written
    case cancelled  // cancel_request or shutdown
    case hubClosed  // the hub closed the stream (or the session died)
    case badRequest
}

/// Serves the data streams of one session, with the service's backend client, in-flight
/// registry and model catalog (as `WorkerConnection` reads its options and logger).
struct RequestRelay: Sendable {
    let service: WorkerService
    var logger: Logger { service.logger }

    /// Serves `stream` (already counted in `registry` under `token`), then closes it.
    func serve(_ stream: MuxStream, token: UInt64, cancel: AsyncEvent) async {
        defer {
            stream.close()
            service.registry.release(token)
        }
        let reader = StreamLineReader(stream, maxLineLength: TunnelProtocol.maxRequestLineLength)
        let request: TunnelRequest
        do {
            // The deadline is kept by the service's one sweeper (`closeLateStreams`), not a timer per request.
            service.registry.awaitLine(token, by: .now + service.options.requestLineTimeout, close: { stream.close() })
            let line: ByteBuffer?
            do { line = try await reader.nextLine() } catch {
                _ = service.registry.lineRead(token)
                throw error
            }
            if service.registry.lineRead(token) {
                logger.warning("no request line on data stream within the time limit; closing it", metadata: ["stream": "\(stream.id)"])
                return
            }
            guard let line else { return }  // closed before sending anything
            request = try TunnelRequest.decode(line: line)
        } catch {
            logger.warning("unreadable request line on data stream", metadata: ["stream": "\(stream.id)", "error": "\(error)"])
            var out = ByteBuffer()
            TunnelResponse.writeErrorLine(requestID: "", code: TunnelProtocol.WorkerErrorCode.localRequestFailed,
                                          message: "invalid tunnel request: \(error)", into: &out)
            try? await stream.write(out)
            return
        }
        service.registry.setRequestID(request.requestID, for: token)
        var requestLogger = self.logger
        requestLogger[metadataKey: "request_id"] = "\(request.requestID)"
        requestLogger[metadataKey: "model"] = "\(request.model ?? "")"
        let logger = requestLogger

        let outcome = await withTaskGroup(of: StreamOutcome.self) { group in
            group.addTask { await self.relay(request, on: stream, logger: logger) }
            group.addTask {
                // The hub never half-closes after the request line: EOF or an error means it is gone.
                do {
                    while try await reader.nextLine() != nil {}
                } catch {}
                return .hubClosed
            }
            group.addTask {
                await cancel.wait()
                return .cancelled
            }
            let first = await group.next() ?? .cancelled
            // Closing first also wakes the watcher's parked read (FIN after what was written).
            stream.close()
            group.cancelAll()
            return first
        }
        service.options.metrics.relayed(outcome)
        logger.debug("data stream done", metadata: ["outcome": "\(outcome.rawValue)"])
    }

    /// Largest answer (by its Content-Length) written to the hub in one piece.
    static let wholeAnswerLimit = TunnelProtocol.tunnelChunkSize

    /// Calls the backend and writes head, body chunks and eof (or an error line).
    func relay(_ request: TunnelRequest, on stream: MuxStream, logger: Logger) async -> StreamOutcome {
        let rid = request.requestID
        func fail(_ code: String, _ message: String) async -> StreamOutcome {
            var out = ByteBuffer()
            TunnelResponse.writeErrorLine(requestID: rid, code: code, message: message, into: &out)
            do { try await stream.write(out) } catch { return .hubClosed }
            return .failed
        }

        let local: HTTPClientRequest
        do throws(WorkerRequestError) {
            let target = try service.catalog.snapshot.resolver.resolve(model: request.model)
            local = try LocalRequestBuilder.build(request, target: target)
        } catch {
            logger.info("request refused", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
            service.options.metrics.backendErrors.refused.increment()
            return await fail(error.code, error.message)
        }

        let response: HTTPClientResponse
        do {
            response = try await service.client.execute(local, deadline: .distantFuture, logger: logger)
        } catch {
            if Task.isCancelled { return .cancelled }
            logger.warning("local request failed", metadata: ["url": "\(local.url)", "error": "\(error)"])
            service.options.metrics.backendErrors.request.increment()
            return await fail(TunnelProtocol.WorkerErrorCode.localRequestFailed, "local request failed: \(error)")
        }

        var out = ByteBuffer()
        TunnelResponse.writeHeadLine(requestID: rid, statusCode: Int(response.status.code),
                                     headers: LocalRequestBuilder.responseHeaders(response.headers), into: &out)
        // A small answer of known length goes out whole, head + body + eof in one write: one
        // mux frame instead of three, and the hub can answer it without streaming. Anything
        // else (SSE, unknown or large lengths) is passed on as it arrives.
        let declared = response.headers.first(name: "content-length").flatMap { Int($0) }
        var holding = declared.map { $0 <= Self.wholeAnswerLimit } ?? false
        if !holding {
            do { try await stream.write(out) } catch { return .hubClosed }
            out.clear()
        }
        var received = 0

        var body = response.body.makeAsyncIterator()
        while true {
            let next: ByteBuffer?
            do {
                next = try await body.next()
            } catch {
                if Task.isCancelled { return .cancelled }
                logger.warning("local response body failed", metadata: ["error": "\(error)"])
                service.options.metrics.backendErrors.body.increment()
                return await fail(TunnelProtocol.WorkerErrorCode.readLocalResponseFailed, "read local response: \(error)")
            }
            guard var chunk = next else { break }
            received += chunk.readableBytes
            // One line per backend read, at once; reads above 32 KiB are split like Go's frames.
            while chunk.readableBytes > 0 {
                let piece = chunk.readSlice(length: min(chunk.readableBytes, TunnelProtocol.tunnelChunkSize))!
                TunnelResponse.writeBodyChunkLine(requestID: rid, chunk: piece, into: &out)
            }
            if holding, received <= Self.wholeAnswerLimit { continue }
            holding = false  // longer than it said: pass the rest on as it comes
            do { try await stream.write(out) } catch { return Task.isCancelled ? .cancelled : .hubClosed }
            out.clear()
        }
        TunnelResponse.writeEOFLine(requestID: rid, into: &out)
        do { try await stream.write(out) } catch { return .hubClosed }
        return .completed
    }
}
