/// A mode's settings from its three sources; a value is the flag's, else the environment's, else
/// the file's, else the default. Every source is checked when this is made, so reading a value
/// cannot fail.
public struct ResolvedSettings<G: SettingsGroup>: Sendable {
    public let group: G
    /// Flag values by key, in command-line order (a switch given is `["true"]`).
    public let flags: [String: [String]]
    public let environment: [String: String]
    public let file: ConfigSection?

    /// - Parameters:
    ///   - arguments: the command line's setting flags (`--max-body-mib 8`, `--no-lz4`, `--listen=…`).
    ///   - environment: the process environment; unknown `TOKI_<SECTION>_*` variables are errors.
    ///   - file: the mode's section of `--config`, already checked.
    public init(_ group: G = G(), arguments: [String], environment: [String: String], file: ConfigSection?) throws(ConfigError) {
        self.group = group
        self.environment = environment
        self.file = file
        var errors: [String] = []
        var flags: [String: [String]] = [:]
        let settings = group.all
        let byFlag = Dictionary(uniqueKeysWithValues: settings.map { ($0.flag, $0) })
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            i += 1
            guard argument.hasPrefix("--") else {
                errors.append("unexpected argument '\(argument)'")
                continue
            }
            let parts = argument.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            guard let setting = byFlag[name] else {
                errors.append("unknown option '\(name)'")
                // Its value, if it has one, is not a second error (no setting takes a positional argument).
                if parts.count == 1, i < arguments.count, !arguments[i].hasPrefix("-") { i += 1 }
                continue
            }
            var text: String
            if setting.isSwitch {
                if parts.count == 2 { errors.append("\(name) takes no value"); continue }
                text = "true"
            } else if parts.count == 2 {
                text = String(parts[1])
            } else {
                guard i < arguments.count else { errors.append("\(name) needs a value (\(setting.valueName))"); continue }
                text = arguments[i]
                i += 1
            }
            if setting.isList {
                // Each repetition is one element (a URL may contain a comma).
                if let problem = setting.problem(toml: .array([.string(text)])) { errors.append("\(name): \(problem)") }
                flags[setting.key, default: []].append(text)
                continue
            }
            if let problem = setting.problem(text: text) { errors.append("\(name): \(problem)") }
            flags[setting.key] = [text]
        }
        let section = G.section
        var known: Set<String> = []
        for setting in settings {
            guard let variable = setting.environmentName(section: section) else { continue }
            known.insert(variable)
            if case .tokiame = setting.binding { continue }
            guard let raw = environment[variable], !raw.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            if let problem = setting.problem(text: raw) { errors.append("$\(variable): \(problem)") }
        }
        // A misspelt variable would otherwise be ignored without a word.
        let prefix = "TOKI_\(section.uppercased())_"
        for variable in environment.keys.sorted() where variable.hasPrefix(prefix) && !known.contains(variable) {
            errors.append("$\(variable) is not a setting of the [\(section)] section (see --help)")
        }
        if !errors.isEmpty { throw ConfigError(errors) }
        self.flags = flags
    }

    /// The value from the command line, if given.
    public func flag<V>(_ setting: Setting<V>) -> V? {
        guard let texts = flags[setting.key] else { return nil }
        if V.self == [String].self { return texts as? V }
        return texts.last.flatMap(V.init(text:))
    }

    /// The value from the environment, if set (not empty); nil for tokiame variables, which the
    /// worker reads with tokiame's rules.
    public func fromEnvironment<V>(_ setting: Setting<V>) -> V? {
        if case .tokiame = setting.binding { return nil }
        guard let variable = setting.environmentName(section: G.section), let raw = environment[variable],
              !raw.trimmingCharacters(in: .whitespaces).isEmpty
        else { return nil }
        return V(text: raw)
    }

    /// The value from the file, if set.
    public func fromFile<V>(_ setting: Setting<V>) -> V? {
        file?.table.values[setting.key].flatMap { V(toml: $0.value) }
    }

    /// Flag, else environment, else file, else the default.
    public func value<V>(_ setting: Setting<V>) -> V? {
        flag(setting) ?? fromEnvironment(setting) ?? fromFile(setting) ?? setting.defaultValue
    }

    /// For settings with a default.
    public subscript<V>(_ setting: Setting<V>) -> V {
        guard let v = value(setting) else { preconditionFailure("setting \(setting.key) has no default") }
        return v
    }

    /// Where the value comes from, to name it in an error: `--flag`, `$VARIABLE`, `FILE:LINE`.
    public func source<V>(_ setting: Setting<V>) -> String {
        if flag(setting) != nil { return setting.flag }
        if fromEnvironment(setting) != nil, let variable = setting.environmentName(section: G.section) { return "$\(variable)" }
        if let file, let entry = file.table.values[setting.key] { return "\(file.path):\(entry.line): \(setting.key)" }
        return setting.flag
    }
}
