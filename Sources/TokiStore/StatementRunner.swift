import GRDB
import GRDBSQLite

/// Runs a prepared (cached) statement with positional values bound straight into SQLite.
///
/// GRDB's `StatementArguments` boxes every value in an existential and binds them through
/// nested closures; on the charge path (a usage row, a ledger transaction, its entries and two
/// balance updates per priced request) building and binding arguments that way was about a
/// third of the commit's CPU (perf, docs/benchmarks.md). The statements the hot paths run per
/// request bind here instead. Callers are inside a GRDB transaction on the writer's queue;
/// nothing here observes or changes transaction state (no BEGIN/COMMIT is ever run this way).
extension Statement {
    /// Binds `values` to ?1…?n, steps to the end and resets. `row` sees each result row
    /// (`RETURNING`, `SELECT`) as the raw statement, read with `sqlite3_column_*`.
    func run(_ values: DatabaseValue..., row: ((SQLiteStatement) throws -> Void)? = nil) throws {
        try run(values, row: row ?? { _ in })
    }

    /// The first column of the only (or first) result row, as an integer; nil without a row or for NULL.
    func int64(_ values: DatabaseValue...) throws -> Int64? {
        var result: Int64?
        try run(values, row: { handle in
            if result == nil, sqlite3_column_type(handle, 0) != SQLITE_NULL { result = sqlite3_column_int64(handle, 0) }
        })
        return result
    }

    private func run(_ values: [DatabaseValue], row: (SQLiteStatement) throws -> Void) throws {
        let handle = sqliteStatement
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        for (offset, value) in values.enumerated() {
            let index = CInt(offset + 1)
            let code: CInt
            switch value.storage {
            case .null: code = sqlite3_bind_null(handle, index)
            case .int64(let int): code = sqlite3_bind_int64(handle, index, int)
            case .double(let double): code = sqlite3_bind_double(handle, index, double)
            case .string(let string): code = sqlite3_bind_text(handle, index, string, -1, sqliteTransient)
            case .blob(let data):
                code = data.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, CInt($0.count), sqliteTransient) }
            }
            guard code == SQLITE_OK else { throw failure(code) }
        }
        while true {
            let code = sqlite3_step(handle)
            switch code {
            case SQLITE_DONE: return
            case SQLITE_ROW: try row(handle)
            default: throw failure(code)
            }
        }
    }

    private func failure(_ code: CInt) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(sqlite3_db_handle(sqliteStatement))), sql: sql)
    }
}

/// SQLite copies the bound text/blob (`SQLITE_TRANSIENT`): the Swift buffer is temporary.
private let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
