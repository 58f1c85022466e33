#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Synchronization

/// Version-4-shaped UUIDs without a system call each.
///
/// Foundation's `UUID()` opens, reads and closes `/dev/urandom` on Linux: three system calls,
/// and the hub made two per request (its request id and the charge id). Those ids need to be
/// unique, not secret (a client may choose its own request id; charge ids never leave the
/// hub): a per-process random key and a counter, through a bijective mixer, give ids that do
/// not repeat within a process and collide across processes with negligible probability.
/// Not for secrets: tokens and invite codes come from the system's CSPRNG.
public enum FastUUID {
    private static let key: (UInt64, UInt64) = {
        var random = SystemRandomNumberGenerator()
        return (random.next(), random.next())
    }()
    private static let counter = Atomic<UInt64>(0)

    public static func next() -> UUID {
        let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let high = mix(n ^ key.0)
        let low = mix(n &+ key.1)
        var bytes = (UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0),
                     UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0))
        withUnsafeMutableBytes(of: &bytes) { raw in
            raw.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // RFC 4122 variant
        }
        return UUID(uuid: bytes)
    }

    /// splitmix64's finaliser: a bijection on 64 bits.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
