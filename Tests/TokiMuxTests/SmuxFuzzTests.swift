import NIOCore
import TestSupport
import Testing

@testable import TokiMux


/// A plausible frame sequence: mostly valid, sometimes hostile.
func randomFrames(_ rng: inout SplitMix64, version: UInt8, count: Int) -> [UInt8] {
    var buffer = ByteBuffer()
    for _ in 0..<count {
        let id = UInt32.random(in: 0...12, using: &rng)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0, 1: buffer.writeSmuxHeader(version: version, command: .syn, length: 0, streamID: id)
        case 2: buffer.writeSmuxHeader(version: version, command: .fin, length: 0, streamID: id)
        case 3: buffer.writeSmuxHeader(version: version, command: .nop, length: 0, streamID: 0)
        case 4 where version == 2:
            buffer.writeSmuxFrame(.windowUpdate(streamID: id, consumed: .random(in: 0...1 << 20, using: &rng), window: 65536))
        default:
            let length = Int.random(in: 0...4096, using: &rng)
            buffer.writeSmuxHeader(version: version, command: .psh, length: length, streamID: id)
            buffer.writeRepeatingByte(UInt8.random(in: 0...255, using: &rng), count: length)
        }
    }
    return Array(buffer.readableBytesView)
}

/// Feeds bytes in random-sized pieces, reading and writing randomly like an application would,
/// and checks the invariants: no crash, only protocol errors, bounded buffering.
func exercise(_ bytes: [UInt8], version: UInt8, rng: inout SplitMix64) -> SmuxProtocolError? {
    var c = SmuxConfiguration()
    c.version = version
    c.maxReceiveBuffer = 64 * 1024
    var machine = try! SmuxSessionMachine(role: .server, configuration: c, maxStreams: 64)
    var processor = NIOSingleStepByteToMessageProcessor(SmuxFrameDecoder(version: version))
    var offset = 0
    var accepted: [UInt32] = []
    do {
        while offset < bytes.count {
            let n = min(bytes.count - offset, Int.random(in: 1...3000, using: &rng))
            try processor.process(buffer: ByteBuffer(bytes: bytes[offset..<offset + n])) { frame in
                _ = try machine.receive(frame)
            }
            offset += n
            while let id = machine.accept() { accepted.append(id) }
            // The application reads some streams, writes to some, closes some.
            for id in accepted.shuffled(using: &rng).prefix(3) {
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: machine.close(streamID: id)
                case 1:
                    var data = ByteBuffer(repeating: 1, count: Int.random(in: 0...70000, using: &rng))
                    _ = try? machine.write(streamID: id, &data)
                default:
                    while case .data = machine.read(streamID: id) {}
                }
            }
            var sink = ByteBuffer()
            machine.takeOutbound(into: &sink)
            // Budget invariant: it can overshoot by at most what one feed delivered.
            #expect(machine.unreadBytes <= c.maxReceiveBuffer + 3000 + SmuxFrame.maxPayload)
            #expect(machine.unreadBytes >= 0)
            if !machine.canReceive {
                // A real session stops reading here; the fuzzer drains everything instead.
                for id in accepted { while case .data = machine.read(streamID: id) {} }
                #expect(machine.canReceive || machine.unreadBytes == 0)
            }
        }
    } catch let error as SmuxProtocolError {
        return error
    } catch {
        Issue.record("unexpected error type \(error)")
    }
    return nil
}

@Suite("smux fuzz")
struct SmuxFuzzTests {
    @Test("random valid frame sequences never fail", arguments: [UInt8(1), 2])
    func validSequences(version: UInt8) {
        var rng = SplitMix64(seed: 42 + UInt64(version))
        for _ in 0..<300 {
            let bytes = randomFrames(&rng, version: version, count: 40)
            let error = exercise(bytes, version: version, rng: &rng)
            // Only the stream-count limit may legitimately trip on valid frames.
            if let error, error != .tooManyStreams(limit: 64) { Issue.record("valid input rejected: \(error)") }
        }
    }

    @Test("corrupted, truncated and random bytes: errors, never crashes", arguments: [UInt8(1), 2])
    func corrupted(version: UInt8) {
        var rng = SplitMix64(seed: 7 + UInt64(version))
        var errors = 0
        for round in 0..<600 {
            var bytes = randomFrames(&rng, version: version, count: 20)
            switch round % 3 {
            case 0:  // flip bytes
                for _ in 0..<Int.random(in: 1...8, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = .random(in: 0...255, using: &rng)
                }
            case 1:  // truncate
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            default:  // pure noise
                bytes = (0..<Int.random(in: 0...2048, using: &rng)).map { _ in .random(in: 0...255, using: &rng) }
            }
            if exercise(bytes, version: version, rng: &rng) != nil { errors += 1 }
        }
        #expect(errors > 100)  // the corruption really was detected in many rounds
    }

    @Test("one machine's output is another's valid input")
    func machineToMachine() throws {
        var rng = SplitMix64(seed: 99)
        for version in [UInt8(1), 2] {
            var c = SmuxConfiguration()
            c.version = version
            var a = try SmuxSessionMachine(role: .client, configuration: c)
            var b = try SmuxSessionMachine(role: .server, configuration: c)
            var sentTotal = [UInt32: Int]()
            var receivedTotal = [UInt32: Int]()
            var ids: [UInt32] = []
            var processor = NIOSingleStepByteToMessageProcessor(SmuxFrameDecoder(version: version))
            for _ in 0..<500 {
                if ids.count < 8 || Int.random(in: 0..<20, using: &rng) == 0 { ids.append(try a.openStream()) }
                let id = ids.randomElement(using: &rng)!
                var data = ByteBuffer(repeating: 9, count: Int.random(in: 1...50000, using: &rng))
                sentTotal[id, default: 0] += try a.write(streamID: id, &data)
                var wire = ByteBuffer()
                a.takeOutbound(into: &wire)
                try processor.process(buffer: wire) { frame in _ = try b.receive(frame) }
                while b.accept() != nil {}
                for id in ids {
                    while case .data(let chunk) = b.read(streamID: id) { receivedTotal[id, default: 0] += chunk.readableBytes }
                }
                var back = ByteBuffer()
                b.takeOutbound(into: &back)
                var backProcessor = NIOSingleStepByteToMessageProcessor(SmuxFrameDecoder(version: version))
                try backProcessor.process(buffer: back) { frame in _ = try a.receive(frame) }
            }
            #expect(sentTotal == receivedTotal)
        }
    }
}
