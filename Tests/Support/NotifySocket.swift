import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket bound by a test where systemd's notify socket would be: a process given
/// `NOTIFY_SOCKET=name` sends its READY=1, WATCHDOG=1 … here.
public final class NotifySocketListener: Sendable {
    let fd: Int32
    /// What to put in `$NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace.
    public let name: String

    public init(abstract: Bool) throws {
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ChildProcessError("socket: errno \(errno)") }
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
        guard bound == 0 else {
            let error = errno
            close(fd)
            throw ChildProcessError("bind \(name): errno \(error)")
        }
    }

    /// The next datagram, or nil if none came within `timeout`. Polls: a blocking receive would
    /// hold one of the few threads Swift's cooperative pool has.
    public func receive(timeout: Duration = .seconds(15)) async -> String? {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count >= 0 { return String(decoding: buffer[..<count], as: UTF8.self) }
            guard ContinuousClock.now < deadline else { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Datagrams until one satisfies `matching` (returned with all before it), or nil on timeout.
    public func receive(until matching: (String) -> Bool, timeout: Duration = .seconds(30)) async -> [String]? {
        let deadline = ContinuousClock.now + timeout
        var seen: [String] = []
        while let next = await receive(timeout: deadline - ContinuousClock.now) {
            seen.append(next)
            if matching(next) { return seen }
        }
        return nil
    }

    deinit {
        close(fd)
        if !name.hasPrefix("@") { unlink(name) }
    }
}
