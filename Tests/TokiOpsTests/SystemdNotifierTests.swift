import Foundation
import Logging
import ServiceLifecycle
import TestSupport
import Testing
@testable import TokiOps

#if canImport(Glibc)
import Glibc
#endif

@Suite("sd_notify")
struct SystemdNotifierTests {
    @Test("a datagram reaches a socket bound at a path", arguments: [false, true])
    func sendsToSocket(abstract: Bool) async throws {
        let listener = try NotifySocketListener(abstract: abstract)
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": listener.name]))
        #expect(notifier.send("READY=1\nSTATUS=serving") == nil)
        #expect(await listener.receive() == "READY=1\nSTATUS=serving")
    }

    @Test("no notifier without a usable $NOTIFY_SOCKET")
    func noNotifier() {
        #expect(SystemdNotifier.fromEnvironment([:]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": ""]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "relative/path"]) == nil)
        #expect(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": "/" + String(repeating: "x", count: 200)]) == nil)
    }

    @Test("a socket nobody listens on is an error, not a crash")
    func nobodyListening() throws {
        let notifier = try #require(SystemdNotifier(socketPath: "/nonexistent-dir/notify"))
        #expect(notifier.send("READY=1") != nil)
    }

    @Test("the watchdog is armed by $WATCHDOG_USEC, for this pid only")
    func watchdogTimeout() {
        #expect(SystemdNotifier.watchdogTimeout(environment: [:]) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "30000000"]) == .seconds(30))
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "0"]) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "soon"]) == nil)
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "500000", "WATCHDOG_PID": "\(getpid())"]) == .milliseconds(500))
        #expect(SystemdNotifier.watchdogTimeout(environment: ["WATCHDOG_USEC": "500000", "WATCHDOG_PID": "\(getpid() + 1)"]) == nil)
    }

    @Test("READY and STOPPING carry STATUS on one line")
    func readyAndStopping() async throws {
        let listener = try NotifySocketListener(abstract: true)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name], logger: Logger(label: "test"))
        lifecycle.ready(status: "serving\n3 workers")
        #expect(await listener.receive() == "READY=1\nSTATUS=serving 3 workers")
        lifecycle.stopping()
        #expect(await listener.receive() == "STOPPING=1")
    }

    @Test("the watchdog pings every half WatchdogSec and sends STATUS when it changes")
    func watchdogPings() async throws {
        let listener = try NotifySocketListener(abstract: true)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "100000"],
                                         logger: Logger(label: "test"))
        #expect(lifecycle.watchdogInterval == .milliseconds(50))
        let calls = Locked(0)
        let task = Task {
            try await lifecycle.watchdog(status: {
                calls.withLock { $0 += 1; return $0 < 3 ? "serving, 0 workers" : "serving, 1 workers" }
            }).run()
        }
        defer { task.cancel() }
        #expect(await listener.receive() == "WATCHDOG=1\nSTATUS=serving, 0 workers")
        #expect(await listener.receive() == "WATCHDOG=1")
        #expect(await listener.receive() == "WATCHDOG=1\nSTATUS=serving, 1 workers")
        #expect(await listener.receive() == "WATCHDOG=1")
    }

    @Test("STOPPING=1 goes out when the service group starts its graceful shutdown")
    func stoppingOnShutdown() async throws {
        let listener = try NotifySocketListener(abstract: false)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name], logger: Logger(label: "test"))
        let group = ServiceGroup(services: [lifecycle.watchdog(), lifecycle.stoppingNotice()], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(await listener.receive() == "STOPPING=1\nSTATUS=draining")
    }

    @Test("without $NOTIFY_SOCKET the services only wait for shutdown")
    func inertWithoutSystemd() async throws {
        let lifecycle = SystemdLifecycle(environment: ["WATCHDOG_USEC": "1000"], logger: Logger(label: "test"))
        #expect(lifecycle.notifier == nil && lifecycle.watchdogInterval == nil)
        lifecycle.ready(status: "ignored")
        let group = ServiceGroup(services: [lifecycle.watchdog(), lifecycle.stoppingNotice()], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        await group.triggerGracefulShutdown()
        try await running.value
    }
}
