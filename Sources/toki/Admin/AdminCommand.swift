import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import TokiAdminClient

/// `toki admin …`: the hub's management API (users, tokens, private pools, invite codes, prices,
/// ratios, usage, the ledger check) from a shell. Every subcommand takes `--hub`, `--token` and
/// `--json`; tables by default, the envelope's `data` verbatim with `--json`.
struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Manage users, tokens, private pools, invite codes, prices and usage over a hub's HTTP API.",
        discussion: """
            Every subcommand takes --hub URL (default http://127.0.0.1:8080), --token (default $TOKI_TOKEN) \
            and --json (print the reply's data as JSON instead of a table). Errors go to stderr as \
            `error: <message> (HTTP <status>)` with exit status 1.
            Times (--since, --expires) are unix seconds, ISO 8601 (2025-01-02, 2025-01-02T03:04:05Z) or a \
            duration (30m, 24h, 7d): back from now for --since, ahead for --expires. Amounts are currency units.
            """,
        subcommands: [
            AdminGet<AdminSelf>.self, AdminUsage.self, AdminToken.self, AdminGroup.self, AdminInvite.self, AdminRedeem.self,
            AdminUser.self, AdminPrice.self, AdminRatio.self, AdminLedger.self,
        ]
    )
}

/// The options every `toki admin` subcommand takes, and the one way they call the hub and print.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: "The hub's base URL.")
    var hub = "http://127.0.0.1:8080"

    /// The caller's toki token (an admin's for the admin commands).
    @OptionGroup var token: TokenOption

    @Flag(name: .long, help: "Print the reply's data as JSON (for scripts) instead of a table.")
    var json = false

    func validate() throws {
        guard hub.hasPrefix("http://") || hub.hasPrefix("https://") else {
            throw ValidationError("--hub \(hub): expected an http:// or https:// URL")
        }
    }

    func client() throws -> AdminClient {
        let token = try self.token.required(for: "toki admin needs your toki token")
        return AdminClient(base: hub, token: token, transport: Self.send)
    }

    /// Runs `body` against the hub; a failure is printed as one line on stderr and exits 1.
    func run(_ body: (AdminClient) async throws -> Void) async throws {
        let client = try client()
        do {
            try await body(client)
        } catch let error as AdminError {
            Self.fail(error)
        }
    }

    static func fail(_ error: AdminError) -> Never {
        printError(error.description)
        Foundation.exit(1)
    }

    /// `data` pretty-printed with --json, else `table(data)`.
    func emit(_ data: JSONValue, _ table: (JSONValue) -> String) {
        if json {
            print(data.pretty)
        } else {
            print(table(data), terminator: "")
        }
    }

    /// A reply holding a secret shown once: the secret alone on stdout (so `X=$(toki admin …)` keeps
    /// just it), the record under `record` on stderr; with --json the whole reply on stdout.
    func emitSecret(_ data: JSONValue, secret: String, record: String, _ columns: [Column]) {
        if json {
            print(data.pretty)
            return
        }
        print(data[secret]?.stringValue ?? "")
        printError(Table.record(data[record] ?? .null, columns), terminator: "")
    }

    /// How a reply is printed without --json (with it: the reply's data verbatim).
    enum Shown {
        /// A list reply as rows under the columns.
        case rows([Column])
        /// A one-object reply as FIELD/VALUE lines.
        case record([Column])
        /// `message` when the hub sends no record back (a removal), else the record it sent.
        case done(String, orRecord: [Column])
        /// Only `message`, whatever the reply.
        case message(String)
    }

    /// The one request most subcommands are: call the hub, print the reply as `shown` says.
    func call(_ method: AdminMethod, _ path: String, query: [(String, String?)] = [], body: JSONValue? = nil, _ shown: Shown) async throws {
        try await run { client in
            let data = try await client.send(method, path, query: query, body: body)
            emit(data) { data in
                switch shown {
                case .rows(let columns): Table.render(data.arrayValue ?? [data], columns)
                case .record(let columns): Table.record(data, columns)
                case .done(let message, let columns): data["id"] == nil ? message : Table.record(data, columns)
                case .message(let message): message
                }
            }
        }
    }

    /// The transport: AsyncHTTPClient's shared client, 30 s per request.
    @Sendable static func send(_ request: AdminRequest) async throws(AdminError) -> AdminResponse {
        var http = HTTPClientRequest(url: request.url)
        switch request.method {
        case .get: http.method = .GET
        case .post: http.method = .POST
        case .put: http.method = .PUT
        case .patch: http.method = .PATCH
        case .delete: http.method = .DELETE
        }
        for (name, value) in request.headers { http.headers.add(name: name, value: value) }
        if let body = request.body { http.body = .bytes(ByteBuffer(string: body)) }
        do {
            let response = try await HTTPClient.shared.execute(http, timeout: .seconds(30))
            let body = try await response.body.collect(upTo: 64 << 20)
            return AdminResponse(status: Int(response.status.code), body: Array(body.readableBytesView))
        } catch {
            let base = request.url.split(separator: "/", maxSplits: 3).prefix(2).joined(separator: "//")
            throw .unreachable(url: base, reason: Self.reason(error))
        }
    }

    static func reason(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("deadlineExceeded") { return "timed out" }
        if text.localizedCaseInsensitiveContains("refused") { return "connection refused" }
        return text
    }
}

func printError(_ text: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((text + terminator).utf8))
}

/// An argument helper's problem as ArgumentParser's usage error.
func argument<T>(_ parse: () throws(ArgumentProblem) -> T) throws -> T {
    do { return try parse() } catch { throw ValidationError(error.description) }
}

/// Ids as typed, encoded as one path segment.
func seg(_ id: String) -> String { Query.segment(id) }

/// Ids must be positive integers (the hub says so too; this says it before a round trip).
struct IDArgument: ExpressibleByArgument {
    var value: Int64
    init?(argument: String) {
        guard let value = Int64(argument), value > 0 else { return nil }
        self.value = value
    }
    var text: String { String(value) }
}

/// A subcommand that is one fixed GET (self, the lists that take no filter): its name and
/// abstract in help, the path it asks and how the reply is shown are all it declares.
struct AdminQuery {
    var name: String
    var abstract: String
    var path: String
    var shown: AdminOptions.Shown
}

protocol AdminQueryKind {
    static var query: AdminQuery { get }
}

/// The subcommand an `AdminQueryKind` declares.
struct AdminGet<Kind: AdminQueryKind>: AsyncParsableCommand {
    static var configuration: CommandConfiguration { CommandConfiguration(commandName: Kind.query.name, abstract: Kind.query.abstract) }

    @OptionGroup var admin: AdminOptions

    func run() async throws {
        try await admin.call(.get, Kind.query.path, Kind.query.shown)
    }
}
