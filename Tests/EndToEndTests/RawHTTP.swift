import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A raw TCP connection to a loopback port: the exact bytes, no HTTP library in between (to see
/// what a keep-alive connection really carries, or to read slowly, or not at all).
///
/// The socket is non-blocking and waits are `Task.sleep`s, so a wait never holds one of the
/// cooperative pool's threads (two on this machine; the in-process hostile worker needs them).
/// Used by one task at a time, hence `@unchecked Sendable`.
final class RawConnection: @unchecked Sendable {
    let fd: Int32
    /// Everything read so far.
    private(set) var received: [UInt8] = []
    /// Set once the peer closed (FIN) or reset the connection.
    private(set) var ended: String?
    /// The longest wait between two reads that returned bytes, while reading (for diagnostics:
    /// how long the client had nothing to read).
    private(set) var longestWait: Duration = .zero
    private var lastBytes: ContinuousClock.Instant?

    /// `receiveBuffer` (SO_RCVBUF) is set before connecting, so the advertised window is small
    /// from the first byte on.
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ChildProcessError("socket() failed") }
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
        guard connected == 0 else { Glibc.close(fd); throw ChildProcessError("connect() to port \(port) failed") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    private var closed = false

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// A larger receive buffer from now on (e.g. to drain quickly what a test left unread).
    func setReceiveBuffer(_ size: Int32) {
        var size = size
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Whether what arrived so far ends with a chunked body's last chunk: a cheap completion
    /// check for long responses (parsing them whole after every read would be quadratic).
    var endsWithLastChunk: Bool { received.suffix(7).elementsEqual("\r\n0\r\n\r\n".utf8) }

    /// An HTTP/1.1 request (keep-alive: no `Connection` header).
    static func request(_ method: String, _ path: String, token: String? = nil, body: String = "",
                        headers: [(String, String)] = []) -> String {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if let token { text += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if method == "POST" { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        return text + "\r\n" + body
    }

    /// Writes all of `text`, waiting while the socket buffer is full.
    func send(_ text: String, timeout: Duration = .seconds(30)) async throws {
        let bytes = Array(text.utf8)
        var offset = 0
        let deadline = ContinuousClock.now + timeout
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { offset += n; continue }
            guard n < 0, errno == EAGAIN || errno == EWOULDBLOCK else { throw ChildProcessError("send() failed: errno \(errno)") }
            guard ContinuousClock.now < deadline else { throw ChildProcessError("send() could not finish within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Reads what is available now (at most `max` bytes), without waiting. Returns the count
    /// read; records the end of the connection.
    @discardableResult
    func readAvailable(max: Int = 1 << 16) -> Int {
        guard ended == nil else { return 0 }
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, max, 0) }
        if n > 0 {
            received.append(contentsOf: buffer[..<n])
            let now = ContinuousClock.now
            if let lastBytes, now - lastBytes > longestWait { longestWait = now - lastBytes }
            lastBytes = now
            return n
        }
        if n == 0 {
            ended = "closed by the peer"
        } else if errno != EAGAIN && errno != EWOULDBLOCK {
            ended = errno == ECONNRESET ? "reset by the peer" : "recv() failed: errno \(errno)"
        }
        return 0
    }

    /// Reads until `done(received)` holds or the connection ends; throws after `timeout`.
    /// `chunk` bytes at most per read, and with `pause`, a sleep after every read (a slow reader).
    func read(until done: ([UInt8]) -> Bool, timeout: Duration = .seconds(30), chunk: Int = 1 << 16, pause: Duration? = nil) async throws {
        let deadline = ContinuousClock.now + timeout
        while !done(received), ended == nil {
            if readAvailable(max: chunk) > 0 {
                if let pause { try await Task.sleep(for: pause) }
                continue
            }
            guard ContinuousClock.now < deadline else {
                throw ChildProcessError("no complete answer within \(timeout); got \(received.count) bytes: \(String(decoding: received.suffix(300), as: UTF8.self))")
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Reads until the peer ends the connection (FIN or reset); throws after `timeout`.
    func readToEnd(timeout: Duration = .seconds(60)) async throws {
        try await read(until: { _ in false }, timeout: timeout)
    }

    var text: String { String(decoding: received, as: UTF8.self) }

    // MARK: For clients that misbehave on purpose (HostileClientTests)

    /// The hub closed (EOF or reset).
    var closedByPeer: Bool { ended != nil }
    /// The status code of the first response received, if any.
    var status: Int? {
        let line = text.prefix { $0 != "\r" }
        guard line.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(line.dropFirst(9).prefix(3))
    }
    /// The body of the first response (everything after its head).
    var body: String { text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? "" }

    /// Reads everything available now.
    func pump() { while readAvailable() > 0 {} }

    /// Sends all of `bytes`, waiting while the socket is full; false once the hub closed.
    @discardableResult
    func sendAll(_ bytes: [UInt8], timeout: Duration = .seconds(30)) async -> Bool {
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
    func sendAll(_ text: String) async -> Bool { await sendAll(Array(text.utf8)) }

    /// Sends `text` one byte per `interval` until done or the hub closes; true if all went out.
    func trickle(_ text: String, interval: Duration) async -> Bool {
        for byte in text.utf8 {
            pump()
            guard !closedByPeer, await sendAll([byte]) else { return false }
            try? await Task.sleep(for: interval)
        }
        return true
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

/// One HTTP/1.1 response parsed out of raw bytes.
struct RawResponse {
    var status: Int
    var headers: [(name: String, value: String)]
    /// The head's raw text (status line and header lines, without the final empty line).
    var headText: String
    var body: [UInt8]
    /// Whether the body's framing ended properly (Content-Length reached, or the chunked
    /// terminator seen); for a body delimited by the connection's end, whether it ended.
    var complete: Bool
    /// Bytes of the input this response used.
    var length: Int

    var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// A CR not followed by LF, an LF not preceded by CR, or a NUL, anywhere in the head.
    var headHasStrayControlBytes: Bool {
        let bytes = Array(headText.utf8)
        for (i, byte) in bytes.enumerated() {
            if byte == 0 { return true }
            if byte == 13, i + 1 == bytes.count || bytes[i + 1] != 10 { return true }
            if byte == 10, i == 0 || bytes[i - 1] != 13 { return true }
        }
        return false
    }

    func values(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    /// Parses the response at the start of `bytes`; nil while its head is incomplete. A body
    /// that has not fully arrived yet gives `complete == false`. `noBody` is for answers that
    /// never have one (HEAD, 1xx, 204, 304): the response ends with its head.
    static func parse(_ bytes: ArraySlice<UInt8>, noBody: Bool = false, connectionEnded: Bool = false) -> RawResponse? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let end = bytes.firstRange(of: separator) else { return nil }
        let headText = String(decoding: bytes[bytes.startIndex..<end.lowerBound], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        let headers = lines.map { line -> (name: String, value: String) in
            guard let colon = line.firstIndex(of: ":") else { return (line, "") }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var response = RawResponse(status: status, headers: headers, headText: headText, body: [], complete: true,
                                   length: end.upperBound - bytes.startIndex)
        let rest = bytes[end.upperBound...]
        if noBody || status == 204 || status == 304 || (100..<200).contains(status) { return response }
        if response.values("Transfer-Encoding").contains(where: { $0.lowercased().contains("chunked") }) {
            let (body, complete, used) = dechunk(rest)
            response.body = body
            response.complete = complete
            response.length += used
        } else if let length = response.values("Content-Length").first.flatMap({ Int($0) }) {
            response.body = Array(rest.prefix(length))
            response.complete = rest.count >= length
            response.length += response.body.count
        } else {
            response.body = Array(rest)
            response.complete = connectionEnded
            response.length += rest.count
        }
        return response
    }

    /// A chunked body: the bytes decoded so far, whether the terminating chunk arrived, and
    /// how many input bytes were used.
    static func dechunk(_ bytes: ArraySlice<UInt8>) -> (body: [UInt8], complete: Bool, used: Int) {
        var body: [UInt8] = []
        var i = bytes.startIndex
        let crlf: [UInt8] = [13, 10]
        while let lineEnd = bytes[i...].firstRange(of: crlf) {
            let sizeText = String(decoding: bytes[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { break }
            let dataStart = lineEnd.upperBound
            if size == 0 {
                // The last chunk, then (no trailers expected) an empty line.
                guard bytes.count - (dataStart - bytes.startIndex) >= 2 else { break }
                return (body, true, dataStart + 2 - bytes.startIndex)
            }
            guard bytes.endIndex - dataStart >= size + 2 else { break }
            body.append(contentsOf: bytes[dataStart..<(dataStart + size)])
            i = dataStart + size + 2
        }
        return (body, false, i - bytes.startIndex)
    }
}

extension Collection where Element == UInt8 {
    /// Whether `text` occurs in these bytes.
    func contains(text: String) -> Bool { firstRange(of: Array(text.utf8)) != nil }
}
