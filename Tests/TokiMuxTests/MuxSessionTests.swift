import AsyncAlgorithms
import TestSupport
import NIOCore
import Synchronization
import Testing

@testable import TokiMux

/// One direction of an in-memory link: a rendezvous channel, so a writer waits for the reader
/// (the same back-pressure a full TCP socket gives). Counts bytes and messages.
final class MemoryPipe: MuxOutbound, Sendable {
    let channel = AsyncThrowingChannel<ByteBuffer, any Error>()
    let bytes = Atomic<Int>(0)
    let messages = Atomic<Int>(0)

    func write(_ message: ByteBuffer) async throws {
        bytes.add(message.readableBytes, ordering: .relaxed)
        messages.add(1, ordering: .relaxed)
        await channel.send(message)
    }

    func finish() { channel.finish() }
    func fail(_ error: any Error) { channel.fail(error) }
}

/// Two sessions joined by memory pipes, running until the test body returns.
func withSessionPair<R: Sendable>(
    configuration: SmuxConfiguration = .init(),
    _ body: @Sendable (MuxSession, MuxSession) async throws -> R
) async throws -> R {
    let client = try MuxSession(role: .client, configuration: configuration)
    let server = try MuxSession(role: .server, configuration: configuration)
    let toServer = MemoryPipe()
    let toClient = MemoryPipe()
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try? await client.run(inbound: toClient.channel, outbound: toServer) }
        group.addTask { try? await server.run(inbound: toServer.channel, outbound: toClient) }
        defer {
            client.close()
            server.close()
            toServer.finish()
            toClient.finish()
        }
        let result = try await body(client, server)
        client.close()
        server.close()
        toServer.finish()
        toClient.finish()
        try await group.waitForAll()
        return result
    }
}

/// Deterministic payload so both ends can check every byte.
func pattern(_ count: Int, seed: Int) -> ByteBuffer {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(count)
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
        for i in 0..<count { raw[i] = UInt8(truncatingIfNeeded: i &* 7 &+ seed) }
        return count
    }
    return buffer
}

func readAll(_ stream: MuxStream) async throws -> ByteBuffer {
    var all = ByteBuffer()
    for try await chunk in stream { all.writeImmutableBuffer(chunk) }
    return all
}

@Suite("smux sessions over memory pipes")
struct MuxSessionTests {
    @Test("echo on many concurrent streams, both versions", arguments: [(UInt8(1), 1), (1, 16), (2, 16), (2, 64)])
    func echo(version: UInt8, streams: Int) async throws {
        var c = SmuxConfiguration()
        c.version = version
        try await withSessionPair(configuration: c) { client, server in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await withThrowingTaskGroup(of: Void.self) { echoes in
                        for _ in 0..<streams {
                            let stream = try await server.accept()
                            echoes.addTask {
                                // Echo until FIN, then half-close back.
                                while let chunk = try await stream.read() { try await stream.write(chunk) }
                                stream.closeWrite()
                            }
                        }
                        try await echoes.waitForAll()
                    }
                }
                for i in 0..<streams {
                    group.addTask {
                        let stream = try client.openStream()
                        #expect(stream.id % 2 == 1)
                        let payload = pattern(100_000 + i * 977, seed: i)
                        async let echoed = readAll(stream)
                        try await stream.write(payload)
                        stream.closeWrite()
                        #expect(try await echoed == payload)
                        stream.close()
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("both sides open streams; server ids are even")
    func bothSidesOpen() async throws {
        try await withSessionPair { client, server in
            let fromServer = try server.openStream()
            #expect(fromServer.id == 2)
            try await fromServer.write(ByteBuffer(string: "to client"))
            fromServer.closeWrite()
            let accepted = try await client.accept()
            #expect(accepted.id == 2)
            #expect(try await readAll(accepted) == ByteBuffer(string: "to client"))
            // The half-closed side still reads.
            try await accepted.write(ByteBuffer(string: "reply"))
            accepted.closeWrite()
            #expect(try await readAll(fromServer) == ByteBuffer(string: "reply"))
        }
    }

    @Test("v1: a stream nobody reads stops the sender at the session budget")
    func slowReaderBoundsMemory() async throws {
        let c = { var c = SmuxConfiguration(); c.maxReceiveBuffer = 256 * 1024; return c }()
        try await withSessionPair(configuration: c) { client, server in
            let stream = try client.openStream()
            let total = 8 * 1024 * 1024
            let writer = Task { try await stream.write(pattern(total, seed: 3)) }
            let accepted = try await server.accept()
            // Wait (no timing assumption) until the budget is used up: reading has paused.
            let deadline = ContinuousClock.now + .seconds(30)
            var unread = 0
            while ContinuousClock.now < deadline {
                unread = server.state.withLock { $0.machine.unreadBytes }
                if unread >= c.maxReceiveBuffer { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(unread >= c.maxReceiveBuffer, "the sender never filled the budget")
            // Give it time to overrun if it were going to: it must stay within one batch of the budget.
            try await Task.sleep(for: .milliseconds(100))
            unread = server.state.withLock { $0.machine.unreadBytes }
            #expect(unread <= c.maxReceiveBuffer + c.maxBatchSize)
            // Now read it all: every byte arrives, in order.
            var received = 0
            var expected = pattern(total, seed: 3)
            while received < total, let chunk = try await accepted.read() {
                #expect(chunk == expected.readSlice(length: chunk.readableBytes)!)
                received += chunk.readableBytes
            }
            #expect(received == total)
            try await writer.value
        }
    }

    @Test("v2: a stalled stream does not stall the others")
    func v2NoHeadOfLineBlocking() async throws {
        let c = { var c = SmuxConfiguration(); c.version = 2; return c }()
        try await withSessionPair(configuration: c) { client, server in
            let stalled = try client.openStream()
            let stalledWriter = Task { try await stalled.write(pattern(4 * 1024 * 1024, seed: 1)) }
            let stalledAccepted = try await server.accept()
            // Another stream moves 2 MiB while the first one's reader sleeps.
            let other = try client.openStream()
            let payload = pattern(2 * 1024 * 1024, seed: 2)
            async let sent: Void = { try await other.write(payload); other.closeWrite() }()
            let otherAccepted = try await server.accept()
            #expect(try await readAll(otherAccepted) == payload)
            try await sent
            // The stalled stream only got its window's worth buffered.
            let buffered = server.state.withLock { $0.machine.unreadBytes }
            #expect(buffered <= Int(c.initialPeerWindow))
            stalledWriter.cancel()
            stalledAccepted.close()
            _ = await stalledWriter.result
        }
    }

    @Test("a protocol violation ends the session with that error")
    func violationEndsSession() async throws {
        let session = try MuxSession(role: .server)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let outbound = MemoryPipe()
        let ran = Task { try await session.run(inbound: inbound, outbound: outbound) }
        await inbound.send(ByteBuffer(bytes: SmuxVector.bytes("01 00 0000 03000000")))
        let stream = try await session.accept()
        await inbound.send(ByteBuffer(bytes: SmuxVector.bytes("01 07 0000 03000000")))
        await #expect(throws: MuxError.protocolViolation(.unknownCommand(7))) { try await ran.value }
        await #expect(throws: MuxError.protocolViolation(.unknownCommand(7))) { _ = try await stream.read() }
        #expect(throws: MuxError.protocolViolation(.unknownCommand(7))) { _ = try session.openStream() }
    }

    @Test("the transport closing fails pending reads (peer vanished)")
    func transportEnd() async throws {
        let session = try MuxSession(role: .client)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let ran = Task { try await session.run(inbound: inbound, outbound: MemoryPipe()) }
        await inbound.send(ByteBuffer(bytes: SmuxVector.bytes("01 00 0000 02000000 01 02 0300 02000000 616263")))
        let stream = try await session.accept()
        #expect(try await stream.read() == ByteBuffer(string: "abc"))
        let pending = Task { try await stream.read() }
        inbound.finish()
        await #expect(throws: MuxError.transportEnded) { _ = try await pending.value }
        await #expect(throws: MuxError.transportEnded) { try await ran.value }
    }

    @Test("bytes that arrived before the transport ended are still read, then the session's error (never a clean end)")
    func bufferedBytesOutliveTheTransport() async throws {
        let session = try MuxSession(role: .client)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let ran = Task { try await session.run(inbound: inbound, outbound: MemoryPipe()) }
        await inbound.send(ByteBuffer(bytes: SmuxVector.bytes("01 00 0000 02000000 01 02 0300 02000000 616263 01 02 0300 02000000 646566")))
        let stream = try await session.accept()
        inbound.finish()
        await #expect(throws: MuxError.transportEnded) { try await ran.value }
        var received = ByteBuffer()
        while true {
            do {
                guard var chunk = try await stream.read() else { Issue.record("a cut stream ended cleanly"); break }
                received.writeBuffer(&chunk)
            } catch {
                #expect(error as? MuxError == .transportEnded)
                break
            }
        }
        #expect(received == ByteBuffer(string: "abcdef"))
    }

    @Test("a stream the peer finished before the transport ended reads to its clean end")
    func finishedStreamOutlivesTheTransport() async throws {
        let session = try MuxSession(role: .client)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let ran = Task { try await session.run(inbound: inbound, outbound: MemoryPipe()) }
        await inbound.send(ByteBuffer(bytes: SmuxVector.bytes("01 00 0000 02000000 01 02 0100 02000000 78 01 01 0000 02000000")))
        let stream = try await session.accept()
        inbound.finish()
        await #expect(throws: MuxError.transportEnded) { try await ran.value }
        #expect(try await stream.read() == ByteBuffer(string: "x"))
        #expect(try await stream.read() == nil)
    }

    @Test("keepalive: a silent peer is detected, NOPs are sent")
    func keepAlive() async throws {
        var c = SmuxConfiguration()
        c.keepAliveInterval = .milliseconds(20)
        c.keepAliveTimeout = .milliseconds(60)
        let session = try MuxSession(role: .client, configuration: c)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let outbound = MemoryPipe()
        let sent = Task {
            var nops = 0
            for try await message in outbound.channel {
                nops += try decodeAll(Array(message.readableBytesView), version: 1).filter { $0.command == .nop }.count
            }
            return nops
        }
        await #expect(throws: MuxError.keepAliveTimeout) { try await session.run(inbound: inbound, outbound: outbound) }
        outbound.finish()
        #expect(try await sent.value >= 1)
    }

    @Test("a cancelled read returns CancellationError and the stream stays usable")
    func cancelRead() async throws {
        try await withSessionPair { client, server in
            let stream = try client.openStream()
            try await stream.write(ByteBuffer(string: "x"))
            let accepted = try await server.accept()
            _ = try await accepted.read()
            let reader = Task { try await accepted.read() }
            try await Task.sleep(for: .milliseconds(10))
            reader.cancel()
            await #expect(throws: CancellationError.self) { _ = try await reader.value }
            try await stream.write(ByteBuffer(string: "y"))
            #expect(try await accepted.read() == ByteBuffer(string: "y"))
        }
    }

    @Test("frames are batched: many small writes, fewer transport messages")
    func batching() async throws {
        let session = try MuxSession(role: .client)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let outbound = MemoryPipe()
        let runner = Task { try await session.run(inbound: inbound, outbound: outbound) }
        let streams = try (0..<64).map { _ in try session.openStream() }
        for stream in streams { try await stream.write(ByteBuffer(string: "small")) }
        var frames = 0
        var messages = 0
        for try await message in outbound.channel {
            messages += 1
            frames += try decodeAll(Array(message.readableBytesView), version: 1).count
            if frames == 128 { break }
        }
        #expect(frames == 128)
        #expect(messages < 128)
        session.close()
        inbound.finish()
        outbound.finish()
        _ = await runner.result
    }
}

@Suite("smux session: a byte stream cut anywhere")
struct MuxSessionSplitTests {
    @Test("frames split across transport messages at random points arrive intact", arguments: [UInt64(1), 2, 3, 4])
    func randomSplits(seed: UInt64) async throws {
        // A sender machine produces frames for 8 streams; the bytes are cut at random points
        // (like gorilla's 4082-byte fragments) and fed to a real session.
        var rng = SplitMix64(seed: seed)
        var sender = try SmuxSessionMachine(role: .server)
        var expected: [UInt32: ByteBuffer] = [:]
        var wire = ByteBuffer()
        let ids = try (0..<8).map { _ in try sender.openStream() }
        for round in 0..<200 {
            let id = ids[Int.random(in: 0..<ids.count, using: &rng)]
            var data = pattern(Int.random(in: 1...40_000, using: &rng), seed: round)
            expected[id, default: ByteBuffer()].writeImmutableBuffer(data)
            while data.readableBytes > 0 {
                _ = try sender.write(streamID: id, &data)
                var batch = ByteBuffer()
                sender.takeOutbound(into: &batch)
                wire.writeBuffer(&batch)
            }
        }
        for id in ids { sender.closeWrite(streamID: id) }
        while sender.hasOutbound {
            var batch = ByteBuffer()
            sender.takeOutbound(into: &batch)
            wire.writeBuffer(&batch)
        }

        let session = try MuxSession(role: .client)
        let inbound = AsyncThrowingChannel<ByteBuffer, any Error>()
        let runner = Task { try await session.run(inbound: inbound, outbound: MemoryPipe()) }
        let feeder = Task {
            var rest = wire
            var rng = SplitMix64(seed: seed &+ 100)
            while rest.readableBytes > 0 {
                let n = min(rest.readableBytes, Int.random(in: 1...9000, using: &rng))
                await inbound.send(rest.readSlice(length: n)!)
            }
        }
        var received: [UInt32: ByteBuffer] = [:]
        let watchdog = Task {
            try await Task.sleep(for: .seconds(20))
            Issue.record("stuck: \(session.diagnostics)")
            session.close()
        }
        defer { watchdog.cancel() }
        try await withThrowingTaskGroup(of: (UInt32, ByteBuffer).self) { group in
            for _ in ids {
                let stream = try await session.accept()
                group.addTask { (stream.id, try await readAll(stream)) }
            }
            for try await (id, data) in group { received[id] = data }
        }
        #expect(received == expected)
        await feeder.value
        session.close()
        inbound.finish()
        _ = await runner.result
    }
}

/// A transport whose writes block until `open()`: what a slow or stalled peer looks like.
final class GatedOutbound: MuxOutbound, Sendable {
    private struct State {
        var open = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var received = ByteBuffer()
    }
    private let state = Mutex(State())

    func write(_ message: ByteBuffer) async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let go: Bool = state.withLock { state in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
        state.withLock { state in
            var copy = message
            state.received.writeBuffer(&copy)
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var received: ByteBuffer { state.withLock { $0.received } }
}

@Suite struct MuxFlushTests {
    /// `flush()` returns only once the transport has taken every frame queued before it (the
    /// hub and the worker rely on it before `close()`, which drops whatever is still queued).
    @Test(arguments: [UInt8(1), 2])
    func flushWaitsForTheTransport(version: UInt8) async throws {
        var configuration = SmuxConfiguration()
        configuration.version = version
        let session = try MuxSession(role: .client, configuration: configuration)
        let transport = GatedOutbound()
        let (inbound, inboundInput) = AsyncStream<ByteBuffer>.makeStream()
        let running = Task { try? await session.run(inbound: inbound, outbound: transport) }
        let stream = try session.openStream()
        try await stream.write(ByteBuffer(string: "last words"))
        stream.close()
        let flushed = Atomic<Bool>(false)
        let flusher = Task {
            await session.flush()
            flushed.store(true, ordering: .sequentiallyConsistent)
        }
        try await Task.sleep(for: .milliseconds(200))
        let flushedEarly = flushed.load(ordering: .sequentiallyConsistent)
        #expect(!flushedEarly)
        #expect(session.isSending)
        transport.open()
        await flusher.value
        #expect(!session.isSending)
        let wire = String(buffer: transport.received)
        #expect(wire.contains("last words"))
        // SYN, PSH and FIN all went out (8-byte headers in v1 and v2).
        #expect(transport.received.readableBytes == 3 * 8 + "last words".utf8.count)
        // Nothing queued: returns at once; after close: returns at once.
        await session.flush()
        session.close()
        await session.flush()
        inboundInput.finish()
        await running.value
    }
}
