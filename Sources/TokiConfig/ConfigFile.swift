import Foundation

/// Everything wrong with a configuration, one message per problem (file problems as `PATH:LINE: …`).
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var messages: [String]
    public init(_ messages: [String]) { self.messages = messages }
    public init(_ message: String) { self.messages = [message] }
    public var description: String { messages.joined(separator: "\n") }
}

/// A parsed configuration file: one `[hub]`, `[relay]` and/or `[worker]` section.
public struct ConfigFile: Sendable {
    public var path: String
    public var root: TOMLTable

    /// Parses `text`; a syntax error is a `ConfigError` naming the path and line.
    public init(text: String, path: String) throws(ConfigError) {
        self.path = path
        do { root = try TOMLReader.parse(text) } catch {
            throw ConfigError("\(path):\(error.line): \(error.message)")
        }
    }

    /// Reads and parses the file at `path`.
    public static func load(path: String) throws(ConfigError) -> ConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read the config file \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("\(path): not UTF-8 text")
        }
        return try ConfigFile(text: text, path: path)
    }

    /// Every problem of the file: keys outside a section, unknown sections and keys, wrong types,
    /// values out of range. Empty when the file is valid.
    public func problems() -> [String] {
        var found: [(Int, String)] = []
        var sections = 0
        for key in root.order {
            if let entry = root.values[key] {
                found.append((entry.line, "key '\(key)' is outside a section: put it under [hub], [relay] or [worker]"))
            } else if let table = root.tables[key] {
                guard let mode = ConfigMode(rawValue: key) else {
                    found.append((table.line, "unknown section [\(key)] (toki reads [hub], [relay] and [worker])"))
                    continue
                }
                sections += 1
                found += Self.problems(of: table, in: mode.group)
            }
        }
        if root.order.isEmpty || (sections == 0 && found.isEmpty) {
            return ["\(path): no [hub], [relay] or [worker] section"]
        }
        return found.sorted { $0.0 < $1.0 }.map { "\(path):\($0.0): \($0.1)" }
    }

    static func problems(of table: TOMLTable, in group: any SettingsGroup) -> [(Int, String)] {
        let section = type(of: group).section
        let settings = Dictionary(uniqueKeysWithValues: group.all.map { ($0.key, $0) })
        var found: [(Int, String)] = []
        for key in table.order {
            if let entry = table.values[key] {
                guard let setting = settings[key] else {
                    found.append((entry.line, "unknown key '\(key)' in [\(section)]"))
                    continue
                }
                if let problem = setting.problem(toml: entry.value) {
                    found.append((entry.line, "key '\(key)' in [\(section)]: \(problem)"))
                }
            } else if let sub = table.tables[key] {
                found += type(of: group).tableProblems(key, sub).map { ($0.line, $0.message) }
            }
        }
        return found
    }

    /// The section for `group`, checked: every problem of the section is in the error. A file
    /// without the section is an error too (it was meant for another mode).
    public func section<G: SettingsGroup>(for group: G) throws(ConfigError) -> ConfigSection {
        guard let table = root.tables[G.section] else {
            throw ConfigError("\(path): no [\(G.section)] section")
        }
        // Problems anywhere in the file count: a typo in another section is still a typo.
        let problems = problems()
        if !problems.isEmpty { throw ConfigError(problems) }
        return ConfigSection(path: path, table: table)
    }
}

/// One checked section of a file.
public struct ConfigSection: Sendable {
    public var path: String
    public var table: TOMLTable
}

extension ConfigSection {
    /// `[worker.models."NAME"]` entries, in file order.
    public var workerModels: [WorkerModel] {
        guard let models = table.tables["models"] else { return [] }
        return models.order.compactMap { name in models.tables[name].flatMap { try? WorkerModel(name: name, table: $0) } }
    }
}
