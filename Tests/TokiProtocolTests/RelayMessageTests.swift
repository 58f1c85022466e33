import NIOCore
import Testing
@testable import TokiProtocol

/// The relay extension's lines, byte for byte (docs/protocol.md "Relays"), and their decoder.
@Suite struct RelayMessageTests {
    typealias Kind = TunnelProtocol.RelayMessageType

    func json(_ message: RelayMessage) -> String {
        var buffer = ByteBuffer()
        message.writeJSON(into: &buffer)
        return String(buffer: buffer)
    }

    @Test func everyMessageExact() {
        #expect(json(RelayMessage(type: Kind.hello, requestID: "hello", node: RelayNode(id: "eu")))
            == #"{"type":"hello","request_id":"hello","node":{"id":"eu"}}"#)
        #expect(json(.ack(requestID: "hello", node: RelayNode(id: "root", path: ["root"])))
            == #"{"type":"ack","request_id":"hello","node":{"id":"root","path":["root"]}}"#)
        #expect(json(RelayMessage(type: Kind.authenticate, requestID: "eu:1", token: "sk-a", worker: RelayWorker(namespace: "", group: "vip")))
            == #"{"type":"authenticate","request_id":"eu:1","token":"sk-a","worker":{"namespace":"","group":"vip"}}"#)
        #expect(json(.ack(requestID: "eu:1", principal: RelayPrincipal(userID: 7, userName: "alice", group: "default")))
            == #"{"type":"ack","request_id":"eu:1","principal":{"user_id":7,"user_name":"alice","group":"default"}}"#)
        #expect(json(RelayMessage(type: Kind.workerUp, requestID: "eu:2", token: "sk-a",
                                  worker: RelayWorker(namespace: "gpu", nodeName: "n", models: ["m"], group: "default", via: ["eu-lab"])))
            == #"{"type":"worker_up","request_id":"eu:2","token":"sk-a","worker":{"namespace":"gpu","node_name":"n","group":"default","models":["m"],"via":["eu-lab"]}}"#)
        #expect(json(.ack(requestID: "eu:2", worker: RelayWorker(namespace: "gpu", group: "default", workerID: 3)))
            == #"{"type":"ack","request_id":"eu:2","worker":{"namespace":"gpu","group":"default","worker_id":3}}"#)
        #expect(json(RelayMessage(type: Kind.workerDown, namespace: "gpu")) == #"{"type":"worker_down","namespace":"gpu"}"#)
        #expect(json(RelayMessage(type: Kind.cancel, namespace: "gpu",
                                  cancelRequest: CancelRequestPayload(targetRequestID: "gpu:relay:u", reason: "client_disconnected")))
            == #"{"type":"cancel","namespace":"gpu","cancel_request":{"target_request_id":"gpu:relay:u","reason":"client_disconnected"}}"#)
        #expect(json(.route(namespace: "gpu")) == #"{"type":"route","namespace":"gpu"}"#)
        #expect(json(.error(requestID: "eu:3", code: TunnelProtocol.RelayErrorCode.loop, message: "loop"))
            == #"{"type":"error","request_id":"eu:3","error":{"code":"relay_loop","message":"loop"}}"#)
    }

    @Test func decodesWhatItEncodesAndIgnoresUnknownKeys() throws {
        let samples: [RelayMessage] = [
            RelayMessage(type: Kind.workerUp, requestID: "r", token: "t",
                         worker: RelayWorker(namespace: "ns", nodeName: "n", models: ["a", "b"], group: "g", hardwareInfo: ["gpu": 1], via: ["x", "y"], workerID: 9)),
            .ack(requestID: "p", principal: RelayPrincipal(userID: 42, userName: "u", group: "g")),
            .route(namespace: "ns"),
        ]
        for sample in samples {
            #expect(try RelayMessage.decode(line: sample.encodedLine()) == sample)
        }
        let extra = try RelayMessage.decode(line: ByteBuffer(string: #"{"future":[1,{"a":2}],"type":"route","namespace":"n"}"#))
        #expect(extra == .route(namespace: "n"))
        #expect(throws: JSONReadError.self) { try RelayMessage.decode(line: ByteBuffer(string: #"{"type":"route","namespace":}"#)) }
        #expect(throws: JSONReadError.self) { try RelayMessage.decode(line: ByteBuffer(string: #"{"type":"worker_up","worker":{"models":"not a list"}}"#)) }
    }
}

/// The lines added for revocation (docs/protocol.md "Relays").
@Suite struct RelayRevocationMessageTests {
    @Test func revokeAndTheTokenIDOfAPrincipalExact() throws {
        var buffer = ByteBuffer()
        RelayMessage.revoke(tokenID: 42).writeJSON(into: &buffer)
        #expect(String(buffer: buffer) == #"{"type":"revoke","token_id":42}"#)
        buffer.clear()
        RelayMessage.ack(requestID: "eu:1", principal: RelayPrincipal(userID: 7, userName: "alice", group: "default", tokenID: 12)).writeJSON(into: &buffer)
        #expect(String(buffer: buffer) == #"{"type":"ack","request_id":"eu:1","principal":{"user_id":7,"user_name":"alice","group":"default","token_id":12}}"#)
        let decoded = try RelayMessage.decode(line: ByteBuffer(string: #"{"type":"revoke","token_id":42}"#))
        #expect(decoded == .revoke(tokenID: 42))
        #expect(decoded.type == TunnelProtocol.RelayMessageType.revoke)
    }

    @Test func workerLoadAndPingExact() throws {
        var buffer = ByteBuffer()
        RelayMessage(type: TunnelProtocol.RelayMessageType.workerLoad, namespace: "gpu", inFlight: 3).writeJSON(into: &buffer)
        #expect(String(buffer: buffer) == #"{"type":"worker_load","namespace":"gpu","in_flight":3}"#)
        buffer.clear()
        RelayMessage(type: TunnelProtocol.RelayMessageType.ping, requestID: "eu:9").writeJSON(into: &buffer)
        #expect(String(buffer: buffer) == #"{"type":"ping","request_id":"eu:9"}"#)
        let decoded = try RelayMessage.decode(line: ByteBuffer(string: #"{"type":"worker_load","namespace":"gpu","in_flight":3}"#))
        #expect(decoded.inFlight == 3 && decoded.namespace == "gpu")
    }

    @Test func announcementsCarryTheirNumber() throws {
        var buffer = ByteBuffer()
        RelayMessage(type: TunnelProtocol.RelayMessageType.workerDown, namespace: "gpu", seq: 7).writeJSON(into: &buffer)
        #expect(String(buffer: buffer) == #"{"type":"worker_down","namespace":"gpu","seq":7}"#)
        let decoded = try RelayMessage.decode(line: ByteBuffer(string: #"{"type":"worker_update","request_id":"eu:4","worker":{"namespace":"gpu","models":["m"]},"seq":3}"#))
        #expect(decoded.seq == 3 && decoded.isAnnouncement)
        #expect(!RelayMessage(type: TunnelProtocol.RelayMessageType.workerLoad, namespace: "gpu", inFlight: 1).isAnnouncement)
        #expect(!RelayMessage.revoke(tokenID: 1).isAnnouncement)
    }
}
