import Foundation
import TestSupport
import Testing

/// The one end-to-end test against a real inference server: llama.cpp with a real small model,
/// started by `.ci/run` through `shared/backends/llamacpp.sh` (installed from PyPI).
@Suite("end to end against a real llama.cpp server")
struct RealBackendTests {
    static let backendURL = ProcessInfo.processInfo.environment["TOKI_LLAMACPP_URL"]

    @Test("chat (streamed and not) and embeddings through hub and worker",
          .enabled(if: backendURL != nil, "TOKI_LLAMACPP_URL is not set: start ../shared/backends/llamacpp.sh PORT (as .ci/run does) to run this test"))
    func llamaCpp() async throws {
        let url = try #require(Self.backendURL)
        let hub = try await HubProcess()
        defer { Task { await hub.stop() } }
        let token = try await hub.createToken(user: "alice")
        let worker = try ChildProcess(Products.path("toki"), ["worker", "--hub", hub.tunnelURL, "--token", token, "--backend", url, "--namespace", "llama"],
                                      name: "toki worker")
        defer { Task { await worker.stop() } }
        // The worker discovers the model id from the backend's /v1/models.
        try await hub.waitForModel("smollm2-135m", token: token, timeout: .seconds(60))

        let chat = try await HTTP.post(hub.url + "/v1/chat/completions", token: token,
                                       body: #"{"model":"smollm2-135m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8}"#)
        #expect(chat.status == 200, "\(chat.body)")
        #expect(chat.json?["timings"] != nil, "llama.cpp's extra fields must pass through untouched")

        let streamed = try await HTTP.stream(hub.url + "/v1/chat/completions", token: token,
                                             body: #"{"model":"smollm2-135m","messages":[{"role":"user","content":"Count"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}"#)
        #expect(streamed.status == 200)
        #expect(streamed.failure == nil)
        #expect(streamed.text.contains("data: [DONE]"))
        #expect(streamed.text.contains("\"usage\""))

        let embeddings = try await HTTP.post(hub.url + "/v1/embeddings", token: token, body: #"{"model":"smollm2-135m","input":"hello"}"#)
        #expect(embeddings.status == 200, "\(embeddings.body)")
    }
}
