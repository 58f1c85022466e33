import CMalloc
import Foundation
import Hummingbird
import NIOCore
import TokiStore

/// `/admin/*`: token issuing and the live worker list, for admin tokens only.
struct AdminRoutes: Sendable {
    let registry: WorkerRegistry
    let issuer: any TokenIssuing
    let tokens: TokenCache
    /// Armed deadlines, reported by `/admin/runtime`.
    var deadlines: DeadlineSweeper?
    /// The chain as this node sees it (`/admin/topology`).
    var topology: @Sendable () -> Topology = { Topology(node: "", role: "hub", children: []) }

    func collection() -> RouteCollection<HubRequestContext> {
        let routes = RouteCollection(context: HubRequestContext.self)
            .add(middleware: APIAuthentication(tokens: tokens))
            .add(middleware: AdminOnly())
        routes.post("/admin/tokens") { request, _ in try await self.createToken(request) }
        routes.get("/admin/workers") { _, _ in try self.workers() }
        routes.get("/admin/runtime") { _, _ in self.runtime() }
        routes.get("/admin/topology") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try self.topology().encoded())))
        }
        return routes
    }

    struct CreateTokenRequest: Decodable {
        var user: String
        var name: String?
    }

    func createToken(_ request: Request) async throws -> Response {
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: 64 * 1024) } catch is NIOTooManyBytesError {
            throw OpenAIError.bodyTooLarge(limit: 64 * 1024)
        }
        let input: CreateTokenRequest
        do { input = try JSONDecoder().decode(CreateTokenRequest.self, from: Data(body.readableBytesView)) } catch {
            throw OpenAIError.malformedJSON("expected {\"user\": \"name\", \"name\": \"label\"}")
        }
        let created: (plaintext: String, record: TokenRecord)
        do {
            created = try await issuer.createToken(user: input.user, name: input.name, role: .user, group: "default", expiresAt: nil, models: nil, options: TokenOptions(), now: Date())
        } catch let error as StoreError {
            throw OpenAIError(.badRequest, error.description, type: "invalid_request_error", code: "invalid_user")
        }
        var out = ByteBuffer(string: #"{"token":"#)
        out.writeJSONString(created.plaintext)
        out.writeString(#","id":\#(created.record.id),"user":"#)
        out.writeJSONString(input.user)
        out.writeString("}")
        return Response(status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: out))
    }

    /// What the process holds: heap in use (glibc's count of live allocations, which unlike RSS
    /// does not include freed memory the allocator keeps), RSS, workers and armed deadlines. The
    /// scale tests and benchmarks read it to check that sessions leave nothing behind.
    func runtime() -> Response {
        let pages = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let rss = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        var body = ByteBuffer()
        body.writeString(#"{"heap_in_use_bytes":\#(toki_heap_in_use()),"rss_bytes":\#(rss),"#)
        body.writeString(#""workers":\#(registry.workers.count),"deadlines":\#(deadlines?.count.entries ?? 0)}"#)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    func workers() throws -> Response {
        struct Row: Encodable {
            var namespace: String
            var node_name: String
            var user_id: Int64
            var models: [String]
            var groups: [String]
            var in_flight: Int
            /// The relays between this node and the worker, nearest first (empty: direct).
            var via: [String]
            var hops: Int
        }
        let rows = registry.workers.map {
            Row(namespace: $0.namespace, node_name: $0.nodeName, user_id: $0.userID, models: $0.models.sorted(), groups: $0.groups.sorted(),
                in_flight: $0.inFlight, via: $0.via, hops: $0.via.count)
        }.sorted { $0.namespace < $1.namespace }
        let data = try JSONEncoder().encode(["workers": rows])
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
