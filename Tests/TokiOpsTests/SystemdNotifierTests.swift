import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import TokiOps

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket bound where the test says, standing in for systemd's notify socket.
final class NotifySocketListener {
    let fd: Int32
    let name: String

    /// `abstract`: bind in the abstract namespace and give the `@name` spelling.
    init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        let unique = "toki-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        name = abstract ? "@" + unique : FileManager.default.temporaryDirectory.path + "/" + unique + ".sock"
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(name.utf8)
        if abstract { path[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + path.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        // A receive that never comes fails the test instead of hanging it.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram, or nil after the receive timeout.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count < 0 ? nil : String(decoding: buffer[..<count], as: UTF8.self)
    }

    deinit {
        close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }
}

@Suite("sd_notify")
struct SystemdNotifierTests {
    @Test("a datagram reaches a socket bound at a path", arguments: [false, true])
    func sendsToSocket(abstract: Bool) throws {
        let listener = try NotifySocketListener(abstract: abstract)
        let notifier = try #require(SystemdNotifier.fromEnvironment(["NOTIFY_SOCKET": listener.name]))
        #expect(notifier.send("READY=1\nSTATUS=serving") == nil)
        #expect(listener.receive() == "READY=1\nSTATUS=serving")
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
    func readyAndStopping() throws {
        let listener = try NotifySocketListener(abstract: true)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name], logger: Logger(label: "test"))
        lifecycle.ready(status: "serving\n3 workers")
        #expect(listener.receive() == "READY=1\nSTATUS=serving 3 workers")
        lifecycle.stopping()
        #expect(listener.receive() == "STOPPING=1")
    }

    @Test("the watchdog pings every half WatchdogSec and sends STATUS when it changes")
    func watchdogPings() async throws {
        let listener = try NotifySocketListener(abstract: true)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "100000"],
                                         logger: Logger(label: "test"))
        #expect(lifecycle.watchdogInterval == .milliseconds(50))
        let calls = Mutex(0)
        let task = Task {
            try await lifecycle.watchdog(status: {
                calls.withLock { $0 += 1; return $0 < 3 ? "serving, 0 workers" : "serving, 1 workers" }
            }).run()
        }
        defer { task.cancel() }
        #expect(listener.receive() == "WATCHDOG=1\nSTATUS=serving, 0 workers")
        #expect(listener.receive() == "WATCHDOG=1")
        #expect(listener.receive() == "WATCHDOG=1\nSTATUS=serving, 1 workers")
        #expect(listener.receive() == "WATCHDOG=1")
    }

    @Test("STOPPING=1 goes out when the service group starts its graceful shutdown")
    func stoppingOnShutdown() async throws {
        let listener = try NotifySocketListener(abstract: false)
        let lifecycle = SystemdLifecycle(environment: ["NOTIFY_SOCKET": listener.name], logger: Logger(label: "test"))
        let group = ServiceGroup(services: [lifecycle.watchdog(), lifecycle.stoppingNotice()], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(listener.receive() == "STOPPING=1\nSTATUS=draining")
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
