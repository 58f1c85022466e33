import ArgumentParser
import Foundation
import Logging
import TokiOps

extension LogFormat: ExpressibleByArgument {}

/// `--log-format` for the long-running modes (hub, relay-only, worker).
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log line format: text, logfmt or json (default: $TOKI_LOG_FORMAT, else text). Logs go to stderr.")
    var logFormat: LogFormat?

    /// The flag, else `$TOKI_LOG_FORMAT`, else text.
    var resolved: LogFormat {
        logFormat ?? ProcessInfo.processInfo.environment["TOKI_LOG_FORMAT"].flatMap { LogFormat(rawValue: $0.lowercased()) } ?? .text
    }

    func validate() throws {
        if logFormat == nil, let text = ProcessInfo.processInfo.environment["TOKI_LOG_FORMAT"], !text.isEmpty,
           LogFormat(rawValue: text.lowercased()) == nil {
            throw ValidationError("$TOKI_LOG_FORMAT must be one of text, logfmt, json (got '\(text)')")
        }
    }

    func makeLogger(label: String, level: Logger.Level) -> Logger {
        let format = resolved
        var logger = Logger(label: label) { format.makeHandler(label: $0) }
        logger.logLevel = level
        return logger
    }
}
