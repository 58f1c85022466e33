import Foundation
import GRDB
import Logging

/// The hub's persistent state: users, API tokens, worker namespaces and the usage log.
///
/// Backed by SQLite through GRDB. The file-backed store is a `DatabasePool` in WAL mode with
/// `synchronous=NORMAL` (durable across process crashes; the last transactions may be lost on
/// power loss) and a busy timeout, so readers never block the writer and vice versa.
/// All methods are `async` and safe to call from any task.
public final class HubStore: Sendable {
    /// Name of the database file inside the data directory.
    public static let fileName = "toki.db"
    /// How long a connection waits on a lock held by another process before failing.
    public static let busyTimeout: TimeInterval = 5

    let db: any DatabaseWriter
    /// A connection of its own for WAL checkpoints (file-backed stores), so that copying the
    /// log into the database and its fsync never run inside a write that requests wait for.
    let checkpointer: DatabaseQueue?
    let logger: Logger
    /// Path of the database file, or nil for an in-memory store.
    public let path: String?

    /// Opens (creating if needed) `<dataDirectory>/toki.db` and runs pending migrations.
    /// The directory is created with mode 0700 and the database file with mode 0600.
    public init(dataDirectory: String, logger: Logger) throws {
        self.logger = logger
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: dataDirectory, isDirectory: &isDir) {
            guard isDir.boolValue else {
                throw StoreError.dataDirectory(path: dataDirectory, reason: "exists and is not a directory")
            }
            if let mode = (try? fm.attributesOfItem(atPath: dataDirectory))?[.posixPermissions] as? NSNumber,
               mode.intValue & 0o077 != 0 {
                logger.warning("data directory is accessible to other users; consider chmod 700", metadata: [
                    "path": "\(dataDirectory)", "mode": "\(String(mode.intValue, radix: 8))",
                ])
            }
        } else {
            do {
                try fm.createDirectory(
                    atPath: dataDirectory, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
            } catch {
                throw StoreError.dataDirectory(path: dataDirectory, reason: "cannot create: \(error)")
            }
            logger.info("created data directory", metadata: ["path": "\(dataDirectory)"])
        }
        let file = (dataDirectory as NSString).appendingPathComponent(Self.fileName)
        if !fm.fileExists(atPath: file) {
            // An empty file is a valid empty SQLite database. Creating it ourselves fixes its mode;
            // SQLite gives the -wal and -shm files the same mode as the main file.
            guard fm.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                throw StoreError.dataDirectory(path: dataDirectory, reason: "cannot create \(Self.fileName)")
            }
        }
        self.path = file
        do {
            self.db = try DatabasePool(path: file, configuration: Self.configuration())
            self.checkpointer = try DatabaseQueue(path: file, configuration: Self.configuration())
        } catch {
            throw StoreError.database("cannot open \(file): \(error)")
        }
        try migrate()
    }

    private init(inMemoryWithLogger logger: Logger) throws {
        self.logger = logger
        self.path = nil
        self.checkpointer = nil
        do {
            self.db = try DatabaseQueue(configuration: Self.configuration())
        } catch {
            throw StoreError.database("cannot open in-memory database: \(error)")
        }
        try migrate()
    }

    /// A private in-memory store (for tests and throw-away hubs). Its data vanishes with it.
    public static func inMemory(logger: Logger) throws -> HubStore {
        try HubStore(inMemoryWithLogger: logger)
    }

    /// Closes the database. Further calls fail with ``StoreError/database(_:)``.
    public func close() throws {
        do {
            try checkpointer?.close()
            try db.close()
        } catch {
            throw StoreError.database("\(error)")
        }
    }

    /// The migrations already applied to this database, in order (e.g. `["v1"]`).
    public func appliedMigrations() async throws -> [String] {
        try await run { try await self.db.read { db in try Schema.migrator.appliedMigrations(db) } }
    }

    static func configuration() -> Configuration {
        var config = Configuration()
        config.label = "toki"
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // Checkpoints are `checkpoint()`'s job, off the write path (a checkpoint inside a
            // commit held every waiting charge for its fsync). This only bounds the log if
            // nobody calls it: SQLite's default is 1000 pages, about 70 priced requests.
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(Self.walPagesBeforeForcedCheckpoint)")
        }
        return config
    }

    private func migrate() throws {
        let migrator = Schema.migrator
        do {
            let superseded = try db.read { db in try migrator.hasBeenSuperseded(db) }
            if superseded {
                throw StoreError.database(
                    "the database was written by a newer toki (unknown migrations); refusing to open it")
            }
            let before = try db.read { db in try migrator.appliedIdentifiers(db) }
            try migrator.migrate(db)
            let applied = try db.read { db in try migrator.appliedMigrations(db) }
            let new = applied.filter { !before.contains($0) }
            if !new.isEmpty {
                logger.info("applied database migrations", metadata: [
                    "migrations": "\(new.joined(separator: ","))", "path": "\(path ?? ":memory:")",
                ])
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.database("migration failed: \(error)")
        }
    }

    /// Runs `body`, turning any non-`StoreError` into ``StoreError/database(_:)``.
    /// A write transaction the caller's cancellation cannot stop, without a task of its own
    /// (GRDB's callback API; its async `write` fails once the calling task is cancelled).
    func uncancellableWrite<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await run {
            try await withCheckedThrowingContinuation { continuation in
                db.asyncWrite(updates) { _, result in continuation.resume(with: result) }
            }
        }
    }

    func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError.database("\(error)")
        }
    }
}

// MARK: - Helpers shared by the extensions

/// Amounts are stored as integer nanos.
extension Money: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { nanos.databaseValue }

    public static func fromDatabaseValue(_ dbValue: DatabaseValue) -> Money? {
        Int64.fromDatabaseValue(dbValue).map(Money.init(nanos:))
    }
}

extension TokenScope: DatabaseValueConvertible {}

enum JSONColumn {
    static func encode(_ strings: [String]) -> String {
        // Encoding [String] cannot fail.
        let data = (try? JSONEncoder().encode(strings)) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func decode(_ text: String?) -> [String]? {
        guard let text else { return nil }
        return try? JSONDecoder().decode([String].self, from: Data(text.utf8))
    }
}

/// A record read from rows by name through its `Decodable` conformance (GRDB's row decoding):
/// each property reads the column that spells its name in snake case, initialisms whole
/// (`createdAt` ← `created_at`, `userID` ← `user_id`, `durationMS` ← `duration_ms`);
/// `renamedColumns` maps the columns named otherwise. Other columns of the row are ignored.
/// JSON array columns decode as `[String]`.
protocol StoredRecord: Decodable {
    /// Column → property, where the property's name is not the column's.
    static var renamedColumns: [String: String] { get }
}

extension StoredRecord {
    static var renamedColumns: [String: String] { [:] }

    init(row: Row) throws { self = try RowDecoded<Self>(row: row).record }

    static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Self] {
        try RowDecoded<Self>.fetchAll(db, sql: sql, arguments: arguments).map(\.record)
    }

    static func fetchOne(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Self? {
        try RowDecoded<Self>.fetchOne(db, sql: sql, arguments: arguments)?.record
    }

    /// `user_id` → `userID`: words after the first capitalised, `id` and `ms` upper-cased.
    static func propertyName(column: String) -> String {
        let words = column.split(separator: "_")
        guard let first = words.first else { return column }
        return words.dropFirst().reduce(String(first)) { name, word in
            name + (["id", "ms"].contains(word) ? word.uppercased() : word.prefix(1).uppercased() + word.dropFirst())
        }
    }
}

/// GRDB's record conformance for a `StoredRecord`, kept off the public model types.
private struct RowDecoded<Record: StoredRecord>: FetchableRecord, Decodable {
    var record: Record

    init(from decoder: any Decoder) throws { record = try Record(from: decoder) }

    static var databaseColumnDecodingStrategy: DatabaseColumnDecodingStrategy {
        let renamed = Record.renamedColumns
        return .custom { column in ColumnKey(renamed[column] ?? Record.propertyName(column: column)) }
    }
}

private struct ColumnKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init(stringValue: String) { self.init(stringValue) }
    init?(intValue: Int) { nil }
}

enum Validate {
    static func hasControlCharacters(_ s: String) -> Bool {
        s.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    static func userName(_ raw: String) throws -> String {
        let name = String(Substring(raw).trimmingWhitespace())
        guard !name.isEmpty, name.count <= 64, !hasControlCharacters(name) else {
            throw StoreError.invalidUserName(raw)
        }
        return name
    }

    static func namespace(_ raw: String) throws -> String {
        let ns = String(Substring(raw).trimmingWhitespace())
        guard !ns.isEmpty, ns.count <= 256, !hasControlCharacters(ns) else {
            throw StoreError.invalidNamespace(raw)
        }
        return ns
    }

    /// Trimmed, without empties, deduplicated and sorted (as the Go hub does for worker models).
    static func models(_ raw: [String]) -> [String] {
        Array(Set(raw.map { String(Substring($0).trimmingWhitespace()) }.filter { !$0.isEmpty })).sorted()
    }
}

extension HubStore {
    /// SQLite's page caches of every connection, rebuilt from the file as needed (after a fleet
    /// left, they hold pages of rows nobody reads).
    /// Pages the write-ahead log may reach before a commit checkpoints it itself.
    static let walPagesBeforeForcedCheckpoint = 16_384

    /// Copies the write-ahead log into the database without blocking writers or readers
    /// (`PASSIVE`), on a connection of its own. Returns the log's frames and how many were
    /// copied; nil for an in-memory store.
    @discardableResult
    public func checkpoint() async throws -> (logFrames: Int, checkpointed: Int)? {
        guard let checkpointer else { return nil }
        return try await run {
            try await checkpointer.writeWithoutTransaction { db in
                let row = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(PASSIVE)")
                return (logFrames: row?[1] ?? 0, checkpointed: row?[2] ?? 0)
            }
        }
    }

    public func checkpointLog() async throws { try await checkpoint() }

    public func checkReachable() async throws {
        _ = try await run { try await db.read { db in try Int.fetchOne(db, sql: "SELECT 1") } }
    }

    public func releaseMemory() {
        if let pool = db as? DatabasePool {
            pool.releaseMemory()
        } else if let queue = db as? DatabaseQueue {
            queue.releaseMemory()
        }
    }
}

// MARK: - Introspection for tests and diagnostics (internal)

extension HubStore {
    /// Runs a read-only query whose rows have one text column. Used by tests (`@testable`) so
    /// they need not import GRDB.
    func queryStrings(_ sql: String) async throws -> [String] {
        try await run { try await db.read { db in try String.fetchAll(db, sql: sql) } }
    }
}
