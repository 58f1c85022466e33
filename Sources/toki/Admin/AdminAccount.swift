import ArgumentParser
import Foundation
import TokiAdminClient

/// `toki admin self`
enum AdminSelf: AdminQueryKind {
    static var query: AdminQuery {
        AdminQuery(name: "self", abstract: "Show who the token belongs to: user, balance, usable groups, the token's scope and spending.",
                   path: "/api/user/self", shown: .record(Columns.me))
    }
}

/// `toki admin usage`
struct AdminUsage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage", abstract: "List usage rows, newest first: your own, or everyone's with --all, --user-id or --group (admin).")

    @OptionGroup var admin: AdminOptions

    @Option(name: .long, help: "Only this request id (the x-request-id of a response).")
    var requestId: String?

    @Option(name: .long, help: "Only rows since then: unix seconds, ISO 8601 or a duration back from now (24h, 7d).")
    var since: String?

    @Option(name: .long, help: "Only this model.")
    var model: String?

    @Option(name: .long, help: "At most this many rows (the hub's default when absent; 1-1000).")
    var limit: Int?

    @Flag(name: .long, help: "Everyone's usage (admin).")
    var all = false

    @Option(name: .long, help: "Only this user's usage (admin).")
    var userId: IDArgument?

    @Option(name: .long, help: "Only requests routed to this group (admin).")
    var group: String?

    func validate() throws {
        if let limit, !(1...1000).contains(limit) { throw ValidationError("--limit must be from 1 to 1000") }
    }

    func run() async throws {
        let since = try self.since.map { raw in try argument { () throws(ArgumentProblem) in try TimeArgument.since(raw) } }
        var query: [(String, String?)] = [
            ("request_id", requestId), ("since", since.map(String.init)), ("model", model), ("limit", limit.map(String.init)),
        ]
        let asAdmin = all || userId != nil || group != nil
        if asAdmin { query += [("user_id", userId?.text), ("group", group)] }
        try await admin.call(.get, asAdmin ? "/api/admin/usage" : "/api/user/usage", query: query, .rows(Columns.usage))
    }
}

enum TokenScopeArgument: String, ExpressibleByArgument, CaseIterable {
    case inference, worker, both
}

/// `toki admin token …`
struct AdminToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, list and revoke API tokens.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token; prints the key alone on stdout (shown once), its details on stderr.",
            discussion: "TOKEN=$(toki admin token create --name gpu-box --scope worker) keeps just the key.")

        @OptionGroup var admin: AdminOptions

        @Option(name: .long, help: "A name to recognise it by.")
        var name: String?

        @Option(name: .long, help: "inference (calls the API), worker (only registers workers) or both (the hub's default).")
        var scope: TokenScopeArgument?

        @Option(name: .long, help: "Pin the token to this group (repeat for several; default: every group the user may use).")
        var group: [String] = []

        @Option(name: .long, help: "Allow only this model (repeat for several; default: all).")
        var model: [String] = []

        @Option(name: .long, help: "Expiry: a duration from now (30d), unix seconds, ISO 8601, or never (the default).")
        var expires: String?

        @Option(name: .long, help: "Most the token may spend, in currency units.")
        var spendLimit: String?

        @Option(name: .long, help: "Create it for this user instead of yourself (admin).")
        var userId: IDArgument?

        func run() async throws {
            let expires = try self.expires.map { raw in try argument { () throws(ArgumentProblem) in try TimeArgument.expires(raw) } }
            let limit = try spendLimit.map { raw in try argument { () throws(ArgumentProblem) in try NumberArgument.amount(raw, option: "--spend-limit") } }
            let body = JSONValue.object([
                "name": name.map(JSONValue.string), "scope": scope.map { .string($0.rawValue) },
                "groups": group.isEmpty ? nil : .array(group.map(JSONValue.string)),
                "models": model.isEmpty ? nil : .array(model.map(JSONValue.string)),
                "expires_at": expires.map(JSONValue.int), "spend_limit": limit,
            ])
            let path = userId.map { "/api/admin/users/\($0.text)/tokens" } ?? "/api/user/tokens"
            try await admin.run { client in admin.emitSecret(try await client.post(path, body), secret: "key", record: "token", Columns.token) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List your tokens, or a user's with --user-id (admin).")

        @OptionGroup var admin: AdminOptions

        @Option(name: .long, help: "List this user's tokens (admin).")
        var userId: IDArgument?

        func run() async throws {
            let path = userId.map { "/api/admin/users/\($0.text)/tokens" } ?? "/api/user/tokens"
            try await admin.call(.get, path, .rows(Columns.token))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke one of your tokens, or anyone's with --admin.")

        @OptionGroup var admin: AdminOptions

        @Argument(help: "The token's id (see token list).")
        var id: IDArgument

        @Flag(name: .customLong("admin"), help: "Revoke another user's token (admin).")
        var asAdmin = false

        func run() async throws {
            let path = asAdmin ? "/api/admin/tokens/\(id.text)" : "/api/user/tokens/\(id.text)"
            try await admin.call(.delete, path, .record(Columns.token))
        }
    }
}
