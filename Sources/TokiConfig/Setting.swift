import Foundation
import NIOCore
import TokiProtocol

// One declaration per setting: its key in the file is the flag's name in snake_case, and its
// environment variable is derived from the same key, so the three can never disagree.

/// A type a setting may have.
public protocol SettingValue: Sendable, Equatable {
    /// "an integer", "a string", …: the expected type in error messages.
    static var typeName: String { get }
    init?(toml: TOMLValue)
    /// From a flag's argument or an environment variable.
    init?(text: String)
    /// The value as TOML (for `toki config example`).
    var tomlLiteral: String { get }
}

extension Int: SettingValue {
    public static var typeName: String { "an integer" }
    public init?(toml: TOMLValue) {
        guard case .integer(let n) = toml else { return nil }
        self = n
    }
    public init?(text: String) { self.init(text.trimmingCharacters(in: .whitespaces)) }
    public var tomlLiteral: String { String(self) }
}

extension String: SettingValue {
    public static var typeName: String { "a string" }
    public init?(toml: TOMLValue) {
        guard case .string(let s) = toml else { return nil }
        self = s
    }
    public init?(text: String) { self = text }
    public var tomlLiteral: String { Self.quoted(self) }

    /// A TOML basic string: JSON's escapes are TOML's too.
    static func quoted(_ s: String) -> String {
        var buffer = ByteBuffer()
        buffer.writeJSONString(s)
        return String(buffer: buffer)
    }
}

extension Bool: SettingValue {
    public static var typeName: String { "a boolean (true or false)" }
    public init?(toml: TOMLValue) {
        guard case .boolean(let b) = toml else { return nil }
        self = b
    }
    public init?(text: String) {
        switch text.trimmingCharacters(in: .whitespaces).lowercased() {
        case "true", "1", "yes", "on": self = true
        case "false", "0", "no", "off": self = false
        default: return nil
        }
    }
    public var tomlLiteral: String { self ? "true" : "false" }
}

extension Array: SettingValue where Element == String {
    public static var typeName: String { "an array of strings" }
    public init?(toml: TOMLValue) {
        guard case .array(let items) = toml else { return nil }
        var strings: [String] = []
        for item in items {
            guard case .string(let s) = item else { return nil }
            strings.append(s)
        }
        self = strings
    }
    /// Comma-separated (an environment variable); a flag repeats instead.
    public init?(text: String) {
        self = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
    public var tomlLiteral: String { "[" + map(String.quoted).joined(separator: ", ") + "]" }
}

/// Where a setting's environment variable is read.
public enum EnvironmentBinding: Sendable, Equatable {
    /// `TOKI_<SECTION>_<KEY>`, read like the flag and the file.
    case derived
    /// A fixed name, read like the flag and the file (e.g. `TOKI_TOKEN`, shared by several commands).
    case named(String)
    /// A tokiame variable (`TOKIAME_*`): the worker reads it with tokiame's own rules, so the
    /// generic merge leaves it alone. Shown in help.
    case tokiame(String)
    /// No environment variable.
    case none
}

/// A setting, type-erased: what validation, help and the example need.
public protocol AnySetting: Sendable {
    var key: String { get }
    var help: String { get }
    var valueName: String { get }
    var hidden: Bool { get }
    var binding: EnvironmentBinding { get }
    var typeName: String { get }
    /// A flag that takes no value (a boolean).
    var isSwitch: Bool { get }
    /// A flag that may be repeated (an array of strings).
    var isList: Bool { get }
    var defaultLiteral: String? { get }
    /// An example value for the example file, when there is no default.
    var exampleLiteral: String? { get }
    /// nil if `value` is acceptable, else what is wrong with it.
    func problem(toml value: TOMLValue) -> String?
    func problem(text: String) -> String?
}

extension AnySetting {
    /// `--max-body-mib`.
    public var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-") }

    /// The environment variable for `section`, nil if none.
    public func environmentName(section: String) -> String? {
        switch binding {
        case .derived: "TOKI_\(section.uppercased())_\(key.uppercased())"
        case .named(let name), .tokiame(let name): name
        case .none: nil
        }
    }
}

public struct Setting<Value: SettingValue>: AnySetting {
    public let key: String
    public let help: String
    public let valueName: String
    public let defaultValue: Value?
    public let example: Value?
    public let hidden: Bool
    public let binding: EnvironmentBinding
    let check: @Sendable (Value) -> String?

    /// - Parameters:
    ///   - key: the file key, snake_case of the flag (`max_body_mib` ↔ `--max-body-mib`).
    ///   - check: nil if the value is acceptable, else the problem ("must be positive").
    public init(_ key: String, default defaultValue: Value? = nil, example: Value? = nil, valueName: String = "value",
                environment: EnvironmentBinding = .derived, hidden: Bool = false, help: String,
                check: @escaping @Sendable (Value) -> String? = { _ in nil }) {
        self.key = key
        self.help = help
        self.valueName = valueName
        self.defaultValue = defaultValue
        self.example = example
        self.hidden = hidden
        self.binding = environment
        self.check = check
    }

    public var typeName: String { Value.typeName }
    public var isSwitch: Bool { Value.self == Bool.self }
    public var isList: Bool { Value.self == [String].self }
    public var defaultLiteral: String? { defaultValue?.tomlLiteral }
    public var exampleLiteral: String? { example?.tomlLiteral }

    public func problem(toml value: TOMLValue) -> String? {
        guard let v = Value(toml: value) else { return "expected \(Value.typeName), got \(value.typeName)" }
        return check(v)
    }

    public func problem(text: String) -> String? {
        guard let v = Value(text: text) else { return "expected \(Value.typeName), got '\(text)'" }
        return check(v)
    }
}

// MARK: Checks

public enum Check {
    public static let positive: @Sendable (Int) -> String? = { $0 > 0 ? nil : "must be positive" }
    public static let nonNegative: @Sendable (Int) -> String? = { $0 >= 0 ? nil : "must not be negative" }
    public static func range(_ r: ClosedRange<Int>) -> @Sendable (Int) -> String? {
        { r.contains($0) ? nil : "must be between \(r.lowerBound) and \(r.upperBound)" }
    }
    public static func oneOf(_ allowed: [String]) -> @Sendable (String) -> String? {
        { allowed.contains($0.lowercased()) ? nil : "must be one of \(allowed.joined(separator: ", "))" }
    }
    public static let nonEmpty: @Sendable (String) -> String? = {
        $0.trimmingCharacters(in: .whitespaces).isEmpty ? "must not be empty" : nil
    }
    /// HOST:PORT, [v6]:PORT.
    public static let hostPort: @Sendable (String) -> String? = { HostPort(parsing: $0) == nil ? "expected HOST:PORT, got '\($0)'" : nil }
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    /// TokiOps.LogFormat's names.
    public static let logFormats = ["text", "logfmt", "json"]
}

/// HOST:PORT, with [v6]:PORT accepted; an empty host is 0.0.0.0.
public struct HostPort: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        self.host = host
        self.port = port
    }
}
