// HubService as a Service on a live port: what the `toki hub` command composes, in-process.
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Testing
import TokiStore

@testable import TokiHub

@Suite("hub service on a live port")
struct HubServiceTests {
    /// Runs the fixture's hub (on a free port) in a ServiceGroup during `body`; then shuts it down gracefully.
    func withRunningHub(_ configure: @escaping (inout HubConfiguration) -> Void = { _ in },
                        _ body: (HubFixture, _ url: String, _ group: ServiceGroup) async throws -> Void) async throws {
        let made = try await HubFixture.make { configuration in
            configuration.port = 0
            configure(&configuration)
        }
        let (ports, port) = AsyncStream<Int>.makeStream()
        let hub = HubService(configuration: made.hub.configuration, store: made.store, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })) {
            port.yield($0)
        }
        let f = HubFixture(hub: hub, store: made.store, alice: made.alice, bob: made.bob, admin: made.admin)
        let group = ServiceGroup(services: [hub], logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let running = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        let bound = try #require(await iterator.next())
        do {
            try await body(f, "http://127.0.0.1:\(bound)", group)
        } catch {
            await group.triggerGracefulShutdown()
            _ = await running.result
            throw error
        }
        await group.triggerGracefulShutdown()
        try await running.value
    }

    func post(_ url: String, token: String, json: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    func get(_ url: String) async throws -> Int {
        Int(try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(30)).status.code)
    }

    @Test("an SSE answer streams through a real socket, with keep-alives while the worker is quiet")
    func streaming() async throws {
        try await withRunningHub({ $0.sseKeepAliveInterval = .milliseconds(300) }) { f, url, _ in
            let events = ["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n", "data: [DONE]\n\n"]
            try f.hub.registry.addFake("w", models: ["m"]) { _ in .stream(chunks: events, gap: .milliseconds(700)) }
            let (status, body) = try await post(url, token: f.alice, json: chat("m", stream: true))
            #expect(status == 200)
            #expect(body.replacingOccurrences(of: ": keep-alive\n\n", with: "") == events.joined())
            #expect(body.contains(": keep-alive\n\n"))
        }
    }

    @Test("graceful shutdown drains first: 503 to new requests while one is in flight, then the service ends")
    func drainOnGracefulShutdown() async throws {
        try await withRunningHub({ $0.drainTimeout = .seconds(20) }) { f, url, group in
            #expect(try await get(url + "/readyz") == 200)
            let (worker, _) = try f.hub.registry.addFake("w", models: ["m"]) { _ in .respond(body: "ok") }
            #expect(worker.begin(requestID: "in flight"))
            await group.triggerGracefulShutdown()
            // The drain starts when the service group gets to it: wait for it (bounded), as a
            // fixed sleep fails on a loaded machine.
            var ready = 200
            for _ in 0..<100 where ready != 503 {
                try await Task.sleep(for: .milliseconds(100))
                ready = try await get(url + "/readyz")
            }
            #expect(ready == 503)
            let refused = try await post(url, token: f.alice, json: chat("m"))
            #expect(refused.status == 503)
            #expect(refused.body.contains("shutting_down"))
            worker.end(requestID: "in flight")
        }
    }
}
