import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

/// The stub OpenAI backend (Tests/StubBackend) as a process.
final class StubBackend: Sendable {
    let process: ChildProcess
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    init(models: [String]) async throws {
        process = try ChildProcess(Products.path("toki-stub-backend"), ["--port", "0", "--models", models.joined(separator: ",")], name: "stub backend")
        let line = try await process.waitForLine(prefix: "LISTEN ")
        guard let port = Int(line.split(separator: " ").last?.split(separator: ":").last ?? "") else { throw ChildProcessError("bad line \(line)") }
        self.port = port
    }

    /// Streaming responses the backend ended because the client (the worker) went away.
    func cancelledCount() async throws -> Int { try await counter("cancelled") }
    /// Streaming responses the backend finished.
    func completedCount() async throws -> Int { try await counter("completed") }
    /// Streaming responses begun.
    func streamCount() async throws -> Int { try await counter("streams") }
    /// Bytes of streamed events written so far, all streams together.
    func streamedBytes() async throws -> Int { try await counter("streamed_bytes") }

    /// Size of each request body the backend received, oldest first (its last 100 requests).
    func receivedBodySizes() async throws -> [Int] {
        let (_, body) = try await HTTP.get("\(url)/stub/requests")
        guard let dict = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let requests = dict["requests"] as? [[String: Any]] else {
            throw ChildProcessError("unexpected /stub/requests body: \(body.prefix(300))")
        }
        return requests.compactMap { $0["body_bytes"] as? Int }
    }

    private func counter(_ name: String) async throws -> Int {
        let (_, body) = try await HTTP.get("\(url)/stub/cancelled")
        guard let dict = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let n = dict[name] as? Int else {
            throw ChildProcessError("unexpected /stub/cancelled body: \(body)")
        }
        return n
    }

    func stop() async { await process.stop() }
}

/// `toki hub` as a process with its own data directory.
final class HubProcess: Sendable {
    let data: TemporaryDirectory
    let process: ChildProcess
    let port: Int
    let arguments: [String]
    let adminToken: String?
    var url: String { "http://127.0.0.1:\(port)" }
    var tunnelURL: String { "ws://127.0.0.1:\(port)/api/tokilake/connect" }

    /// `adminToken`: the one printed by an earlier hub on the same data directory (only the
    /// first start prints it).
    init(data: TemporaryDirectory = TemporaryDirectory(), port: Int = 0, arguments: [String] = [], adminToken: String? = nil,
         environment: [String: String]? = nil) async throws {
        self.data = data
        self.arguments = arguments
        process = try ChildProcess(Products.path("toki"), ["hub", "--listen", "127.0.0.1:\(port)", "--data-dir", data.path] + arguments,
                                   environment: environment, name: "toki hub")
        let line = try await process.waitForLine(prefix: "LISTEN ")
        guard let bound = Int(line.split(separator: ":").last ?? "") else { throw ChildProcessError("bad line \(line)") }
        self.port = bound
        self.adminToken = process.stdoutLines.first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("sk-toki-") }?.trimmingCharacters(in: .whitespaces) ?? adminToken
    }

    /// A new user token, through the CLI (as a user would).
    func createToken(user: String) async throws -> String {
        let cli = try ChildProcess(Products.path("toki"), ["token", "create", "--data-dir", data.path, "--user", user], name: "toki token")
        let status = try await cli.waitForExit()
        guard status == 0, let token = cli.stdoutLines.first, cli.stdoutLines.count == 1 else {
            throw ChildProcessError("toki token create failed (\(status)): \(cli.stdoutLines) \(cli.stderr)")
        }
        return token
    }

    /// Same port, data directory and arguments, new process. `sigkill`: no drain, no goodbye.
    func restarted(sigkill: Bool = false) async throws -> HubProcess {
        if sigkill {
            process.kill9()
            try await process.waitForExit()
        } else {
            await process.stop()
        }
        return try await HubProcess(data: data, port: port, arguments: arguments, adminToken: adminToken)
    }

    /// In-flight requests of each registered worker, by namespace (admin view).
    func workers() async throws -> [String: Int] {
        guard let adminToken else { throw ChildProcessError("no admin token (hub stdout: \(process.stdoutLines.prefix(5)))") }
        let (_, body) = try await HTTP.get(url + "/admin/workers", token: adminToken)
        guard let dict = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let rows = dict["workers"] as? [[String: Any]] else {
            throw ChildProcessError("unexpected /admin/workers body: \(body.prefix(300))")
        }
        var out: [String: Int] = [:]
        for row in rows { if let namespace = row["namespace"] as? String { out[namespace] = row["in_flight"] as? Int ?? 0 } }
        return out
    }

    /// Waits until every one of `namespaces` is registered.
    func waitForWorkers(_ namespaces: [String], timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let registered = try? await workers(), namespaces.allSatisfy({ registered[$0] != nil }) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError("workers \(namespaces) not all registered; hub stderr: \(process.stderr.suffix(2000))")
    }

    func stop() async { await process.stop() }

    /// Waits until `model` is listed for `token`.
    func waitForModel(_ model: String, token: String, present: Bool = true, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let (status, body) = try? await HTTP.get("\(url)/v1/models", token: token), status == 200, body.contains("\"\(model)\"") == present {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ChildProcessError("model \(model) \(present ? "never appeared" : "never went away") on the hub; hub stderr: \(process.stderr.suffix(3000))")
    }
}

/// Which worker implementation serves the backend.
enum WorkerKind: String, CaseIterable, Sendable, CustomStringConvertible {
    /// The original-style Go Tokiame (Tests/Interop/gopeer).
    case goTokiame
    /// `toki worker`.
    case toki

    var description: String { rawValue }
}

final class WorkerProcess: Sendable {
    let process: ChildProcess

    convenience init(_ kind: WorkerKind, hub: HubProcess, token: String, backend: StubBackend, namespace: String, models: [String]) async throws {
        try await self.init(kind, tunnelURL: hub.tunnelURL, token: token, backend: backend, namespace: namespace, models: models)
    }

    /// A worker of a hub or of a relay (`tunnelURL`).
    init(_ kind: WorkerKind, tunnelURL: String, token: String, backend: StubBackend, namespace: String, models: [String],
         group: String? = nil, environment: [String: String]? = nil) async throws {
        switch kind {
        case .goTokiame:
            process = try ChildProcess(try await GoPeer.path(), [
                "tokiame", "--gateway-url", tunnelURL, "--token", token, "--namespace", namespace,
                "--models", models.joined(separator: ","), "--backend", backend.url, "--reconnect-seconds", "1", "--heartbeat-seconds", "5",
            ], name: "gopeer tokiame \(namespace)")
        case .toki:
            process = try ChildProcess(Products.path("toki"), [
                "worker", "--hub", tunnelURL, "--token", token, "--backend", backend.url, "--namespace", namespace,
                "--heartbeat-seconds", "5", "--reconnect-delay-ms", "300",
            ] + (group.map { ["--group", $0] } ?? []), environment: environment, name: "toki worker \(namespace)")
        }
    }

    func stop() async { await process.stop() }
    func kill() { process.kill9() }
}

/// A small HTTP client layer over AsyncHTTPClient for the tests.
enum HTTP {
    static let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(decompression: .disabled))

    static func get(_ url: String, token: String? = nil) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await client.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    struct Result: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: String
        var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] }
        var errorCode: String? { (json?["error"] as? [String: Any])?["code"] as? String }
        var errorType: String? { (json?["error"] as? [String: Any])?["type"] as? String }
    }

    static func post(_ url: String, token: String?, body: String, contentType: String = "application/json", headers: [(String, String)] = [],
                     timeout: TimeAmount = .seconds(60)) async throws -> Result {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.headers.add(name: "Content-Type", value: contentType)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: timeout)
        let collected = try await response.body.collect(upTo: 64 << 20)
        return Result(status: Int(response.status.code), headers: response.headers, body: String(buffer: collected))
    }

    /// A streamed request: every chunk with its arrival time, and how the body ended.
    struct Stream: Sendable {
        var status: Int
        var chunks: [(at: ContinuousClock.Instant, text: String)]
        var failure: String?
        var text: String { chunks.map(\.text).joined() }
    }

    /// `received`, if given, counts chunks as they arrive (so a test can act mid-stream).
    static func stream(_ url: String, token: String, body: String, stopAfter: Int? = nil, received: Locked<Int>? = nil) async throws -> Stream {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: .seconds(60))
        var result = Stream(status: Int(response.status.code), chunks: [])
        do {
            for try await chunk in response.body {
                result.chunks.append((ContinuousClock.now, String(buffer: chunk)))
                received?.withLock { $0 += 1 }
                if let stopAfter, result.chunks.count >= stopAfter { break }
            }
        } catch {
            result.failure = "\(error)"
        }
        return result
    }
}

extension Locked<Int> {
    /// Waits until the count reaches `target`.
    func wait(atLeast target: Int, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while value < target {
            guard ContinuousClock.now < deadline else { throw ChildProcessError("only \(value) of \(target) chunks arrived") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
