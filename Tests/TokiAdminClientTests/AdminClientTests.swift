import Foundation
import Testing
@testable import TokiAdminClient

@Suite struct JSONValueTests {
    @Test func numbersAndKeyOrderSurviveARoundTrip() throws {
        let text = #"{"z":1,"a":0.000000001,"big":999999999.123456789,"neg":-2.5e3,"s":"x\"y\\\n\u00e9\ud83d\ude00","arr":[true,false,null],"o":{}}"#
        let value = try JSONValue.parse(text)
        #expect(value["big"] == .number("999999999.123456789"))
        #expect(value["a"] == .number("0.000000001"))
        #expect(value["s"]?.stringValue == "x\"y\\\né😀")
        #expect(value.compact == #"{"z":1,"a":0.000000001,"big":999999999.123456789,"neg":-2.5e3,"s":"x\"y\\\né😀","arr":[true,false,null],"o":{}}"#)
        #expect(try JSONValue.parse(value.pretty) == value)
    }

    @Test func prettyIsIndentedInOrder() throws {
        let value = try JSONValue.parse(#"{"b":[1,{"c":null}],"a":[]}"#)
        #expect(value.pretty == """
            {
              "b": [
                1,
                {
                  "c": null
                }
              ],
              "a": []
            }
            """)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01", "1.", "-", "\"\u{01}\"", "tru", "{} x", "\"abc", "1e"])
    func malformedIsRefused(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test func controlCharactersAreEscapedWhenWritten() {
        #expect(JSONValue.string("a\u{01}b\tc").compact == #""a\u0001b\tc""#)
    }

    @Test func objectBuilderDropsAbsentFields() {
        let value = JSONValue.object(["a": .int(1), "b": nil, "c": .string("x")])
        #expect(value.compact == #"{"a":1,"c":"x"}"#)
    }
}

@Suite struct EnvelopeTests {
    func decode(_ status: Int, _ body: String) -> Result<JSONValue, AdminError> {
        Result { () throws(AdminError) in try Envelope.decode(status: status, body: Array(body.utf8)) }
    }

    @Test func successGivesData() {
        #expect(decode(200, #"{"success":true,"message":"","data":{"id":3}}"#) == .success(.object([.init("id", .number("3"))])))
        #expect(decode(201, #"{"success":true,"message":"","data":[]}"#) == .success(.array([])))
        #expect(decode(200, #"{"success":true,"message":""}"#) == .success(.null))
    }

    @Test func failureCarriesMessageAndStatus() {
        let result = decode(404, #"{"success":false,"message":"private group #9 not found","data":null}"#)
        #expect(result == .failure(.api(status: 404, message: "private group #9 not found", data: nil)))
        if case .failure(let error) = result {
            #expect(error.description == "error: private group #9 not found (HTTP 404)")
        }
    }

    @Test func successFalseOnA200IsAFailure() {
        #expect(decode(200, #"{"success":false,"message":"no","data":null}"#) == .failure(.api(status: 200, message: "no", data: nil)))
    }

    @Test func failureKeepsItsData() throws {
        let result = decode(500, #"{"success":false,"message":"the ledger is inconsistent: 1 problem","data":{"problems":["x"]}}"#)
        guard case .failure(.api(500, _, let data?)) = result else { Issue.record("expected data, got \(result)"); return }
        #expect(data["problems"]?.arrayValue == [.string("x")])
    }

    @Test func openAIErrorShapeAndPlainBodies() {
        #expect(decode(429, #"{"error":{"message":"slow down","type":"rate_limit"}}"#) == .failure(.api(status: 429, message: "slow down", data: nil)))
        #expect(decode(502, "Bad Gateway") == .failure(.api(status: 502, message: "Bad Gateway", data: nil)))
        #expect(decode(404, "") == .failure(.api(status: 404, message: "the hub answered without a body", data: nil)))
        guard case .failure(.badReply(200, _)) = decode(200, "<html>") else { Issue.record("expected badReply"); return }
        guard case .failure(.badReply(200, _)) = decode(200, #"{"id":1}"#) else { Issue.record("expected badReply"); return }
    }

    @Test func unreachableSaysWhatToDo() {
        let error = AdminError.unreachable(url: "http://127.0.0.1:1", reason: "connection refused")
        #expect(error.description == "error: cannot reach the hub at http://127.0.0.1:1: connection refused (is it running? pass --hub URL)")
    }
}

@Suite struct QueryTests {
    @Test func everythingButUnreservedIsEncoded() {
        #expect(Query.encode("a-b_c.d~e") == "a-b_c.d~e")
        #expect(Query.encode("qwen/qwen2.5 7b+x&y=z#%") == "qwen%2Fqwen2.5%207b%2Bx%26y%3Dz%23%25")
        #expect(Query.encode("é") == "%C3%A9")
        #expect(Query.encode("a\nb") == "a%0Ab")
    }

    @Test func queryStringSkipsAbsentValues() {
        #expect(Query.string([]) == "")
        #expect(Query.string([("a", nil)]) == "")
        #expect(Query.string([("model", "m&n"), ("since", nil), ("limit", "5")]) == "?model=m%26n&limit=5")
    }

    @Test func clientBuildsRequests() async throws {
        let seen = Seen()
        let client = AdminClient(base: "http://hub:8080//", token: "sk-t") { request throws(AdminError) in
            await seen.set(request)
            return AdminResponse(status: 200, body: Array(#"{"success":true,"message":"","data":{"model":"a b"}}"#.utf8))
        }
        let data = try await client.delete("/api/admin/prices", query: [("model", "a b")])
        #expect(data["model"]?.stringValue == "a b")
        let request = try #require(await seen.request)
        #expect(request.method == .delete)
        #expect(request.url == "http://hub:8080/api/admin/prices?model=a%20b")
        #expect(request.body == nil)
        #expect(request.headers.contains { $0.0 == "Authorization" && $0.1 == "Bearer sk-t" })

        _ = try await client.put("/api/admin/prices", .object(["model": .string("m"), "input_per_million": .number("0.10")]))
        let put = try #require(await seen.request)
        #expect(put.body == #"{"model":"m","input_per_million":0.10}"#)
        #expect(put.headers.contains { $0.0 == "Content-Type" && $0.1 == "application/json" })
    }

    @Test func clientThrowsTheEnvelopesError() async {
        let client = AdminClient(base: "http://hub", token: "t") { _ throws(AdminError) in
            AdminResponse(status: 403, body: Array(#"{"success":false,"message":"this needs an admin token","data":null}"#.utf8))
        }
        await #expect(throws: AdminError.api(status: 403, message: "this needs an admin token", data: nil)) {
            try await client.get("/api/admin/users")
        }
    }

    actor Seen {
        var request: AdminRequest?
        func set(_ r: AdminRequest) { request = r }
    }
}

@Suite struct TableTests {
    @Test func columnsAlignNumbersRightAndTextLeft() {
        let out = Table.render(headers: ["ID", "NAME", "COST"], rows: [["1", "alice", "0.5"], ["12", "bo", "-"], ["3", "carol-long", "10"]])
        #expect(out == """
            ID  NAME        COST
             1  alice        0.5
            12  bo             -
             3  carol-long    10

            """)
    }

    @Test func jsonRowsUseFormats() throws {
        let rows = try JSONValue.parse(#"""
            [{"id":1,"group_slug":"gpu-pool","status":1,"created_at":1735786800,"expires_at":0,"groups":["a","b"],"on":true,"x":null},
             {"id":2,"group_slug":"evil\u001b[31m","status":2,"created_at":0,"expires_at":null,"groups":[],"on":false}]
            """#)
        let out = Table.render(rows.arrayValue ?? [], [
            Column("ID", "id"), Column("SLUG", "group_slug"), Column("STATUS", "status"), Column("CREATED", "created_at"),
            Column("EXPIRES", "expires_at"), Column("GROUPS", "groups"), Column("ON", "on"), Column("X", "x"),
        ])
        #expect(out == """
            ID  SLUG            STATUS    CREATED               EXPIRES  GROUPS  ON   X
             1  gpu-pool        enabled   2025-01-02 03:00:00Z  never    a,b     yes  -
             2  evil\\u{1b}[31m  disabled  never                 -        -       no   -

            """)
    }

    @Test func exponentsAreShownAsDecimals() {
        #expect(Cell.plainDecimal("9e-06") == "0.000009")
        #expect(Cell.plainDecimal("-1.25E2") == "-125")
        #expect(Cell.plainDecimal("1.5e+3") == "1500")
        #expect(Cell.plainDecimal("1.234e1") == "12.34")
        #expect(Cell.plainDecimal("0.5") == "0.5")
        #expect(Cell.plainDecimal("1e999") == "1e999")
    }

    @Test func emptyListSaysNone() {
        #expect(Table.render([], [Column("ID", "id")]) == "ID\n(none)\n")
    }

    @Test func nestedAndAlternativeKeys() throws {
        let row = try JSONValue.parse(#"{"group":{"id":4,"group_slug":"p"},"grant":{"role":"member"},"group_name":"g"}"#)
        #expect(Column("SLUG", "group.group_slug").cell(row) == "p")
        #expect(Column("ROLE", "grant.role|role").cell(row) == "member")
        #expect(Column("G", "missing|group_name").cell(row) == "g")
        #expect(Column("N", "nope").cell(row) == "-")
    }

    @Test func recordIsFieldValueLines() throws {
        let value = try JSONValue.parse(#"{"user_id":7,"balance":12.500000001}"#)
        #expect(Table.record(value, [Column("USER", "user_id"), Column("BALANCE", "balance")]) == "USER     7\nBALANCE  12.500000001\n")
    }
}

@Suite struct ArgumentTests {
    let now = Date(timeIntervalSince1970: 1_750_000_000)

    @Test func durations() {
        #expect(TimeArgument.duration("90s") == 90)
        #expect(TimeArgument.duration("30m") == 1800)
        #expect(TimeArgument.duration("1h30m") == 5400)
        #expect(TimeArgument.duration("7d") == 604_800)
        #expect(TimeArgument.duration("2w") == 1_209_600)
        for bad in ["", "h", "10", "5x", "1h5", "0s", "-1h", "9999999999h"] { #expect(TimeArgument.duration(bad) == nil, "\(bad)") }
    }

    @Test func absoluteTimes() {
        #expect(TimeArgument.absolute("1735786800") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02") == 1_735_776_000)
        #expect(TimeArgument.absolute("2025-01-02T03:00:00Z") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T05:00:00+02:00") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02 03:00:00Z") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T03:00:00") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T03:00") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T03:00:00.250Z") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T03:00Z") == 1_735_786_800)
        #expect(TimeArgument.absolute("2025-01-02T03") == nil)
        #expect(TimeArgument.absolute("2025-13-02") == nil)
        #expect(TimeArgument.absolute("yesterday") == nil)
    }

    @Test func sinceCountsBackAndExpiresForward() throws {
        #expect(try TimeArgument.since("24h", now: now) == 1_750_000_000 - 86_400)
        #expect(try TimeArgument.since("2025-01-02", now: now) == 1_735_776_000)
        #expect(throws: ArgumentProblem.self) { try TimeArgument.since("soon", now: now) }
        #expect(try TimeArgument.expires("7d", now: now) == 1_750_000_000 + 604_800)
        #expect(try TimeArgument.expires("never", now: now) == 0)
        #expect(try TimeArgument.expires("0", now: now) == 0)
        #expect(try TimeArgument.expires("2030-01-01", now: now) == 1_893_456_000)
        #expect(throws: ArgumentProblem.self) { try TimeArgument.expires("2020-01-01", now: now) }
    }

    @Test func amountsStayLiteral() throws {
        #expect(try NumberArgument.amount("0.000000001", option: "--input") == .number("0.000000001"))
        #expect(try NumberArgument.amount(" 25 ", option: "AMOUNT") == .number("25"))
        #expect(try NumberArgument.amount("-3", option: "AMOUNT", allowNegative: true) == .number("-3"))
        for bad in ["-3", "1e3", "abc", "", "1,5", "0x10", ".5", "NaN"] {
            #expect(throws: ArgumentProblem.self, "\(bad)") { try NumberArgument.amount(bad, option: "AMOUNT") }
        }
        #expect(try NumberArgument.ratio("1.5") == .number("1.5"))
    }
}
