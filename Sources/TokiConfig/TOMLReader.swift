// A strict reader for the subset of TOML that toki's configuration files use: tables (dotted and
// quoted names), basic and literal strings, integers, floats, booleans and arrays, comments.
// Every value keeps its line so that errors can point at it. What is outside the subset
// (inline tables, arrays of tables, multi-line strings, dotted keys, dates) is an error, never
// skipped. Why not TOMLKit: see docs/configuration.md.

/// A TOML value.
public enum TOMLValue: Equatable, Sendable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    case array([TOMLValue])

    /// "a string", "an integer", …: for error messages.
    public var typeName: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .float: "a float"
        case .boolean: "a boolean"
        case .array: "an array"
        }
    }
}

/// A key's value and the line it is on.
public struct TOMLEntry: Equatable, Sendable {
    public var value: TOMLValue
    public var line: Int
}

/// A table: its values and sub-tables, each in file order.
public struct TOMLTable: Equatable, Sendable {
    /// The line of the table's header (or of its first mention); 0 for the root.
    public var line: Int
    public var values: [String: TOMLEntry] = [:]
    public var tables: [String: TOMLTable] = [:]
    /// Keys (values and tables) in the order they first appear.
    public var order: [String] = []
    /// Whether a `[header]` defined it (not only a longer header that runs through it).
    var defined = false

    public init(line: Int) { self.line = line }
}

/// A syntax error, with its 1-based line.
public struct TOMLSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

public enum TOMLReader {
    /// Parses a document into its root table.
    public static func parse(_ text: String) throws(TOMLSyntaxError) -> TOMLTable {
        var parser = Parser(bytes: Array(text.utf8))
        return try parser.document()
    }
}

private struct Parser {
    let bytes: [UInt8]
    var index = 0
    var line = 1

    init(bytes: [UInt8]) {
        self.bytes = bytes
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3 }
    }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    func fail(_ message: String) -> TOMLSyntaxError { TOMLSyntaxError(line: line, message: message) }

    mutating func document() throws(TOMLSyntaxError) -> TOMLTable {
        var root = TOMLTable(line: 0)
        var current: [String] = []
        while true {
            skipSpaces()
            guard let c = peek else { break }
            switch c {
            case UInt8(ascii: "#"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                try endOfLine()
            case UInt8(ascii: "["):
                index += 1
                if peek == UInt8(ascii: "[") { throw fail("arrays of tables ([[…]]) are not supported") }
                let headerLine = line
                let path = try keyPath(until: UInt8(ascii: "]"))
                index += 1
                try endOfLine()
                try define(path, line: headerLine, in: &root)
                current = path
            default:
                let keyLine = line
                let key = try simpleKey()
                skipSpaces()
                if peek == UInt8(ascii: ".") { throw fail("dotted keys (\(key).…) are not supported: use a [table]") }
                guard peek == UInt8(ascii: "=") else { throw fail("expected '=' after the key '\(key)'") }
                index += 1
                skipSpaces()
                let value = try self.value()
                try endOfLine()
                try insert(key, TOMLEntry(value: value, line: keyLine), at: current, in: &root)
            }
        }
        return root
    }

    // MARK: Tables

    mutating func define(_ path: [String], line: Int, in root: inout TOMLTable) throws(TOMLSyntaxError) {
        func walk(_ table: inout TOMLTable, _ rest: ArraySlice<String>, _ shown: String) throws(TOMLSyntaxError) {
            let name = rest.first!
            if let entry = table.values[name] {
                throw TOMLSyntaxError(line: line, message: "[\(shown)]: '\(name)' is already a value (line \(entry.line))")
            }
            if table.tables[name] == nil {
                table.tables[name] = TOMLTable(line: line)
                table.order.append(name)
            }
            if rest.count == 1 {
                if table.tables[name]!.defined {
                    throw TOMLSyntaxError(line: line, message: "table [\(shown)] is defined twice (first at line \(table.tables[name]!.line))")
                }
                table.tables[name]!.defined = true
                table.tables[name]!.line = line
            } else {
                try walk(&table.tables[name]!, rest.dropFirst(), shown)
            }
        }
        try walk(&root, path[...], path.map(Self.displayKey).joined(separator: "."))
    }

    mutating func insert(_ key: String, _ entry: TOMLEntry, at path: [String], in root: inout TOMLTable) throws(TOMLSyntaxError) {
        func walk(_ table: inout TOMLTable, _ rest: ArraySlice<String>) throws(TOMLSyntaxError) {
            if let name = rest.first {
                try walk(&table.tables[name]!, rest.dropFirst())
                return
            }
            if let previous = table.values[key] {
                throw TOMLSyntaxError(line: entry.line, message: "key '\(key)' is set twice (first at line \(previous.line))")
            }
            if let sub = table.tables[key] {
                throw TOMLSyntaxError(line: entry.line, message: "key '\(key)' is already a table (line \(sub.line))")
            }
            table.values[key] = entry
            table.order.append(key)
        }
        try walk(&root, path[...])
    }

    static func displayKey(_ key: String) -> String {
        key.utf8.allSatisfy(isBareKeyByte) && !key.isEmpty ? key : "\"\(key)\""
    }

    // MARK: Keys

    mutating func keyPath(until close: UInt8) throws(TOMLSyntaxError) -> [String] {
        var path: [String] = []
        while true {
            skipSpaces()
            path.append(try simpleKey())
            skipSpaces()
            guard let c = peek else { throw fail("unterminated table header") }
            if c == close { return path }
            guard c == UInt8(ascii: ".") else { throw fail("unexpected '\(Character(Unicode.Scalar(c)))' in a table header") }
            index += 1
        }
    }

    mutating func simpleKey() throws(TOMLSyntaxError) -> String {
        switch peek {
        case UInt8(ascii: "\""): return try basicString()
        case UInt8(ascii: "'"): return try literalString()
        default:
            let start = index
            while let c = peek, Self.isBareKeyByte(c) { index += 1 }
            guard index > start else { throw fail("expected a key") }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }
    }

    static func isBareKeyByte(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    // MARK: Values

    mutating func value() throws(TOMLSyntaxError) -> TOMLValue {
        guard let c = peek, c != UInt8(ascii: "\n"), c != UInt8(ascii: "\r"), c != UInt8(ascii: "#") else {
            throw fail("expected a value")
        }
        switch c {
        case UInt8(ascii: "\""): return .string(try basicString())
        case UInt8(ascii: "'"): return .string(try literalString())
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "{"): throw fail("inline tables ({…}) are not supported: use a [table]")
        default: return try scalar()
        }
    }

    mutating func array() throws(TOMLSyntaxError) -> TOMLValue {
        index += 1
        var items: [TOMLValue] = []
        while true {
            try skipBlank()
            guard let c = peek else { throw fail("unterminated array") }
            if c == UInt8(ascii: "]") { index += 1; return .array(items) }
            items.append(try value())
            try skipBlank()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"): index += 1; return .array(items)
            case nil: throw fail("unterminated array")
            default: throw fail("expected ',' or ']' in an array")
            }
        }
    }

    mutating func scalar() throws(TOMLSyntaxError) -> TOMLValue {
        let start = index
        while let c = peek, Self.isBareKeyByte(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: ":") {
            index += 1
        }
        let token = String(decoding: bytes[start..<index], as: UTF8.self)
        switch token {
        case "true": return .boolean(true)
        case "false": return .boolean(false)
        case "": throw fail("expected a value")
        default: break
        }
        if let n = Self.integer(token) { return .integer(n) }
        if let d = Self.float(token) { return .float(d) }
        if token.contains(":") || token.filter({ $0 == "-" }).count >= 2 {
            throw fail("dates and times are not supported (got \(token)); quote it as a string")
        }
        if token.allSatisfy({ $0.isNumber || $0 == "_" || $0 == "-" || $0 == "+" }) {
            throw fail("invalid or too large integer \(token)")
        }
        throw fail("invalid value \(token) (strings need quotes)")
    }

    /// Decimal integers: optional sign, digits with single underscores between them, no leading zero.
    static func integer(_ token: String) -> Int? {
        var digits = Substring(token)
        if digits.first == "+" || digits.first == "-" { digits = digits.dropFirst() }
        guard let first = digits.first, first.isASCII, first.isNumber, digits.last?.isNumber == true,
              !digits.contains("__"), !(digits.count > 1 && first == "0"),
              digits.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "_" })
        else { return nil }
        return Int(token.replacingOccurrences(of: "_", with: ""))
    }

    static func float(_ token: String) -> Double? {
        switch token {
        case "inf", "+inf": return .infinity
        case "-inf": return -.infinity
        case "nan", "+nan", "-nan": return .nan
        default: break
        }
        guard token.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), !token.contains("__"),
              token.allSatisfy({ ($0.isASCII && $0.isNumber) || "+-._eE".contains($0) })
        else { return nil }
        // TOML wants digits on both sides of the point.
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 2, parts[0].last?.isNumber != true || parts[1].first?.isNumber != true { return nil }
        return Double(token.replacingOccurrences(of: "_", with: ""))
    }

    mutating func basicString() throws(TOMLSyntaxError) -> String {
        index += 1
        if peek == UInt8(ascii: "\""), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\"") {
            throw fail("multi-line strings (\"\"\") are not supported")
        }
        var out: [UInt8] = []
        while true {
            guard let c = peek, c != UInt8(ascii: "\n"), c != UInt8(ascii: "\r") else { throw fail("unterminated string") }
            index += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard let e = peek else { throw fail("unterminated string") }
                index += 1
                switch e {
                case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"): out += try unicodeEscape(digits: 4)
                case UInt8(ascii: "U"): out += try unicodeEscape(digits: 8)
                default: throw fail("invalid escape \\\(Character(Unicode.Scalar(e))) in a string")
                }
            default:
                if c < 0x20 && c != 0x09 || c == 0x7F { throw fail("control character in a string") }
                out.append(c)
            }
        }
    }

    mutating func unicodeEscape(digits: Int) throws(TOMLSyntaxError) -> [UInt8] {
        guard index + digits <= bytes.count,
              let code = UInt32(String(decoding: bytes[index..<index + digits], as: UTF8.self), radix: 16),
              let scalar = Unicode.Scalar(code)
        else { throw fail("invalid unicode escape in a string") }
        index += digits
        return Array(String(Character(scalar)).utf8)
    }

    mutating func literalString() throws(TOMLSyntaxError) -> String {
        index += 1
        if peek == UInt8(ascii: "'"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "'") {
            throw fail("multi-line strings (''') are not supported")
        }
        let start = index
        while true {
            guard let c = peek, c != UInt8(ascii: "\n"), c != UInt8(ascii: "\r") else { throw fail("unterminated string") }
            if c == UInt8(ascii: "'") {
                defer { index += 1 }
                return String(decoding: bytes[start..<index], as: UTF8.self)
            }
            if c < 0x20 && c != 0x09 || c == 0x7F { throw fail("control character in a string") }
            index += 1
        }
    }

    // MARK: Whitespace

    mutating func skipSpaces() {
        while let c = peek, c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { index += 1 }
    }

    /// Spaces, comments and newlines (inside arrays).
    mutating func skipBlank() throws(TOMLSyntaxError) {
        while true {
            skipSpaces()
            guard let c = peek, c == UInt8(ascii: "#") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") else { return }
            try endOfLine()
        }
    }

    /// Optional spaces and comment, then a newline or the end.
    mutating func endOfLine() throws(TOMLSyntaxError) {
        skipSpaces()
        if peek == UInt8(ascii: "#") {
            while let c = peek, c != UInt8(ascii: "\n") {
                if c < 0x20 && c != 0x09 && c != 0x0D || c == 0x7F { throw fail("control character in a comment") }
                index += 1
            }
        }
        if peek == UInt8(ascii: "\r") {
            index += 1
            guard peek == UInt8(ascii: "\n") else { throw fail("a carriage return must be followed by a newline") }
        }
        guard let c = peek else { return }
        guard c == UInt8(ascii: "\n") else {
            throw fail("unexpected text after the value: expected the end of the line")
        }
        index += 1
        line += 1
    }
}
