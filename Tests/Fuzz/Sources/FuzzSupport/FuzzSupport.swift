// Shared by every fuzz target: the libFuzzer entry, a cursor over the input that turns
// bytes into choices, and the invariant check.

@_exported import CFuzzDriver
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Starts libFuzzer with the process arguments and `testOneInput` as the target; never returns.
/// Each target's main.swift ends with `runLibFuzzer(fuzz)`.
public func runLibFuzzer(_ testOneInput: toki_fuzz_test_one_input) -> Never {
    exit(toki_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, testOneInput))
}

/// An invariant of the code under test. A violation is a finding: it aborts with the message,
/// and libFuzzer saves the input as a crash artifact.
@inline(__always)
public func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                  file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        fatalError("invariant violated: \(message())", file: file, line: line)
    }
}

/// Reads the fuzz input front to back: small integers choose what to do next, the rest is data.
/// Running out of input is normal: every `take` then returns zeros / empty.
public struct FuzzInput {
    public let bytes: UnsafeBufferPointer<UInt8>
    public private(set) var offset = 0

    public init(_ data: UnsafePointer<UInt8>, _ size: Int) {
        bytes = UnsafeBufferPointer(start: data, count: size)
    }

    public var isAtEnd: Bool { offset >= bytes.count }
    public var remaining: Int { bytes.count - offset }

    public mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func bool() -> Bool { byte() & 1 == 1 }

    public mutating func uint16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }

    public mutating func uint32() -> UInt32 { UInt32(uint16()) | UInt32(uint16()) << 16 }

    /// A value in `range`, from one, two or four bytes depending on its width.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        let width = range.upperBound - range.lowerBound
        if width <= 0 { return range.lowerBound }
        let raw = width < 256 ? Int(byte()) : width < 65536 ? Int(uint16()) : Int(uint32())
        return range.lowerBound + raw % (width + 1)
    }

    /// Up to `count` bytes (fewer at the end of the input).
    public mutating func take(_ count: Int) -> UnsafeBufferPointer<UInt8> {
        let n = max(0, min(count, remaining))
        defer { offset += n }
        return UnsafeBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    public mutating func takeBuffer(_ count: Int) -> ByteBuffer {
        ByteBuffer(bytes: take(count))
    }

    /// Everything not read yet.
    public mutating func rest() -> UnsafeBufferPointer<UInt8> { take(remaining) }
}

extension FuzzInput {
    /// A split plan: a count byte (0...8) and that many piece sizes (1...256 each). Read before
    /// the data it will cut, so that mutating the data never changes how it is cut.
    public mutating func splitPlan() -> [Int] {
        let count = Int(byte() % 9)
        return (0..<count).map { _ in Int(byte()) + 1 }
    }
}

/// Cuts `data` into consecutive pieces with the sizes of `plan`, cycling through it (so the
/// fuzzer explores the ways a stream can be split across reads). An empty plan: one piece.
public func pieces(of data: UnsafeBufferPointer<UInt8>, plan: [Int]) -> [ByteBuffer] {
    guard !plan.isEmpty else { return data.isEmpty ? [] : [ByteBuffer(bytes: data)] }
    var out: [ByteBuffer] = []
    var start = 0
    var k = 0
    while start < data.count {
        let n = min(data.count - start, plan[k % plan.count])
        out.append(ByteBuffer(bytes: UnsafeBufferPointer(rebasing: data[start..<start + n])))
        start += n
        k += 1
    }
    return out
}

/// Whether the bytes hold a `\u` escape of a UTF-16 surrogate (Go and toki map unpaired ones to
/// U+FFFD; Foundation's handling differs, so differential checks skip them).
public func hasSurrogateEscape(_ bytes: some Collection<UInt8>) -> Bool {
    let bytes = Array(bytes)
    var i = 0
    while i + 3 < bytes.count {
        if bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u"), bytes[i + 2] | 0x20 == UInt8(ascii: "d"),
           (UInt8(ascii: "8")...UInt8(ascii: "9")).contains(bytes[i + 3]) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(bytes[i + 3] | 0x20) {
            return true
        }
        i += 1
    }
    return false
}
