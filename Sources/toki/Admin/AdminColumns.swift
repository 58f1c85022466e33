import TokiAdminClient

/// The columns each kind of record is shown with, shared by the commands that print it.
enum Columns {
    static let me: [Column] = [
        Column("ID", "id"), Column("USERNAME", "username"), Column("ROLE", "role"), Column("GROUP", "group"),
        Column("BALANCE", "balance"), Column("GROUPS", "groups"), Column("TOKEN ID", "token.id"), Column("TOKEN NAME", "token.name"),
        Column("TOKEN SCOPE", "token.scope"), Column("SPEND LIMIT", "token.spend_limit"), Column("SPENT", "token.spent"),
    ]

    static let usage: [Column] = [
        Column("TIME", "created_at"), Column("REQUEST", "request_id"), Column("USER", "user_id"), Column("MODEL", "model"),
        Column("GROUP", "group_name|group"), Column("WORKER", "namespace"), Column("STATUS", "status_code", .text),
        Column("IN", "prompt_tokens"), Column("OUT", "completion_tokens"), Column("EST", "estimated"), Column("COST", "cost"),
        Column("MS", "duration_ms"), Column("TTFT", "ttft_ms"),
    ]

    static let token: [Column] = [
        Column("ID", "id"), Column("USER", "user_id"), Column("NAME", "name"), Column("PREFIX", "key_prefix"), Column("SCOPE", "scope"),
        Column("GROUPS", "groups"), Column("MODELS", "models"), Column("EXPIRES", "expires_at"), Column("LAST USED", "last_used_at"),
        Column("DISABLED", "disabled"), Column("SPEND LIMIT", "spend_limit"), Column("SPENT", "spent"),
    ]

    static let group: [Column] = [
        Column("ID", "id"), Column("SLUG", "group_slug"), Column("OWNER", "owner_user_id"), Column("STATUS", "status"),
        Column("CREATED", "created_at"), Column("UPDATED", "updated_at"),
    ]

    /// `/joined` rows: `{"group":…,"grant":…}`.
    static let joined: [Column] = [
        Column("ID", "group_id|group.id|id"), Column("SLUG", "group_slug|group.group_slug"), Column("OWNER", "owner_user_id|group.owner_user_id"),
        Column("ROLE", "role|grant.role"), Column("SOURCE", "source|grant.source"), Column("EXPIRES", "expires_at|grant.expires_at"),
        Column("JOINED", "created_at|grant.created_at", .time),
    ]

    static let grant: [Column] = [
        Column("ID", "id"), Column("GROUP", "group_id"), Column("USER", "user_id"), Column("ROLE", "role"), Column("SOURCE", "source"),
        Column("EXPIRES", "expires_at"), Column("REVOKED", "revoked_at"), Column("CREATED", "created_at"),
    ]

    static let member: [Column] = [
        Column("USER", "user_id"), Column("USERNAME", "user_name|username"), Column("ROLE", "role"), Column("SOURCE", "source"),
        Column("EXPIRES", "expires_at"), Column("SINCE", "created_at"),
    ]

    static let invite: [Column] = [
        Column("ID", "id"), Column("GROUP", "group_id"), Column("STATUS", "status"), Column("USED", "used_count"), Column("MAX", "max_uses"),
        Column("EXPIRES", "expires_at"), Column("CREATED", "created_at"),
    ]

    static let price: [Column] = [
        Column("MODEL", "model"), Column("INPUT/1M", "input_per_million"), Column("OUTPUT/1M", "output_per_million"),
        Column("PER REQUEST", "per_request"), Column("UPDATED", "updated_at"),
    ]

    static let poolUsage: [Column] = [
        Column("USER", "user_id"), Column("USERNAME", "user_name|username"), Column("REQUESTS", "requests"),
        Column("IN", "prompt_tokens"), Column("OUT", "completion_tokens"), Column("COST", "cost"),
    ]

    static let user: [Column] = [
        Column("ID", "id"), Column("USERNAME", "username"), Column("ROLE", "role"), Column("GROUP", "group"),
        Column("BALANCE", "balance"), Column("CREATED", "created_at"),
    ]

    static let balance: [Column] = [Column("USER", "user_id"), Column("BALANCE", "balance")]

    static let ratio: [Column] = [Column("GROUP", "group"), Column("RATIO", "ratio")]

    static let ledger: [Column] = [
        Column("TRANSACTIONS", "transactions"), Column("ENTRIES", "entries"), Column("ACCOUNTS", "accounts"),
        Column("BALANCE SUM", "balance_sum"), Column("PROBLEMS", "problem_count"),
    ]
}
