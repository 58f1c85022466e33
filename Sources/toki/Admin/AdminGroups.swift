import ArgumentParser
import Foundation
import TokiAdminClient

/// `--input`, `--output`, `--per-request`: a model's price, for pools and hub-wide prices alike.
struct PriceOptions: ParsableArguments {
    @Option(name: .long, help: "Price per million input (prompt) tokens, in currency units.")
    var input: String?

    @Option(name: .long, help: "Price per million output (completion) tokens, in currency units.")
    var output: String?

    @Option(name: .long, help: "Price per request, in currency units.")
    var perRequest: String?

    func validate() throws {
        guard input != nil || output != nil || perRequest != nil else {
            throw ValidationError("give at least one of --input, --output, --per-request (the others are 0)")
        }
    }

    func body(model: String) throws -> JSONValue {
        func price(_ raw: String?, _ option: String) throws -> JSONValue? {
            try raw.map { raw in try argument { () throws(ArgumentProblem) in try NumberArgument.amount(raw, option: option) } }
        }
        return .object([
            "model": .string(model), "input_per_million": try price(input, "--input"),
            "output_per_million": try price(output, "--output"), "per_request": try price(perRequest, "--per-request"),
        ])
    }
}

/// `toki admin group …`: private pools you own (any user may create one).
struct AdminGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Create and manage your private groups (pools): members, prices, usage.",
        subcommands: [
            Create.self, AdminGet<List>.self, AdminGet<Joined>.self, OnGroup<Show>.self, Rename.self, OnGroup<Disable>.self,
            OnGroup<Enable>.self, OnGroup<Delete>.self, OnGroup<Members>.self, RemoveMember.self, OnGroup<Prices>.self,
            SetPrice.self, DeletePrice.self, Usage.self,
        ])

    static func path(_ id: IDArgument, _ rest: String = "") -> String { "/api/user/private-groups/\(id.text)\(rest)" }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a private group you own.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "Its slug: 3-64 of a-z, 0-9 and -, not default or auto.")
        var slug: String

        func run() async throws {
            try await admin.call(.post, "/api/user/private-groups", body: .object(["group_slug": .string(slug)]), .record(Columns.group))
        }
    }

    enum List: AdminQueryKind {
        static var query: AdminQuery { AdminQuery(name: "list", abstract: "List the private groups you own.", path: "/api/user/private-groups", shown: .rows(Columns.group)) }
    }

    enum Joined: AdminQueryKind {
        static var query: AdminQuery {
            AdminQuery(name: "joined", abstract: "List the private groups you have been granted.", path: "/api/user/private-groups/joined", shown: .rows(Columns.joined))
        }
    }

    /// A subcommand that is one call on a group named by its id: its name and abstract in help,
    /// the call (the path after the group's) and how the reply is shown are all it declares.
    struct GroupCall {
        var name: String
        var abstract: String
        var method: AdminMethod = .get
        var rest = ""
        var body: JSONValue?
        var shown: (IDArgument) -> AdminOptions.Shown
    }

    protocol GroupCallKind {
        static var call: GroupCall { get }
    }

    /// The subcommand a `GroupCallKind` declares.
    struct OnGroup<Kind: GroupCallKind>: AsyncParsableCommand {
        static var configuration: CommandConfiguration { CommandConfiguration(commandName: Kind.call.name, abstract: Kind.call.abstract) }
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument

        func run() async throws {
            let call = Kind.call
            try await admin.call(call.method, AdminGroup.path(id, call.rest), body: call.body, call.shown(id))
        }
    }

    enum Show: GroupCallKind {
        static var call: GroupCall { GroupCall(name: "show", abstract: "Show one of your private groups.", shown: { _ in .record(Columns.group) }) }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a group's slug (refused while tokens or workers use it).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument
        @Argument(help: "The new slug.") var slug: String

        func run() async throws {
            try await admin.call(.put, AdminGroup.path(id), body: .object(["group_slug": .string(slug)]), .record(Columns.group))
        }
    }

    /// Disable and enable: PUT {"status": 1|2}.
    static func setStatus(_ name: String, _ abstract: String, _ status: Int) -> GroupCall {
        GroupCall(name: name, abstract: abstract, method: .put, body: .object(["status": .int(status)]), shown: { _ in .record(Columns.group) })
    }

    enum Disable: GroupCallKind {
        static var call: GroupCall { setStatus("disable", "Disable a group: its members and workers stop using it until enabled.", 2) }
    }

    enum Enable: GroupCallKind {
        static var call: GroupCall { setStatus("enable", "Enable a disabled group.", 1) }
    }

    enum Delete: GroupCallKind {
        static var call: GroupCall {
            GroupCall(name: "delete", abstract: "Delete a group: revokes every grant and disables its invite codes.", method: .delete,
                      shown: { .done("deleted group \($0.text)\n", orRecord: Columns.group) })
        }
    }

    enum Members: GroupCallKind {
        static var call: GroupCall { GroupCall(name: "members", abstract: "List a group's members.", rest: "/members", shown: { _ in .rows(Columns.member) }) }
    }

    struct RemoveMember: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member: their calls to the group stop at once.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument
        @Argument(help: "The member's user id.") var userId: IDArgument

        func run() async throws {
            let removed = "removed user \(userId.text) from group \(id.text)\n"
            try await admin.call(.delete, AdminGroup.path(id, "/members/\(userId.text)"), .done(removed, orRecord: Columns.grant))
        }
    }

    enum Prices: GroupCallKind {
        static var call: GroupCall {
            GroupCall(name: "prices", abstract: "List the prices members pay for the group's models (unpriced: free).", rest: "/prices", shown: { _ in .rows(Columns.price) })
        }
    }

    struct SetPrice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set what members pay for a model in the group (credited to you).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument
        @Argument(help: "The model.") var model: String
        @OptionGroup var price: PriceOptions

        func run() async throws {
            try await admin.call(.put, AdminGroup.path(id, "/prices"), body: try price.body(model: model), .record(Columns.price))
        }
    }

    struct DeletePrice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a model's price in the group (it becomes free).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument
        @Argument(help: "The model.") var model: String

        func run() async throws {
            let deleted = "deleted the price of \(model) in group \(id.text)\n"
            try await admin.call(.delete, AdminGroup.path(id, "/prices"), query: [("model", model)], .message(deleted))
        }
    }

    struct Usage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What each member spent on the group.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var id: IDArgument
        @Option(name: .long, help: "Only since then: unix seconds, ISO 8601 or a duration back from now (24h, 7d).")
        var since: String?

        func run() async throws {
            let since = try self.since.map { raw in try argument { () throws(ArgumentProblem) in try TimeArgument.since(raw) } }
            try await admin.call(.get, AdminGroup.path(id, "/usage"), query: [("since", since.map(String.init))], .rows(Columns.poolUsage))
        }
    }
}

/// `toki admin invite …`: invite codes to your groups.
struct AdminInvite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invite", abstract: "Make, list and revoke invite codes to your private groups.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an invite code; prints the code alone on stdout (shown once), its record on stderr.",
            discussion: "CODE=$(toki admin invite create 3 --max-uses 5 --expires 7d) keeps just the code.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var groupId: IDArgument
        @Option(name: .long, help: "How many users may redeem it (the hub's default when absent).")
        var maxUses: Int?
        @Option(name: .long, help: "Expiry: a duration from now (7d), unix seconds, ISO 8601, or never.")
        var expires: String?

        func validate() throws {
            if let maxUses, maxUses < 1 { throw ValidationError("--max-uses must be at least 1") }
        }

        func run() async throws {
            let expires = try self.expires.map { raw in try argument { () throws(ArgumentProblem) in try TimeArgument.expires(raw) } }
            let body = JSONValue.object(["max_uses": maxUses.map(JSONValue.int), "expires_at": expires.map(JSONValue.int)])
            try await admin.run { client in
                admin.emitSecret(try await client.post(AdminGroup.path(groupId, "/invite-codes"), body), secret: "invite_code", record: "record", Columns.invite)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a group's invite codes (their records; codes are shown only once).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var groupId: IDArgument

        func run() async throws {
            try await admin.call(.get, AdminGroup.path(groupId, "/invite-codes"), .rows(Columns.invite))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke (disable) an invite code; members who redeemed it stay.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group's id.") var groupId: IDArgument
        @Argument(help: "The code's id (see invite list).") var codeId: IDArgument

        func run() async throws {
            let path = AdminGroup.path(groupId, "/invite-codes/\(codeId.text)")
            try await admin.call(.patch, path, body: .object(["status": .int(2)]), .done("revoked invite code \(codeId.text)\n", orRecord: Columns.invite))
        }
    }
}

/// `toki admin redeem CODE`
struct AdminRedeem: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "redeem", abstract: "Redeem an invite code: join its private group.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The code, XXXX-XXXX-XXXX.") var code: String

    func run() async throws {
        try await admin.run { client in
            let data = try await client.post("/api/user/private-groups/redeem", .object(["code": .string(code)]))
            admin.emit(data) { data in
                let slug = data["group"]?["group_slug"]?.stringValue ?? "?"
                let id = data["group"]?["id"].map { Cell.show($0, .text) } ?? "?"
                let created = data["created"]?.boolValue ?? true
                return created ? "joined group \(slug) (id \(id))\n" : "already a member of group \(slug) (id \(id)); the code was not used\n"
            }
        }
    }
}
