import Foundation
import GRDB
import Testing
@testable import TokiStore

@Suite struct StatementRunnerTests {
    @Test func storedDatesAreGRDBsOwnEncoding() {
        var random = SystemRandomNumberGenerator()
        var dates = [Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 951_782_400.9999),  // 2000-02-29
                     Date(timeIntervalSince1970: 4_102_444_799.999), Date(timeIntervalSince1970: -1.5), Date()]
        for _ in 0..<20_000 {
            dates.append(Date(timeIntervalSince1970: Double(random.next(upperBound: UInt64(4_102_444_800_000))) / 1000
                              + Double(random.next(upperBound: UInt64(1000))) / 1_000_000))
        }
        for date in dates {
            #expect(DatabaseValue.storedDate(date) == date.databaseValue, "\(date.timeIntervalSince1970)")
        }
    }

    @Test func runBindsEveryKindAndReadsReturnedRows() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, d REAL, s TEXT, b BLOB, n TEXT)")
            let insert = try db.cachedStatement(sql: "INSERT INTO t (i, d, s, b, n) VALUES (?, ?, ?, ?, ?) RETURNING id")
            var ids: [Int64] = []
            for k in 0..<3 {
                let id = try insert.int64(Int64(k).databaseValue, 1.5.databaseValue, "é\(k)".databaseValue,
                                          Data([0, 1, UInt8(k)]).databaseValue, .null)
                ids.append(try #require(id))
            }
            #expect(ids == [1, 2, 3])
            let row = try #require(try Row.fetchOne(db, sql: "SELECT * FROM t WHERE id = 3"))
            #expect(row["i"] as Int64 == 2)
            #expect(row["d"] as Double == 1.5)
            #expect(row["s"] as String == "é2")
            #expect(row["b"] as Data == Data([0, 1, 2]))
            #expect(row["n"] as String? == nil)
            // A failing statement throws GRDB's error and leaves the statement reusable.
            let unique = try db.cachedStatement(sql: "INSERT INTO t (id) VALUES (?)")
            #expect(throws: DatabaseError.self) { try unique.run(Int64(1).databaseValue) }
            try unique.run(Int64(9).databaseValue)
            #expect(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM t") == 4)
        }
    }
}
