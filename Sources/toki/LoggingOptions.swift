import Foundation
import Logging
import TokiOps

/// The logger of a long-running mode (hub, relay-only, worker): `log_format` (a name
/// `Check.logFormats` has already accepted) at `level`, to stderr.
func makeLogger(label: String, level: Logger.Level, format name: String) -> Logger {
    let format = LogFormat(rawValue: name.lowercased()) ?? .text
    var logger = Logger(label: label) { format.makeHandler(label: $0) }
    logger.logLevel = level
    return logger
}
