// LZ4 link codec (LZ4LinkDecoder, LZ4LinkEncoder; format in Sources/TokiTunnel/LZ4Link.swift).
//
// Input: [mode byte][limit byte][operations...]
// Mode "hostile": a sequence of messages (raw bytes, large stored ones, or LZ4 blocks made
// against the stream history, optionally damaged) into one decoder, checked against a model
// that keeps its own copy of the history and decodes with liblz4 directly:
//  - only LZ4LinkError is thrown; after an error every non-RESET message is rejected;
//  - output is never larger than maxDecompressedSize, and equals the model's plaintext;
//  - a well-formed message (valid header, block that liblz4 decodes to the declared size
//    within the limit) is always accepted;
//  - memory held stays at the fixed 128 KiB window.
// Mode "round trip": batches through an encoder and a decoder (with state releases, RESET
// messages and copies of both): decode(encode(x)) == x, messages at most 1 + x bytes, and
// copies do not disturb each other (copy-on-write).
import CLZ4Reference
import FuzzSupport
import NIOCore
import TokiTunnel

let limits = [0, 1, 100, 4096, 65536, 65537, 70000, 131072, 300000]
let allocator = ByteBufferAllocator()

/// Plaintext described by the input: literal bytes, or a run long enough to cross the 64 KiB
/// history and the 128 KiB window with a short input. Runs share a per-input budget (`budget`
/// bytes), so that one input stays fast.
func plaintext(_ input: inout FuzzInput, max: Int) -> [UInt8] {
    if input.bool() {
        return Array(input.take(input.int(in: 0...min(max, 4096))))
    }
    let n = min(input.int(in: 0...min(max, 70_000)), budget)
    budget -= n
    let period = input.int(in: 1...16)
    let seed = input.byte()
    var out = [UInt8](repeating: 0, count: n)
    out.withUnsafeMutableBufferPointer { p in
        for i in 0..<n { p[i] = UInt8(truncatingIfNeeded: Int(seed) &+ (i % period) &* 37 &+ i >> 12) }
    }
    return out
}

/// Bytes of runs left for the current input.
nonisolated(unsafe) var budget = 0
let budgetPerInput = 300_000

// MARK: - Hostile messages against a model

struct Model {
    var history: [UInt8] = []
    var broken = false

    mutating func append(_ bytes: some Collection<UInt8>) {
        history.append(contentsOf: bytes)
        if history.count > 4 * LZ4Link.historySize { history.removeFirst(history.count - LZ4Link.historySize) }
    }

    var dictionary: ArraySlice<UInt8> { history.suffix(LZ4Link.historySize) }

    /// liblz4 straight on the model's history; nil if it fails or gives another size.
    func referenceDecode(_ block: [UInt8], declared: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: declared)
        let dict = Array(dictionary)
        let n = block.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                dict.withUnsafeBufferPointer { d in
                    LZ4_decompress_safe_usingDict(
                        UnsafeRawPointer(src.baseAddress!).assumingMemoryBound(to: CChar.self),
                        UnsafeMutableRawPointer(dst.baseAddress!).assumingMemoryBound(to: CChar.self),
                        Int32(block.count), Int32(declared),
                        d.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, Int32(d.count))
                }
            }
        }
        return n == declared ? out : nil
    }

    /// An LZ4 block of `plain` that may reference the model's history (as a real peer's would).
    func compress(_ plain: [UInt8], acceleration: Int32) -> [UInt8] {
        let stream = LZ4_createStream()!
        defer { LZ4_freeStream(stream) }
        let dict = Array(dictionary)
        dict.withUnsafeBufferPointer { d in
            _ = LZ4_loadDict(stream, d.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, Int32(d.count))
        }
        let bound = Int(LZ4_compressBound(Int32(plain.count)))
        var out = [UInt8](repeating: 0, count: bound)
        let n = dict.withUnsafeBufferPointer { _ in  // keeps the dictionary alive while compressing
            plain.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    LZ4_compress_fast_continue(
                        stream, UnsafeRawPointer(src.baseAddress!).assumingMemoryBound(to: CChar.self),
                        UnsafeMutableRawPointer(dst.baseAddress!).assumingMemoryBound(to: CChar.self),
                        Int32(plain.count), Int32(bound), acceleration)
                }
            }
        }
        return Array(out.prefix(Int(n)))
    }
}

func varint(_ value: Int) -> [UInt8] {
    var v = UInt32(value)
    var out: [UInt8] = []
    while v >= 0x80 {
        out.append(UInt8(truncatingIfNeeded: v) | 0x80)
        v >>= 7
    }
    out.append(UInt8(v))
    return out
}

/// The header of a compressed message as the format defines it: (declared size, block), or
/// nil when the size field is malformed (truncated, over 5 bytes or 2^32-1, not shortest, zero).
func parseCompressed(_ body: ArraySlice<UInt8>) -> (declared: Int, block: [UInt8])? {
    var value: UInt64 = 0
    var index = body.startIndex
    var shift: UInt64 = 0
    while true {
        guard index < body.endIndex, shift <= 28 else { return nil }
        let byte = body[index]
        value |= UInt64(byte & 0x7F) << shift
        index += 1
        if byte & 0x80 == 0 {
            if byte == 0 && shift > 0 { return nil }
            break
        }
        shift += 7
    }
    guard value > 0, value <= UInt64(UInt32.max) else { return nil }
    return (Int(value), Array(body[index...]))
}

func hostile(_ input: inout FuzzInput, limit: Int) {
    var decoder = LZ4LinkDecoder(maxDecompressedSize: limit)
    var model = Model()
    while !input.isAtEnd {
        var message: [UInt8]
        switch input.byte() % 4 {
        case 0:  // anything
            message = Array(input.take(input.int(in: 0...4096)))
        case 1:  // a stored message, possibly large
            message = [input.byte() & 0x03 & ~LZ4Link.flagCompressed] + plaintext(&input, max: 70_000)
        default:  // a compressed message made against the history, maybe with a wrong size or a damaged byte
            let flags = LZ4Link.flagCompressed | (input.bool() ? LZ4Link.flagReset : 0)
            if flags & LZ4Link.flagReset != 0 { model.history.removeAll() }  // what the block may reference
            let plain = plaintext(&input, max: 70_000)
            if plain.isEmpty { continue }
            var block = model.compress(plain, acceleration: Int32(input.int(in: 1...8)))
            var declared = plain.count
            switch input.byte() % 4 {
            case 0: declared = max(1, declared + input.int(in: -3...3))
            case 1 where !block.isEmpty: block[input.int(in: 0...block.count - 1)] ^= input.byte() | 1
            case 2 where !block.isEmpty: block.removeLast(input.int(in: 1...block.count))
            default: break
            }
            message = [flags] + varint(declared) + block
        }
        step(&decoder, &model, message, limit: limit)
        check(decoder.memoryInUse <= 2 * LZ4Link.historySize, "decoder holds \(decoder.memoryInUse) bytes")
    }
}

func step(_ decoder: inout LZ4LinkDecoder, _ model: inout Model, _ message: [UInt8], limit: Int) {
    let result: Result<ByteBuffer, LZ4LinkError>
    do {
        result = .success(try decoder.decode(ByteBuffer(bytes: message), allocator: allocator))
    } catch let error as LZ4LinkError {
        result = .failure(error)
    } catch {
        check(false, "decode threw a non-LZ4LinkError: \(error)")
        return
    }
    if case .success(let out) = result {
        check(out.readableBytes <= limit, "decoded \(out.readableBytes) bytes, limit \(limit)")
    }
    // The model's verdict.
    guard let flags = message.first, flags & ~LZ4Link.knownFlags == 0 else {
        check(!result.isSuccess, "accepted a message with no or unknown flags")
        model.broken = true
        return
    }
    if flags & LZ4Link.flagReset != 0 {
        model.history.removeAll()
        model.broken = false
    } else if model.broken {
        check(result.error == .streamBroken, "after an error, accepted a message without RESET: \(result)")
        return
    }
    let body = message.dropFirst()
    if flags & LZ4Link.flagCompressed == 0 {
        if body.count <= limit {
            check(result.output == Array(body), "stored message not returned as is: \(result)")
            model.append(body)
        } else {
            check(result.error == .sizeOverLimit(size: body.count, limit: limit), "stored message over the limit: \(result)")
            model.broken = true
        }
        return
    }
    if let (declared, block) = parseCompressed(body), declared <= limit, !block.isEmpty,
       let plain = model.referenceDecode(block, declared: declared) {
        check(result.output == plain, "a valid compressed message decoded wrongly: \(result)")
        model.append(plain)
        return
    }
    // Invalid (or liblz4 rejects it on the model's history): the decoder must reject it too.
    check(!result.isSuccess, "accepted a compressed message that liblz4 rejects on the same history")
    model.broken = true
}

extension Result where Success == ByteBuffer, Failure == LZ4LinkError {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var output: [UInt8]? { if case .success(let b) = self { Array(b.readableBytesView) } else { nil } }
    var error: LZ4LinkError? { if case .failure(let e) = self { e } else { nil } }
}

// MARK: - Round trip

func roundTrip(_ input: inout FuzzInput, limit: Int) {
    var encoder = LZ4LinkEncoder(acceleration: Int32(input.int(in: 1...16)), maxMessageSize: limit)
    var decoder = LZ4LinkDecoder(maxDecompressedSize: limit)

    /// `copy`: the encoder is a copy that may share its state, so it may start a new stream
    /// although `nextMessageResetsStream` says it won't (as documented).
    func send(_ plain: [UInt8], _ encoder: inout LZ4LinkEncoder, _ decoder: inout LZ4LinkDecoder, copy: Bool = false) {
        let resets = encoder.nextMessageResetsStream
        let message = encoder.encode(ByteBuffer(bytes: plain), allocator: allocator)
        check(message.readableBytes >= 1 && message.readableBytes <= LZ4Link.maxMessageSize(forBatchSize: plain.count),
              "message of \(message.readableBytes) bytes for a \(plain.count)-byte batch")
        let flags = message.getInteger(at: message.readerIndex, as: UInt8.self)!
        check(flags & ~LZ4Link.knownFlags == 0, "encoder set unknown flags \(flags)")
        check((flags & LZ4Link.flagReset != 0) == resets || (copy && !resets && !plain.isEmpty),
              "RESET flag \(flags) but nextMessageResetsStream was \(resets)")
        do {
            let out = try decoder.decode(message, allocator: allocator)
            check(out.readableBytesView.elementsEqual(plain), "round trip changed a \(plain.count)-byte batch")
        } catch {
            check(false, "decoder rejected the encoder's message: \(error)")
        }
    }

    while !input.isAtEnd {
        switch input.byte() % 8 {
        case 0:
            encoder.releaseState()
            if input.bool() { decoder.releaseState() }  // safe: the next message carries RESET
            check(encoder.memoryInUse == 0, "releaseState kept memory")
        case 1:
            let reset = encoder.encodeReset(allocator: allocator)
            check(reset.readableBytesView.elementsEqual([LZ4Link.resetMessageByte]), "encodeReset message")
            do {
                let out = try decoder.decode(reset, allocator: allocator)
                check(out.readableBytes == 0 && decoder.memoryInUse == 0, "RESET message left data or memory")
            } catch {
                check(false, "decoder rejected the RESET message: \(error)")
            }
        case 2:
            // Copies: each pair must work on its own, and the originals must carry on unharmed.
            var encoderCopy = encoder
            var decoderCopy = decoder
            // While the copy lives, either one may be the one that starts a new stream.
            send(plaintext(&input, max: limit), &encoderCopy, &decoderCopy, copy: true)
            send(plaintext(&input, max: limit), &encoder, &decoder, copy: true)
        default:
            send(plaintext(&input, max: limit), &encoder, &decoder)
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    budget = budgetPerInput
    let roundTripMode = input.bool()
    let limit = limits[Int(input.byte()) % limits.count]
    if roundTripMode {
        roundTrip(&input, limit: limit)
    } else {
        hostile(&input, limit: limit)
    }
    return 0
}

runLibFuzzer(fuzz)
