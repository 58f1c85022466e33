import Foundation
import Logging
import TestSupport
import Testing
@testable import TokiOps

@Suite("log formats")
struct LogFormatTests {
    /// A logger whose lines land in `lines`, with a fixed timestamp.
    static func logger(_ format: LogFormat, _ lines: Locked<[String]>) -> Logger {
        var logger = Logger(label: "toki.test") { label in
            StructuredLogHandler(label: label, format: format, write: { line in lines.withLock { $0.append(line) } },
                                 clock: { "2026-01-02T03:04:05.678Z" })
        }
        logger.logLevel = .debug
        return logger
    }

    @Test("logfmt: fixed keys first, metadata sorted, bare values bare")
    func logfmtPlain() {
        let lines = Locked<[String]>([])
        var logger = Self.logger(.logfmt, lines)
        logger[metadataKey: "request_id"] = "req-1"
        logger.info("forwarded", metadata: ["worker": "gpu-a", "status": "200"])
        #expect(lines.withLock { $0 } == [
            "ts=2026-01-02T03:04:05.678Z level=info logger=toki.test msg=forwarded request_id=req-1 status=200 worker=gpu-a\n",
        ])
    }

    @Test("logfmt: quotes, backslashes, newlines and control characters are escaped; Unicode is kept")
    func logfmtEscaping() {
        let lines = Locked<[String]>([])
        let logger = Self.logger(.logfmt, lines)
        logger.warning("worker said \"no\"\nthen left", metadata: [
            "path": "C:\\tmp", "empty": "", "name": "café ✓", "bell": "\u{7}", "bad key=": "x", "msg": "shadow",
        ])
        let line = lines.withLock { $0 }.first ?? ""
        #expect(line.hasSuffix("\n") && line.dropLast().contains("\n") == false, "one event, one line: \(line)")
        #expect(line.contains(#"msg="worker said \"no\"\nthen left""#))
        #expect(line.contains(#"path="C:\\tmp""#))
        #expect(line.contains(#"empty="""#))
        #expect(line.contains("name=\"café ✓\""))
        #expect(line.contains(#"bell="\u0007""#))
        #expect(line.contains("bad_key_=x"))
        #expect(line.contains("meta_msg=shadow"))
    }

    @Test("JSON: one valid object per line that decodes back to the same text")
    func jsonRoundTrip() throws {
        let lines = Locked<[String]>([])
        var logger = Self.logger(.json, lines)
        logger[metadataKey: "request_id"] = "req-2"
        let message = "line one\nline \"two\"\t\\ end \u{1} — ✓ 日本 \u{2028}"
        logger.error("\(message)", metadata: [
            "nested": ["a": "1", "list": ["x", "y"]], "level": "shadow",
        ])
        let line = try #require(lines.withLock { $0 }.first)
        #expect(line.hasSuffix("}\n") && line.dropLast().contains("\n") == false, "\(line)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["msg"] as? String == message)
        #expect(object["level"] as? String == "error")
        #expect(object["meta_level"] as? String == "shadow")
        #expect(object["logger"] as? String == "toki.test")
        #expect(object["ts"] as? String == "2026-01-02T03:04:05.678Z")
        #expect(object["request_id"] as? String == "req-2")
        let nested = try #require(object["nested"] as? [String: Any])
        #expect(nested["a"] as? String == "1")
        #expect(nested["list"] as? [String] == ["x", "y"])
        #expect(line.hasPrefix(#"{"ts":"2026-01-02T03:04:05.678Z","level":"error","logger":"toki.test","msg":"#))
    }

    @Test("the call's metadata wins over the logger's, and the provider's is included")
    func metadataMerge() {
        let lines = Locked<[String]>([])
        var logger = Logger(label: "toki.test") { label in
            StructuredLogHandler(label: label, format: .logfmt,
                                 metadataProvider: .init { ["node": "hub-1"] },
                                 write: { line in lines.withLock { $0.append(line) } }, clock: { "t" })
        }
        logger[metadataKey: "worker"] = "a"
        logger.info("x", metadata: ["worker": "b"])
        #expect(lines.withLock { $0 } == ["ts=t level=info logger=toki.test msg=x node=hub-1 worker=b\n"])
    }

    @Test("timestamps are RFC 3339 in UTC with milliseconds")
    func timestamps() {
        #expect(StructuredLogHandler.rfc3339(seconds: 0, milliseconds: 5) == "1970-01-01T00:00:00.005Z")
        #expect(StructuredLogHandler.rfc3339(seconds: 1_767_323_045, milliseconds: 678) == "2026-01-02T03:04:05.678Z")
        let now = StructuredLogHandler.timestamp()
        #expect(now.count == 24 && now.hasSuffix("Z"), "\(now)")
    }
}

/// Records what reaches it, and how often its metadata is set.
private final class RecordingHandlerState: @unchecked Sendable {
    var lines: [(String, Logger.Metadata?)] = []
    var sets = 0
}

private struct RecordingHandler: LogHandler {
    let state: RecordingHandlerState
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:] {
        didSet { state.sets += 1 }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        state.lines.append(("\(message)", metadata))
    }
}

@Suite("deferred metadata")
struct DeferredMetadataTests {
    @Test func metadataReachesTheInnerHandlerOnlyWithTheLinesWritten() {
        let state = RecordingHandlerState()
        var logger = Logger(label: "t") { _ in DeferredMetadataHandler(RecordingHandler(state: state)) }
        logger[metadataKey: "request_id"] = "r1"
        logger[metadataKey: "model"] = "m"
        #expect(state.sets == 0, "setting metadata must not reach the inner handler")
        logger.info("one", metadata: ["model": "explicit", "extra": "x"])
        logger.info("two")
        #expect(state.lines.count == 2)
        #expect(state.lines[0].1 == ["request_id": "r1", "model": "explicit", "extra": "x"])
        #expect(state.lines[1].1 == ["request_id": "r1", "model": "m"])
        logger.logLevel = .error
        logger.info("dropped")
        #expect(state.lines.count == 2)
    }
}
