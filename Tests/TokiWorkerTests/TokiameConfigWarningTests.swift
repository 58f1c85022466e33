import Foundation
import Testing
import NIOSSL
@testable import TokiWorker

/// Settings toki accepts but does not act on are named in a warning at start, never silently dropped.
@Suite struct TokiameConfigWarningTests {
    func warnings(_ json: String, env: [String: String] = [:]) throws -> [String] {
        var config = try TokiameConfig.decode(json: Data(json.utf8))
        try config.applyEnvironment(env)
        config.normalize()
        return config.warnings
    }

    @Test func aSupportedConfigHasNoWarnings() throws {
        #expect(try warnings(#"{"gateway_url":"wss://h","token":"t","transport_mode":"websocket","insecure_skip_verify":false,"#
            + #""model_targets":{"m":{"url":"http://b","mapped_name":"x","headers":{"A":"1"},"api_keys":["k"],"#
            + #""api_key_header":"Authorization","api_key_prefix":"Bearer ","backend_type":"vllm"}}}"#) == [])
    }

    @Test func quicKeysAndInsecureSkipVerifyAreNamed() throws {
        // insecure_skip_verify is acted on (verification off), and said loudly.
        let w = try warnings(#"{"gateway_url":"wss://h","transport_mode":"quic","quic_endpoint":"h:8443","insecure_skip_verify":true}"#)
        #expect(w.count == 3)
        #expect(w.contains { $0.hasPrefix("transport_mode=quic") })
        #expect(w.contains { $0.hasPrefix("quic_endpoint") })
        #expect(w.contains(TokiameConfig.insecureSkipVerifyWarning))
    }

    @Test func insecureSkipVerifyTurnsVerificationOffOnlyWhenSet() throws {
        var config = try TokiameConfig.decode(json: Data(#"{"gateway_url":"wss://h"}"#.utf8))
        #expect(WorkerOptions(config: config).effectiveTLS == nil)  // system roots, full verification
        var withCA = WorkerOptions(config: config)
        withCA.caFile = "/etc/toki/ca.pem"
        #expect(withCA.effectiveTLS?.certificateVerification == .fullVerification)
        config.insecureSkipVerify = true
        #expect(WorkerOptions(config: config).effectiveTLS?.certificateVerification == CertificateVerification.none)
    }

    @Test func theEnvironmentsQUICSettingsAreNamedToo() throws {
        let w = try warnings("{}", env: ["TOKIAME_TRANSPORT_MODE": "QUIC", "TOKIAME_QUIC_ENDPOINT": "h:8443"])
        #expect(w.contains { $0.hasPrefix("transport_mode=quic") && $0.contains("TOKIAME_TRANSPORT_MODE") })
        #expect(w.contains { $0.hasPrefix("quic_endpoint") && $0.contains("TOKIAME_QUIC_ENDPOINT") })
    }

    @Test func unknownKeysAreNamedAtTheTopAndInModelTargets() throws {
        let w = try warnings(#"{"gateway_url":"ws://h","unknown_key":1,"heartbeat_secs":5,"#
            + #""model_targets":{"m":{"url":"http://b","api_key":"oops"},"n":{"url":"http://c"}}}"#)
        #expect(w == [
            "heartbeat_secs is not a tokiame.json key toki knows; ignored",
            "model_targets.m.api_key is not a tokiame.json key toki knows; ignored",
            "unknown_key is not a tokiame.json key toki knows; ignored",
        ])
    }
}
