import Hummingbird
import Logging
import NIOCore
import TestSupport
import Testing
import TokiMux
import TokiProbe

@testable import TokiTunnel

/// `TunnelServer`, the one server end of the tunnel: the token is checked once per connection,
/// before the upgrade, and what it stands for reaches the session handler.
@Suite("tunnel server")
struct TunnelServerTests {
    @Test("the token is checked once per connection and its identity reaches the session")
    func authenticatesOnce() async throws {
        let checked = Locked<[String?]>([])
        let identities = Locked<[String]>([])
        var server = TunnelServer<String>(logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })) { token in
            checked.withLock { $0.append(token) }
            return token == "right" ? "alice" : nil
        } onSession: { connection in
            identities.withLock { $0.append(connection.identity) }
            await StreamProbe.serve(connection.session)
        }
        let router = Router()
        router.addRoutes(TunnelServer<String>.refusalRoutes(context: BasicRequestContext.self))
        let (ports, port) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router,
            server: .http1Tunnel(server),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: nil),
            onServerRunning: { port.yield($0.localAddress?.port ?? 0) },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let running = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { running.cancel() }
        var iterator = ports.makeAsyncIterator()
        let bound = try #require(await iterator.next())
        let url = "ws://127.0.0.1:\(bound)/api/tokilake/connect"

        await #expect(throws: TunnelDialError.self) { _ = try await RunningClient.dial(url, token: "wrong") }
        #expect(checked.value == ["wrong"])
        for round in 1...2 {
            let client = try await RunningClient.dial(url, token: "right")
            try await StreamProbe.run(client.session, streams: 2, length: 1000, mode: .echo)
            await client.stop()
            #expect(checked.value.count == 1 + round)
        }
        #expect(identities.value == ["alice", "alice"])
    }
}
