// toki-bench: loopback throughput of the Swift tunnel and the chat-replay wire-size measurement.
//
//   toki-bench tunnel --streams N --bytes B [--lz4] [--version 1|2] [--mode sink|echo] [--timeout S]
//       A Swift TunnelListener and a Swift ClientTunnel in one process over loopback WebSocket,
//       the stream test protocol (StreamProbe) on N concurrent streams of B bytes each. Prints
//       the same RESULT line as `gopeer bench-pair`:
//       RESULT ok streams=N bytes=B seconds=S mbps=X [lz4=true|false]
//
//   toki-bench fleet --hub WS-URL --token T --workers N
//       N simulated original-style workers in one process (scale benchmark); see Fleet.swift.
//
//   toki-bench chat-replay --file traffic-chat.jsonl [--streams 8] [--lz4] [--framing lines|raw]
//                          [--gap-ms 1] [--version 1|2]
//       Replays the recorded responses worker→hub; see ChatReplay.swift.
//
// Exit codes: 0 ok, 1 failure (RESULT fail …), 2 usage.

import Foundation
import Logging
import NIOCore
import TokiMux
import TokiProbe
import TokiTunnel

struct UsageError: Error, CustomStringConvertible {
    var description: String
}

/// Minimal `--name value` / `--flag` parsing.
struct Arguments {
    var values: [String: String] = [:]
    var flags: Set<String> = []

    init(_ args: ArraySlice<String>, flags known: Set<String>) throws {
        var i = args.startIndex
        while i < args.endIndex {
            let arg = args[i]
            guard arg.hasPrefix("--") else { throw UsageError(description: "unexpected argument '\(arg)'") }
            let name = String(arg.dropFirst(2))
            if let eq = name.firstIndex(of: "=") {
                values[String(name[..<eq])] = String(name[name.index(after: eq)...])
            } else if known.contains(name) {
                flags.insert(name)
            } else {
                i += 1
                guard i < args.endIndex else { throw UsageError(description: "--\(name) needs a value") }
                values[name] = args[i]
            }
            i += 1
        }
    }

    func int(_ name: String, default value: Int) throws -> Int {
        guard let raw = values[name] else { return value }
        guard let parsed = Int(raw) else { throw UsageError(description: "--\(name): not an integer: \(raw)") }
        return parsed
    }

    func double(_ name: String, default value: Double) throws -> Double {
        guard let raw = values[name] else { return value }
        guard let parsed = Double(raw) else { throw UsageError(description: "--\(name): not a number: \(raw)") }
        return parsed
    }
}

func fail(_ reason: String) -> Never {
    print("RESULT fail \(reason)")
    FileHandle.standardError.write(Data("RESULT fail \(reason)\n".utf8))
    exit(1)
}

/// Fails the run when `seconds` pass (0: never).
func startWatchdog(_ seconds: Double) {
    guard seconds > 0 else { return }
    Thread.detachNewThread {
        Thread.sleep(forTimeInterval: seconds)
        fail("timeout after \(Int(seconds))s")
    }
}

func runTunnel(_ args: Arguments) async throws {
    let streams = try args.int("streams", default: 1)
    let bytes = try args.int("bytes", default: 64 << 20)
    let version = UInt8(try args.int("version", default: 1))
    let lz4 = args.flags.contains("lz4")
    let mode: StreamProbe.Mode
    switch args.values["mode"] ?? "sink" {
    case "sink": mode = .sink
    case "echo": mode = .echo
    case let other: throw UsageError(description: "--mode: sink or echo, not \(other)")
    }
    guard streams > 0, bytes >= 0, version == 1 || version == 2 else { throw UsageError(description: "bad --streams/--bytes/--version") }
    startWatchdog(try args.double("timeout", default: 120))

    // Server: Hummingbird WebSocket listener whose sessions serve the probe protocol.
    let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
    var listener = TunnelListener()
    listener.mux.version = version
    listener.allowLZ4 = true
    listener.logger.logLevel = .critical
    let server = Task {
        try await listener.run(onRunning: { portContinuation.yield($0) }) { session, _ in
            await StreamProbe.serve(session)
        }
    }
    var ports = portStream.makeAsyncIterator()
    guard let port = await ports.next() else { fail("listener did not start") }

    // Client: dial, run the session in the background.
    var options = TunnelDialOptions(url: "ws://127.0.0.1:\(port)/api/tokilake/connect")
    options.offerLZ4 = lz4
    options.headers = [("Authorization", "Bearer test")]
    var logger = Logger(label: "toki-bench")
    logger.logLevel = .critical
    let tunnel = try await ClientTunnel.connect(options, logger: logger)
    guard tunnel.lz4 == lz4 else { fail("LZ4 negotiation: asked \(lz4), got \(tunnel.lz4)") }
    var config = SmuxConfiguration()
    config.version = version
    let session = try MuxSession(role: .client, configuration: config, logger: logger)
    let running = Task { try await tunnel.run(session) }

    // Like gopeer: from the first OpenStream until every stream is verified.
    let clock = ContinuousClock()
    let start = clock.now
    do {
        try await StreamProbe.run(session, streams: streams, length: UInt64(bytes), mode: mode)
    } catch {
        fail("\(error)")
    }
    let elapsed = clock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let mbps = Double(streams) * Double(bytes) * 8 / seconds / 1e6
    print("RESULT ok streams=\(streams) bytes=\(bytes) seconds=\(String(format: "%.6f", seconds)) mbps=\(String(format: "%.1f", mbps)) lz4=\(lz4)")
    session.close()
    _ = await running.result
    server.cancel()
    _ = await server.result
}

let usage = """
    usage: toki-bench tunnel --streams N --bytes B [--lz4] [--version 1|2] [--mode sink|echo] [--timeout S]
           toki-bench chat-replay --file PATH [--streams 8] [--lz4] [--framing lines|raw] [--gap-ms 1] [--version 1|2]
           toki-bench fleet --hub WS-URL --token T --workers N [--model M] [--heartbeat 15] [--dial-concurrency 64]
           toki-bench http --url URL [--token T] [--concurrency C] [--duration S] [--warmup W] [--stream] [--body JSON] [--get] [--threads N] [--nio-executor]
    """

let argv = CommandLine.arguments
guard argv.count >= 2 else {
    FileHandle.standardError.write(Data((usage + "\n").utf8))
    exit(2)
}
do {
    switch argv[1] {
    case "tunnel":
        try await runTunnel(Arguments(argv.dropFirst(2), flags: ["lz4"]))
    case "chat-replay":
        try await ChatReplay.run(Arguments(argv.dropFirst(2), flags: ["lz4"]))
    case "http":
        try await HTTPLoad.run(Arguments(argv.dropFirst(2), flags: ["stream", "nio-executor", "get"]))
    case "fleet":
        try await Fleet.run(Arguments(argv.dropFirst(2), flags: []))
    default:
        throw UsageError(description: "unknown command '\(argv[1])'")
    }
} catch let error as UsageError {
    FileHandle.standardError.write(Data("toki-bench: \(error)\n\(usage)\n".utf8))
    exit(2)
} catch {
    fail("\(error)")
}
exit(0)
