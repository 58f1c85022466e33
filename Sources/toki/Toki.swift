import Foundation
import ArgumentParser

struct Toki: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toki",
        abstract: "Pool your own GPUs behind one OpenAI-compatible API.",
        version: TokiVersion.string,
        subcommands: [HubCommand.self, RelayCommand.self, AdminCommand.self, StatusCommand.self, TokenCommand.self, ConfigCommand.self, WorkerCommand.self, VersionCommand.self]
    )
}

enum TokiVersion {
    static let string = "0.1.0"
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version and the tunnel protocols spoken.")

    func run() {
        print("toki \(TokiVersion.string) (tunnel: tokilake.v1, smux v1/v2, toki-lz4)")
    }
}

/// `--token` where a command presents a token to a hub; `$TOKI_TOKEN` when the flag is not
/// given (a unit's environment file keeps it out of the process list). Which token is meant is
/// in each command's help.
struct TokenOption: ParsableArguments {
    @Option(name: .long, help: "The token to present (default: $TOKI_TOKEN).")
    var token: String?

    /// The flag's value, else the environment's; empty when neither is set.
    var resolved: String {
        (token ?? ProcessInfo.processInfo.environment["TOKI_TOKEN"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The token, or a usage error that says how to give it.
    func required(for purpose: String) throws -> String {
        guard !resolved.isEmpty else { throw ValidationError("\(purpose): give it with --token or $TOKI_TOKEN") }
        return resolved
    }
}
