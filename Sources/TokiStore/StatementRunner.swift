import Foundation
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

extension DatabaseValue {
    /// `date` as GRDB stores dates ("yyyy-MM-dd HH:mm:ss.SSS", UTC), without GRDB's
    /// `DateFormatter`: formatting through ICU was half of a charge's commit CPU (two dates per
    /// charge). Tests check it against GRDB's own encoding.
    static func storedDate(_ date: Date) -> DatabaseValue {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded())  // as ICU does: to the nearest millisecond
        var days = millis / 86_400_000
        var ofDay = millis % 86_400_000
        if ofDay < 0 {
            ofDay += 86_400_000
            days -= 1
        }
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let text = String(unsafeUninitializedCapacity: 23) { out in
            func put(_ value: Int64, _ width: Int, at offset: Int) {
                var value = value
                for i in stride(from: offset + width - 1, through: offset, by: -1) {
                    out[i] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
            }
            put(year, 4, at: 0); out[4] = UInt8(ascii: "-")
            put(month, 2, at: 5); out[7] = UInt8(ascii: "-")
            put(day, 2, at: 8); out[10] = UInt8(ascii: " ")
            put(ofDay / 3_600_000, 2, at: 11); out[13] = UInt8(ascii: ":")
            put(ofDay / 60_000 % 60, 2, at: 14); out[16] = UInt8(ascii: ":")
            put(ofDay / 1000 % 60, 2, at: 17); out[19] = UInt8(ascii: ".")
            put(ofDay % 1000, 3, at: 20)
            return 23
        }
        return text.databaseValue
    }
}
