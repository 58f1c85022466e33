import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection to 127.0.0.1 driven byte by byte, for clients no HTTP library would be:
/// non-blocking, so waiting never holds one of the few cooperative threads.
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    /// What was received so far (the hub's answers).
    private(set) var received: [UInt8] = []
    /// The hub closed (EOF or reset).
    private(set) var closedByPeer = false
    private var closed = false

    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ChildProcessError("socket() failed: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let error = errno
            Glibc.close(fd)
            throw ChildProcessError("connect() failed: errno \(error)")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    var text: String { String(decoding: received, as: UTF8.self) }
    /// The status code of the first response received, if any.
    var status: Int? {
        let line = text.prefix { $0 != "\r" }
        guard line.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(line.dropFirst(9).prefix(3))
    }
    /// The body of the first response (everything after its head).
    var body: String { text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? "" }

    /// Sends all of `bytes`, waiting while the socket is full; false once the hub closed.
    @discardableResult
    func send(_ bytes: [UInt8], timeout: Duration = .seconds(30)) async -> Bool {
        var offset = 0
        let deadline = ContinuousClock.now + timeout
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                offset += n
            } else if n < 0, errno == EAGAIN || errno == EWOULDBLOCK, ContinuousClock.now < deadline {
                pump()
                try? await Task.sleep(for: .milliseconds(5))
            } else {
                return false
            }
        }
        return true
    }

    @discardableResult
    func send(_ text: String) async -> Bool { await send(Array(text.utf8)) }

    /// Sends `text` one byte per `interval` until done or the hub closes; true if all went out.
    func trickle(_ text: String, interval: Duration) async -> Bool {
        for byte in text.utf8 {
            pump()
            guard !closedByPeer, await send([byte]) else { return false }
            try? await Task.sleep(for: interval)
        }
        return true
    }

    /// Reads what is available now.
    func pump() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !closedByPeer {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received += chunk[..<n]
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                closedByPeer = true  // EOF or reset
            } else {
                return
            }
        }
    }

    /// Waits until the hub closes the connection; false if it is still open after `timeout`.
    func waitUntilClosed(timeout: Duration = .seconds(20)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            pump()
            if closedByPeer { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Waits until a whole response (head and a `Content-Length` body) has arrived.
    func waitForResponse(timeout: Duration = .seconds(20)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            pump()
            let text = self.text
            if let end = text.range(of: "\r\n\r\n") {
                let head = text[..<end.lowerBound].lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
                if text.utf8.count - text[..<end.upperBound].utf8.count >= length { return true }
            }
            if closedByPeer { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}
