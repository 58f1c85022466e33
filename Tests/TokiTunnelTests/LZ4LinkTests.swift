import Foundation
import NIOCore
import TestSupport
import Testing

@testable import TokiTunnel
import TokiProtocol


private let allocator = ByteBufferAllocator()

private func randomBytes(_ count: Int, _ rng: inout SplitMix64) -> ByteBuffer {
    var buffer = allocator.buffer(capacity: count)
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { ptr in
        var i = 0
        while i < count {
            var word = rng.next()
            for _ in 0..<8 where i < count {
                ptr[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return count
    }
    return buffer
}

/// SSE-like text: compressible within a message and (more so) across messages.
private func textBytes(_ count: Int, _ rng: inout SplitMix64) -> ByteBuffer {
    let words = ["data: ", "{\"id\":\"chatcmpl-42\",", "\"object\":\"chat.completion.chunk\",", "\"choices\":[{",
                 "\"delta\":{\"content\":\"", "bread", " rises", " because", " yeast", "\"}}]}\n\n", " the", " dough"]
    var buffer = allocator.buffer(capacity: count)
    while buffer.readableBytes < count {
        let w = words[Int(rng.next() % UInt64(words.count))]
        buffer.writeString(w)
        if rng.next() % 7 == 0 { buffer.writeString(String(rng.next() % 100_000)) }
    }
    buffer.moveWriterIndex(to: count)
    return buffer
}

private func bytes(_ array: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: array) }

private func expectError(_ expected: LZ4LinkError, _ message: [UInt8], limit: Int = 1 << 20,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    var decoder = LZ4LinkDecoder(maxDecompressedSize: limit)
    #expect(throws: expected, sourceLocation: sourceLocation) {
        _ = try decoder.decode(bytes(message), allocator: allocator)
    }
}

@Suite("LZ4 link codec")
struct LZ4LinkTests {
    @Test("a decoder used alone never copies its 128 KiB history (it did for every message)")
    func decoderKeepsItsHistoryInPlace() throws {
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 20)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
        let before = LZ4DecoderState.copies.load(ordering: .relaxed)
        for i in 0..<200 {
            // Compressible and incompressible messages: both paths append to the history.
            let text = i % 2 == 0 ? String(repeating: "data: {\"token\":\"\(i)\"}\n\n", count: 20)
                                  : (0..<300).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
            let message = encoder.encode(ByteBuffer(string: text), allocator: ByteBufferAllocator())
            let decoded = try decoder.decode(message, allocator: ByteBufferAllocator())
            #expect(String(buffer: decoded) == text)
        }
        // (Counted process-wide; nothing in the suite shares a decoder, so no copy at all.)
        #expect(LZ4DecoderState.copies.load(ordering: .relaxed) == before)
    }

    @Test("linked round trip of messages of many sizes")
    func roundTripVaryingSizes() throws {
        var rng = SplitMix64(seed: 1)
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 20)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
        let sizes = [0, 1, 100, 65_536, 1 << 20, 1, 0, 100, 65_535, 65_537, 200_000, 3, 4, 5, 12, 4_000, 64_000, 1 << 20, 100]
        var plainTotal = 0
        var wireTotal = 0
        for round in 0..<3 {
            for (i, size) in sizes.enumerated() {
                let plain = (i + round) % 5 == 4 ? randomBytes(size, &rng) : textBytes(size, &rng)
                let message = encoder.encode(plain, allocator: allocator)
                #expect(message.readableBytes <= 1 + size)
                let decoded = try decoder.decode(message, allocator: allocator)
                #expect(decoded == plain, "round \(round) message \(i) (\(size) bytes)")
                plainTotal += size
                wireTotal += message.readableBytes
            }
        }
        #expect(wireTotal < plainTotal * 3 / 4)  // a fifth of the messages are random bytes
        #expect(encoder.memoryInUse > 0 && encoder.memoryInUse < 200 * 1024)
        #expect(decoder.memoryInUse == 128 * 1024)
    }

    @Test("the first message of a stream carries RESET, later ones don't")
    func firstMessageResets() throws {
        var encoder = LZ4LinkEncoder(maxMessageSize: 4096)
        #expect(encoder.nextMessageResetsStream)
        let m1 = encoder.encode(bytes(Array(repeating: 65, count: 1000)), allocator: allocator)
        let m2 = encoder.encode(bytes(Array(repeating: 65, count: 1000)), allocator: allocator)
        #expect(m1.getInteger(at: 0, as: UInt8.self) == LZ4Link.flagReset | LZ4Link.flagCompressed)
        #expect(m2.getInteger(at: 0, as: UInt8.self) == LZ4Link.flagCompressed)
        // A message can reference the previous one: 1000 repeated bytes seen before is tiny.
        #expect(m2.readableBytes < 24)
        #expect(!encoder.nextMessageResetsStream)
    }

    @Test("linked mode compresses repeated content across messages better than one by one")
    func linkedBeatsIndependent() throws {
        var rng = SplitMix64(seed: 2)
        var linked = LZ4LinkEncoder(maxMessageSize: 1 << 16)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 16)
        var linkedTotal = 0
        var independentTotal = 0
        var rawTotal = 0
        for i in 0..<500 {
            var event = allocator.buffer(capacity: 300)
            event.writeString("data: {\"id\":\"chatcmpl-u6Da3oBXEXQ6PhphXco3g3XP7jyzBMCN\",\"object\":\"chat.completion.chunk\",")
            event.writeString("\"created\":1795565808,\"model\":\"smollm2-135m\",\"system_fingerprint\":\"b0-unknown\",")
            event.writeString("\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\(rng.next() % 1000)\"},\"finish_reason\":null}]}\n\n")
            let message = linked.encode(event, allocator: allocator)
            var fresh = LZ4LinkEncoder(maxMessageSize: 1 << 16)
            independentTotal += fresh.encode(event, allocator: allocator).readableBytes
            linkedTotal += message.readableBytes
            rawTotal += event.readableBytes
            #expect(try decoder.decode(message, allocator: allocator) == event, "event \(i)")
        }
        #expect(linkedTotal * 4 < independentTotal, "linked \(linkedTotal) B vs independent \(independentTotal) B")
        #expect(linkedTotal * 8 < rawTotal)
    }

    @Test("releaseState frees memory and the next message resets the peer's stream")
    func releaseAndReset() throws {
        var rng = SplitMix64(seed: 3)
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 20)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
        for _ in 0..<10 {
            let plain = textBytes(5000, &rng)
            #expect(try decoder.decode(encoder.encode(plain, allocator: allocator), allocator: allocator) == plain)
        }
        #expect(encoder.memoryInUse > 0)
        encoder.releaseState()
        #expect(encoder.memoryInUse == 0)
        #expect(encoder.nextMessageResetsStream)
        let plain = textBytes(5000, &rng)
        let message = encoder.encode(plain, allocator: allocator)
        #expect(message.getInteger(at: 0, as: UInt8.self)! & LZ4Link.flagReset != 0)
        #expect(try decoder.decode(message, allocator: allocator) == plain)

        // encodeReset: a 1-byte message that makes the peer free its history too.
        let reset = encoder.encodeReset(allocator: allocator)
        #expect(reset == bytes([0x02]))
        #expect(encoder.memoryInUse == 0)
        #expect(decoder.memoryInUse > 0)
        #expect(try decoder.decode(reset, allocator: allocator).readableBytes == 0)
        #expect(decoder.memoryInUse == 0)
        for _ in 0..<5 {
            let p = textBytes(3000, &rng)
            #expect(try decoder.decode(encoder.encode(p, allocator: allocator), allocator: allocator) == p)
        }
    }

    @Test("a decoder switches to a new stream on RESET (e.g. a peer that restarted its encoder)")
    func resetSwitchesStreams() throws {
        var rng = SplitMix64(seed: 4)
        var a = LZ4LinkEncoder(maxMessageSize: 1 << 16)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 16)
        for _ in 0..<20 {
            let p = textBytes(2000, &rng)
            #expect(try decoder.decode(a.encode(p, allocator: allocator), allocator: allocator) == p)
        }
        var b = LZ4LinkEncoder(maxMessageSize: 1 << 16)
        for _ in 0..<20 {
            let p = textBytes(2000, &rng)
            #expect(try decoder.decode(b.encode(p, allocator: allocator), allocator: allocator) == p)
        }
    }

    @Test("copies of codecs are independent values")
    func valueSemantics() throws {
        var rng = SplitMix64(seed: 5)
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 16)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 16)
        for _ in 0..<5 {
            let p = textBytes(1000, &rng)
            #expect(try decoder.decode(encoder.encode(p, allocator: allocator), allocator: allocator) == p)
        }
        var encoderCopy = encoder
        var decoderCopy = decoder
        // Copy-on-write: the copy that encodes first while the state is shared starts a new
        // stream (RESET); the other one then owns the old state and continues its stream.
        let p1 = textBytes(1000, &rng)
        let m1 = encoder.encode(p1, allocator: allocator)
        #expect(m1.getInteger(at: 0, as: UInt8.self)! & LZ4Link.flagReset != 0)
        #expect(try decoder.decode(m1, allocator: allocator) == p1)
        let p2 = textBytes(1000, &rng)
        let m2 = encoderCopy.encode(p2, allocator: allocator)
        #expect(m2.getInteger(at: 0, as: UInt8.self)! & LZ4Link.flagReset == 0)
        #expect(try decoderCopy.decode(m2, allocator: allocator) == p2)
        // The decoder copy kept its own history: it can follow the original encoder's stream too.
        var decoderCopy2 = decoder
        let p3 = textBytes(1000, &rng)
        let m3 = encoder.encode(p3, allocator: allocator)
        #expect(try decoderCopy2.decode(m3, allocator: allocator) == p3)
        #expect(try decoder.decode(m3, allocator: allocator) == p3)
    }

    @Test("incompressible data is stored, and stored data still enters the history")
    func incompressibleStored() throws {
        var rng = SplitMix64(seed: 6)
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 20)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
        let noise = randomBytes(10_000, &rng)
        let m1 = encoder.encode(noise, allocator: allocator)
        #expect(m1.readableBytes == 1 + noise.readableBytes)
        #expect(m1.getInteger(at: 0, as: UInt8.self) == LZ4Link.flagReset)  // stored + reset
        #expect(try decoder.decode(m1, allocator: allocator) == noise)
        // The same noise again is found in the history: compressed, tiny.
        let m2 = encoder.encode(noise, allocator: allocator)
        #expect(m2.getInteger(at: 0, as: UInt8.self) == LZ4Link.flagCompressed)
        #expect(m2.readableBytes < 100)
        #expect(try decoder.decode(m2, allocator: allocator) == noise)
        // Large incompressible message (> 64 KiB path).
        let bigNoise = randomBytes(300_000, &rng)
        let m3 = encoder.encode(bigNoise, allocator: allocator)
        #expect(m3.readableBytes == 1 + bigNoise.readableBytes)
        #expect(try decoder.decode(m3, allocator: allocator) == bigNoise)
        // Its last 64 KiB are history now.
        let tail = bigNoise.getSlice(at: bigNoise.readerIndex + 300_000 - 60_000, length: 60_000)!
        let m4 = encoder.encode(tail, allocator: allocator)
        #expect(m4.readableBytes < 1000)
        #expect(try decoder.decode(m4, allocator: allocator) == tail)
    }

    @Test("highly compressible data (1 MiB of zeros) passes the 255x plausibility check")
    func zeros() throws {
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 22)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 22)
        for size in [1 << 20, 1 << 22, 70_000, 65_536, 300] {
            let zeros = bytes(Array(repeating: 0, count: size))
            let m = encoder.encode(zeros, allocator: allocator)
            #expect(try decoder.decode(m, allocator: allocator) == zeros)
        }
    }

    @Test("malformed headers are rejected with the right error")
    func headerErrors() {
        expectError(.emptyMessage, [])
        expectError(.unknownFlags(0x04), [0x04])
        expectError(.unknownFlags(0x80), [0x80, 1, 2, 3])
        expectError(.unknownFlags(0xFF), [0xFF])
        expectError(.truncatedHeader, [0x01])
        expectError(.truncatedHeader, [0x01, 0x80])
        expectError(.truncatedHeader, [0x03, 0xFF, 0xFF])
        expectError(.invalidSizeField, [0x01, 0x00, 0x00])  // zero size
        expectError(.invalidSizeField, [0x01, 0x80, 0x00, 0x00])  // not shortest form
        expectError(.invalidSizeField, [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0x00])  // > 2^32-1
        expectError(.invalidSizeField, [0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])  // 6 bytes
        // Declared size over the limit: rejected before allocating anything.
        expectError(.sizeOverLimit(size: 1025, limit: 1024), [0x01, 0x81, 0x08, 0x00], limit: 1024)
        expectError(.sizeOverLimit(size: 4_294_967_295, limit: 1 << 20), [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00])
        // Stored payload over the limit.
        expectError(.sizeOverLimit(size: 11, limit: 10), [0x00] + Array(repeating: 7, count: 11), limit: 10)
        // 100 000 bytes cannot come out of a 2-byte block.
        expectError(.implausibleSize(declared: 100_000, blockBytes: 2), [0x01, 0xA0, 0x8D, 0x06, 0x00, 0x00])
        expectError(.implausibleSize(declared: 5, blockBytes: 0), [0x01, 0x05])
        // A block far longer than compressBound(declared).
        expectError(.implausibleSize(declared: 1, blockBytes: 100), [0x01, 0x01] + Array(repeating: 0, count: 100))
    }

    @Test("corrupt LZ4 blocks are errors, never crashes or out-of-bounds reads")
    func corruptBlocks() throws {
        // Token: 0 literals, match length 19, offset 0xFFFF: references history that doesn't exist.
        expectError(.corruptData(declared: 19, blockBytes: 3), [0x01, 19, 0x0F, 0xFF, 0xFF])
        // Valid block for "hello", but declared 6: size mismatch.
        expectError(.sizeMismatch(declared: 6, actual: 5), [0x01, 6, 0x50, 0x68, 0x65, 0x6C, 0x6C, 0x6F])
        // ... and declared 4: the output does not fit.
        expectError(.corruptData(declared: 4, blockBytes: 6), [0x01, 4, 0x50, 0x68, 0x65, 0x6C, 0x6C, 0x6F])

        // Truncations of a real message.
        var rng = SplitMix64(seed: 7)
        var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 16)
        let message = encoder.encode(textBytes(20_000, &rng), allocator: allocator)
        #expect(message.getInteger(at: 0, as: UInt8.self)! & LZ4Link.flagCompressed != 0)
        for cut in [1, 2, 3, 10, message.readableBytes / 2, message.readableBytes - 1] {
            var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 16)
            let truncated = message.getSlice(at: message.readerIndex, length: cut)!
            #expect(throws: LZ4LinkError.self) { _ = try decoder.decode(truncated, allocator: allocator) }
        }

        // A linked message given to a decoder that lacks its history references missing data.
        let linked = encoder.encode(bytes(Array(repeating: 65, count: 1000) + Array(repeating: 66, count: 1000)), allocator: allocator)
        _ = encoder.encode(bytes(Array(repeating: 65, count: 1000) + Array(repeating: 66, count: 1000)), allocator: allocator)
        let second = encoder.encode(bytes(Array(repeating: 65, count: 1000) + Array(repeating: 66, count: 1000)), allocator: allocator)
        #expect(linked.readableBytes < 100 && second.readableBytes < 30)
        var fresh = LZ4LinkDecoder(maxDecompressedSize: 1 << 16)
        #expect(throws: LZ4LinkError.self) { _ = try fresh.decode(second, allocator: allocator) }
    }

    @Test("after an error the decoder refuses data until a RESET message")
    func brokenUntilReset() throws {
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 1024)
        #expect(throws: LZ4LinkError.unknownFlags(0x10)) { _ = try decoder.decode(bytes([0x10]), allocator: allocator) }
        #expect(throws: LZ4LinkError.streamBroken) { _ = try decoder.decode(bytes([0x00, 1, 2]), allocator: allocator) }
        #expect(try decoder.decode(bytes([0x02, 1, 2]), allocator: allocator) == bytes([1, 2]))
        #expect(try decoder.decode(bytes([0x00, 3]), allocator: allocator) == bytes([3]))
    }

    @Test("error descriptions say what was wrong")
    func descriptions() {
        #expect(LZ4LinkError.unknownFlags(0x04).description.contains("0x04"))
        #expect(LZ4LinkError.sizeOverLimit(size: 5, limit: 4).description.contains("limit of 4"))
        #expect(LZ4LinkError.corruptData(declared: 9, blockBytes: 3).description.contains("corrupt"))
        #expect(LZ4LinkError.truncatedHeader.description.contains("truncated"))
    }

    @Test("fuzz: random and mutated messages only ever produce errors", arguments: [11, 12, 13] as [UInt64])
    func fuzz(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var encoder = LZ4LinkEncoder(maxMessageSize: 200_000)
        var reference = LZ4LinkDecoder(maxDecompressedSize: 200_000)
        var victim = LZ4LinkDecoder(maxDecompressedSize: 100_000)
        var errors = 0
        for i in 0..<1500 {
            let size = Int(rng.next() % 4 == 0 ? rng.next() % 200_000 : rng.next() % 3000)
            let plain = rng.next() % 3 == 0 ? randomBytes(size, &rng) : textBytes(size, &rng)
            let good = encoder.encode(plain, allocator: allocator)
            // The reference decoder sees the clean stream and must always succeed.
            #expect(try reference.decode(good, allocator: allocator) == plain, "message \(i)")

            var bad = Array(good.readableBytesView)
            switch rng.next() % 6 {
            case 0:  // flip a few bits
                for _ in 0...(rng.next() % 4) where !bad.isEmpty {
                    bad[Int(rng.next() % UInt64(bad.count))] ^= UInt8(1 << (rng.next() % 8))
                }
            case 1:  // truncate
                bad = Array(bad.prefix(Int(rng.next() % UInt64(bad.count + 1))))
            case 2:  // append garbage
                bad += Array(randomBytes(Int(rng.next() % 64), &rng).readableBytesView)
            case 3:  // pure noise with a plausible header
                bad = [UInt8(rng.next() % 4)] + Array(randomBytes(Int(rng.next() % 2000), &rng).readableBytesView)
            case 4:  // overwrite a run of bytes in the block
                if bad.count > 8 {
                    let at = 2 + Int(rng.next() % UInt64(bad.count - 2))
                    for j in at..<min(bad.count, at + 8) { bad[j] = UInt8(truncatingIfNeeded: rng.next()) }
                }
            default:  // the clean message (keeps the victim sometimes in sync)
                break
            }
            do {
                let out = try victim.decode(bytes(bad), allocator: allocator)
                #expect(out.readableBytes <= 100_000)
            } catch let error as LZ4LinkError {
                _ = error.description
                errors += 1
            }
            #expect(victim.memoryInUse <= 128 * 1024)
        }
        #expect(errors > 0)
    }

    @Test(
        "chat traffic in 8 interleaved streams compresses below 1/8",
        .enabled(if: chatTrafficURL() != nil, "traffic-chat.jsonl not found in ../shared/data (relative to the package root): skipped")
    )
    func chatTrafficRatio() throws {
        let url = try #require(chatTrafficURL())
        let text = try String(contentsOf: url, encoding: .utf8)
        var responses: [[String]] = []  // events per response
        for line in text.split(separator: "\n") where !line.isEmpty {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            guard let body = object?["response"] as? String else { continue }
            if body.hasPrefix("data:") {
                var events = body.components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { $0 + "\n\n" }
                if !body.hasSuffix("\n\n"), let last = events.popLast() { events.append(String(last.dropLast(2))) }
                responses.append(events)
            } else {
                responses.append([body])
            }
        }
        #expect(responses.count > 100)

        // 8 streams: each takes responses round-robin; the link interleaves one event of each
        // active stream at a time, as a busy link would.
        var queues: [[String]] = Array(repeating: [], count: 8)
        for (i, events) in responses.enumerated() { queues[i % 8] += events }
        var interleaved: [String] = []
        var cursors = Array(repeating: 0, count: 8)
        while interleaved.count < queues.reduce(0, { $0 + $1.count }) {
            for s in 0..<8 where cursors[s] < queues[s].count {
                interleaved.append(queues[s][cursors[s]])
                cursors[s] += 1
            }
        }

        func run(batch: Int) throws -> (raw: Int, wire: Int) {
            var encoder = LZ4LinkEncoder(maxMessageSize: 1 << 20)
            var decoder = LZ4LinkDecoder(maxDecompressedSize: 1 << 20)
            var raw = 0
            var wire = 0
            var index = 0
            while index < interleaved.count {
                var plain = allocator.buffer(capacity: 4096)
                for event in interleaved[index..<min(index + batch, interleaved.count)] { plain.writeString(event) }
                index += batch
                let message = encoder.encode(plain, allocator: allocator)
                #expect(try decoder.decode(message, allocator: allocator) == plain)
                raw += plain.readableBytes
                wire += message.readableBytes
            }
            return (raw, wire)
        }
        let perEvent = try run(batch: 1)
        let batched = try run(batch: 8)
        let r1 = Double(perEvent.raw) / Double(perEvent.wire)
        let r8 = Double(batched.raw) / Double(batched.wire)
        print("LZ4 link on traffic-chat.jsonl (\(interleaved.count) events, \(perEvent.raw) B):"
              + " one message per event \(perEvent.wire) B (\(String(format: "%.2f", r1))x),"
              + " 8 events per message \(batched.wire) B (\(String(format: "%.2f", r8))x)")
        #expect(perEvent.wire * 8 < perEvent.raw)
        #expect(batched.wire * 8 < batched.raw)
    }
}

/// ../shared/data/traffic-chat.jsonl relative to the package root (the working directory of
/// `swift test`), or relative to this source file (resolving symlinks) as a fallback.
private func chatTrafficURL() -> URL? {
    let fm = FileManager.default
    var candidates = [URL(fileURLWithPath: fm.currentDirectoryPath)
        .appendingPathComponent("../shared/data/traffic-chat.jsonl").standardizedFileURL]
    let packageRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(packageRoot.appendingPathComponent("../shared/data/traffic-chat.jsonl").standardizedFileURL)
    return candidates.first { fm.isReadableFile(atPath: $0.path) }
}
