import NIOCore
import Testing

@testable import TokiTunnel

/// Regressions for what the libFuzzer targets (Tests/Fuzz, docs/fuzzing.md) found in TokiTunnel.
@Suite("fuzz findings (TokiTunnel)")
struct TunnelFuzzFindingsTests {
    /// FuzzLZ4Link: after releaseState(), nextMessageResetsStream said true, the first empty
    /// batch carried RESET, and the second did not although the property still said true.
    /// Empty batches now carry RESET exactly when the property says so.
    @Test("an empty batch carries RESET exactly when nextMessageResetsStream says so")
    func emptyBatchReset() throws {
        let allocator = ByteBufferAllocator()
        var encoder = LZ4LinkEncoder(maxMessageSize: 4096)
        var decoder = LZ4LinkDecoder(maxDecompressedSize: 4096)
        for _ in 0..<3 {
            #expect(encoder.nextMessageResetsStream)
            let empty = encoder.encode(ByteBuffer(), allocator: allocator)
            #expect(empty.readableBytesView.elementsEqual([LZ4Link.flagReset]))
            #expect(try decoder.decode(empty, allocator: allocator).readableBytes == 0)
        }
        let data = ByteBuffer(repeating: 65, count: 1000)
        let first = encoder.encode(data, allocator: allocator)
        #expect(first.getInteger(at: first.readerIndex, as: UInt8.self)! & LZ4Link.flagReset != 0)
        #expect(try decoder.decode(first, allocator: allocator) == data)
        #expect(!encoder.nextMessageResetsStream)
        let empty = encoder.encode(ByteBuffer(), allocator: allocator)
        #expect(empty.readableBytesView.elementsEqual([0]))
        #expect(try decoder.decode(encoder.encode(data, allocator: allocator), allocator: allocator) == data)
    }
}
