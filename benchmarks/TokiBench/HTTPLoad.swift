// toki-bench http: a closed-loop HTTP load generator for the hub+worker latency benchmark
// (benchmarks/latency.sh).
//
//   toki-bench http --url URL [--token T] [--concurrency C] [--duration S] [--warmup W]
//                   [--stream] [--body JSON] [--get] [--threads N] [--timeout S] [--nio-executor]
//
// C loops, each on its own keep-alive HTTP/1.1 connection (AsyncHTTPClient pool, soft limit C),
// POST the body (or GET, with --get) back to back for W seconds of warm-up (not recorded) and then S seconds
// (recorded). A request's latency runs from just before `execute` to the last body byte
// (ContinuousClock); with --stream also the time to the first non-empty body chunk (TTFB).
// A request counts as an error if it throws, its status is not 200, or (with --stream) the body
// does not end with `data: [DONE]`. Percentiles come from the sorted array of all samples.
// --threads: event loop threads of the client (default 1). --nio-executor: Swift Concurrency runs
// on NIO's singleton event loops (a diagnostic: the cost of task <-> event loop thread hops).
//
// Prints one line:
//   RESULT ok mode=plain|stream concurrency=C seconds=S requests=N errors=E rps=X
//          p50_us=… p90_us=… p99_us=… max_us=… [ttfb_p50_us=… ttfb_p90_us=… ttfb_p99_us=…]
// (`RESULT fail …` and exit 1 if not a single request succeeded.)

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

enum HTTPLoad {
    /// Samples of one loop, in nanoseconds.
    struct Samples: Sendable {
        var total: [Int64] = []
        var ttfb: [Int64] = []
        var errors = 0
        var firstError: String?
    }

    static let defaultBody = #"{"model":"stub-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#

    static func nanos(_ d: Duration) -> Int64 {
        let c = d.components
        return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
    }

    /// Nearest-rank percentile of a sorted array, in µs.
    static func percentile(_ sorted: [Int64], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        let index = min(sorted.count - 1, max(0, rank - 1))
        return Double(sorted[index]) / 1000
    }

    static func run(_ args: Arguments) async throws {
        guard let url = args.values["url"] else { throw UsageError(description: "--url is required") }
        let token = args.values["token"]
        let get = args.flags.contains("get")  // e.g. /v1/models
        let concurrency = try args.int("concurrency", default: 1)
        let duration = try args.double("duration", default: 5)
        let warmup = try args.double("warmup", default: 1)
        let stream = args.flags.contains("stream")
        let threads = try args.int("threads", default: 1)
        let requestTimeout = try args.int("request-timeout", default: 30)
        var bodyText = args.values["body"] ?? defaultBody
        if stream, args.values["body"] == nil {
            bodyText = #"{"model":"stub-model","messages":[{"role":"user","content":"hi"}],"stream":true,"stub_chunks":20}"#
        }
        guard concurrency > 0, duration > 0, warmup >= 0, threads > 0 else {
            throw UsageError(description: "bad --concurrency/--duration/--warmup/--threads")
        }
        startWatchdog(try args.double("timeout", default: warmup + duration + 60))

        // --nio-executor: run Swift Concurrency on NIO's event loops (no thread hop between the
        // loops and the tasks); AsyncHTTPClient then uses the same singleton group.
        let nioExecutor = args.flags.contains("nio-executor")
        if nioExecutor, !NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() {
            fail("could not install NIO as the global executor")
        }
        let group = nioExecutor ? MultiThreadedEventLoopGroup.singleton : MultiThreadedEventLoopGroup(numberOfThreads: threads)
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(Int64(requestTimeout)))
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        configuration.httpVersion = .http1Only
        configuration.connectionPool = .init(idleTimeout: .seconds(120),
                                             concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency)
        configuration.proxy = nil
        let client = HTTPClient(eventLoopGroup: group, configuration: configuration)

        let body = ByteBuffer(string: bodyText)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        if stream { headers.add(name: "Accept", value: "text/event-stream") }
        if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        let requestHeaders = headers

        let clock = ContinuousClock()
        let begin = clock.now
        let measureFrom = begin + .milliseconds(Int64(warmup * 1000))
        let deadline = measureFrom + .milliseconds(Int64(duration * 1000))
        let done = Data("data: [DONE]".utf8)

        @Sendable func loop() async -> Samples {
            var samples = Samples()
            samples.total.reserveCapacity(1 << 16)
            while true {
                let start = clock.now
                if start >= deadline { break }
                let record = start >= measureFrom
                var request = HTTPClientRequest(url: url)
                request.headers = requestHeaders
                if get {
                    request.method = .GET
                } else {
                    request.method = .POST
                    request.body = .bytes(body)
                }
                var firstByte: ContinuousClock.Instant?
                do {
                    let response = try await client.execute(request, timeout: .seconds(Int64(requestTimeout)))
                    var tail = Data()
                    var bytes = 0
                    for try await chunk in response.body {
                        if chunk.readableBytes > 0, firstByte == nil { firstByte = clock.now }
                        bytes += chunk.readableBytes
                        if stream {
                            tail.append(contentsOf: chunk.readableBytesView)
                            if tail.count > 64 { tail.removeFirst(tail.count - 64) }
                        }
                    }
                    let end = clock.now
                    var problem: String?
                    if response.status != .ok {
                        problem = "status \(response.status.code)"
                    } else if bytes == 0 {
                        problem = "empty body"
                    } else if stream {
                        let trimmed = String(decoding: tail, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                        if !trimmed.hasSuffix(String(decoding: done, as: UTF8.self)) { problem = "stream without [DONE]" }
                    }
                    guard record else { continue }
                    if let problem {
                        samples.errors += 1
                        if samples.firstError == nil { samples.firstError = problem }
                    } else {
                        samples.total.append(nanos(end - start))
                        if stream, let firstByte { samples.ttfb.append(nanos(firstByte - start)) }
                    }
                } catch {
                    if record {
                        samples.errors += 1
                        if samples.firstError == nil { samples.firstError = "\(error)" }
                    }
                    // Do not spin on a dead server.
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
            return samples
        }

        let all = await withTaskGroup(of: Samples.self) { group in
            for _ in 0..<concurrency { group.addTask { await loop() } }
            var merged = Samples()
            for await s in group {
                merged.total += s.total
                merged.ttfb += s.ttfb
                merged.errors += s.errors
                if merged.firstError == nil { merged.firstError = s.firstError }
            }
            return merged
        }
        let measured = Double(nanos(clock.now - measureFrom)) / 1e9
        try? await client.shutdown()
        if !nioExecutor { try? await group.shutdownGracefully() }

        if let firstError = all.firstError {
            FileHandle.standardError.write(Data("toki-bench http: \(all.errors) errors, first: \(firstError)\n".utf8))
        }
        guard !all.total.isEmpty else { fail("no successful request (\(all.errors) errors: \(all.firstError ?? "?"))") }
        let total = all.total.sorted()
        let f = { (x: Double) in String(format: "%.1f", x) }
        var line = "RESULT ok mode=\(stream ? "stream" : "plain") concurrency=\(concurrency)"
        line += " seconds=\(String(format: "%.3f", measured)) requests=\(total.count) errors=\(all.errors)"
        line += " rps=\(String(format: "%.1f", Double(total.count) / measured))"
        line += " p50_us=\(f(percentile(total, 50))) p90_us=\(f(percentile(total, 90))) p99_us=\(f(percentile(total, 99)))"
        line += " max_us=\(f(Double(total.last ?? 0) / 1000))"
        if stream {
            let ttfb = all.ttfb.sorted()
            line += " ttfb_p50_us=\(f(percentile(ttfb, 50))) ttfb_p90_us=\(f(percentile(ttfb, 90))) ttfb_p99_us=\(f(percentile(ttfb, 99)))"
        }
        print(line)
    }
}
