// NDJSON line framer (NDJSONLineFramer) on arbitrary bytes in arbitrary splits.
//
// Input: [limit byte][split plan][stream bytes...]
// Invariants, against the obvious model (split the whole stream on "\n", trim ASCII space,
// drop blank lines; a line is too long when its raw length, "\n" excluded, is over the limit):
//  - the framer returns exactly the model's lines, in order, whatever the split;
//  - it throws LineTooLong if and only if the stream has a too-long line, and only after
//    returning every line before it;
//  - after draining, it holds at most `limit` bytes (bounded memory);
//  - only LineTooLong is thrown.
import FuzzSupport
import NIOCore
import TokiProtocol

func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (b >= 0x09 && b <= 0x0D) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let limit = input.int(in: 1...300)
    let plan = input.splitPlan()
    let stream = input.rest()

    // The model.
    var expected: [[UInt8]] = []
    var tooLong = false
    for raw in stream.split(separator: 0x0A, omittingEmptySubsequences: false) {
        if raw.count > limit {
            tooLong = true
            break
        }
        let trimmed = raw.drop(while: isSpace).reversed().drop(while: isSpace).reversed()
        if !trimmed.isEmpty { expected.append(Array(trimmed)) }
    }

    var framer = NDJSONLineFramer(maxLineLength: limit)
    var got: [[UInt8]] = []
    var threw = false
    do {
        for piece in pieces(of: stream, plan: plan) {
            try framer.append(piece)
            while let line = try framer.nextLine() { got.append(Array(line.readableBytesView)) }
            check(framer.bufferedByteCount <= limit, "after draining, \(framer.bufferedByteCount) bytes pending, limit \(limit)")
        }
        if let tail = framer.finish() { got.append(Array(tail.readableBytesView)) }
    } catch let error as LineTooLong {
        check(error.limit == limit, "LineTooLong(\(error.limit)), limit \(limit)")
        threw = true
    } catch {
        check(false, "framer threw \(error)")
    }
    check(threw == tooLong, "LineTooLong thrown: \(threw), a line over \(limit) bytes: \(tooLong)")
    check(got == expected, "framer returned \(got.count) lines, model \(expected.count)")
    return 0
}

runLibFuzzer(fuzz)
