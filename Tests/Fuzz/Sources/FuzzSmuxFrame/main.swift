// smux frame decoder (SmuxFrameDecoder), v1 and v2, on arbitrary bytes in arbitrary splits.
//
// Input: [config byte][maxPayload u16][split plan][stream bytes...]
// Invariants:
//  - only SmuxProtocolError is thrown;
//  - every frame obeys the header rules (version, empty SYN/FIN/NOP, 8-byte UPD only in v2,
//    PSH no longer than maxPayload);
//  - the frames re-encode to exactly the bytes they were decoded from (round trip);
//  - feeding the stream in pieces (as MuxSession's read loop does: carry the undecoded tail
//    into the next message) gives the same frames and the same error as feeding it at once,
//    and a bad header is rejected as soon as its 8 bytes are in, before its payload.
import FuzzSupport
import NIOCore
import TokiMux

struct Outcome {
    var frames: [SmuxFrame] = []
    /// Bytes decoded into frames.
    var consumed = 0
    var error: SmuxProtocolError?
    /// With the split feed: stream bytes delivered when the error was thrown.
    var deliveredAtError = 0
}

func decodeAll(_ pieces: [ByteBuffer], version: UInt8, maxPayload: Int) -> Outcome {
    var decoder = SmuxFrameDecoder(version: version, maxPayload: maxPayload)
    var outcome = Outcome()
    var pending: ByteBuffer?
    var delivered = 0
    for (index, piece) in pieces.enumerated() {
        var buffer: ByteBuffer
        if var carried = pending {
            carried.writeImmutableBuffer(piece)
            buffer = carried
        } else {
            buffer = piece
        }
        delivered += piece.readableBytes
        do {
            // The last piece goes through decodeLast, as at end of stream.
            while let frame = try (index == pieces.count - 1
                                   ? decoder.decodeLast(buffer: &buffer, seenEOF: true)
                                   : decoder.decode(buffer: &buffer)) {
                outcome.frames.append(frame)
                outcome.consumed += SmuxFrame.headerSize + frame.payload.readableBytes
            }
        } catch let error as SmuxProtocolError {
            outcome.error = error
            outcome.deliveredAtError = delivered
            return outcome
        } catch {
            check(false, "SmuxFrameDecoder threw a non-protocol error: \(error)")
        }
        pending = buffer.readableBytes > 0 ? buffer : nil
    }
    return outcome
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let version: UInt8 = input.bool() ? 2 : 1
    let rawLimit = Int(input.uint16())
    let maxPayload = rawLimit == 0 ? SmuxFrame.maxPayload : rawLimit
    let plan = input.splitPlan()
    let stream = input.rest()

    let whole = decodeAll(stream.isEmpty ? [] : [ByteBuffer(bytes: stream)], version: version, maxPayload: maxPayload)
    let split = decodeAll(pieces(of: stream, plan: plan), version: version, maxPayload: maxPayload)

    // Header rules, and the round trip to the exact input bytes.
    var reencoded = ByteBuffer()
    for frame in whole.frames {
        check(frame.version == version, "frame \(frame) on a v\(version) decoder")
        let length = frame.payload.readableBytes
        switch frame.command {
        case .syn, .fin, .nop: check(length == 0, "control frame with payload: \(frame)")
        case .upd: check(version == 2 && length == 8 && frame.windowUpdateFields != nil, "bad UPD accepted: \(frame)")
        case .psh: check(length <= min(maxPayload, SmuxFrame.maxPayload), "PSH over the limit \(maxPayload): \(frame)")
        }
        reencoded.writeSmuxFrame(frame)
    }
    check(reencoded.readableBytesView.elementsEqual(stream.prefix(whole.consumed)),
          "frames do not re-encode to the bytes they came from")

    // What is left after the last frame is an incomplete frame, unless an error stopped decoding.
    let left = stream.count - whole.consumed
    if whole.error == nil, left >= SmuxFrame.headerSize {
        let length = Int(stream[whole.consumed + 2]) | Int(stream[whole.consumed + 3]) << 8
        check(left < SmuxFrame.headerSize + length, "a complete frame was left undecoded")
    }

    // Split feed == whole feed.
    check(split.frames == whole.frames, "split feed decoded \(split.frames.count) frames, whole feed \(whole.frames.count)")
    check(split.error == whole.error, "split feed error \(String(describing: split.error)) != \(String(describing: whole.error))")
    if whole.error != nil {
        // Rejected on the piece that completed the bad header (not later, after its payload).
        let headerEnd = whole.consumed + SmuxFrame.headerSize
        check(split.deliveredAtError >= headerEnd, "error before the bad header was complete")
        let lastPiece = pieces(of: stream, plan: plan).reduce(into: (delivered: 0, size: 0)) { acc, piece in
            if acc.delivered < split.deliveredAtError {
                acc.delivered += piece.readableBytes
                acc.size = piece.readableBytes
            }
        }.size
        check(split.deliveredAtError - lastPiece < headerEnd, "bad header rejected only after more bytes arrived")
    }
    return 0
}

runLibFuzzer(fuzz)
