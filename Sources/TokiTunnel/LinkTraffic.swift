import Synchronization

/// Bytes carried by tunnel links of one kind, both as sent on the wire (WebSocket payloads,
/// LZ4-compressed where negotiated) and as the mux saw them (plain). Counted with one relaxed
/// atomic add per message on the link's event loop; read when metrics are scraped, so the
/// link's hot path never touches a metrics backend.
public final class LinkTraffic: Sendable {
    private let wireIn = Atomic<UInt64>(0)
    private let wireOut = Atomic<UInt64>(0)
    private let plainIn = Atomic<UInt64>(0)
    private let plainOut = Atomic<UInt64>(0)

    public init() {}

    /// Counts one message received (`plain`: the bytes it gave the mux).
    public func received(wire: Int, plain: Int) {
        wireIn.add(UInt64(wire), ordering: .relaxed)
        plainIn.add(UInt64(plain), ordering: .relaxed)
    }

    /// Counts one message sent (`plain`: the mux bytes it carried).
    public func sent(wire: Int, plain: Int) {
        wireOut.add(UInt64(wire), ordering: .relaxed)
        plainOut.add(UInt64(plain), ordering: .relaxed)
    }

    /// Totals so far.
    public struct Totals: Sendable, Equatable {
        public var wireIn: UInt64
        public var wireOut: UInt64
        public var plainIn: UInt64
        public var plainOut: UInt64

        public init(wireIn: UInt64 = 0, wireOut: UInt64 = 0, plainIn: UInt64 = 0, plainOut: UInt64 = 0) {
            (self.wireIn, self.wireOut, self.plainIn, self.plainOut) = (wireIn, wireOut, plainIn, plainOut)
        }

        /// Plain bytes per wire byte, both directions (1 without LZ4; 0 before any traffic).
        public var compressionRatio: Double {
            let wire = wireIn + wireOut
            return wire == 0 ? 0 : Double(plainIn + plainOut) / Double(wire)
        }
    }

    public var totals: Totals {
        Totals(wireIn: wireIn.load(ordering: .relaxed), wireOut: wireOut.load(ordering: .relaxed),
               plainIn: plainIn.load(ordering: .relaxed), plainOut: plainOut.load(ordering: .relaxed))
    }
}

/// A tunnel server's traffic by the kind of link accepted: workers, and child relays.
public struct TunnelTraffic: Sendable {
    public let worker = LinkTraffic()
    public let relay = LinkTraffic()

    public init() {}
}
