import Foundation
import Testing
@testable import TokiProtocol

@Suite struct FastUUIDTests {
    @Test func idsAreVersion4AndDoNotRepeat() {
        var seen = Set<UUID>()
        for _ in 0..<100_000 {
            let id = FastUUID.next()
            #expect(seen.insert(id).inserted)
            let bytes = withUnsafeBytes(of: id.uuid) { Array($0) }
            #expect(bytes[6] >> 4 == 4)
            #expect(bytes[8] & 0xC0 == 0x80)
        }
    }

    @Test func idsLookRandomNotSequential() {
        // Consecutive ids differ in about half of their 122 free bits (a counter would differ in a few).
        var total = 0
        var previous = FastUUID.next()
        for _ in 0..<1000 {
            let next = FastUUID.next()
            let a = withUnsafeBytes(of: previous.uuid) { Array($0) }
            let b = withUnsafeBytes(of: next.uuid) { Array($0) }
            total += zip(a, b).map { ($0 ^ $1).nonzeroBitCount }.reduce(0, +)
            previous = next
        }
        #expect((50...72).contains(total / 1000))
    }

    @Test func mixIsABijectionOnASample() {
        var outputs = Set<UInt64>()
        for x in UInt64(0)..<50_000 { outputs.insert(FastUUID.mix(x)) }
        #expect(outputs.count == 50_000)
    }
}
