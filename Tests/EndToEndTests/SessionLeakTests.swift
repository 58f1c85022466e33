import Foundation
import TestSupport
import Testing

/// A hub holds thousands of worker sessions for months while workers come and go: what a
/// session allocates must be freed when it ends. Measured with the hub's own count of live heap
/// bytes (`/admin/runtime`, glibc's mallinfo2), not RSS, which also counts memory the allocator
/// keeps after a free.
@Suite("end to end: sessions leave nothing behind", .serialized)
struct SessionLeakTests {
    struct Runtime: Decodable {
        var heap_in_use_bytes: Int
        var workers: Int
    }

    func runtime(_ hub: HubProcess) async throws -> Runtime {
        let (status, body) = try await HTTP.get(hub.url + "/admin/runtime", token: hub.adminToken)
        guard status == 200 else { throw ChildProcessError("/admin/runtime answered \(status): \(body)") }
        return try JSONDecoder().decode(Runtime.self, from: Data(body.utf8))
    }

    /// `count` WebSocket upgrades to the tunnel endpoint, `concurrency` at a time, each closed
    /// right after its 101 (the hub's session starts and then loses its peer).
    func upgradeAndClose(_ hub: HubProcess, token: String, count: Int, concurrency: Int = 25) async throws {
        let request = RawConnection.request("GET", "/api/tokilake/connect", token: token, headers: [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<concurrency {
                group.addTask {
                    for _ in stride(from: lane, to: count, by: concurrency) {
                        let connection = try RawConnection(port: hub.port)
                        try await connection.send(request)
                        try await connection.read(until: { $0.firstRange(of: Array("\r\n\r\n".utf8)) != nil })
                        guard connection.received.starts(with: Array("HTTP/1.1 101".utf8)) else {
                            throw ChildProcessError("no upgrade: \(String(decoding: connection.received, as: UTF8.self))")
                        }
                        connection.close()
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// `count` workers that register (namespaces reused from round to round), then all leave.
    func registerAndLeave(_ hub: HubProcess, token: String, count: Int) async throws {
        var workers: [HostileWorker] = []
        for i in 0..<count {
            workers.append(try await HostileWorker.connect(hub, token: token, namespace: "leak-\(i)", models: ["leak-model"], script: HostileWorker.polite("leak-\(i)")))
        }
        for worker in workers { await worker.stop() }
        try await poll("every worker to be gone", timeout: .seconds(30)) { try await runtime(hub).workers == 0 }
    }

    /// The heap once sessions have wound down (their tasks end a moment after the peer leaves).
    func settledHeap(_ hub: HubProcess, atMost limit: Int = .max) async throws -> Int {
        var heap = try await runtime(hub).heap_in_use_bytes
        let deadline = ContinuousClock.now + .seconds(20)
        while heap > limit, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(500))
            heap = try await runtime(hub).heap_in_use_bytes
        }
        return heap
    }

    @Test("2,000 tunnel connections and 200 registered workers come and go: the hub's live heap returns to its level")
    func sessionsLeaveNothingBehind() async throws {
        let hub = try await HubProcess(arguments: ["--log-level", "warning"])
        defer { Task { await hub.stop() } }
        let token = try await hub.createToken(user: "fleet")
        // Warm up what is allocated once (statement caches, the namespaces' rows, pools).
        try await upgradeAndClose(hub, token: token, count: 200)
        try await registerAndLeave(hub, token: token, count: 50)
        try await Task.sleep(for: .seconds(1))
        let before = try await settledHeap(hub)

        try await upgradeAndClose(hub, token: token, count: 2_000)
        for _ in 0..<4 { try await registerAndLeave(hub, token: token, count: 50) }

        // A leak of even 500 bytes per session would show as 1.1 MB here (it was 4.5 KiB).
        let allowed = 1 << 20
        let after = try await settledHeap(hub, atMost: before + allowed)
        #expect(after - before < allowed, "live heap grew by \(after - before) bytes over 2,200 sessions (\(before) → \(after))")
    }
}
