import GRDB

/// Versioned schema. Never edit a shipped migration: add a new one.
///
/// Dates are stored by GRDB as UTC text `YYYY-MM-DD HH:MM:SS.SSS` (sorts chronologically).
/// JSON columns hold arrays of strings.
enum Schema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    id          INTEGER PRIMARY KEY AUTOINCREMENT,
                    name        TEXT NOT NULL UNIQUE,
                    role        TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
                    "group"     TEXT NOT NULL DEFAULT 'default',
                    created_at  DATETIME NOT NULL
                );

                CREATE TABLE tokens (
                    id            INTEGER PRIMARY KEY AUTOINCREMENT,
                    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    name          TEXT,
                    key_hash      TEXT NOT NULL,          -- lowercase hex SHA-256 of the canonical token
                    key_prefix    TEXT NOT NULL,          -- non-secret display prefix, e.g. sk-toki-Ab3x
                    created_at    DATETIME NOT NULL,
                    expires_at    DATETIME,
                    disabled      BOOLEAN NOT NULL DEFAULT 0,
                    models        TEXT,                   -- JSON array of allowed models; NULL = all
                    last_used_at  DATETIME
                );
                CREATE UNIQUE INDEX tokens_key_hash ON tokens(key_hash);
                CREATE INDEX tokens_user_id ON tokens(user_id);

                CREATE TABLE workers (
                    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- stable worker id
                    namespace     TEXT NOT NULL UNIQUE,
                    user_id       INTEGER NOT NULL REFERENCES users(id),  -- owner, forever
                    node_name     TEXT NOT NULL,
                    "group"       TEXT NOT NULL DEFAULT 'default',
                    models        TEXT NOT NULL DEFAULT '[]',  -- JSON array, trimmed/deduplicated/sorted
                    status        TEXT NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
                    created_at    DATETIME NOT NULL,
                    last_seen_at  DATETIME NOT NULL
                );
                CREATE INDEX workers_user_id ON workers(user_id);

                CREATE TABLE usage (
                    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
                    request_id         TEXT NOT NULL,
                    user_id            INTEGER,   -- no FK: logs outlive users and tokens
                    token_id           INTEGER,
                    model              TEXT NOT NULL,
                    namespace          TEXT,
                    status_code        INTEGER NOT NULL,
                    prompt_tokens      INTEGER,
                    completion_tokens  INTEGER,
                    duration_ms        INTEGER NOT NULL,
                    created_at         DATETIME NOT NULL
                );
                CREATE INDEX usage_user_created ON usage(user_id, created_at);
                CREATE INDEX usage_created ON usage(created_at);
                CREATE INDEX usage_request_id ON usage(request_id);
                """)
        }
        // Tenancy and billing (issue 9): private groups shared by invite codes, prices and group
        // ratios, a double-entry ledger, token scopes and caps, and usage rows that say what was charged.
        m.registerMigration("v2-tenancy") { db in
            try db.execute(sql: """
                ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'both'
                    CHECK (scope IN ('inference', 'worker', 'both'));
                ALTER TABLE tokens ADD COLUMN groups TEXT;           -- JSON array the token is pinned to; NULL = all usable
                ALTER TABLE tokens ADD COLUMN spend_limit INTEGER;   -- nanos; NULL = no cap
                ALTER TABLE tokens ADD COLUMN spent INTEGER NOT NULL DEFAULT 0;  -- nanos charged through this token
                -- Rate limits of the token; NULL = the hub's default (--token-rpm, …).
                ALTER TABLE tokens ADD COLUMN rpm INTEGER CHECK (rpm >= 0);
                ALTER TABLE tokens ADD COLUMN tpm INTEGER CHECK (tpm >= 0);
                ALTER TABLE tokens ADD COLUMN max_concurrent INTEGER CHECK (max_concurrent >= 0);

                CREATE TABLE private_groups (
                    id             INTEGER PRIMARY KEY AUTOINCREMENT,
                    owner_user_id  INTEGER NOT NULL REFERENCES users(id),
                    group_slug     TEXT NOT NULL UNIQUE,
                    status         INTEGER NOT NULL DEFAULT 1,   -- 1 enabled, 2 disabled
                    created_at     DATETIME NOT NULL,
                    updated_at     DATETIME NOT NULL,
                    deleted_at     DATETIME
                );
                CREATE INDEX private_groups_owner ON private_groups(owner_user_id);

                CREATE TABLE private_group_grants (
                    id          INTEGER PRIMARY KEY AUTOINCREMENT,
                    group_id    INTEGER NOT NULL REFERENCES private_groups(id),
                    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    role        TEXT NOT NULL CHECK (role IN ('owner', 'member')),
                    source      TEXT NOT NULL CHECK (source IN ('create', 'invite', 'admin')),
                    source_ref  TEXT NOT NULL,                   -- group:<id>, invite_code:<id>, admin:<uid>
                    granted_by  INTEGER NOT NULL,
                    expires_at  DATETIME,                        -- NULL = never
                    revoked_at  DATETIME,                        -- NULL = active
                    created_at  DATETIME NOT NULL,
                    updated_at  DATETIME NOT NULL,
                    UNIQUE (group_id, user_id)
                );
                CREATE INDEX private_group_grants_user ON private_group_grants(user_id);

                CREATE TABLE private_group_invite_codes (
                    id          INTEGER PRIMARY KEY AUTOINCREMENT,
                    group_id    INTEGER NOT NULL REFERENCES private_groups(id),
                    code_hash   TEXT NOT NULL UNIQUE,            -- SHA-256 hex of the trimmed, upper-cased code
                    created_by  INTEGER NOT NULL,
                    status      INTEGER NOT NULL DEFAULT 1,      -- 1 enabled, 2 disabled
                    max_uses    INTEGER NOT NULL CHECK (max_uses >= 1),
                    used_count  INTEGER NOT NULL DEFAULT 0,
                    expires_at  DATETIME,                        -- NULL = never
                    created_at  DATETIME NOT NULL,
                    updated_at  DATETIME NOT NULL
                );
                CREATE INDEX private_group_invite_codes_group ON private_group_invite_codes(group_id);

                -- Price ratios of the hub's own (non-private) groups; a group not listed has ratio 1.
                CREATE TABLE group_ratios (
                    name   TEXT PRIMARY KEY,
                    ratio  REAL NOT NULL CHECK (ratio >= 0)
                );

                -- Prices per model: hub-wide (group_slug '') set by admins, or a private pool's own
                -- (group_slug = the pool) set by its owner. Amounts in nanos.
                CREATE TABLE model_prices (
                    group_slug          TEXT NOT NULL DEFAULT '',
                    model               TEXT NOT NULL,
                    input_per_million   INTEGER NOT NULL DEFAULT 0 CHECK (input_per_million >= 0),
                    output_per_million  INTEGER NOT NULL DEFAULT 0 CHECK (output_per_million >= 0),
                    per_request         INTEGER NOT NULL DEFAULT 0 CHECK (per_request >= 0),
                    updated_at          DATETIME NOT NULL,
                    PRIMARY KEY (group_slug, model)
                );

                -- Double-entry ledger. Every transaction's entries sum to zero, so the balances of
                -- all accounts sum to zero: users' money came from the 'funding' account (top-ups)
                -- and goes to 'revenue' (hub charges) or to a pool owner's account.
                CREATE TABLE accounts (
                    id       INTEGER PRIMARY KEY AUTOINCREMENT,
                    user_id  INTEGER UNIQUE REFERENCES users(id),  -- NULL for system accounts
                    name     TEXT UNIQUE,                          -- 'funding', 'revenue' for system accounts
                    balance  INTEGER NOT NULL DEFAULT 0,           -- nanos
                    CHECK ((user_id IS NULL) <> (name IS NULL))
                );
                INSERT INTO accounts (name) VALUES ('funding'), ('revenue');

                CREATE TABLE ledger_transactions (
                    id          INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind        TEXT NOT NULL CHECK (kind IN ('charge', 'topup', 'adjustment')),
                    charge_id   TEXT UNIQUE,                    -- charges: the hub's unique id of the client request (one charge each)
                    memo        TEXT,
                    created_by  INTEGER,                        -- the admin, for top-ups and adjustments
                    created_at  DATETIME NOT NULL
                );

                CREATE TABLE ledger_entries (
                    id              INTEGER PRIMARY KEY AUTOINCREMENT,
                    transaction_id  INTEGER NOT NULL REFERENCES ledger_transactions(id),
                    account_id      INTEGER NOT NULL REFERENCES accounts(id),
                    amount          INTEGER NOT NULL            -- nanos; negative debits the account
                );
                CREATE INDEX ledger_entries_transaction ON ledger_entries(transaction_id);
                CREATE INDEX ledger_entries_account ON ledger_entries(account_id);

                ALTER TABLE usage ADD COLUMN group_name TEXT;
                ALTER TABLE usage ADD COLUMN path TEXT;            -- 'direct' or the relays, nearest first, joined by '>'
                ALTER TABLE usage ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT 0;
                ALTER TABLE usage ADD COLUMN cost INTEGER NOT NULL DEFAULT 0;  -- nanos charged
                ALTER TABLE usage ADD COLUMN ttft_ms INTEGER;
                ALTER TABLE usage ADD COLUMN transaction_id INTEGER;
                CREATE INDEX usage_group_created ON usage(group_name, created_at);
                """)
        }
        return m
    }

    /// Identifiers of all migrations this build knows, in order.
    static var knownMigrations: [String] { migrator.migrations }
}
