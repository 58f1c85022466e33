import NIOCore

/// The smux session as a pure state machine: frames in, events and queued frames out.
///
/// No I/O, no locks, no tasks: `MuxSession` drives it from a transport, and tests and fuzzers drive
/// it directly. It enforces the receive budget (`canReceive`), version-2 windows (UPD) and the
/// outbound queue limit; it never blocks, it tells the caller what could not be done yet.
public struct SmuxSessionMachine: Sendable {
    public enum Event: Equatable, Sendable {
        /// Nothing for the application.
        case none
        /// The peer opened a stream; it waits in the accept queue.
        case accepted(UInt32)
        /// Data or EOF became readable on the stream.
        case readable(UInt32)
        /// Version 2: the peer's window for the stream moved; a blocked writer may continue.
        case windowUpdated(UInt32)
    }

    public enum ReadResult: Equatable, Sendable {
        case data(ByteBuffer)
        case endOfStream
        case wouldBlock
    }

    public enum StreamError: Error, Equatable, Sendable, CustomStringConvertible {
        case unknownStream(UInt32)
        case writeAfterFIN(UInt32)
        case streamIDsExhausted
        case tooManyStreams(limit: Int)

        public var description: String {
            switch self {
            case .unknownStream(let id): "smux stream \(id) is closed"
            case .writeAfterFIN(let id): "smux stream \(id): write after closeWrite (FIN already sent)"
            case .streamIDsExhausted: "smux session has used up its stream ids; a new session is needed"
            case .tooManyStreams(let limit): "smux session already has \(limit) open streams"
            }
        }
    }

    struct Stream: Sendable {
        var buffers = CircularBuffer<ByteBuffer>(initialCapacity: 4)
        var bufferedBytes = 0
        var finReceived = false
        var finSent = false
        // Version 2 flow control, all modulo 2^32 as in Go.
        var sent: UInt32 = 0
        var peerConsumed: UInt32 = 0
        var peerWindow: UInt32
        var consumed: UInt32 = 0
        var consumedSinceUpdate: UInt32 = 0

        /// Version 2: bytes the peer's window still takes; nil when the peer claims to have
        /// consumed more than was sent (a protocol violation).
        var windowRoom: Int? {
            let inflight = Int32(bitPattern: sent &- peerConsumed)
            return inflight >= 0 ? Int(Int32(bitPattern: peerWindow)) - Int(inflight) : nil
        }
    }

    public let configuration: SmuxConfiguration
    public let role: SmuxRole
    /// Open streams above which a peer's SYN is a protocol error (a count limit Go lacks).
    public let maxStreams: Int

    private var nextStreamID: UInt32
    private var idsExhausted = false
    private var streams: [UInt32: Stream] = [:]
    private var acceptQueue = CircularBuffer<UInt32>()
    /// Received payload bytes not yet read by the application (Go's bucket, inverted).
    public private(set) var unreadBytes = 0
    private var controlQueue = CircularBuffer<SmuxFrame>()
    private var dataQueue = CircularBuffer<SmuxFrame>()
    /// Payload plus header bytes of queued PSH/FIN frames.
    public private(set) var queuedDataBytes = 0
    private var queuedControlBytes = 0
    private var receivedSinceIdleCheck = false

    public init(role: SmuxRole, configuration: SmuxConfiguration = .init(), maxStreams: Int = 65536) throws {
        self.configuration = try configuration.validated()
        self.role = role
        self.maxStreams = maxStreams
        self.nextStreamID = role == .client ? 1 : 0
    }

    var version: UInt8 { configuration.version }

    // MARK: Receiving

    /// False while the receive budget is used up or the accept backlog is full: stop reading
    /// the transport until the application reads or accepts (this is the back-pressure).
    public var canReceive: Bool {
        unreadBytes < configuration.maxReceiveBuffer && acceptQueue.count < configuration.acceptBacklog
    }

    public var openStreamCount: Int { streams.count }
    public var hasOutbound: Bool { !controlQueue.isEmpty || !dataQueue.isEmpty }
    public var outboundHasRoom: Bool { queuedDataBytes < configuration.maxOutboundQueue }

    public mutating func receive(_ frame: SmuxFrame) throws -> Event {
        receivedSinceIdleCheck = true
        let id = frame.streamID
        switch frame.command {
        case .nop:
            return .none
        case .syn:
            guard streams[id] == nil else { return .none }  // duplicate SYN: ignored, as in Go
            guard streams.count < maxStreams else { throw SmuxProtocolError.tooManyStreams(limit: maxStreams) }
            streams[id] = Stream(peerWindow: configuration.initialPeerWindow)
            acceptQueue.append(id)
            return .accepted(id)
        case .fin:
            guard let index = streams.index(forKey: id) else { return .none }
            streams.values[index].finReceived = true
            return .readable(id)
        case .psh:
            let length = frame.payload.readableBytes
            guard length > 0, let index = streams.index(forKey: id) else { return .none }  // unknown id: dropped
            streams.values[index].buffers.append(frame.payload)
            streams.values[index].bufferedBytes += length
            unreadBytes += length
            return .readable(id)
        case .upd:
            guard let (consumed, window) = frame.windowUpdateFields else {
                throw SmuxProtocolError.badWindowUpdateLength(frame.payload.readableBytes)
            }
            guard let index = streams.index(forKey: id) else { return .none }
            streams.values[index].peerConsumed = consumed
            streams.values[index].peerWindow = window
            return .windowUpdated(id)
        }
    }

    /// Takes the next stream the peer opened.
    public mutating func accept() -> UInt32? {
        while let id = acceptQueue.popFirst() {
            if streams[id] != nil { return id }  // skip streams closed before being accepted
        }
        return nil
    }

    /// Reads one buffered frame's payload. In version 2 this may queue a UPD.
    public mutating func read(streamID id: UInt32) -> ReadResult {
        guard let index = streams.index(forKey: id) else { return .endOfStream }
        guard let chunk = streams.values[index].buffers.popFirst() else {
            return streams.values[index].finReceived ? .endOfStream : .wouldBlock
        }
        let n = chunk.readableBytes
        streams.values[index].bufferedBytes -= n
        unreadBytes -= n
        if version == 2 {
            let consumed = streams.values[index].consumed &+ UInt32(truncatingIfNeeded: n)
            let sinceUpdate = streams.values[index].consumedSinceUpdate &+ UInt32(truncatingIfNeeded: n)
            streams.values[index].consumed = consumed
            // Go sends UPD on the first read (consumed == n) and every maxStreamBuffer/2 bytes read.
            if sinceUpdate >= UInt32(configuration.maxStreamBuffer / 2) || consumed == UInt32(truncatingIfNeeded: n) {
                streams.values[index].consumedSinceUpdate = 0
                appendControl(.windowUpdate(streamID: id, consumed: consumed, window: UInt32(configuration.maxStreamBuffer)))
            } else {
                streams.values[index].consumedSinceUpdate = sinceUpdate
            }
        }
        return .data(chunk)
    }

    /// Whether a read would return something now (data or end of stream).
    public func isReadable(streamID id: UInt32) -> Bool {
        guard let stream = streams[id] else { return true }
        return !stream.buffers.isEmpty || stream.finReceived
    }

    // MARK: Sending

    /// Opens a stream: allocates the next id of this side's parity and queues its SYN.
    public mutating func openStream() throws -> UInt32 {
        guard !idsExhausted else { throw StreamError.streamIDsExhausted }
        guard streams.count < maxStreams else { throw StreamError.tooManyStreams(limit: maxStreams) }
        // Skip ids in use: the peer may open streams of this side's parity (Go does not check),
        // and taking over such a stream would drop its buffered bytes but not their budget.
        var id = nextStreamID
        repeat {
            let (next, overflow) = id.addingReportingOverflow(2)
            guard !overflow else {
                idsExhausted = true
                throw StreamError.streamIDsExhausted
            }
            id = next
        } while streams[id] != nil
        nextStreamID = id
        streams[id] = Stream(peerWindow: configuration.initialPeerWindow)
        appendControl(SmuxFrame(version: version, command: .syn, streamID: id))
        return id
    }

    /// Queues as much of `data` as the outbound queue (and in version 2 the peer's window) allows,
    /// cut into frames of at most `maxFrameSize`. Returns the number of bytes taken from `data`;
    /// 0 with bytes left means "blocked: wait for the writer or a UPD".
    public mutating func write(streamID id: UInt32, _ data: inout ByteBuffer) throws -> Int {
        guard let index = streams.index(forKey: id) else { throw StreamError.unknownStream(id) }
        guard !streams.values[index].finSent else { throw StreamError.writeAfterFIN(id) }
        var taken = 0
        while data.readableBytes > 0, queuedDataBytes < configuration.maxOutboundQueue {
            var n = min(data.readableBytes, configuration.maxFrameSize)
            if version == 2 {
                guard let room = streams.values[index].windowRoom else { throw SmuxProtocolError.peerConsumedMoreThanSent(streamID: id) }
                guard room > 0 else { break }
                n = min(n, room)
            }
            let payload = data.readSlice(length: n)!
            dataQueue.append(SmuxFrame(version: version, command: .psh, streamID: id, payload: payload))
            queuedDataBytes += SmuxFrame.headerSize + n
            streams.values[index].sent &+= UInt32(truncatingIfNeeded: n)
            taken += n
        }
        return taken
    }

    /// Whether `write` would take `count` bytes for this stream whole, at once: one frame's
    /// worth, room in the outbound queue and (v2) in the peer's window.
    public func canWriteAtOnce(streamID id: UInt32, count: Int) -> Bool {
        guard count <= configuration.maxFrameSize, queuedDataBytes < configuration.maxOutboundQueue,
              let stream = streams[id], !stream.finSent else { return false }
        guard version == 2 else { return true }
        return stream.windowRoom.map { $0 >= count } ?? false
    }

    /// Version 2: whether the peer's window has room for this stream now.
    public func hasSendWindow(streamID id: UInt32) -> Bool {
        guard version == 2, let stream = streams[id] else { return true }
        return stream.windowRoom.map { $0 > 0 } ?? true  // a violation: let `write` report it
    }

    /// Half close: queue FIN after the stream's data; reading continues.
    public mutating func closeWrite(streamID id: UInt32) {
        guard let index = streams.index(forKey: id), !streams.values[index].finSent else { return }
        streams.values[index].finSent = true
        dataQueue.append(SmuxFrame(version: version, command: .fin, streamID: id))
        queuedDataBytes += SmuxFrame.headerSize
    }

    /// Full close: FIN if not sent yet, then forget the stream; unread data is dropped and its
    /// bytes return to the receive budget. Later frames for this id are ignored.
    public mutating func close(streamID id: UInt32) {
        closeWrite(streamID: id)
        guard let stream = streams.removeValue(forKey: id) else { return }
        unreadBytes -= stream.bufferedBytes
    }

    /// Queues a keepalive NOP (stream id 0).
    public mutating func queueKeepAlive() {
        appendControl(SmuxFrame(version: version, command: .nop, streamID: 0))
    }

    private mutating func appendControl(_ frame: SmuxFrame) {
        controlQueue.append(frame)
        queuedControlBytes += SmuxFrame.headerSize + frame.payload.readableBytes
    }

    /// Keepalive: true if any frame arrived since the previous check.
    public mutating func checkIdle() -> Bool {
        defer { receivedSinceIdleCheck = false }
        return receivedSinceIdleCheck
    }

    /// Moves queued frames into `buffer` (control frames first, then data in submission order)
    /// until `maxBatchSize` would be exceeded. Returns the number of frames written.
    @discardableResult
    public mutating func takeOutbound(into buffer: inout ByteBuffer) -> Int {
        let limit = configuration.maxBatchSize
        var count = 0
        while let frame = controlQueue.first, buffer.readableBytes + SmuxFrame.headerSize + frame.payload.readableBytes <= limit {
            buffer.writeSmuxFrame(controlQueue.removeFirst())
            queuedControlBytes -= SmuxFrame.headerSize + frame.payload.readableBytes
            count += 1
        }
        while let frame = dataQueue.first, buffer.readableBytes + SmuxFrame.headerSize + frame.payload.readableBytes <= limit {
            buffer.writeSmuxFrame(dataQueue.removeFirst())
            queuedDataBytes -= SmuxFrame.headerSize + frame.payload.readableBytes
            count += 1
        }
        return count
    }

    /// Bytes `takeOutbound` would write now at most (for sizing the batch buffer).
    public var pendingOutboundBytes: Int {
        min(queuedControlBytes + queuedDataBytes, configuration.maxBatchSize)
    }
}
