// The Swift worker against an original-style Go Tokilake hub (`gopeer tokilake`).

import AsyncHTTPClient
import Foundation
import NIOCore
import TestSupport
import Testing
import TokiTunnel

@testable import TokiWorker

@Suite("worker ↔ Go Tokilake hub (gopeer tokilake)", .serialized)
struct GoHubInteropTests {
    @Test("registers with the Go hub and answers plain and streamed requests through its API")
    func registersAndServes() async throws {
        let gopeer = try await GoPeer.path()
        let backend = try await StubBackend.start(models: ["m1", "m2"])
        let hubProcess = try ChildProcess(gopeer, ["tokilake", "--token", "sk-interop", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"],
                                          name: "gopeer-tokilake")
        var worker: RunningWorker?
        do {
            let listen = try await hubProcess.waitForLine(prefix: "LISTEN ")
            let api = try await hubProcess.waitForLine(prefix: "API ")
            let tunnelAddress = String(listen.dropFirst("LISTEN ".count))
            let apiAddress = String(api.dropFirst("API ".count))

            var config = TokiameConfig()
            config.gatewayURL = "http://\(tunnelAddress)"  // http→ws, path appended
            config.token = "sk-interop"
            config.namespace = "ns-go"
            config.normalize()
            var options = WorkerOptions(config: config)
            options.discoveryBackends = [backend.url]
            options.heartbeatInterval = .seconds(1)
            options.reconnectDelay = .milliseconds(200)
            let running = RunningWorker.start(options)
            worker = running

            _ = try await hubProcess.waitForLine(prefix: "WORKER-REGISTERED ns=ns-go models=m1,m2", timeout: .seconds(30))
            _ = try await hubProcess.waitForLine(prefix: "HEARTBEAT ns=ns-go", timeout: .seconds(30))

            // Plain request.
            var request = HTTPClientRequest(url: "http://\(apiAddress)/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: #"{"model":"m1","messages":[{"role":"user","content":"hi"}]}"#))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(15))
            #expect(response.status.code == 200)
            let body = try await response.body.collect(upTo: 1 << 20)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any])
            #expect(json["object"] as? String == "chat.completion")
            #expect((json["stub_echo"] as? [String: Any])?["model"] as? String == "m1")

            // Streamed request: every event arrives, ending with [DONE].
            var streamed = HTTPClientRequest(url: "http://\(apiAddress)/v1/chat/completions")
            streamed.method = .POST
            streamed.headers.add(name: "Content-Type", value: "application/json")
            streamed.body = .bytes(ByteBuffer(string: #"{"model":"m2","stream":true,"stub_chunks":4,"stub_delay_ms":50}"#))
            let sse = try await HTTPClient.shared.execute(streamed, timeout: .seconds(15))
            #expect(sse.status.code == 200)
            let text = String(buffer: try await sse.body.collect(upTo: 1 << 20))
            #expect(text.contains("tok3 ") && text.hasSuffix("data: [DONE]\n\n"))
        } catch {
            await worker?.stop()
            await hubProcess.stop()
            await backend.stop()
            throw error
        }
        await worker?.stop()
        await hubProcess.stop()
        await backend.stop()
    }
}
