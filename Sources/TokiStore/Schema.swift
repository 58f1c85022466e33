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
        return m
    }

    /// Identifiers of all migrations this build knows, in order.
    static var knownMigrations: [String] { migrator.migrations }
}
