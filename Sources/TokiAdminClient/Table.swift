import Foundation

/// How a cell shows a JSON value.
public enum CellFormat: Sendable {
    /// By key: `*_at` and `since` as UTC times, `status` 1/2 as enabled/disabled, the rest as text.
    case auto
    /// As text: strings verbatim, numbers as sent, booleans yes/no, arrays comma-joined, null `-`.
    case text
    /// Unix seconds as `2025-01-02 03:04:05Z`; null `-`, 0 `never` (the original's "no expiry").
    case time
    /// 1 `enabled`, 2 `disabled`, anything else as text.
    case status
}

/// A column of a table: its header, where its value is in a row (`token.name` for nested keys,
/// `group|group_name` for the first of several keys present) and how it is shown.
public struct Column: Sendable {
    public var header: String
    public var paths: [[String]]
    public var format: CellFormat

    public init(_ header: String, _ key: String, _ format: CellFormat = .auto) {
        self.header = header
        self.paths = key.split(separator: "|").map { $0.split(separator: ".").map(String.init) }
        self.format = format
    }

    var path: [String] { paths.first ?? [] }

    func value(in row: JSONValue) -> JSONValue? {
        for path in paths {
            var current: JSONValue? = row
            for key in path { current = current?[key] }
            if let current { return current }
        }
        return nil
    }

    func cell(_ row: JSONValue) -> String {
        let value = value(in: row)
        var format = format
        if case .auto = format {
            let key = path.last ?? ""
            if key.hasSuffix("_at") || key == "since" {
                format = .time
            } else if key == "status" {
                format = .status
            } else {
                format = .text
            }
        }
        return Cell.show(value, format)
    }
}

public enum Cell {
    public static func show(_ value: JSONValue?, _ format: CellFormat) -> String {
        guard let value, !value.isNull else { return "-" }
        switch format {
        case .time:
            guard let seconds = value.doubleValue else { return text(value) }
            return seconds == 0 ? "never" : time(seconds)
        case .status:
            switch value.intValue {
            case 1: return "enabled"
            case 2: return "disabled"
            default: return text(value)
            }
        case .auto, .text:
            return text(value)
        }
    }

    static func text(_ value: JSONValue) -> String {
        switch value {
        case .null: return "-"
        case .bool(let b): return b ? "yes" : "no"
        case .number(let n): return plainDecimal(n)
        case .string(let s): return printable(s)
        case .array(let items): return items.isEmpty ? "-" : items.map(text).joined(separator: ",")
        case .object: return printable(value.compact)
        }
    }

    /// `9e-06` as `0.000009` (a JSON writer may use exponents; a table should not).
    static func plainDecimal(_ literal: String) -> String {
        guard literal.contains(where: { $0 == "e" || $0 == "E" }) else { return literal }
        let lower = literal.lowercased()
        let parts = lower.split(separator: "e", maxSplits: 1)
        guard parts.count == 2, let exponent = Int(parts[1]), abs(exponent) <= 40 else { return literal }
        var mantissa = String(parts[0])
        let negative = mantissa.hasPrefix("-")
        if negative { mantissa.removeFirst() }
        let pieces = mantissa.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = String(pieces[0])
        let fraction = pieces.count > 1 ? String(pieces[1]) : ""
        var digits = whole + fraction
        var point = whole.count + exponent
        if point <= 0 {
            digits = String(repeating: "0", count: 1 - point) + digits
            point = 1
        } else if point > digits.count {
            digits += String(repeating: "0", count: point - digits.count)
        }
        var intPart = String(digits.prefix(point))
        var fracPart = String(digits.dropFirst(point))
        while intPart.count > 1, intPart.hasPrefix("0") { intPart.removeFirst() }
        while fracPart.hasSuffix("0") { fracPart.removeLast() }
        return (negative ? "-" : "") + intPart + (fracPart.isEmpty ? "" : "." + fracPart)
    }

    /// Control characters escaped: what the hub stores cannot move the cursor or end the row.
    static func printable(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return s }
        var out = ""
        for scalar in s.unicodeScalars {
            if scalar.properties.generalCategory == .control {
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// `2025-01-02 03:04:05Z`.
    public static func time(_ seconds: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withDashSeparatorInDate, .withSpaceBetweenDateAndTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: seconds.rounded(.down))) + "Z"
    }
}

/// Aligned columns under a header row: the one way every `toki admin` command prints.
public enum Table {
    /// Rows of strings under headers, two spaces between columns; columns whose cells are all
    /// numbers (or `-`) are right-aligned. The last column carries no trailing spaces.
    public static func render(headers: [String], rows: [[String]]) -> String {
        let count = headers.count
        var widths = headers.map(\.count)
        var numeric = Array(repeating: !rows.isEmpty, count: count)
        for row in rows {
            for i in 0..<count {
                let cell = i < row.count ? row[i] : ""
                widths[i] = max(widths[i], cell.count)
                if cell != "-", !isNumber(cell) { numeric[i] = false }
            }
        }
        func line(_ cells: [String]) -> String {
            var out = ""
            for i in 0..<count {
                let cell = i < cells.count ? cells[i] : ""
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                let last = i == count - 1
                if numeric[i] {
                    out += pad + cell
                } else {
                    out += cell + (last ? "" : pad)
                }
                if !last { out += "  " }
            }
            return out + "\n"
        }
        return line(headers) + rows.map(line).joined()
    }

    /// A list of JSON objects, one row each; `(none)` under the header when empty.
    public static func render(_ rows: [JSONValue], _ columns: [Column]) -> String {
        let out = render(headers: columns.map(\.header), rows: rows.map { row in columns.map { $0.cell(row) } })
        return rows.isEmpty ? out + "(none)\n" : out
    }

    /// One JSON object as FIELD/VALUE rows.
    public static func record(_ value: JSONValue, _ columns: [Column]) -> String {
        var out = ""
        let width = columns.map(\.header.count).max() ?? 0
        for column in columns {
            out += column.header + String(repeating: " ", count: width - column.header.count) + "  " + column.cell(value) + "\n"
        }
        return out
    }

    static func isNumber(_ cell: String) -> Bool {
        guard !cell.isEmpty, case .number? = try? JSONValue.parse(cell) else { return false }
        return true
    }
}
