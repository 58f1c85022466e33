import Foundation

/// A command-line value that cannot be used; the message names the option.
public struct ArgumentProblem: Error, Equatable, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Times on the command line: unix seconds, an ISO 8601 date or time, or a duration (`90s`,
/// `30m`, `24h`, `7d`, `2w`, `1h30m`) counted back from now for `--since` and forward for
/// `--expires`. The hub wants unix seconds.
public enum TimeArgument {
    /// Seconds in a duration like `1h30m`; nil when `raw` is not one.
    public static func duration(_ raw: String) -> Int64? {
        var total: Int64 = 0
        var digits = ""
        var sawUnit = false
        for ch in raw.lowercased() {
            if ch.isASCII, ch.isNumber {
                digits.append(ch)
                continue
            }
            let unit: Int64
            switch ch {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            case "w": unit = 7 * 86400
            default: return nil
            }
            guard !digits.isEmpty, digits.count <= 9, let n = Int64(digits) else { return nil }
            total += n * unit
            digits = ""
            sawUnit = true
        }
        guard sawUnit, digits.isEmpty, total > 0 else { return nil }
        return total
    }

    /// Unix seconds of an absolute time: digits, `2025-01-02`, `2025-01-02T03:04:05Z`, with an
    /// offset, or with fractions. A date without a zone is UTC.
    public static func absolute(_ raw: String) -> Int64? {
        if !raw.isEmpty, raw.count <= 12, raw.allSatisfy({ $0.isASCII && $0.isNumber }) { return Int64(raw) }
        let utc = TimeZone(identifier: "UTC")!
        let full = ISO8601DateFormatter()
        full.timeZone = utc
        let fractional = ISO8601DateFormatter()
        fractional.timeZone = utc
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let dateOnly = ISO8601DateFormatter()
        dateOnly.timeZone = utc
        dateOnly.formatOptions = [.withFullDate, .withDashSeparatorInDate]
        if raw.count == 10 {
            return dateOnly.date(from: raw).map { Int64($0.timeIntervalSince1970) }
        }
        var text = raw
        // `2025-01-02 03:04:05Z` is accepted, and so are times without seconds or a zone (UTC).
        if text.count > 10, text[text.index(text.startIndex, offsetBy: 10)] == " " {
            text = String(text.prefix(10)) + "T" + String(text.dropFirst(11))
        }
        var chars = Array(text)
        if chars.count >= 16, chars[13] == ":", chars.count == 16 || chars[16] != ":" {
            chars.insert(contentsOf: ":00", at: 16)
        }
        let hasZone = chars.last == "Z" || chars.dropFirst(19).contains { $0 == "+" || $0 == "-" }
        if chars.count >= 19, !hasZone { chars.append("Z") }
        text = String(chars)
        for formatter in [full, fractional] {
            if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970.rounded(.down)) }
        }
        return nil
    }

    /// `--since`: a point in the past.
    public static func since(_ raw: String, now: Date = Date()) throws(ArgumentProblem) -> Int64 {
        let raw = raw.trimmingCharacters(in: .whitespaces)
        if let seconds = duration(raw) { return max(0, Int64(now.timeIntervalSince1970) - seconds) }
        if let seconds = absolute(raw) { return seconds }
        throw ArgumentProblem("--since \(raw): expected unix seconds, an ISO 8601 date or time (2025-01-02, 2025-01-02T03:04:05Z) or a duration back from now (30m, 24h, 7d)")
    }

    /// `--expires`: a point in the future; `never` and `0` mean no expiry (sent as 0).
    public static func expires(_ raw: String, now: Date = Date()) throws(ArgumentProblem) -> Int64 {
        let raw = raw.trimmingCharacters(in: .whitespaces)
        if raw == "never" || raw == "0" { return 0 }
        let nowSeconds = Int64(now.timeIntervalSince1970)
        var seconds: Int64?
        if let duration = duration(raw) { seconds = nowSeconds + duration } else { seconds = absolute(raw) }
        guard let seconds else {
            throw ArgumentProblem("--expires \(raw): expected a duration from now (30m, 12h, 30d), unix seconds, an ISO 8601 date or time, or never")
        }
        guard seconds > nowSeconds else { throw ArgumentProblem("--expires \(raw): that is not in the future") }
        return seconds
    }
}

/// Amounts and prices: JSON numbers of currency units, passed on as typed (no rounding through a
/// Double), so `0.000000001` reaches the hub as that.
public enum NumberArgument {
    public static func amount(_ raw: String, option: String, allowNegative: Bool = false) throws(ArgumentProblem) -> JSONValue {
        let text = raw.trimmingCharacters(in: .whitespaces)
        guard case .number(let literal)? = try? JSONValue.parse(text), !literal.lowercased().contains("e") else {
            throw ArgumentProblem("\(option) \(raw): expected a decimal number such as 2.5")
        }
        if !allowNegative, literal.hasPrefix("-") { throw ArgumentProblem("\(option) \(raw): must not be negative") }
        return .number(literal)
    }

    /// A group ratio: a non-negative number (the hub enforces its upper bound).
    public static func ratio(_ raw: String) throws(ArgumentProblem) -> JSONValue {
        try amount(raw, option: "RATIO")
    }
}
