import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TokiHub
import TokiOps
import TokiRelay
import TokiProtocol
import TokiStore
import TokiTunnel
import TokiConfig
import NIOSSL

/// `toki hub`: the gateway on embedded SQLite.
struct HubCommand: NodeCommand {
    static let configuration = CommandConfiguration(
        commandName: "hub",
        abstract: "Run the hub: the OpenAI API for users and the tunnel endpoint for workers, on one port.",
        discussion: """
            State lives in SQLite under --data-dir (default ./toki-data, or $STATE_DIRECTORY under systemd). \
            On first start an admin user is created and its token printed once.
            Workers connect to ws://HOST:PORT/api/tokilake/connect (what Tokiame configs use).

            """ + ConfigText.precedence(HubSettings())
    )

    @OptionGroup var options: NodeOptions<HubSettingFlags, Launch>

    /// What `run` needs, from flags, environment and file (checked).
    struct Launch {
        var configuration: HubConfiguration
        var node: NodeLaunch
        var upstream: String?
        var token: String
        var upstreamTLS: TLSConfiguration?
    }

    func launch() throws -> Launch {
        let settings = try options.resolvedSettings()
        let s = settings.group
        let token = (settings.value(s.token) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let upstream = settings.value(s.upstream)
        if let upstream {
            do { _ = try TunnelDialOptions.normalize(TunnelDialOptions.hubURL(upstream)) } catch {
                throw ValidationError("\(settings.source(s.upstream)): \(error)")
            }
            guard !token.isEmpty else {
                throw ValidationError("upstream needs a token valid on the parent: give it with --token, $TOKI_TOKEN or token in the file")
            }
        } else if !token.isEmpty, settings.flag(s.token) != nil || settings.fromFile(s.token) != nil {
            throw ValidationError("\(settings.source(s.token)) is the parent's token: it goes with upstream")
        }
        var node = try NodeLaunch(settings)
        var configuration = node.endpoint
        configuration.dataDirectory = hubDataDirectory(settings.value(s.dataDir))
        configuration.maxBodyBytes = settings[s.maxBodyMib] * 1024 * 1024
        configuration.responseTimeout = .seconds(settings[s.responseTimeout])
        configuration.heartbeatTimeout = .seconds(settings[s.heartbeatTimeout])
        configuration.pingInterval = .seconds(settings[s.pingInterval])
        configuration.usageRetention = settings.value(s.usageRetentionDays).map { .seconds($0 * 86_400) }
        configuration.tokenRateLimit = RateLimit(rpm: settings.value(s.tokenRpm), tpm: settings.value(s.tokenTpm),
                                                 concurrency: settings.value(s.tokenMaxConcurrent))
        configuration.userRateLimit = RateLimit(rpm: settings.value(s.userRpm), tpm: settings.value(s.userTpm),
                                                concurrency: settings.value(s.userMaxConcurrent))
        configuration.allowLZ4 = !settings[s.noLz4]
        configuration.allowSmux2 = !settings[s.noSmux2]
        configuration.slowClientTimeout = .seconds(settings[s.slowClientTimeout])
        configuration.responseBufferBytes = settings[s.responseBufferMib] * 1024 * 1024
        configuration.streamIdleTimeout = .seconds(settings[s.streamIdleTimeout])
        configuration.sseKeepAliveInterval = .seconds(settings[s.sseKeepalive])
        configuration.httpLimits.headerTimeout = .seconds(settings[s.headerTimeout])
        configuration.httpLimits.idleTimeout = .seconds(settings[s.idleTimeout])
        configuration.httpLimits.bodyTimeout = .seconds(settings[s.bodyTimeout])
        configuration.httpLimits.maxConnections = settings.value(s.maxConnections)
        configuration.drainTimeout = node.drainTimeout
        if let nodeID = node.nodeID { configuration.nodeID = nodeID }
        node.insecure = upstream != nil && settings[s.insecureSkipVerify]
        var upstreamTLS: TLSConfiguration?
        if upstream != nil { upstreamTLS = try parentTLS(caFile: settings.value(s.caFile), insecure: node.insecure) }
        return Launch(configuration: configuration, node: node, upstream: upstream, token: token, upstreamTLS: upstreamTLS)
    }

    func run() async throws {
        let launch = try launched()
        var configuration = launch.configuration
        let address = launch.node.address
        let (logger, systemd, metrics) = launch.node.start(label: "toki.hub", endpoint: &configuration)
        let exporter = launch.upstream.map {
            UpstreamExporter(upstream: $0, token: launch.token, nodeID: configuration.nodeID, tls: launch.upstreamTLS, logger: logger)
        }
        let store = try HubStore(dataDirectory: configuration.dataDirectory, logger: logger)
        if let adminToken = try await store.ensureAdmin() {
            FileHandle.standardOutput.write(Data("""
                toki: created the admin user; its token is shown only this once:
                  \(adminToken)
                Create user tokens with: toki token create --data-dir \(configuration.dataDirectory) --user NAME

                """.utf8))
        }
        let dataDirectory = configuration.dataDirectory
        let (http, ws) = configuration.tls == nil ? ("http", "ws") : ("https", "wss")
        let hub = HubService(configuration: configuration, store: store, logger: logger, chain: exporter?.chain) { port in
            logger.notice("toki hub listening", metadata: [
                "api": "\(http)://\(address.host):\(port)/v1", "workers": "\(ws)://\(address.host):\(port)/api/tokilake/connect",
                "data": "\(dataDirectory)",
            ])
            // One machine-readable line for scripts and tests.
            FileHandle.standardOutput.write(Data("LISTEN \(address.host):\(port)\n".utf8))
            systemd.ready(status: "serving on port \(port)")
        }
        // SIGTERM/SIGINT: the hub drains (new API requests 503, in-flight ones finish), then stops.
        let reloader = configuration.tls.map { CertificateReloader(certificate: $0, logger: logger) as any Service }
        let listener = launch.node.metrics.listener(metrics, logger: logger, render: hub.exportMetrics, readiness: hub.readiness)
        let services: [any Service] = [hub] + (exporter.map { [$0 as any Service] } ?? []) + (listener.map { [$0 as any Service] } ?? [])
            + (reloader.map { [$0] } ?? [])
        // The watchdog's status reads the registry through the lock every request takes.
        try await runNode(services, systemd: systemd, status: { "serving, \(hub.registry.workers.count) workers" }, logger: logger)
    }
}

/// `toki token create|list|revoke`: manage API tokens directly in the hub's database.
extension TokenScope: ExpressibleByArgument {}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Create, list and revoke API tokens (works while the hub runs).",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct StoreOptions: ParsableArguments {
        @Option(name: .long, help: "The hub's data directory.")
        var dataDir: String?

        func open() throws -> HubStore {
            try HubStore(dataDirectory: hubDataDirectory(dataDir), logger: makeLogger(label: "toki.token", level: .warning))
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token and print it alone on stdout (T=$(toki token create ...)).")
        @OptionGroup var store: StoreOptions
        @Option(name: .long, help: "The user the token belongs to (created if missing).")
        var user = "default"
        @Option(name: .long, help: "A label for the token.")
        var name: String?
        @Option(name: .long, help: "What the token may do: inference (call the API), worker (only register workers: for a GPU box), or both.")
        var scope: TokenScope = .both

        func run() async throws {
            let hub = try store.open()
            let created = try await hub.createToken(user: user, name: name, options: TokenOptions(scope: scope))
            print(created.plaintext)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a user's tokens (prefixes only; secrets are not stored).")
        @OptionGroup var store: StoreOptions
        @Option(name: .long, help: "The user whose tokens to list.")
        var user = "default"

        func run() async throws {
            for token in try await store.open().listTokens(user: user) {
                print("\(token.id)\t\(token.displayPrefix)…\t\(token.name ?? "-")\t\(token.disabled ? "revoked" : "active")")
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id (see `toki token list`).")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Token id.")
        var id: Int64

        func run() async throws {
            try await store.open().revokeToken(id: id)
        }
    }
}

/// The hub's data directory: `--data-dir`, else systemd's $STATE_DIRECTORY (its first entry),
/// else ./toki-data. `toki hub` and `toki token` open the same database by it.
func hubDataDirectory(_ dataDir: String?) -> String {
    dataDir ?? ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init) ?? "./toki-data"
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Logs to stderr (stdout is for machine-readable output such as tokens).
func makeLogger(label: String, level: Logger.Level) -> Logger {
    var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = level
    return logger
}
