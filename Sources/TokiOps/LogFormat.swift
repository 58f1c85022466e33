#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// How `toki` writes its log lines to stderr.
public enum LogFormat: String, CaseIterable, Sendable {
    /// swift-log's `StreamLogHandler`: for people at a terminal.
    case text
    /// `ts=… level=… logger=… msg="…" key=value …`, one event per line: for grep and Loki.
    case logfmt
    /// One JSON object per line with the same keys: for log shippers.
    case json
}

/// A `LogHandler` that writes one `logfmt` or JSON line per event. The fixed keys come first
/// (`ts`, `level`, `logger`, `msg`), then the metadata sorted by key; a metadata key that
/// collides with a fixed one gets a `meta_` prefix rather than shadowing it.
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: LogFormat
    let write: @Sendable (String) -> Void
    let clock: @Sendable () -> String

    /// - Parameters:
    ///   - write: receives each complete line, newline included (default: stderr, one `write(2)`
    ///     per line so lines of concurrent tasks do not interleave).
    ///   - clock: the `ts` value (default: now, RFC 3339 UTC with milliseconds).
    public init(label: String, format: LogFormat, metadataProvider: Logger.MetadataProvider? = nil,
                write: @escaping @Sendable (String) -> Void = StructuredLogHandler.writeToStandardError,
                clock: @escaping @Sendable () -> String = StructuredLogHandler.timestamp) {
        precondition(format != .text, "text is swift-log's StreamLogHandler")
        self.label = label
        self.format = format
        self.metadataProvider = metadataProvider
        self.write = write
        self.clock = clock
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static let fixedKeys: Set<String> = ["ts", "level", "logger", "msg"]

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        var fields: [(String, Logger.Metadata.Value)] = [
            ("ts", .string(clock())), ("level", .string(event.level.rawValue)), ("logger", .string(label)),
            ("msg", .string(event.message.description)),
        ]
        for key in merged.keys.sorted() {
            fields.append((Self.fixedKeys.contains(key) ? "meta_" + key : key, merged[key]!))
        }
        write(format == .json ? Self.jsonLine(fields) : Self.logfmtLine(fields))
    }

    // MARK: logfmt

    static func logfmtLine(_ fields: [(String, Logger.Metadata.Value)]) -> String {
        var line = ""
        for (key, value) in fields {
            if !line.isEmpty { line += " " }
            line += logfmtKey(key)
            line += "="
            line += logfmtValue(flatten(value))
        }
        return line + "\n"
    }

    /// Keys cannot be quoted in logfmt: anything that would end one becomes `_`.
    static func logfmtKey(_ key: String) -> String {
        guard !key.isEmpty else { return "_" }
        return String(String.UnicodeScalarView(key.unicodeScalars.map { scalar in
            scalar.value <= 0x20 || scalar == "=" || scalar == "\"" || scalar.value == 0x7F ? "_" : scalar
        }))
    }

    /// Bare when it holds no space, `=`, quote, backslash or control character; quoted and
    /// escaped otherwise. Other Unicode is written as UTF-8.
    static func logfmtValue(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.unicodeScalars.contains {
            $0.value <= 0x20 || $0 == "=" || $0 == "\"" || $0 == "\\" || $0.value == 0x7F
        }
        return needsQuotes ? "\"" + escaped(value) + "\"" : value
    }

    /// Nested metadata in logfmt: the JSON spelling, as a string.
    static func flatten(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .dictionary, .array: jsonText(value)
        }
    }

    static func jsonText(_ value: Logger.Metadata.Value) -> String {
        var out = ""
        appendJSON(value, to: &out)
        return out
    }

    // MARK: JSON

    static func jsonLine(_ fields: [(String, Logger.Metadata.Value)]) -> String {
        var line = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { line += "," }
            line += "\"" + escaped(key) + "\":"
            appendJSON(value, to: &line)
        }
        return line + "}\n"
    }

    static func appendJSON(_ value: Logger.Metadata.Value, to out: inout String) {
        switch value {
        case .string(let text): out += "\"" + escaped(text) + "\""
        case .stringConvertible(let convertible): out += "\"" + escaped(convertible.description) + "\""
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                appendJSON(item, to: &out)
            }
            out += "]"
        case .dictionary(let dictionary):
            out += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { out += "," }
                out += "\"" + escaped(key) + "\":"
                appendJSON(dictionary[key]!, to: &out)
            }
            out += "}"
        }
    }

    /// JSON string escaping (RFC 8259), also used inside logfmt's quotes: quote, backslash and
    /// every control character escaped, so a message with a newline stays one line.
    static func escaped(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out.append(contentsOf: "\\\"".unicodeScalars)
            case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    out.append(contentsOf: hex4(scalar.value).unicodeScalars)
                } else {
                    out.append(scalar)
                }
            }
        }
        return String(out)
    }

    static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
    }

    // MARK: Output

    @Sendable public static func writeToStandardError(_ line: String) {
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                #if canImport(Glibc)
                let written = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                #else
                let written = Darwin.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                #endif
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// Now as `2026-01-02T03:04:05.678Z`.
    @Sendable public static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return rfc3339(seconds: now.tv_sec, milliseconds: Int(now.tv_nsec / 1_000_000))
    }

    static func rfc3339(seconds: time_t, milliseconds: Int) -> String {
        var seconds = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds), 3))Z"
    }
}

extension LogFormat {
    /// The handler factory for `Logger(label:factory:)`: every format writes to stderr (stdout
    /// is for machine-readable output such as tokens and `LISTEN` lines).
    public func makeHandler(label: String) -> any LogHandler {
        switch self {
        case .text: DeferredMetadataHandler(StreamLogHandler.standardError(label: label))
        case .logfmt, .json: StructuredLogHandler(label: label, format: self)
        }
    }
}

/// Wraps a handler that does work whenever metadata is set (swift-log's `StreamLogHandler`
/// formats all of it on every set): the metadata is kept here and handed over with each line
/// actually written. The hub and worker set a request id on every request and log few of them.
public struct DeferredMetadataHandler<Inner: LogHandler>: LogHandler {
    private var inner: Inner
    public var metadata: Logger.Metadata = [:]

    public init(_ inner: Inner) { self.inner = inner }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        var merged = metadata
        if let explicit { merged.merge(explicit) { $1 } }
        inner.log(level: level, message: message, metadata: merged.isEmpty ? nil : merged, source: source,
                  file: file, function: function, line: line)
    }
}
