import NIOCore
import Synchronization

/// Cuts off a client that takes no bytes, judging progress rather than the time one write takes.
///
/// A write to a slow client can legitimately stay pending for long (a large chunk, a phone at
/// 40 KB/s). So when a write has been pending for `timeout`, the client's TCP acknowledgements
/// are checked (`tcpi_bytes_acked`): if it acknowledged anything since the last check it is making
/// progress and gets another `timeout`; if not, it is cut off. A client that stops reading is cut
/// within one to two `timeout`s; a steady slow reader never is.
final class SlowClientWatch: Sendable {
    let deadlines: DeadlineSweeper
    let timeout: Duration
    let progress: ClientProgress
    let onStalled: @Sendable () -> Void
    private let id: UInt64
    private let pendingWrite = Atomic<UInt64>(0)
    private let writes = Atomic<UInt64>(0)

    init(deadlines: DeadlineSweeper, timeout: Duration, client: any Channel, onStalled: @escaping @Sendable () -> Void) {
        self.deadlines = deadlines
        self.timeout = timeout
        self.progress = ClientProgress(channel: client)
        self.onStalled = onStalled
        self.id = deadlines.makeID()
    }

    /// Before a write to the client.
    func willWrite() {
        let write = writes.wrappingAdd(1, ordering: .relaxed).newValue
        pendingWrite.store(write, ordering: .relaxed)
        arm(write)
    }

    /// After the write returned.
    func didWrite() {
        pendingWrite.store(0, ordering: .relaxed)
        deadlines.disarm(id)
    }

    /// The response is over.
    func stop() { didWrite() }

    private func arm(_ write: UInt64) {
        deadlines.arm(id, after: timeout) { [self] in
            guard pendingWrite.load(ordering: .relaxed) == write else { return }
            progress.check { progressed in
                guard self.pendingWrite.load(ordering: .relaxed) == write else { return }  // the write completed meanwhile
                if progressed { self.arm(write) } else { self.onStalled() }
            }
        }
    }
}

/// How many bytes a client has acknowledged, from the kernel's TCP_INFO (Linux). Without it
/// (another platform, a channel that is not a socket) every check reports no progress, which
/// makes `SlowClientWatch` judge by the time one write takes.
final class ClientProgress: Sendable {
    private let channel: any Channel
    private let lastAcked = Atomic<UInt64>(0)

    init(channel: any Channel) {
        self.channel = channel
    }

    /// Calls `verdict(true)` if the client acknowledged bytes since the previous check.
    func check(_ verdict: @escaping @Sendable (Bool) -> Void) {
        #if os(Linux)
        // Cast only here (a stalled write), not per response: dynamic casts are not free.
        guard let provider = channel as? any SocketOptionProvider else { return verdict(false) }
        // struct tcp_info of linux/tcp.h up to tcpi_bytes_acked (a u64 at byte 120); glibc's
        // copy of the struct stops before it.
        let future: EventLoopFuture<TCPInfoPrefix> = provider.unsafeGetSocketOption(level: .tcp, name: .tcp_info)
        future.whenComplete { result in
            guard case .success(let info) = result else { return verdict(false) }
            let acked = info.bytesAcked
            let before = self.lastAcked.exchange(acked, ordering: .relaxed)
            verdict(acked > before)
        }
        #else
        verdict(false)
        #endif
    }
}

/// The first 136 bytes of Linux's `struct tcp_info`.
struct TCPInfoPrefix: Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    /// `tcpi_bytes_acked`: offset 120 = word 15.
    var bytesAcked: UInt64 { words.15 }
}
