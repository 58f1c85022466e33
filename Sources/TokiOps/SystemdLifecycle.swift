#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import ServiceLifecycle
import Synchronization

/// A node's side of `Type=notify`: READY=1 once it serves, STOPPING=1 when it starts draining,
/// WATCHDOG=1 every half `WatchdogSec=`, STATUS= lines in between. Every call is a no-op when
/// systemd did not ask (no `$NOTIFY_SOCKET`), so the command line uses it unconditionally.
public final class SystemdLifecycle: Sendable {
    public let notifier: SystemdNotifier?
    /// Half of `WatchdogSec=` (systemd's advice), or nil when no watchdog is armed for us.
    public let watchdogInterval: Duration?
    let logger: Logger
    /// After STOPPING=1 the watchdog's STATUS= updates stop (they would hide "draining").
    let isStopping = Atomic<Bool>(false)

    public init(notifier: SystemdNotifier?, watchdogTimeout: Duration?, logger: Logger) {
        self.notifier = notifier
        self.watchdogInterval = notifier == nil ? nil : watchdogTimeout.map { $0 / 2 }
        self.logger = logger
    }

    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    public convenience init(environment: [String: String], logger: Logger) {
        self.init(notifier: SystemdNotifier.fromEnvironment(environment),
                  watchdogTimeout: SystemdNotifier.watchdogTimeout(environment: environment), logger: logger)
    }

    public func ready(status: String? = nil) {
        send("READY=1" + (status.map { "\nSTATUS=" + Self.oneLine($0) } ?? ""))
    }

    public func stopping(status: String? = nil) {
        isStopping.store(true, ordering: .relaxed)
        send("STOPPING=1" + (status.map { "\nSTATUS=" + Self.oneLine($0) } ?? ""))
    }

    public func status(_ text: String) { send("STATUS=" + Self.oneLine(text)) }

    func send(_ state: String) {
        guard let notifier else { return }
        if let error = notifier.send(state) {
            logger.debug("sd_notify failed", metadata: ["socket": "\(notifier.socketPath)", "errno": "\(error)"])
        }
    }

    /// A STATUS= value ends at the first newline (each line of the datagram is one assignment).
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }

    /// The watchdog as a service: every `watchdogInterval` it calls `status` (which should read
    /// the node's state through the locks its requests take, so a deadlock stops the pings),
    /// then sends WATCHDOG=1, and STATUS= when the text changed. It runs on the same executor
    /// as the node's requests (toki runs Swift tasks on NIO's event loops), so a node whose
    /// loops are stuck stops pinging and systemd restarts it.
    ///
    /// Put it first in the top-level `ServiceGroup`: graceful shutdown goes last to first, so
    /// it keeps pinging while the node drains and ends after everything else.
    public func watchdog(status: @escaping @Sendable () -> String? = { nil }) -> some Service {
        Watchdog(lifecycle: self, status: status)
    }

    /// A service that sends STOPPING=1 when graceful shutdown begins. Put it last in the
    /// top-level `ServiceGroup` so it hears of the shutdown before the node starts draining.
    public func stoppingNotice(status: String = "draining") -> some Service {
        StoppingNotice(lifecycle: self, status: status)
    }

    struct Watchdog: Service {
        let lifecycle: SystemdLifecycle
        let status: @Sendable () -> String?

        func run() async throws {
            guard lifecycle.notifier != nil else {
                // Not under systemd: nothing to do, but a service that returns early ends the group.
                try? await gracefulShutdown()
                return
            }
            // Without a watchdog, STATUS= is still refreshed now and then.
            let ping = lifecycle.watchdogInterval != nil
            let interval = lifecycle.watchdogInterval ?? .seconds(10)
            await cancelWhenGracefulShutdown {
                var lastStatus: String?
                while !Task.isCancelled {
                    // The first ping one interval in: after READY=1 unless startup is slow.
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { return }
                    var state: [String] = ping ? ["WATCHDOG=1"] : []
                    if !lifecycle.isStopping.load(ordering: .relaxed), let current = status(), current != lastStatus {
                        state.append("STATUS=" + SystemdLifecycle.oneLine(current))
                        lastStatus = current
                    }
                    if !state.isEmpty { lifecycle.send(state.joined(separator: "\n")) }
                }
            }
        }
    }

    struct StoppingNotice: Service {
        let lifecycle: SystemdLifecycle
        let status: String

        func run() async throws {
            try? await gracefulShutdown()
            lifecycle.stopping(status: status)
        }
    }
}
