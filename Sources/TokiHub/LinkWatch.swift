import NIOCore
import TokiTunnel

/// Notices a tunnel link that died silently (peer gone without a FIN) with no task or timer of
/// its own: one entry in the hub's `DeadlineSweeper`. Every `interval` it looks at the link's
/// `LinkActivity`; a link that received anything since the last look is left alone (a Tokiame
/// heartbeats every 15 s, so a healthy worker is never pinged); a silent one gets a WebSocket
/// ping, and one still silent a whole interval after its ping is closed. WebSocket libraries ping
/// every link on a timer instead: at 10,000 idle workers that was most of the hub's idle CPU.
final class LinkWatch: Sendable {
    private let id: UInt64
    private let activity: LinkActivity
    private let interval: Duration
    private let deadlines: DeadlineSweeper
    private let ping: @Sendable () async throws -> Void
    private let close: @Sendable () -> Void

    private init(activity: LinkActivity, interval: Duration, deadlines: DeadlineSweeper,
                 ping: @escaping @Sendable () async throws -> Void, close: @escaping @Sendable () -> Void) {
        self.id = deadlines.makeID()
        self.activity = activity
        self.interval = interval
        self.deadlines = deadlines
        self.ping = ping
        self.close = close
    }

    /// Starts watching; `stop()` it when the link ends.
    static func start(activity: LinkActivity, interval: Duration, deadlines: DeadlineSweeper,
                      ping: @escaping @Sendable () async throws -> Void, close: @escaping @Sendable () -> Void) -> LinkWatch {
        let watch = LinkWatch(activity: activity, interval: interval, deadlines: deadlines, ping: ping, close: close)
        watch.look(since: .now(), pinged: false)
        return watch
    }

    func stop() { deadlines.disarm(id) }

    /// Looks again after `interval`: was anything received after `since`?
    private func look(since: NIODeadline, pinged: Bool) {
        deadlines.arm(id, after: interval) { [self] in
            let now = NIODeadline.now()
            if !activity.silent(since: since) {
                look(since: now, pinged: false)
            } else if pinged {
                close()
            } else {
                let ping = self.ping
                Task { try? await ping() }
                look(since: now, pinged: true)
            }
        }
    }
}
