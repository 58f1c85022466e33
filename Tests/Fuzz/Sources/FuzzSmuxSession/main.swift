// smux session machine (SmuxSessionMachine) driven by a hostile peer and a well-behaved
// application, checked against a small model of what it must do.
//
// Input: [configuration bytes][operation][operation]...  Operations: a raw transport message
// from the peer, a well-formed peer frame, or an application call (accept, read, write,
// closeWrite, close, openStream, takeOutbound, keepalive).
// The peer's bytes go through SmuxFrameDecoder and into the machine the way MuxSession's read
// loop does: one transport message at a time, and only while `canReceive` is true.
// Invariants:
//  - receive throws only SmuxProtocolError, and the session ends there;
//  - bounded memory: after each message, unread bytes < maxReceiveBuffer + that message's
//    payload, and the accept queue < acceptBacklog + that message's SYNs (back-pressure works);
//    open streams <= maxStreams; queued outbound data < maxOutboundQueue + one frame;
//  - unreadBytes and openStreamCount always equal the model's;
//  - reads return exactly the peer's payloads, in order, then end of stream after FIN;
//  - accept returns the streams the peer opened, once each, in order;
//  - openStream ids have this side's parity, grow, and never take an id that is in use;
//  - write takes no more than offered and, in version 2, never exceeds the peer's window;
//  - takeOutbound writes well-formed frames of at most maxBatchSize bytes, always makes
//    progress, and carries exactly the written bytes in order, FIN last; v2 UPDs report
//    what was read.
import FuzzSupport
import NIOCore
import TokiMux

/// What the model knows about one open stream.
struct StreamModel {
    var unread: [ByteBuffer] = []
    var finReceived = false
    var openedByPeer: Bool
    // Outbound.
    var written: UInt64 = 0
    var emitted: UInt64 = 0
    var finQueued = false
    var finEmitted = false
    // Version 2.
    var peerConsumed: UInt32 = 0
    var peerWindow: UInt32
    var sent: UInt32 = 0
    var consumed: UInt32 = 0
    var unreadBytes: Int { unread.reduce(0) { $0 + $1.readableBytes } }
}

/// Byte `offset` of what the application writes on stream `id` (so the peer side can check it).
@inline(__always)
func pattern(_ id: UInt32, _ offset: UInt64) -> UInt8 {
    UInt8(truncatingIfNeeded: UInt64(id) &* 131 &+ offset &* 7 &+ offset >> 8)
}

struct Harness {
    var machine: SmuxSessionMachine
    let config: SmuxConfiguration
    let maxStreams: Int
    let role: SmuxRole
    var decoder: SmuxFrameDecoder
    var pending: ByteBuffer?
    var streams: [UInt32: StreamModel] = [:]
    /// Streams the peer opened that the application has not accepted yet, in order.
    var acceptable: [UInt32] = []
    /// Stream ids the application knows (accepted or opened), for its calls.
    var known: [UInt32] = []
    var lastOpened: UInt32?
    var openedIDs: Set<UInt32> = []
    /// Per id, the most bytes ever read (across re-opened streams): bounds what a UPD reports.
    var maxConsumed: [UInt32: UInt32] = [:]
    /// Output state of streams closed while frames of theirs may still be queued, oldest first
    /// (the queue is FIFO, so their frames come before any of a later stream with the same id).
    var outbound: [UInt32: [StreamModel]] = [:]
    var ended = false

    var version: UInt8 { config.version }

    func checkTotals(_ context: @autoclosure () -> String) {
        let unread = streams.values.reduce(0) { $0 + $1.unreadBytes }
        check(machine.unreadBytes == unread, "unreadBytes \(machine.unreadBytes) != model \(unread) after \(context())")
        check(machine.openStreamCount == streams.count, "openStreamCount \(machine.openStreamCount) != model \(streams.count) after \(context())")
        check(streams.count <= maxStreams, "\(streams.count) streams open, limit \(maxStreams)")
        // A write stops at the limit, with at most one frame over it; a FIN (closeWrite) is queued
        // whatever the queue holds, so each stream may add one FIN on top.
        let pendingFINs = streams.values.filter { $0.finQueued && !$0.finEmitted }.count + outbound.values.reduce(0) { $0 + $1.count }
        check(machine.queuedDataBytes < config.maxOutboundQueue + SmuxFrame.headerSize * (1 + pendingFINs) + config.maxFrameSize,
              "outbound queue \(machine.queuedDataBytes) over its limit \(config.maxOutboundQueue) (\(pendingFINs) FINs pending)")
    }

    /// One transport message from the peer.
    mutating func deliver(_ message: ByteBuffer) {
        guard !ended, machine.canReceive else { return }  // MuxSession stops reading here
        let unreadBefore = machine.unreadBytes
        let acceptableBefore = acceptable.count
        var buffer: ByteBuffer
        if var carried = pending {
            carried.writeImmutableBuffer(message)
            buffer = carried
        } else {
            buffer = message
        }
        var payloadBytes = 0
        var syns = 0
        do {
            while let frame = try decoder.decode(buffer: &buffer) {
                payloadBytes += frame.payload.readableBytes
                if frame.command == .syn { syns += 1 }
                let event = try machine.receive(frame)
                apply(frame, event)
            }
        } catch is SmuxProtocolError {
            ended = true  // the session closes; nothing more to check
            return
        } catch {
            check(false, "receive threw a non-protocol error: \(error)")
        }
        pending = buffer.readableBytes > 0 ? buffer : nil
        checkTotals("a peer message")
        check(machine.unreadBytes < config.maxReceiveBuffer + payloadBytes && machine.unreadBytes <= unreadBefore + payloadBytes,
              "unread bytes \(machine.unreadBytes) beyond the budget \(config.maxReceiveBuffer) + \(payloadBytes)")
        check(acceptable.count < config.acceptBacklog + syns && acceptable.count <= acceptableBefore + syns,
              "accept queue \(acceptable.count) beyond the backlog \(config.acceptBacklog) + \(syns)")
    }

    /// The model's side of `receive`.
    mutating func apply(_ frame: SmuxFrame, _ event: SmuxSessionMachine.Event) {
        let id = frame.streamID
        switch frame.command {
        case .nop:
            check(event == .none, "NOP gave \(event)")
        case .syn:
            if streams[id] != nil {
                check(event == .none, "duplicate SYN \(id) gave \(event)")
            } else {
                check(event == .accepted(id), "SYN \(id) gave \(event)")
                streams[id] = StreamModel(openedByPeer: true, peerWindow: config.initialPeerWindow)
                acceptable.append(id)
            }
        case .fin:
            if streams[id] != nil {
                check(event == .readable(id), "FIN \(id) gave \(event)")
                streams[id]!.finReceived = true
            } else {
                check(event == .none, "FIN for unknown \(id) gave \(event)")
            }
        case .psh:
            if streams[id] != nil, frame.payload.readableBytes > 0 {
                check(event == .readable(id), "PSH \(id) gave \(event)")
                streams[id]!.unread.append(frame.payload)
            } else {
                check(event == .none, "dropped PSH \(id) gave \(event)")
            }
        case .upd:
            if streams[id] != nil, let fields = frame.windowUpdateFields {
                check(event == .windowUpdated(id), "UPD \(id) gave \(event)")
                streams[id]!.peerConsumed = fields.consumed
                streams[id]!.peerWindow = fields.window
            } else {
                check(event == .none, "UPD for unknown \(id) gave \(event)")
            }
        }
    }

    mutating func accept() {
        let got = machine.accept()
        if acceptable.isEmpty {
            check(got == nil, "accept returned \(String(describing: got)) with nothing to accept")
        } else {
            let expected = acceptable.removeFirst()
            check(got == expected, "accept returned \(String(describing: got)), expected \(expected)")
            known.append(expected)
        }
        checkTotals("accept")
    }

    mutating func read(_ id: UInt32) {
        let result = machine.read(streamID: id)
        guard var stream = streams[id] else {
            check(result == .endOfStream, "read of closed stream \(id) gave \(result)")
            return
        }
        if stream.unread.isEmpty {
            check(result == (stream.finReceived ? .endOfStream : .wouldBlock), "read \(id) gave \(result), model fin=\(stream.finReceived)")
        } else {
            let expected = stream.unread.removeFirst()
            check(result == .data(expected), "read \(id) returned other bytes than the peer sent")
            stream.consumed &+= UInt32(truncatingIfNeeded: expected.readableBytes)
            maxConsumed[id] = max(maxConsumed[id] ?? 0, stream.consumed)
        }
        streams[id] = stream
        check(machine.isReadable(streamID: id) == (!stream.unread.isEmpty || stream.finReceived), "isReadable(\(id)) disagrees")
        checkTotals("read")
    }

    mutating func write(_ id: UInt32, count: Int) {
        var data = ByteBuffer()
        let base = streams[id]?.written ?? 0
        for k in 0..<UInt64(count) { data.writeInteger(pattern(id, base + k)) }
        let before = streams[id]
        do {
            let taken = try machine.write(streamID: id, &data)
            guard var stream = before else {
                check(false, "write to closed stream \(id) succeeded")
                return
            }
            check(!stream.finQueued, "write after closeWrite on \(id) succeeded")
            check(taken >= 0 && taken <= count && data.readableBytes == count - taken, "write took \(taken) of \(count)")
            stream.written += UInt64(taken)
            stream.sent &+= UInt32(truncatingIfNeeded: taken)
            if version == 2, taken > 0 {
                let inflight = Int(Int32(bitPattern: stream.sent &- stream.peerConsumed))
                check(inflight <= Int(Int32(bitPattern: stream.peerWindow)),
                      "v2 write exceeded the peer window on \(id): in flight \(inflight), window \(stream.peerWindow)")
            }
            if taken == 0, count > 0, version == 1 {
                check(!machine.outboundHasRoom, "v1 write took nothing with room in the queue")
            }
            streams[id] = stream
        } catch let error as SmuxSessionMachine.StreamError {
            switch error {
            case .unknownStream(let sid): check(sid == id && before == nil, "unknownStream(\(sid)) for open stream \(id)")
            case .writeAfterFIN(let sid): check(sid == id && before?.finQueued == true, "writeAfterFIN(\(sid)) without closeWrite")
            default: check(false, "write threw \(error)")
            }
        } catch let error as SmuxProtocolError {
            guard case .peerConsumedMoreThanSent(let sid) = error, sid == id, let stream = before, version == 2 else {
                check(false, "write threw \(error)")
                return
            }
            check(Int32(bitPattern: stream.sent &- stream.peerConsumed) < 0, "peerConsumedMoreThanSent while it did not")
        } catch {
            check(false, "write threw \(error)")
        }
        checkTotals("write")
    }

    mutating func closeWrite(_ id: UInt32) {
        machine.closeWrite(streamID: id)
        if streams[id] != nil { streams[id]!.finQueued = true }
        checkTotals("closeWrite")
    }

    mutating func close(_ id: UInt32) {
        machine.close(streamID: id)
        if var stream = streams.removeValue(forKey: id), !stream.finEmitted {
            stream.finQueued = true
            outbound[id, default: []].append(stream)
        }
        acceptable.removeAll { $0 == id }
        known.removeAll { $0 == id }  // an application does not use a stream after closing it
        checkTotals("close")
    }

    mutating func openStream() {
        let before = streams.count
        do {
            let id = try machine.openStream()
            check(streams[id] == nil, "openStream returned \(id), which is already in use")
            check(id % 2 == (role == .client ? 1 : 0), "openStream id \(id) has the wrong parity for \(role)")
            if let last = lastOpened { check(id > last, "openStream ids do not grow: \(last) then \(id)") }
            lastOpened = id
            openedIDs.insert(id)
            streams[id] = StreamModel(openedByPeer: false, peerWindow: config.initialPeerWindow)
            known.append(id)
        } catch let error as SmuxSessionMachine.StreamError {
            switch error {
            case .tooManyStreams: check(before >= maxStreams, "tooManyStreams with \(before) of \(maxStreams)")
            case .streamIDsExhausted: break
            default: check(false, "openStream threw \(error)")
            }
        } catch {
            check(false, "openStream threw \(error)")
        }
        checkTotals("openStream")
    }

    mutating func takeOutbound() {
        let hadOutbound = machine.hasOutbound
        let pendingBytes = machine.pendingOutboundBytes
        var batch = ByteBuffer()
        let count = machine.takeOutbound(into: &batch)
        check(batch.readableBytes <= config.maxBatchSize, "batch of \(batch.readableBytes) bytes over maxBatchSize \(config.maxBatchSize)")
        check(batch.readableBytes <= pendingBytes, "batch of \(batch.readableBytes) bytes, pendingOutboundBytes said \(pendingBytes)")
        check(!hadOutbound || count > 0, "takeOutbound made no progress")
        var peerDecoder = SmuxFrameDecoder(version: version, maxPayload: config.maxFrameSize)
        var frames = 0
        do {
            while let frame = try peerDecoder.decode(buffer: &batch) {
                frames += 1
                emitted(frame)
            }
        } catch {
            check(false, "takeOutbound wrote a frame the peer rejects: \(error)")
        }
        check(batch.readableBytes == 0 && frames == count, "takeOutbound wrote \(count) frames, \(frames) decode, \(batch.readableBytes) bytes left")
    }

    /// Checks one frame the machine sent against what the application did.
    mutating func emitted(_ frame: SmuxFrame) {
        let id = frame.streamID
        switch frame.command {
        case .nop:
            check(id == 0, "NOP on stream \(id)")
        case .syn:
            check(openedIDs.contains(id), "SYN sent for stream \(id), which openStream never returned")
        case .upd:
            check(version == 2, "UPD in v1")
            let fields = frame.windowUpdateFields!
            let read = maxConsumed[id] ?? 0
            check(fields.window == UInt32(config.maxStreamBuffer), "UPD window \(fields.window)")
            check(fields.consumed <= read && fields.consumed > 0, "UPD consumed \(fields.consumed), read \(read)")
        case .psh, .fin:
            let isOpen = outbound[id] == nil
            guard var stream = outbound[id]?.first ?? streams[id] else {
                check(false, "\(frame.command) for stream \(id) the application never wrote to")
                return
            }
            check(!stream.finEmitted, "\(frame.command) on \(id) after its FIN")
            if frame.command == .fin {
                check(stream.finQueued || !isOpen, "FIN on \(id) without closeWrite or close")
                check(stream.emitted == stream.written, "FIN on \(id) before all its data")
                stream.finEmitted = true
            } else {
                check(frame.payload.readableBytes <= config.maxFrameSize, "PSH over maxFrameSize")
                var offset = stream.emitted
                for b in frame.payload.readableBytesView {
                    check(b == pattern(id, offset), "stream \(id) byte \(offset) corrupted on the way out")
                    offset += 1
                }
                stream.emitted = offset
                check(stream.emitted <= stream.written, "more bytes sent on \(id) than written")
            }
            if isOpen {
                streams[id] = stream
            } else if stream.finEmitted {
                outbound[id]!.removeFirst()
                if outbound[id]!.isEmpty { outbound[id] = nil }
            } else {
                outbound[id]![0] = stream
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    var config = SmuxConfiguration()
    config.version = input.bool() ? 2 : 1
    config.maxReceiveBuffer = input.int(in: 1...65536)
    config.maxStreamBuffer = input.int(in: 1...config.maxReceiveBuffer)
    config.acceptBacklog = input.int(in: 1...8)
    config.maxFrameSize = input.int(in: 1...65535)
    config.maxReceiveFrameSize = input.int(in: 1...65535)
    config.maxBatchSize = SmuxFrame.headerSize + max(config.maxFrameSize, 8) + input.int(in: 0...255)
    config.maxOutboundQueue = input.int(in: 1...65536)
    config.initialPeerWindow = input.uint32()
    let role: SmuxRole = input.bool() ? .client : .server
    let maxStreams = input.int(in: 1...16)
    let machine = try! SmuxSessionMachine(role: role, configuration: config, maxStreams: maxStreams)
    var h = Harness(machine: machine, config: config, maxStreams: maxStreams, role: role,
                    decoder: SmuxFrameDecoder(version: config.version, maxPayload: config.maxReceiveFrameSize))

    func pick(_ h: Harness, _ choice: UInt8) -> UInt32? {
        h.known.isEmpty ? nil : h.known[Int(choice) % h.known.count]
    }

    while !input.isAtEnd, !h.ended {
        switch input.byte() % 12 {
        case 0:  // raw bytes from the peer
            h.deliver(input.takeBuffer(input.int(in: 0...512)))
        case 1, 2:  // a well-formed frame from the peer
            let command = SmuxCommand(rawValue: input.byte() % (h.version == 2 ? 5 : 4))!
            let id = UInt32(input.byte() % 16)
            var frame = SmuxFrame(version: h.version, command: command, streamID: id)
            if command == .psh {
                frame.payload = ByteBuffer(repeating: input.byte(), count: input.int(in: 0...min(4096, config.maxReceiveFrameSize)))
            } else if command == .upd {
                frame = .windowUpdate(streamID: id, consumed: input.uint32(), window: input.uint32())
            }
            var message = ByteBuffer()
            message.writeSmuxFrame(frame)
            h.deliver(message)
        case 3:
            h.accept()
        case 4, 5:
            if let id = pick(h, input.byte()) { h.read(id) }
        case 6:
            if let id = pick(h, input.byte()) { h.write(id, count: input.int(in: 0...70000)) }
        case 7:
            if let id = pick(h, input.byte()) { h.closeWrite(id) }
        case 8:
            if let id = pick(h, input.byte()) { h.close(id) }
        case 9:
            h.openStream()
        case 10:
            h.takeOutbound()
        default:
            h.machine.queueKeepAlive()
            _ = h.machine.checkIdle()
        }
        // The application drains the outbound queue now and then, as the writer task does.
        if h.machine.queuedDataBytes >= config.maxOutboundQueue { h.takeOutbound() }
    }
    return 0
}

runLibFuzzer(fuzz)
