import ArgumentParser

struct Toki: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toki",
        abstract: "Pool your own GPUs behind one OpenAI-compatible API.",
        version: TokiVersion.string,
        subcommands: [HubCommand.self, RelayCommand.self, StatusCommand.self, TokenCommand.self, WorkerCommand.self, VersionCommand.self]
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
