import Foundation
import Synchronization

/// Children still running. Killed (by pid) when the test process exits: a test's cleanup that
/// runs in a fire-and-forget Task may not get to run after the last test, and nothing else would
/// stop those processes. Removed on exit, so a reused pid is never signalled.
private let liveChildren = Mutex<Set<Int32>>([])
private let killChildrenAtExit: Void = {
    atexit { for pid in liveChildren.withLock({ $0 }) { kill(pid, SIGKILL) } }
}()

/// A child process started by a test: stdout and stderr collected line by line, stopped by pid.
public final class ChildProcess: Sendable {
    public let name: String
    let process: Process
    let output = Mutex<(stdout: [String], stderr: String, partial: String)>(([], "", ""))

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, name: String? = nil) throws {
        self.name = name ?? URL(fileURLWithPath: executable).lastPathComponent
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        self.process = process
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard !data.isEmpty, let self else { handle.readabilityHandler = nil; return }
            self.output.withLock { state in
                state.partial += String(decoding: data, as: UTF8.self)
                while let newline = state.partial.firstIndex(of: "\n") {
                    state.stdout.append(String(state.partial[..<newline]))
                    state.partial = String(state.partial[state.partial.index(after: newline)...])
                }
            }
        }
        err.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard !data.isEmpty, let self else { handle.readabilityHandler = nil; return }
            self.output.withLock { state in
                state.stderr += String(decoding: data, as: UTF8.self)
                if state.stderr.utf8.count > 1 << 20 { state.stderr = String(state.stderr.suffix(1 << 19)) }
            }
        }
        process.terminationHandler = { exited in _ = liveChildren.withLock { $0.remove(exited.processIdentifier) } }
        _ = killChildrenAtExit
        try liveChildren.withLock { live in
            try process.run()
            live.insert(process.processIdentifier)
        }
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var stdoutLines: [String] { output.withLock { $0.stdout } }
    public var stderr: String { output.withLock { $0.stderr } }

    /// Waits until a stdout line starts with `prefix`; returns it.
    public func waitForLine(prefix: String, timeout: Duration = .seconds(30)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let line = stdoutLines.first(where: { $0.hasPrefix(prefix) }) { return line }
            if !process.isRunning, let line = stdoutLines.first(where: { $0.hasPrefix(prefix) }) { return line }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ChildProcessError("\(name) printed no line starting with '\(prefix)' (running: \(process.isRunning)); stdout: \(stdoutLines.suffix(5)); stderr: \(stderr.suffix(2000))")
    }

    /// Waits for exit; returns the status (throws on timeout).
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(60)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            guard ContinuousClock.now < deadline else { throw ChildProcessError("\(name) did not exit within \(timeout)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Let the pipes drain.
        try await Task.sleep(for: .milliseconds(50))
        return process.terminationStatus
    }

    /// SIGTERM, then SIGKILL after `grace`. Only this pid is signalled.
    public func stop(grace: Duration = .seconds(5)) async {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { kill(pid, SIGKILL) }
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }

    public func kill9() { if process.isRunning { kill(pid, SIGKILL) } }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Paths of the repository, found from this file's location.
public enum RepoPaths {
    public static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let shared: URL = root.deletingLastPathComponent().appendingPathComponent("shared")
    public static let buildDirectory: URL = root.appendingPathComponent(".build")
}

/// The Go reference peer, built once per test run by Tests/Interop/build-gopeer.sh.
///
/// The build runs as a child process awaited asynchronously: a blocking wait here would hold a
/// thread of Swift's cooperative pool (two on this machine) and stall every other test.
public enum GoPeer {
    static let build = Task<String, any Error> {
        let output = RepoPaths.buildDirectory.appendingPathComponent("gopeer").path
        let script = RepoPaths.root.appendingPathComponent("Tests/Interop/build-gopeer.sh").path
        let builder = try ChildProcess("/bin/bash", [script, output], name: "build-gopeer")
        let status = try await builder.waitForExit(timeout: .seconds(300))
        guard status == 0 else {
            throw ChildProcessError("building the Go peer failed (run contrib/setup.sh): \(builder.stderr.suffix(2000))")
        }
        return output
    }

    /// Path of the gopeer binary; builds it on first use.
    public static func path() async throws -> String { try await build.value }
}

/// A lock-protected value that can be shared by reference between tasks.
public final class Locked<Value: Sendable>: Sendable {
    let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R { try mutex.withLock { try body(&$0) } }
    public var value: Value { mutex.withLock { $0 } }
}

/// Executables built next to the test bundle (`toki`, `toki-stub-backend`).
public enum Products {
    public static let directory: URL = {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = runner.deletingLastPathComponent()
        // Inside an .xctest bundle directory on some layouts.
        if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("toki").path) { return dir }
        return RepoPaths.buildDirectory.appendingPathComponent("debug")
    }()

    public static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

/// A temporary directory removed when the value is dropped.
public final class TemporaryDirectory: Sendable {
    public let path: String
    public init(prefix: String = "toki-test") {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        path = url.path
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
