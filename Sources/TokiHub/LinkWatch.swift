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
    private let deadlines: DeadlineSweeper

    private init(id: UInt64, deadlines: DeadlineSweeper) {
        self.id = id
        self.deadlines = deadlines
    }

    /// Starts watching; `stop()` it when the link ends.
    static func start(activity: LinkActivity, interval: Duration, deadlines: DeadlineSweeper,
                      ping: @escaping @Sendable () async throws -> Void, close: @escaping @Sendable () -> Void) -> LinkWatch {
        let id = deadlines.makeID()
        look(id: id, activity: activity, interval: interval, deadlines: deadlines, since: .now(), pinged: false, ping: ping, close: close)
        return LinkWatch(id: id, deadlines: deadlines)
    }

    func stop() { deadlines.disarm(id) }

    private static func look(id: UInt64, activity: LinkActivity, interval: Duration, deadlines: DeadlineSweeper,
                             since: NIODeadline, pinged: Bool, ping: @escaping @Sendable () async throws -> Void,
                             close: @escaping @Sendable () -> Void) {
        deadlines.arm(id, after: interval) {
            let now = NIODeadline.now()
            if !activity.silent(since: since) {
                look(id: id, activity: activity, interval: interval, deadlines: deadlines, since: now, pinged: false, ping: ping, close: close)
            } else if pinged {
                close()
            } else {
                Task { try? await ping() }
                look(id: id, activity: activity, interval: interval, deadlines: deadlines, since: now, pinged: true, ping: ping, close: close)
            }
        }
    }
}
