import Foundation
import Logging
import ServiceLifecycle
import TokiOps

/// Runs a node's services under SIGTERM/SIGINT with systemd's notifications around them: the
/// watchdog first (graceful shutdown runs last to first, so it pings through the drain and
/// stops last), STOPPING=1 last (so systemd hears of the drain before it begins).
func runNode(_ services: [any Service], systemd: SystemdLifecycle, status: @escaping @Sendable () -> String?,
             logger: Logger) async throws {
    let group = ServiceGroup(services: [systemd.watchdog(status: status) as any Service] + services + [systemd.stoppingNotice() as any Service],
                             gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    do {
        try await group.run()
    } catch is CancellationError {
        // Cancellation during shutdown is a normal exit.
    }
}

extension SystemdLifecycle {
    /// What systemd asked of this process ($NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID).
    static func fromProcess(logger: Logger) -> SystemdLifecycle {
        SystemdLifecycle(environment: ProcessInfo.processInfo.environment, logger: logger)
    }
}
