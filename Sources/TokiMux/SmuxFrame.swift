import NIOCore

/// smux commands (xtaci/smux `cmdSYN` … `cmdUPD`). UPD exists only in protocol version 2.
public enum SmuxCommand: UInt8, Sendable, CustomStringConvertible {
    case syn = 0
    case fin = 1
    case psh = 2
    case nop = 3
    case upd = 4

    public var description: String {
        switch self {
        case .syn: "SYN"
        case .fin: "FIN"
        case .psh: "PSH"
        case .nop: "NOP"
        case .upd: "UPD"
        }
    }
}

/// One smux frame: `ver u8 | cmd u8 | length u16 LE | streamID u32 LE | payload`.
public struct SmuxFrame: Sendable, Equatable, CustomStringConvertible {
    public static let headerSize = 8
    /// The largest payload the 16-bit length field can describe.
    public static let maxPayload = Int(UInt16.max)

    public var version: UInt8
    public var command: SmuxCommand
    public var streamID: UInt32
    /// Empty for SYN, FIN and NOP; 8 bytes for UPD.
    public var payload: ByteBuffer

    public init(version: UInt8, command: SmuxCommand, streamID: UInt32, payload: ByteBuffer = ByteBuffer()) {
        self.version = version
        self.command = command
        self.streamID = streamID
        self.payload = payload
    }

    /// A version-2 window update: how much of `streamID` the receiver has read, and its window.
    public static func windowUpdate(streamID: UInt32, consumed: UInt32, window: UInt32) -> SmuxFrame {
        var payload = ByteBuffer()
        payload.reserveCapacity(8)
        payload.writeInteger(consumed, endianness: .little)
        payload.writeInteger(window, endianness: .little)
        return SmuxFrame(version: 2, command: .upd, streamID: streamID, payload: payload)
    }

    /// `(consumed, window)` of a UPD frame.
    public var windowUpdateFields: (consumed: UInt32, window: UInt32)? {
        guard command == .upd, payload.readableBytes == 8,
              let consumed = payload.getInteger(at: payload.readerIndex, endianness: .little, as: UInt32.self),
              let window = payload.getInteger(at: payload.readerIndex + 4, endianness: .little, as: UInt32.self)
        else { return nil }
        return (consumed, window)
    }

    public var description: String {
        "v\(version) \(command) sid=\(streamID) len=\(payload.readableBytes)"
    }
}

/// A rule of the smux protocol that the peer broke. Any of these ends the session, as in Go.
public enum SmuxProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    case versionMismatch(expected: UInt8, received: UInt8)
    case unknownCommand(UInt8)
    case payloadOnControlFrame(command: SmuxCommand, length: Int)
    case windowUpdateOnVersion1
    case badWindowUpdateLength(Int)
    case frameTooLong(length: Int, limit: Int)
    case peerConsumedMoreThanSent(streamID: UInt32)
    case tooManyStreams(limit: Int)

    public var description: String {
        switch self {
        case .versionMismatch(let expected, let received):
            "smux protocol error: frame version \(received) on a version-\(expected) session"
        case .unknownCommand(let cmd):
            "smux protocol error: unknown command \(cmd)"
        case .payloadOnControlFrame(let command, let length):
            "smux protocol error: \(command) frame carries a \(length)-byte payload (must be empty)"
        case .windowUpdateOnVersion1:
            "smux protocol error: UPD frame on a version-1 session"
        case .badWindowUpdateLength(let length):
            "smux protocol error: UPD frame with a \(length)-byte payload (must be 8)"
        case .frameTooLong(let length, let limit):
            "smux protocol error: PSH frame of \(length) bytes exceeds the limit of \(limit)"
        case .peerConsumedMoreThanSent(let sid):
            "smux protocol error: peer reports more bytes consumed than were sent on stream \(sid)"
        case .tooManyStreams(let limit):
            "smux protocol error: peer opened more than \(limit) concurrent streams"
        }
    }
}

extension ByteBuffer {
    /// Writes an smux header. `length` is the payload length that follows.
    @inlinable
    public mutating func writeSmuxHeader(version: UInt8, command: SmuxCommand, length: Int, streamID: UInt32) {
        precondition(length <= SmuxFrame.maxPayload, "smux payload too long")
        // One 8-byte store: ver | cmd << 8 | len << 16 | sid << 32, little-endian.
        let word = UInt64(version) | UInt64(command.rawValue) << 8 | UInt64(UInt16(length)) << 16 | UInt64(streamID) << 32
        writeInteger(word, endianness: .little)
    }

    /// Writes a whole frame (header and payload).
    @inlinable
    public mutating func writeSmuxFrame(_ frame: SmuxFrame) {
        writeSmuxHeader(version: frame.version, command: frame.command, length: frame.payload.readableBytes, streamID: frame.streamID)
        writeImmutableBuffer(frame.payload)
    }
}

/// Cuts smux frames out of a byte stream, validating each header before its payload arrives.
///
/// It is a `NIOSingleStepByteToMessageDecoder`, so it works in a channel pipeline
/// (`ByteToMessageHandler`) as well as sans-IO through `NIOSingleStepByteToMessageProcessor`.
/// Payloads are slices of the input: no copy.
public struct SmuxFrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = SmuxFrame

    public let version: UInt8
    /// Largest PSH payload accepted. Go accepts up to 65535 whatever its own MaxFrameSize.
    public let maxPayload: Int

    public init(version: UInt8, maxPayload: Int = SmuxFrame.maxPayload) {
        precondition(version == 1 || version == 2, "smux version must be 1 or 2")
        self.version = version
        self.maxPayload = min(max(maxPayload, 1), SmuxFrame.maxPayload)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> SmuxFrame? {
        guard let header = try peekHeader(buffer) else { return nil }
        guard buffer.readableBytes >= SmuxFrame.headerSize + header.length else { return nil }
        buffer.moveReaderIndex(forwardBy: SmuxFrame.headerSize)
        let payload = buffer.readSlice(length: header.length)!
        return SmuxFrame(version: version, command: header.command, streamID: header.streamID, payload: payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> SmuxFrame? {
        try decode(buffer: &buffer)
    }

    /// Validates the header at the reader index, if all 8 bytes are there.
    @inlinable
    func peekHeader(_ buffer: ByteBuffer) throws -> (command: SmuxCommand, length: Int, streamID: UInt32)? {
        guard let word = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt64.self) else { return nil }
        let ver = UInt8(truncatingIfNeeded: word)
        let rawCommand = UInt8(truncatingIfNeeded: word >> 8)
        let length = Int(UInt16(truncatingIfNeeded: word >> 16))
        let streamID = UInt32(truncatingIfNeeded: word >> 32)
        guard ver == version else { throw SmuxProtocolError.versionMismatch(expected: version, received: ver) }
        guard let command = SmuxCommand(rawValue: rawCommand) else { throw SmuxProtocolError.unknownCommand(rawCommand) }
        switch command {
        case .syn, .fin, .nop:
            if length != 0 { throw SmuxProtocolError.payloadOnControlFrame(command: command, length: length) }
        case .upd:
            if version < 2 { throw SmuxProtocolError.windowUpdateOnVersion1 }
            if length != 8 { throw SmuxProtocolError.badWindowUpdateLength(length) }
        case .psh:
            if length > maxPayload { throw SmuxProtocolError.frameTooLong(length: length, limit: maxPayload) }
        }
        return (command, length, streamID)
    }
}
