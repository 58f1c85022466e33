import Foundation
import Testing
@testable import TokiHub
@testable import TokiStore

@Suite struct JSONFieldsTests {
    func encoded(_ fields: JSONFields) throws -> String {
        String(decoding: try APIEnvelope.encoder.encode(fields), as: UTF8.self)
    }

    @Test("a nil value is written as null, keys stay as given, dates are unix seconds, tables nest")
    func fieldsAsSent() throws {
        let absent: String? = nil
        let fields = JSONFields([
            "user_id": Int64(7), "name": absent, "created_at": Date(timeIntervalSince1970: 12.9),
            "token": JSONFields(["spent": "1.5", "groups": ["a", "b"]]),
        ])
        #expect(try encoded(fields) == #"{"created_at":12,"name":null,"token":{"groups":["a","b"],"spent":"1.5"},"user_id":7}"#)
    }

    @Test("a grant has the original's fields: times in unix seconds, 0 for never")
    func grantRecord() throws {
        let grant = GroupGrant(id: 1, groupID: 2, userID: 3, role: .member, source: .invite, sourceRef: "invite_code:4", grantedBy: 5,
                               expiresAt: nil, revokedAt: nil, createdAt: Date(timeIntervalSince1970: 100), updatedAt: Date(timeIntervalSince1970: 101.5))
        #expect(try encoded(.grant(grant)) == #"{"created_at":100,"expires_at":0,"granted_by":5,"group_id":2,"id":1,"revoked_at":0,"role":"member","source":"invite","source_ref":"invite_code:4","updated_at":101,"user_id":3}"#)
    }
}
