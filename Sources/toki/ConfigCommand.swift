import ArgumentParser
import Foundation
import Logging
import NIOSSL
import TokiConfig
import TokiTunnel

/// `--config FILE` of hub, relay-only and worker.
struct ConfigFileOption: ParsableArguments {
    @Option(name: [.customLong("config"), .customShort("c")], help: ArgumentHelp(
        "TOML configuration file; this mode's section is read (`toki config example MODE` prints one). For the worker a file not ending in .toml is a tokiame.json.",
        valueName: "file"))
    var path: String?
}

extension ArgumentHelp {
    /// The help of `group`'s setting `key` (SettingFlags.swift), from its declaration: what it
    /// does, its default, its flag, variable and key.
    static func setting<G: SettingsGroup>(_ group: G, _ key: String) -> ArgumentHelp {
        guard let setting = group.all.first(where: { $0.key == key }) else { preconditionFailure("no setting \(key) in [\(G.section)]") }
        return ArgumentHelp(ConfigText.optionHelp(setting, section: G.section), valueName: setting.valueName,
                            visibility: setting.hidden ? .hidden : .default)
    }
}

/// A mode's settings declared to ArgumentParser (the structs SettingFlags.swift generates):
/// one property per setting, named `ConfigText.camelCase(key)`.
protocol SettingFlags: ParsableArguments {
    associatedtype Group: SettingsGroup
}

extension SettingFlags {
    /// The flags given, as TokiConfig reads them (`ResolvedSettings(arguments:)`), in declaration
    /// order: an option's value after its flag (a list's flag once per value), a switch alone.
    var arguments: [String] {
        let flags = Dictionary(uniqueKeysWithValues: Group().all.map { (ConfigText.camelCase($0.key), $0.flag) })
        return Mirror(reflecting: self).children.flatMap { child -> [String] in
            guard let label = child.label, let flag = flags[String(label.dropFirst())] else {
                preconditionFailure("\(child.label ?? "?") is not a setting of [\(Group.section)]")
            }
            switch child.value {
            case let option as Option<String?>: return option.wrappedValue.map { [flag, $0] } ?? []
            case let option as Option<[String]>: return option.wrappedValue.flatMap { [flag, $0] }
            case let option as Flag<Bool>: return option.wrappedValue ? [flag] : []
            default: preconditionFailure("\(label): not a generated setting flag")
            }
        }
    }
}

extension ResolvedSettings {
    /// The command's setting flags, the process environment and `--config`'s section, checked;
    /// every problem at once, as a usage error.
    static func load(arguments: [String], configPath: String?) throws -> ResolvedSettings<G> {
        do {
            let file = try configPath.map { path throws(ConfigError) in try ConfigFile.load(path: path).section(for: G()) }
            return try ResolvedSettings(arguments: arguments, environment: ProcessInfo.processInfo.environment, file: file)
        } catch {
            throw ValidationError(error.description)
        }
    }
}

extension ConfigMode: ExpressibleByArgument {}

/// tls_cert and tls_key: the certificate this node serves (loaded now, so a bad pair stops the
/// start); nil for plain HTTP.
func serverCertificate(certificate: String?, key: String?) throws -> ServerCertificate? {
    switch (certificate, key) {
    case (nil, nil): return nil
    case (let certificate?, let key?):
        do { return try ServerCertificate(certificatePath: certificate, keyPath: key) } catch { throw ValidationError("\(error)") }
    default: throw ValidationError("tls_cert and tls_key go together (--tls-cert FILE --tls-key FILE)")
    }
}

/// How the parent's certificate is verified: the system roots (nil), only `caFile`'s CAs, or
/// not at all (`insecure`, which `warnIfInsecure` announces).
func parentTLS(caFile: String?, insecure: Bool) throws -> TLSConfiguration? {
    guard caFile != nil || insecure else { return nil }
    var tls = TLSConfiguration.makeClientConfiguration()
    if let caFile {
        guard FileManager.default.isReadableFile(atPath: caFile) else { throw ValidationError("ca_file \(caFile) is not readable") }
        tls.trustRoots = .file(caFile)
    }
    if insecure { tls.certificateVerification = .none }
    return tls
}

func warnIfInsecure(_ insecure: Bool, parent: String, logger: Logger) {
    guard insecure else { return }
    logger.warning("insecure_skip_verify is set: the \(parent)'s TLS certificate is NOT verified; anyone on the path can read and change the traffic and take the token. Trust a private CA with ca_file instead")
}

/// `toki config check|example`.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check a configuration file, or print a commented example of one.",
        subcommands: [Check.self, Example.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a file: every section, key, type and value (prints ok, or every problem and exits 1).")
        @Argument(help: ArgumentHelp("The TOML file.", valueName: "file"))
        var file: String

        func run() throws {
            let problems: [String]
            do { problems = try ConfigFile.load(path: file).problems() } catch { problems = error.messages }
            guard problems.isEmpty else {
                FileHandle.standardError.write(Data((problems.joined(separator: "\n") + "\n").utf8))
                throw ExitCode(1)
            }
            print("ok")
        }
    }

    struct Example: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a commented example with every key of a mode (contrib/toki-MODE.toml is this output).")
        @Argument(help: ArgumentHelp("hub, relay or worker.", valueName: "mode"))
        var mode: ConfigMode

        func run() {
            print(ConfigText.example(mode), terminator: "")
        }
    }
}
