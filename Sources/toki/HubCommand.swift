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

/// `toki hub`: the gateway on embedded SQLite.
struct HubCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hub",
        abstract: "Run the hub: the OpenAI API for users and the tunnel endpoint for workers, on one port.",
        discussion: """
            State lives in SQLite under --data-dir (default ./toki-data, or $STATE_DIRECTORY under systemd). \
            On first start an admin user is created and its token printed once.
            Workers connect to ws://HOST:PORT/api/tokilake/connect (what Tokiame configs use).
            """
    )

    @Option(name: .long, help: "Address to listen on (HOST:PORT). Use 0.0.0.0:8080 to accept workers from other machines.")
    var listen = "127.0.0.1:8080"

    @Option(name: .long, help: "Directory for the SQLite database (created if missing).")
    var dataDir: String?

    @Option(name: .long, help: "Largest request body accepted, in MiB (413 above).")
    var maxBodyMib = 32

    @Option(name: .long, help: "Seconds a worker may take to start answering (504 after).")
    var responseTimeout = 300

    @Option(name: .long, help: "Seconds without a control message before a registered worker is dropped (Tokilake: 45).")
    var heartbeatTimeout = 45

    @Option(name: .long, help: "Seconds a worker link may be silent before the hub pings it; a link still silent one period later is dropped.")
    var pingInterval = 15

    @Option(name: .long, help: "Seconds a client may accept no bytes of its response before the request is cancelled (a slow but steady reader is never cut).")
    var slowClientTimeout = 10

    @Option(name: .long, help: "MiB of response the hub holds for one client beyond what its socket took (on links to original v1 workers a client over it is cut off).")
    var responseBufferMib = 4

    @Option(name: .long, help: "Seconds a worker may stay silent after the response head before the response fails (worker_timeout).")
    var streamIdleTimeout = 300

    @Option(name: .long, help: "Seconds between SSE keep-alive comments while a stream is idle.")
    var sseKeepalive = 15

    @Option(name: .long, help: "Seconds for a request's line and headers to arrive (408 and close after).")
    var headerTimeout = Int(HTTPServerLimits().headerTimeout.components.seconds)

    @Option(name: .long, help: "Seconds a kept-alive connection may wait for its next request.")
    var idleTimeout = Int(HTTPServerLimits().idleTimeout.components.seconds)

    @Option(name: .long, help: "Seconds without request-body bytes while the body is being read (408 and close after).")
    var bodyTimeout = Int(HTTPServerLimits().bodyTimeout.components.seconds)

    @Option(name: .long, help: "Most open connections, API clients and workers together (default: the open-file limit minus 256).")
    var maxConnections: Int?

    @Option(name: .long, help: "Delete usage rows older than this many days (default: keep them). Charges stay in the ledger.")
    var usageRetentionDays: Int?

    @Option(name: .long, help: "Requests per minute each API token may make (a token's own limit replaces it; default: unlimited).")
    var tokenRpm: Int?

    @Option(name: .long, help: "Tokens (prompt and completion) per minute each API token may use.")
    var tokenTpm: Int?

    @Option(name: .long, help: "Requests each API token may have in flight at once.")
    var tokenMaxConcurrent: Int?

    @Option(name: .long, help: "Requests per minute each user may make, all their tokens together.")
    var userRpm: Int?

    @Option(name: .long, help: "Tokens per minute each user may use, all their tokens together.")
    var userTpm: Int?

    @Option(name: .long, help: "Requests each user may have in flight at once.")
    var userMaxConcurrent: Int?

    @Flag(name: .long, help: "Refuse LZ4 compression even when a worker offers it.")
    var noLz4 = false

    @Flag(name: .long, help: "Keep toki workers on smux v1 even when they offer v2 (per-stream windows).")
    var noSmux2 = false

    @Option(name: .long, help: "Also lend this hub's workers to a parent hub (its base URL); they appear there under the account of --token.")
    var upstream: String?

    /// With --upstream: a token valid on the parent.
    @OptionGroup var token: TokenOption

    @OptionGroup var node: NodeIDOption
    @OptionGroup var metricsOptions: MetricsOptions

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @OptionGroup var logging: LoggingOptions

    @Option(name: .long, help: "On SIGTERM, seconds in-flight requests may take to finish (new ones get 503 meanwhile).")
    var drainSeconds = 30

    func validate() throws {
        _ = try HostPort(listen)
        if let upstream {
            do { _ = try TunnelDialOptions.normalize(TunnelDialOptions.hubURL(upstream)) } catch { throw ValidationError("--upstream: \(error)") }
            _ = try token.required(for: "--upstream needs a token valid on the parent")
        } else if token.token != nil {
            throw ValidationError("--token is the parent's token: it goes with --upstream")
        }
        if drainSeconds < 0 { throw ValidationError("--drain-seconds must not be negative") }
        guard maxBodyMib > 0, responseTimeout > 0, heartbeatTimeout > 0, pingInterval > 0, slowClientTimeout > 0,
              responseBufferMib > 0, streamIdleTimeout > 0, sseKeepalive > 0,
              headerTimeout > 0, idleTimeout > 0, bodyTimeout > 0, (maxConnections ?? 1) > 0,
              [usageRetentionDays, tokenRpm, tokenTpm, tokenMaxConcurrent, userRpm, userTpm, userMaxConcurrent].allSatisfy({ ($0 ?? 1) > 0 })
        else {
            throw ValidationError("sizes and timeouts must be positive")
        }
        // Every toki worker accepts a request line carrying this much body; a larger one would fail there.
        guard maxBodyMib <= TunnelProtocol.maxRequestBodyBytes >> 20 else {
            throw ValidationError("--max-body-mib can be at most \(TunnelProtocol.maxRequestBodyBytes >> 20) (the largest body the tunnel protocol carries)")
        }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "toki.hub", level: logLevel)
        let systemd = SystemdLifecycle.fromProcess(logger: logger)
        var configuration = HubConfiguration()
        let address = try HostPort(listen)
        configuration.host = address.host
        configuration.port = address.port
        configuration.dataDirectory = hubDataDirectory(dataDir)
        configuration.maxBodyBytes = maxBodyMib * 1024 * 1024
        configuration.responseTimeout = .seconds(responseTimeout)
        configuration.heartbeatTimeout = .seconds(heartbeatTimeout)
        configuration.pingInterval = .seconds(pingInterval)
        configuration.usageRetention = usageRetentionDays.map { .seconds($0 * 86_400) }
        configuration.tokenRateLimit = RateLimit(rpm: tokenRpm, tpm: tokenTpm, concurrency: tokenMaxConcurrent)
        configuration.userRateLimit = RateLimit(rpm: userRpm, tpm: userTpm, concurrency: userMaxConcurrent)
        configuration.allowLZ4 = !noLz4
        configuration.allowSmux2 = !noSmux2
        configuration.slowClientTimeout = .seconds(slowClientTimeout)
        configuration.responseBufferBytes = responseBufferMib * 1024 * 1024
        configuration.streamIdleTimeout = .seconds(streamIdleTimeout)
        configuration.sseKeepAliveInterval = .seconds(sseKeepalive)
        configuration.httpLimits.headerTimeout = .seconds(headerTimeout)
        configuration.httpLimits.idleTimeout = .seconds(idleTimeout)
        configuration.httpLimits.bodyTimeout = .seconds(bodyTimeout)
        configuration.httpLimits.maxConnections = maxConnections
        configuration.drainTimeout = .seconds(drainSeconds)
        if let nodeId = node.nodeId { configuration.nodeID = nodeId }
        let metrics = metricsOptions.backend()
        if let metrics { (configuration.metrics, configuration.metricsExposition) = (HubMetrics(factory: metrics.factory), metricsOptions.metrics ? metrics.exposition : nil) }
        let exporter = upstream.map {
            UpstreamExporter(upstream: $0, token: token.resolved, nodeID: configuration.nodeID, logger: logger)
        }
        // Every connection is a descriptor: use all the process may have (the Go hub does too).
        let descriptors = FileDescriptorLimit.raiseToHard()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
        let store = try HubStore(dataDirectory: configuration.dataDirectory, logger: logger)
        if let adminToken = try await store.ensureAdmin() {
            FileHandle.standardOutput.write(Data("""
                toki: created the admin user; its token is shown only this once:
                  \(adminToken)
                Create user tokens with: toki token create --data-dir \(configuration.dataDirectory) --user NAME

                """.utf8))
        }
        let dataDirectory = configuration.dataDirectory
        let hub = HubService(configuration: configuration, store: store, logger: logger, chain: exporter?.chain) { port in
            logger.notice("toki hub listening", metadata: [
                "api": "http://\(address.host):\(port)/v1", "workers": "ws://\(address.host):\(port)/api/tokilake/connect",
                "data": "\(dataDirectory)",
            ])
            // One machine-readable line for scripts and tests.
            FileHandle.standardOutput.write(Data("LISTEN \(address.host):\(port)\n".utf8))
            systemd.ready(status: "serving on port \(port)")
        }
        // SIGTERM/SIGINT: the hub drains (new API requests 503, in-flight ones finish), then stops.
        let listener = try metricsOptions.listener(metrics, logger: logger, render: hub.exportMetrics, readiness: hub.readiness)
        // The watchdog's status reads the registry through the lock every request takes.
        try await runNode([hub] + (exporter.map { [$0 as any Service] } ?? []) + (listener.map { [$0 as any Service] } ?? []),
                          systemd: systemd, status: { "serving, \(hub.registry.workers.count) workers" }, logger: logger)
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

/// HOST:PORT, with [v6]:port accepted.
struct HostPort {
    var host: String
    var port: Int

    init(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("expected HOST:PORT, got '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        self.host = host
        self.port = port
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
