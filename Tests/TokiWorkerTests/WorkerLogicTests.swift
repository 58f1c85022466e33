import Foundation
import NIOCore
import Testing
import TokiTunnel
@testable import TokiWorker

private let fileJSON = #"""
{
  "gateway_url": "https://hub.example.com/api/tokilake/connect",
  "token": "sk-file",
  "namespace": "  ns-file ",
  "group": "default",
  "backend_type": "vLLM",
  "unknown_key": 1,
  "heartbeat_interval_seconds": 20,
  "model_targets": {
    "m-a": {"url": " http://127.0.0.1:8000/v1 ", "mapped_name": "Qwen/Qwen3", "api_keys": ["k1", " ", "k2"],
            "headers": {"X-A": "1", "": "x"}},
    "m-b": {"url": "http://127.0.0.1:11434", "backend_type": "ollama"},
    " ": {"url": "http://x"},
    "m-c": {"url": "  "}
  }
}
"""#

private func load(explicit: String? = nil, env: [String: String] = [:], files: [String: String] = [:])
    throws -> (config: TokiameConfig, path: String?)
{
    try TokiameConfig.load(explicitPath: explicit, environment: env, homeDirectory: "/home/u",
                           fileExists: { files[$0] != nil },
                           readFile: { files[$0].map { Data($0.utf8) } })
}

@Suite struct ConfigTests {
    @Test func fileDecodeAndNormalize() throws {
        let (c, path) = try load(files: ["/home/u/.tokilake/tokiame.json": fileJSON])
        #expect(path == "/home/u/.tokilake/tokiame.json")
        #expect(c.namespace == "ns-file")
        #expect(c.backendType == "vllm_omni")
        #expect(c.transportMode == "auto")
        #expect(c.heartbeatIntervalSeconds == 20)
        #expect(c.reconnectDelaySeconds == 5)
        #expect(c.modelNames == ["m-a", "m-b"])
        #expect(c.modelTargets["m-a"]?.url == "http://127.0.0.1:8000/v1")
        #expect(c.modelTargets["m-a"]?.apiKeys == ["k1", "k2"])
        #expect(c.modelTargets["m-a"]?.headers == ["X-A": "1"])
        #expect(c.controlPlaneBackendType == "mixed")
        #expect(try c.webSocketURL() == "wss://hub.example.com/api/tokilake/connect")
        #expect(try c.resolveQUICEndpoint() == "hub.example.com:443")
        #expect(c.prefersQUIC)
    }

    @Test func lookupOrder() {
        let exists: (String) -> Bool = { $0 == "/home/u/.tokilake/tokiame.json" }
        #expect(TokiameConfig.resolveConfigPath(explicitPath: "/a.json", environment: ["TOKIAME_CONFIG": "/b.json"],
                                                homeDirectory: "/home/u", fileExists: exists) == "/a.json")
        #expect(TokiameConfig.resolveConfigPath(explicitPath: nil, environment: ["TOKIAME_CONFIG": "/b.json"],
                                                homeDirectory: "/home/u", fileExists: exists) == "/b.json")
        #expect(TokiameConfig.resolveConfigPath(explicitPath: "", environment: ["TOKIAME_CONFIG": " "],
                                                homeDirectory: "/home/u", fileExists: exists)
            == "/home/u/.tokilake/tokiame.json")
        #expect(TokiameConfig.resolveConfigPath(explicitPath: nil, environment: [:], homeDirectory: "/home/u",
                                                fileExists: { _ in false }) == nil)
    }

    @Test func envOverrides() throws {
        let env = [
            "TOKIAME_CONFIG": "/etc/t.json",
            "TOKIAME_TOKEN": "sk-env",
            "TOKIAME_NAMESPACE": "  ",  // blank: ignored
            "TOKIAME_GATEWAY_URL": "http://hub:3000/api/tokilake/connect",
            "TOKIAME_TRANSPORT_MODE": "WebSocket",
            "TOKIAME_HEARTBEAT_INTERVAL_SECONDS": "-3",  // not positive: ignored
            "TOKIAME_RECONNECT_DELAY_SECONDS": "7",
            "TOKIAME_MODEL_TARGETS": #"{"only":{"url":"http://127.0.0.1:9000"}}"#,
        ]
        let (c, path) = try load(env: env, files: ["/etc/t.json": fileJSON])
        #expect(path == "/etc/t.json")
        #expect(c.token == "sk-env")
        #expect(c.namespace == "ns-file")
        #expect(c.transportMode == "websocket")
        #expect(!c.prefersQUIC)
        #expect(c.heartbeatIntervalSeconds == 20)
        #expect(c.reconnectDelaySeconds == 7)
        #expect(c.modelNames == ["only"])
        #expect(try c.webSocketURL() == "ws://hub:3000/api/tokilake/connect")
        #expect(c.controlPlaneBackendType == "vllm_omni")

        let (c2, _) = try load(env: ["TOKIAME_HEARTBEAT_INTERVAL_SECONDS": "abc"], files: ["/home/u/.tokilake/tokiame.json": fileJSON])
        #expect(c2.heartbeatIntervalSeconds == 20)
    }

    @Test func envOnlyAndValidation() throws {
        let base = [
            "TOKIAME_GATEWAY_URL": "ws://h/api/tokilake/connect", "TOKIAME_TOKEN": "t", "TOKIAME_NAMESPACE": "n",
            "TOKIAME_MODEL_TARGETS": #"{"m":{"url":"http://b"}}"#,
        ]
        let (c, path) = try load(env: base)
        #expect(path == nil)
        #expect(c.heartbeatIntervalSeconds == 15)
        #expect(c.backendType == "openai")
        for (key, fragment) in [("TOKIAME_GATEWAY_URL", "gateway_url"), ("TOKIAME_TOKEN", "token"),
                                ("TOKIAME_NAMESPACE", "namespace"), ("TOKIAME_MODEL_TARGETS", "model_targets")] {
            var env = base
            env[key] = nil
            #expect { try load(env: env) } throws: { ($0 as? TokiameConfigError)?.message.contains(fragment) == true }
        }
        var bad = base
        bad["TOKIAME_TRANSPORT_MODE"] = "carrier-pigeon"
        #expect { try load(env: bad) } throws: { "\($0)".contains("transport_mode") }
        bad = base
        bad["TOKIAME_GATEWAY_URL"] = "ftp://h"
        #expect { try load(env: bad) } throws: { "\($0)".contains("scheme") }
        bad = base
        bad["TOKIAME_MODEL_TARGETS"] = #"{"m":{"url":""}}"#
        #expect { try load(env: bad) } throws: { "\($0)".contains("model_targets") }
        bad = base
        bad["TOKIAME_MODEL_TARGETS"] = "not json"
        #expect { try load(env: bad) } throws: { "\($0)".contains("TOKIAME_MODEL_TARGETS") }
        bad = base
        bad["TOKIAME_TRANSPORT_MODE"] = "quic"  // ws:// gateway, no endpoint
        #expect { try load(env: bad) } throws: { "\($0)".contains("QUIC") }
        bad["TOKIAME_QUIC_ENDPOINT"] = "quic://edge:8443"
        #expect(try load(env: bad).config.resolveQUICEndpoint() == "edge:8443")
    }

    @Test func backendTypes() {
        #expect(TokiameConfig.normalizeBackendType("") == "openai")
        #expect(TokiameConfig.normalizeBackendType("SGLang") == "sglang")
        for v in ["vllm", "vllm-omni", "VLLM_OMNI"] { #expect(TokiameConfig.normalizeBackendType(v) == "vllm_omni") }
        #expect(TokiameConfig.normalizeBackendType(" Ollama ") == "ollama")
    }

    @Test func hardwareInfoShape() throws {
        let (c, _) = try load(files: ["/home/u/.tokilake/tokiame.json": fileJSON])
        let hw = c.hardwareInfo(hostname: "h", numCPU: 8, goarch: "amd64")
        #expect(hw["num_cpu"] == .int(8))
        #expect(hw["control_plane_backend"] == "mixed")
        #expect(hw["model_target_summaries"]?["m-a"]?["url"] == "http://127.0.0.1:8000")
        #expect(hw["model_target_summaries"]?["m-a"]?["has_api_keys"] == true)
    }
}

@Suite struct TargetTests {
    @Test(arguments: [
        ("http://h:8000/v1", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:11434", "/v1/embeddings", "http://h:11434/v1/embeddings"),
        ("http://h/v1/chat/completions", "/v1/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/api/v1/", "/v1/models", "http://h/api/v1/models"),
        ("http://h/proxy", "/v1/chat/completions", "http://h/proxy/v1/chat/completions"),
        ("http://h:8000/v1?key=old", "/v1/chat/completions", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1?key=old", "/v1/videos/abc/content?variant=hd", "http://h:8000/v1/videos/abc/content?variant=hd"),
        ("http://h", "", "http://h/"),
        ("https://user:pw@h:1/a/b", "/b/c", "https://user:pw@h:1/a/b/c"),
    ])
    func urlMerge(_ target: String, _ path: String, _ expected: String) throws {
        #expect(try mergeTargetURL(target: target, requestPath: path) == expected)
    }

    @Test func invalidTargetURL() {
        for bad in ["", "h:8000", "/v1", "http://", "not a url"] {
            #expect(throws: WorkerRequestError.self) { try mergeTargetURL(target: bad, requestPath: "/v1/x") }
            do { _ = try mergeTargetURL(target: bad, requestPath: "/v1/x") } catch {
                #expect(error.code == "invalid_target_url")
            }
        }
    }

    @Test func headerFiltering() {
        let merged = mergeRequestHeaders(
            tunnelHeaders: ["accept": "text/event-stream", "Content-Type": "application/json",
                            "Authorization": "Bearer hub-secret", "X-Forwarded-For": "1.2.3.4", "Host": "hub",
                            "Accept-Encoding": "gzip"],
            targetHeaders: ["x-custom": "1", "Host": "evil", "content-type": "application/json; charset=utf-8",
                            "Empty": " "])
        #expect(merged == ["Accept": "text/event-stream", "Content-Type": "application/json; charset=utf-8",
                           "X-Custom": "1"])
    }

    @Test func apiKeyHeaderRules() {
        #expect(TargetResolver.apiKeyHeader(header: "", prefix: "", key: "k") == ("Authorization", "Bearer k"))
        #expect(TargetResolver.apiKeyHeader(header: "authorization", prefix: "Token ", key: "k") == ("authorization", "Token k"))
        #expect(TargetResolver.apiKeyHeader(header: "X-API-Key", prefix: "", key: "k") == ("X-API-Key", "k"))
        #expect(TargetResolver.apiKeyHeader(header: "X-API-Key", prefix: "Key ", key: "k") == ("X-API-Key", "Key k"))
    }

    func resolver() -> TargetResolver {
        var c = TokiameConfig()
        c.backendType = "sglang"
        c.modelTargets = [
            "pub": ModelTargetConfig(url: "http://b/v1", mappedName: "upstream", headers: ["X-A": "1", "Host": "x"],
                                     apiKeys: ["k1", "k2", "k3"]),
            "other": ModelTargetConfig(url: "http://c", backendType: "vllm", apiKeys: ["only"], apiKeyHeader: "api-key"),
            "same": ModelTargetConfig(url: "http://d", mappedName: "same"),
        ]
        return TargetResolver(config: c)
    }

    @Test func keyRotationOverThree() throws {
        let r = resolver()
        var seen: [String] = []
        for _ in 0..<7 { seen.append(try r.resolve(model: " pub ").headers["Authorization"] ?? "") }
        #expect(seen == ["Bearer k1", "Bearer k2", "Bearer k3", "Bearer k1", "Bearer k2", "Bearer k3", "Bearer k1"])
        let o = try r.resolve(model: "other")
        #expect(o.headers == ["api-key": "only"])
        #expect(o.backendType == "vllm_omni")
        let p = try r.resolve(model: "pub")
        #expect(p.headers["Host"] == nil && p.headers["X-A"] == "1")
        #expect(p.upstreamModel == "upstream" && p.needsModelRewrite && p.backendType == "sglang")
        #expect(try !r.resolve(model: "same").needsModelRewrite)
    }

    @Test func keyRotationConcurrent() async throws {
        let r = resolver()
        let keys = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<300 { group.addTask { try r.resolve(model: "pub").headers["Authorization"]! } }
            var all: [String] = []
            for try await k in group { all.append(k) }
            return all
        }
        #expect(Dictionary(grouping: keys, by: { $0 }).mapValues(\.count)
            == ["Bearer k1": 100, "Bearer k2": 100, "Bearer k3": 100])
    }

    @Test func targetNotFound() {
        let r = resolver()
        for m in [nil, "", "  ", "missing"] as [String?] {
            #expect { try r.resolve(model: m) } throws: { ($0 as? WorkerRequestError)?.code == "target_not_found" }
        }
    }
}

@Suite struct RewriteTests {
    let target = ResolvedTarget(modelName: "pub", upstreamModel: "up/model", url: "http://b", backendType: "openai",
                                headers: [:])

    func rewrite(_ body: String, _ contentType: String = "application/json") throws -> String {
        let out = try RequestRewriter.prepareBody(ByteBuffer(string: body), headers: ["Content-Type": contentType],
                                                  target: target)
        return out.map { String(buffer: $0) } ?? "<nil>"
    }

    @Test func jsonInPlace() throws {
        let body = #"{"model":"pub","messages":[{"role":"user","content":"a \"model\": x"}],"stream":true,"n":1.50,"x":{"model":"inner"},"big":12345678901234567890}"#
        let out = try rewrite(body)
        #expect(out == body.replacingOccurrences(of: #"{"model":"pub""#, with: #"{"model":"up/model""#))
        #expect(try rewrite(#"  { "a" : [1,2,{"b":null}] , "model" : null }  "#) == #"  { "a" : [1,2,{"b":null}] , "model" : "up/model" }  "#)
        #expect(try rewrite(#"{"a":1}"#) == #"{"model":"up/model","a":1}"#)
        #expect(try rewrite(#"{}"#) == #"{"model":"up/model"}"#)
        #expect(try rewrite("") == #"{"model":"up/model"}"#)
        #expect(try rewrite(#"{"model":"pub"}"#, "application/json; charset=utf-8") == #"{"model":"up/model"}"#)
    }

    @Test func jsonFallbackAndErrors() throws {
        // Escaped key takes the JSONSerialization path; semantics kept.
        let out = try rewrite(#"{"mod\u0065l":"pub","keep":[1,"two"]}"#)
        let obj = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        #expect(obj?["model"] as? String == "up/model")
        #expect((obj?["keep"] as? [Any])?.count == 2)
        #expect { try rewrite("[1,2]") } throws: { ($0 as? WorkerRequestError)?.code == "rewrite_request_failed" }
        #expect { try rewrite("{broken") } throws: { ($0 as? WorkerRequestError)?.code == "rewrite_request_failed" }
    }

    @Test func urlencoded() throws {
        #expect(try rewrite("prompt=a+b%21&model=pub&n=1&n=2", "application/x-www-form-urlencoded")
            == "model=up%2Fmodel&n=1&n=2&prompt=a+b%21")
        #expect(try rewrite("", "application/x-www-form-urlencoded") == "model=up%2Fmodel")
        #expect { try rewrite("a=%zz", "application/x-www-form-urlencoded") } throws: { _ in true }
    }

    @Test func passThrough() throws {
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\npub\r\n--b--\r\n"
        #expect(try rewrite(multipart, "multipart/form-data; boundary=b") == multipart)
        #expect(try rewrite("raw", "text/plain") == "raw")
        let same = ResolvedTarget(modelName: "pub", upstreamModel: "pub", url: "http://b", backendType: "openai", headers: [:])
        let body = ByteBuffer(string: #"{"model":"pub"}"#)
        #expect(try RequestRewriter.prepareBody(body, headers: ["Content-Type": "application/json"], target: same) == body)
    }
}

@Suite struct DiscoveryTests {
    @Test func openAI() throws {
        let data = Data(#"{"object":"list","data":[{"id":"b","object":"model"},{"id":"a"},{"id":"b"},{"id":" "},{"x":1}]}"#.utf8)
        #expect(try ModelDiscovery.parseOpenAIModels(data) == ["a", "b"])
        #expect(try ModelDiscovery.parseModelList(data) == ["a", "b"])
    }

    @Test func ollama() throws {
        let data = Data(#"{"models":[{"name":"qwen3:8b","size":1},{"name":"llama3:latest"},{"model":"z:1"},{"name":"qwen3:8b"}]}"#.utf8)
        #expect(try ModelDiscovery.parseOllamaTags(data) == ["llama3:latest", "qwen3:8b", "z:1"])
        #expect(try ModelDiscovery.parseModelList(data) == ["llama3:latest", "qwen3:8b", "z:1"])
        #expect(throws: ModelDiscovery.ParseError.self) { try ModelDiscovery.parseModelList(Data("{}".utf8)) }
        #expect(throws: ModelDiscovery.ParseError.self) { try ModelDiscovery.parseModelList(Data("nope".utf8)) }
    }
}
