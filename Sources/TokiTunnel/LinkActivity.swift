import NIOCore
import Synchronization

/// When a tunnel link last received anything: any WebSocket frame counts, pongs included (they
/// never reach the mux). A hub uses it to tell a frozen peer (TCP still up, process stopped)
/// from a busy one: a peer that answers nothing, not even a ping, is gone.
public final class LinkActivity: Sendable {
    private let lastInbound: Atomic<UInt64>

    public init() {
        lastInbound = Atomic(NIODeadline.now().uptimeNanoseconds)
    }

    /// Called for every inbound frame (one relaxed atomic store).
    public func touch() {
        lastInbound.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
    }

    /// The last time anything arrived.
    public var lastReceived: NIODeadline {
        .uptimeNanoseconds(lastInbound.load(ordering: .relaxed))
    }

    /// Whether nothing arrived after `instant`.
    public func silent(since instant: NIODeadline) -> Bool {
        lastReceived < instant
    }
}
