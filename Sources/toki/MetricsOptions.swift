import ArgumentParser
import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import TokiHub

/// `--metrics-listen` and `--metrics` of `toki hub` and `toki relay-only`.
struct MetricsOptions: ParsableArguments {
    @Option(name: .long, help: "Serve GET /metrics (Prometheus text), /healthz and /readyz on their own port (HOST:PORT; port 0 picks one). Unauthenticated: keep it on loopback or a private network.")
    var metricsListen: String?

    @Flag(name: .long, help: "Also serve GET /metrics on the main port, unauthenticated (restrict it at the reverse proxy).")
    var metrics = false

    /// The Prometheus backend, when metrics were asked for (bootstrapped process-wide).
    func backend() -> PrometheusBackend? {
        metrics || metricsListen != nil ? PrometheusBackend.bootstrap() : nil
    }

    /// The metrics listener for `node`, if `--metrics-listen` was given.
    func listener(_ backend: PrometheusBackend?, logger: Logger, render: @escaping @Sendable (MetricsExposition) -> ByteBuffer,
                  readiness: @escaping @Sendable () async -> (ready: Bool, reason: String)) throws -> MetricsListener? {
        guard let metricsListen, let backend else { return nil }
        return MetricsListener(address: try HostPort(metricsListen), exposition: backend.exposition, render: render, readiness: readiness, logger: logger)
    }
}

/// `--metrics-listen` of `toki worker` (it has no HTTP port of its own).
struct WorkerMetricsOptions: ParsableArguments {
    @Option(name: .long, help: "Serve GET /metrics (Prometheus text), /healthz and /readyz on this local port (HOST:PORT; port 0 picks one). Unauthenticated: keep it on loopback.")
    var metricsListen: String?
}

/// The process's metrics backend: a Prometheus registry, with the hub's histogram buckets.
struct PrometheusBackend: Sendable {
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory

    /// Makes the backend and bootstraps swift-metrics with it (once per process: one command runs).
    static func bootstrap() -> PrometheusBackend {
        let backend = PrometheusBackend()
        MetricsSystem.bootstrap(backend.factory)
        return backend
    }

    init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = HubMetrics.histogramBuckets
        self.factory = factory
    }

    var exposition: MetricsExposition {
        MetricsExposition(contentType: "text/plain; version=0.0.4; charset=utf-8") { [registry] in
            ByteBuffer(bytes: registry.emitToBuffer())
        }
    }
}

/// A plain-HTTP listener for monitoring only: `/metrics`, `/healthz`, `/readyz`. Prints
/// `METRICS host:port` once bound (for scripts and tests, like `LISTEN`).
struct MetricsListener: Service {
    let address: HostPort
    let exposition: MetricsExposition
    let render: @Sendable (MetricsExposition) -> ByteBuffer
    let readiness: @Sendable () async -> (ready: Bool, reason: String)
    let logger: Logger

    func run() async throws {
        let router = Router(context: BasicRequestContext.self)
        router.get("/metrics") { [exposition, render] _, _ in exposition.response(render(exposition)) }
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz") { [readiness] _, _ -> Response in
            let (ready, why) = await readiness()
            return Response(status: ready ? .ok : .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: why + "\n")))
        }
        let host = address.host
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: address.port), serverName: nil),
                              onServerRunning: { channel in
                                  FileHandle.standardOutput.write(Data("METRICS \(host):\(channel.localAddress?.port ?? 0)\n".utf8))
                              }, logger: logger)
        try await app.run()
    }
}
