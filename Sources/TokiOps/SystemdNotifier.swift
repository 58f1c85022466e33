#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// systemd's readiness protocol without libsystemd: each state change is one datagram of
/// `KEY=VALUE` lines sent to the AF_UNIX socket named by `$NOTIFY_SOCKET` (sd_notify(3)).
/// A path starting with `@` names a socket in the abstract namespace.
///
/// Without `$NOTIFY_SOCKET` (not under systemd, or `Type=simple`) there is no notifier and every
/// call site is a nil check.
public struct SystemdNotifier: Sendable {
    /// The socket as given: a filesystem path, or `@name` for an abstract socket.
    public let socketPath: String

    /// nil for an empty path, one that is neither absolute nor abstract, or one too long for `sun_path`.
    public init?(socketPath: String) {
        let bytes = socketPath.utf8.count
        guard bytes > 1, socketPath.hasPrefix("/") || socketPath.hasPrefix("@"),
              bytes <= MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1 else { return nil }
        self.socketPath = socketPath
    }

    /// The notifier systemd asked for, if any.
    public static func fromEnvironment(_ environment: [String: String]) -> SystemdNotifier? {
        environment["NOTIFY_SOCKET"].flatMap(SystemdNotifier.init(socketPath:))
    }

    /// Sends `state` (newline-separated assignments, e.g. `"READY=1\nSTATUS=serving"`) as one
    /// datagram. Returns the errno on failure: systemd not listening is not fatal to the caller.
    @discardableResult
    public func send(_ state: String) -> Int32? {
        #if os(Linux)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        let abstract = path.first == UInt8(ascii: "@")
        if abstract { path[0] = 0 }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
        }
        // An abstract name is exactly its bytes (no terminating NUL); a path includes the NUL.
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let length = socklen_t(pathOffset + path.count + (abstract ? 0 : 1))
        let payload = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent < 0 ? errno : nil
    }

    /// `WatchdogSec=` as systemd passed it: `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is unset or
    /// names this process (a child that inherited the variables must not ping for its parent).
    public static func watchdogTimeout(environment: [String: String], pid: Int32 = getpid()) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let owner = environment["WATCHDOG_PID"], Int32(owner) != pid { return nil }
        return .microseconds(usec)
    }
}
