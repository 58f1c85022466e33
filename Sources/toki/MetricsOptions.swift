import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import TokiConfig
import TokiHub

/// metrics_listen and metrics (`--metrics-listen`, `--metrics`) of `toki hub` and `toki
/// relay-only`; the worker has only metrics_listen (it has no HTTP port of its own).
struct MetricsOptions {
    /// metrics_listen, already checked as HOST:PORT.
    var listen: HostPort?
    /// metrics: also on the main port.
    var onMainPort = false

    /// The Prometheus backend, when metrics were asked for (bootstrapped process-wide).
    func backend() -> PrometheusBackend? {
        onMainPort || listen != nil ? PrometheusBackend.bootstrap() : nil
    }

    /// The metrics listener, if metrics_listen was given.
    func listener(_ backend: PrometheusBackend?, logger: Logger, render: @escaping @Sendable (MetricsExposition) -> ByteBuffer,
                  readiness: @escaping @Sendable () async -> (ready: Bool, reason: String)) -> MetricsListener? {
        guard let listen, let backend else { return nil }
        return MetricsListener(address: listen, exposition: backend.exposition, render: render, readiness: readiness, logger: logger)
    }
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
