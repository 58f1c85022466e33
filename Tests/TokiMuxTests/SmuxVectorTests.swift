import Foundation
import NIOCore
import Testing

@testable import TokiMux

/// The byte-level vectors captured from the Go library (shared/spec/smux-vectors.json, copied here).
struct SmuxVector: Decodable {
    var name: String
    var frames_hex: [String]?
    var headers_hex: [String]?
    var payload_sizes: [Int]?

    static let all: [String: SmuxVector] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors/smux-vectors.json")
        let data = try! Data(contentsOf: url)
        let list = try! JSONDecoder().decode([SmuxVector].self, from: data)
        return Dictionary(list.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }()

    static func bytes(_ hex: String) -> [UInt8] {
        let digits = Array(hex.filter { !$0.isWhitespace })
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    static subscript(_ name: String) -> SmuxVector { all[name]! }
    var frames: [[UInt8]] { (frames_hex ?? []).map(Self.bytes) }
    var headers: [[UInt8]] { (headers_hex ?? []).map(Self.bytes) }
}

/// Drains every queued frame of a machine into bytes.
func drain(_ machine: inout SmuxSessionMachine) -> [UInt8] {
    var out: [UInt8] = []
    while machine.hasOutbound {
        var buffer = ByteBuffer()
        machine.takeOutbound(into: &buffer)
        out += buffer.readableBytesView
    }
    return out
}

func decodeAll(_ bytes: [UInt8], version: UInt8) throws -> [SmuxFrame] {
    var decoder = SmuxFrameDecoder(version: version)
    var buffer = ByteBuffer(bytes: bytes)
    var frames: [SmuxFrame] = []
    while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
    #expect(buffer.readableBytes == 0)
    return frames
}

func feed(_ machine: inout SmuxSessionMachine, _ bytes: [UInt8]) throws -> [SmuxSessionMachine.Event] {
    try decodeAll(bytes, version: machine.configuration.version).map { try machine.receive($0) }
}

func config(version: UInt8) -> SmuxConfiguration {
    var c = SmuxConfiguration()
    c.version = version
    return c
}

@Suite("smux frames and Go vectors")
struct SmuxVectorTests {
    @Test("frames a Go session emits", arguments: [UInt8(1), 2])
    func emittedFrames(version: UInt8) throws {
        let v = "v\(version)"
        var client = try SmuxSessionMachine(role: .client, configuration: config(version: version))
        let s3 = try client.openStream()
        #expect(drain(&client) == SmuxVector["\(v)-client-syn-first"].frames[0])
        _ = try client.openStream()
        _ = try client.openStream()
        #expect(drain(&client) == SmuxVector["\(v)-client-syn-next"].frames.flatMap { $0 })

        var hello = ByteBuffer(string: "hello")
        #expect(try client.write(streamID: s3, &hello) == 5)
        #expect(drain(&client) == SmuxVector["\(v)-psh-hello"].frames[0])

        client.close(streamID: s3)
        #expect(drain(&client) == SmuxVector["\(v)-fin"].frames[0])

        client.queueKeepAlive()
        #expect(drain(&client) == SmuxVector["\(v)-nop"].frames[0])

        var server = try SmuxSessionMachine(role: .server, configuration: config(version: version))
        _ = try server.openStream()
        _ = try server.openStream()
        #expect(drain(&server) == SmuxVector["\(v)-server-syn"].frames.flatMap { $0 })
    }

    @Test("a 40000-byte write is cut at 32768", arguments: [UInt8(1), 2])
    func split40000(version: UInt8) throws {
        let vector = SmuxVector["v\(version)-psh-split-40000"]
        var client = try SmuxSessionMachine(role: .client, configuration: config(version: version))
        let id = try client.openStream()
        _ = drain(&client)
        var data = ByteBuffer(repeating: 0xAB, count: 40000)
        #expect(try client.write(streamID: id, &data) == 40000)
        let frames = try decodeAll(drain(&client), version: version)
        #expect(frames.count == 2)
        var expectedHeaders: [[UInt8]] = []
        for frame in frames {
            var header = ByteBuffer()
            header.writeSmuxHeader(version: version, command: frame.command, length: frame.payload.readableBytes, streamID: frame.streamID)
            expectedHeaders.append(Array(header.readableBytesView))
        }
        #expect(expectedHeaders == vector.headers)
        #expect(frames.map(\.payload.readableBytes) == vector.payload_sizes)
    }

    @Test("v2 UPD on first read and at half the stream buffer")
    func windowUpdates() throws {
        var server = try SmuxSessionMachine(role: .server, configuration: config(version: 2))
        #expect(try feed(&server, SmuxVector.bytes("02 00 0000 03000000") + SmuxVector.bytes("02 02 0500 03000000 68656c6c6f")) == [.accepted(3), .readable(3)])
        #expect(server.accept() == 3)
        #expect(server.read(streamID: 3) == .data(ByteBuffer(string: "hello")))
        #expect(drain(&server) == SmuxVector["v2-upd-first-read"].frames[0])

        // 32767 more bytes read: below the threshold, nothing.
        var big = ByteBuffer()
        big.writeSmuxHeader(version: 2, command: .psh, length: 32767, streamID: 3)
        big.writeRepeatingByte(0x61, count: 32767)
        _ = try feed(&server, Array(big.readableBytesView))
        #expect(server.read(streamID: 3) != .wouldBlock)
        #expect(drain(&server).isEmpty)

        var one = ByteBuffer()
        one.writeSmuxHeader(version: 2, command: .psh, length: 1, streamID: 3)
        one.writeInteger(UInt8(0x62))
        _ = try feed(&server, Array(one.readableBytesView))
        _ = server.read(streamID: 3)
        #expect(drain(&server) == SmuxVector["v2-upd-threshold"].frames[0])
    }

    @Test("v2 sender honours the initial 256 KiB window and UPDs")
    func senderWindow() throws {
        var client = try SmuxSessionMachine(role: .client, configuration: config(version: 2))
        let id = try client.openStream()
        _ = drain(&client)
        var data = ByteBuffer(repeating: 7, count: 300_000)
        var sent = 0
        // Keep draining so the outbound queue never limits: only the window does.
        while true {
            let n = try client.write(streamID: id, &data)
            sent += n
            _ = drain(&client)
            if n == 0 { break }
        }
        #expect(sent == 262_144)  // v2-initial-window: 8 PSH × 32768, then blocked
        #expect(!client.hasSendWindow(streamID: id))

        _ = try feed(&client, SmuxVector["v2-upd-insufficient"].frames[0])
        #expect(try client.write(streamID: id, &data) == 0)
        #expect(drain(&client).isEmpty)

        #expect(try feed(&client, SmuxVector["v2-upd-release"].frames[0]) == [.windowUpdated(id)])
        #expect(try client.write(streamID: id, &data) == 300_000 - 262_144)
        let frames = try decodeAll(drain(&client), version: 2)
        #expect(frames.map(\.payload.readableBytes) == SmuxVector["v2-upd-release"].payload_sizes)
        #expect(data.readableBytes == 0)
    }

    @Test("input handling matches Go")
    func inputHandling() throws {
        var s = try SmuxSessionMachine(role: .server)
        #expect(try feed(&s, SmuxVector["rx-fin-eof"].frames.flatMap { $0 }) == [.accepted(3), .readable(3), .readable(3)])
        #expect(s.accept() == 3)
        #expect(s.read(streamID: 3) == .data(ByteBuffer(string: "abc")))
        #expect(s.read(streamID: 3) == .endOfStream)
        #expect(s.accept() == nil)

        s = try SmuxSessionMachine(role: .server)
        #expect(try feed(&s, SmuxVector["rx-unknown-sid"].frames.flatMap { $0 }) == [.none, .none, .accepted(9)])
        #expect(s.unreadBytes == 0)  // dropped data does not use budget

        s = try SmuxSessionMachine(role: .server)
        #expect(try feed(&s, SmuxVector["rx-dup-syn"].frames.flatMap { $0 }) == [.accepted(3), .none])

        s = try SmuxSessionMachine(role: .server)
        #expect(try feed(&s, SmuxVector["rx-empty-psh"].frames.flatMap { $0 }) == [.accepted(3), .none, .accepted(5)])

        s = try SmuxSessionMachine(role: .server)
        #expect(try feed(&s, SmuxVector["rx-any-parity"].frames[0]) == [.accepted(4)])
    }

    @Test("protocol violations name the rule broken")
    func violations() throws {
        let cases: [(String, SmuxProtocolError)] = [
            ("rx-version-mismatch", .versionMismatch(expected: 1, received: 2)),
            ("rx-unknown-cmd", .unknownCommand(5)),
            ("rx-upd-on-v1", .windowUpdateOnVersion1),
            ("rx-nop-with-payload", .payloadOnControlFrame(command: .nop, length: 2)),
        ]
        for (name, expected) in cases {
            var s = try SmuxSessionMachine(role: .server)
            #expect(throws: expected, "\(name)") { _ = try feed(&s, SmuxVector[name].frames.flatMap { $0 }) }
        }
        #expect(throws: SmuxProtocolError.payloadOnControlFrame(command: .syn, length: 1)) {
            _ = try decodeAll(SmuxVector.bytes("01 00 0100 03000000 00"), version: 1)
        }
        #expect(throws: SmuxProtocolError.payloadOnControlFrame(command: .fin, length: 3)) {
            _ = try decodeAll(SmuxVector.bytes("01 01 0300 03000000 000000"), version: 1)
        }
        #expect(throws: SmuxProtocolError.badWindowUpdateLength(4)) {
            _ = try decodeAll(SmuxVector.bytes("02 04 0400 03000000 00000000"), version: 2)
        }
        // A length over the receiver's limit fails on the header, before the payload arrives.
        var decoder = SmuxFrameDecoder(version: 1, maxPayload: 1024)
        var header = ByteBuffer(bytes: SmuxVector.bytes("01 02 0104 03000000"))
        #expect(throws: SmuxProtocolError.frameTooLong(length: 1025, limit: 1024)) { _ = try decoder.decode(buffer: &header) }
        #expect("\(SmuxProtocolError.windowUpdateOnVersion1)".contains("UPD frame on a version-1 session"))
    }

    @Test("write after receiving FIN still sends (fin-then-write)")
    func finThenWrite() throws {
        var s = try SmuxSessionMachine(role: .server)
        _ = try feed(&s, SmuxVector.bytes("01 00 0000 03000000 01 01 0000 03000000"))
        #expect(s.accept() == 3)
        #expect(s.read(streamID: 3) == .endOfStream)
        var late = ByteBuffer(string: "late")
        #expect(try s.write(streamID: 3, &late) == 4)
        #expect(drain(&s) == SmuxVector["fin-then-write"].frames[0])
    }

    @Test("a frame split at every byte position decodes the same")
    func splitsAnywhere() throws {
        let bytes = SmuxVector["rx-fin-eof"].frames.flatMap { $0 }
        for cut in 0...bytes.count {
            var processor = NIOSingleStepByteToMessageProcessor(SmuxFrameDecoder(version: 1))
            var frames: [SmuxFrame] = []
            try processor.process(buffer: ByteBuffer(bytes: bytes[..<cut])) { frames.append($0) }
            try processor.process(buffer: ByteBuffer(bytes: bytes[cut...])) { frames.append($0) }
            #expect(frames.map(\.command) == [.syn, .psh, .fin], "cut at \(cut)")
        }
    }
}
