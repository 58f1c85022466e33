import ArgumentParser
import Foundation
import TokiAdminClient

enum RoleArgument: String, ExpressibleByArgument, CaseIterable {
    case user, admin
}

/// `toki admin user …` (admin)
struct AdminUser: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "List, create and top up users; grant private groups (admin).",
        subcommands: [AdminGet<List>.self, Create.self, Show.self, Topup.self, Grant.self])

    enum List: AdminQueryKind {
        static var query: AdminQuery { AdminQuery(name: "list", abstract: "List users and their balances.", path: "/api/admin/users", shown: .rows(Columns.user)) }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user (then give them a token with: token create --user-id ID).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The user name.") var name: String
        @Option(name: .long, help: "user (the default) or admin.") var role: RoleArgument?
        @Option(name: .long, help: "Their primary group (default: default).") var group: String?

        func run() async throws {
            let body = JSONValue.object(["username": .string(name), "role": role.map { .string($0.rawValue) }, "group": group.map(JSONValue.string)])
            try await admin.call(.post, "/api/admin/users", body: body, .record(Columns.user))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a user and their balance.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The user's id.") var id: IDArgument

        func run() async throws {
            try await admin.call(.get, "/api/admin/users/\(id.text)", .record(Columns.user))
        }
    }

    struct Topup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add to a user's balance (a ledger transaction from the funding account).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The user's id.") var id: IDArgument
        @Argument(help: "The amount, in currency units (e.g. 25 or 0.5).") var amount: String
        @Option(name: .long, help: "A note kept with the transaction.") var memo: String?

        func run() async throws {
            let amount = try argument { () throws(ArgumentProblem) in try NumberArgument.amount(self.amount, option: "AMOUNT") }
            let body = JSONValue.object(["amount": amount, "memo": memo.map(JSONValue.string)])
            try await admin.call(.post, "/api/admin/users/\(id.text)/topup", body: body, .record(Columns.balance))
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grant a user a private group without an invite code.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The user's id.") var userId: IDArgument
        @Argument(help: "The private group's id.") var groupId: IDArgument
        @Option(name: .long, help: "Expiry: a duration from now (30d), unix seconds, ISO 8601, or never (the default).")
        var expires: String?

        func run() async throws {
            let expires = try self.expires.map { raw in try argument { () throws(ArgumentProblem) in try TimeArgument.expires(raw) } }
            let body = JSONValue.object(["group_id": .int(groupId.value), "expires_at": .int(expires ?? 0)])
            try await admin.call(.post, "/api/user/admin/users/\(userId.text)/private-groups", body: body, .record(Columns.grant))
        }
    }
}

/// `toki admin price …` (admin): hub-wide model prices.
struct AdminPrice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "price", abstract: "List, set and delete model prices (admin; pool owners use group set-price).",
        subcommands: [AdminGet<List>.self, Set.self, Delete.self])

    enum List: AdminQueryKind {
        static var query: AdminQuery { AdminQuery(name: "list", abstract: "List model prices.", path: "/api/admin/prices", shown: .rows(Columns.price)) }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a model's price (multiplied by the group's ratio when charged).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The model.") var model: String
        @OptionGroup var price: PriceOptions

        func run() async throws {
            try await admin.call(.put, "/api/admin/prices", body: try price.body(model: model), .record(Columns.price))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a model's price (it becomes free).")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The model.") var model: String

        func run() async throws {
            try await admin.call(.delete, "/api/admin/prices", query: [("model", model)], .message("deleted the price of \(model)\n"))
        }
    }
}

/// `toki admin ratio …` (admin): group price ratios.
struct AdminRatio: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ratio", abstract: "List and set group price ratios (admin).",
        subcommands: [AdminGet<List>.self, Set.self])

    enum List: AdminQueryKind {
        static var query: AdminQuery {
            AdminQuery(name: "list", abstract: "List group ratios (groups not listed: 1).", path: "/api/admin/group-ratios", shown: .rows(Columns.ratio))
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a group's ratio: its prices are multiplied by it.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The group.") var group: String
        @Argument(help: "The ratio, e.g. 1.5.") var ratio: String

        func run() async throws {
            let ratio = try argument { () throws(ArgumentProblem) in try NumberArgument.ratio(self.ratio) }
            try await admin.call(.put, "/api/admin/group-ratios", body: .object(["group": .string(group), "ratio": ratio]), .record(Columns.ratio))
        }
    }
}

/// `toki admin ledger check` (admin)
struct AdminLedger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Check the double-entry ledger (admin).", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that every transaction balances and balances match their entries.",
            discussion: "Exit status: 0 consistent, 2 problems found (listed), 1 the check could not run.")
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            try await admin.run { client in
                let report: JSONValue
                do {
                    report = try await client.get("/api/admin/ledger/check")
                } catch AdminError.api(let status, let message, let data?) where data["problems"] != nil {
                    // An inconsistent ledger: the hub sends the report with success:false.
                    printError("error: \(message) (HTTP \(status))")
                    report = data
                }
                let problems = report["problems"]?.arrayValue ?? []
                admin.emit(report) { report in
                    var summary = report
                    if case .object(var members) = report {
                        members.append(.init("problem_count", .int(problems.count)))
                        summary = .object(members)
                    }
                    var out = Table.record(summary, Columns.ledger)
                    if !problems.isEmpty {
                        out += "\n" + Table.render(problems.map { JSONValue.object(["problem": $0]) }, [Column("PROBLEM", "problem")])
                    }
                    return out
                }
                if !problems.isEmpty { throw ExitCode(2) }
            }
        }
    }
}
