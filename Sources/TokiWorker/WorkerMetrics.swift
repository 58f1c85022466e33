import CoreMetrics

/// A worker's metrics, through swift-metrics (the backend is the caller's; `toki worker
/// --metrics-listen` exports them). Handles are made once here; a request updates one or two.
public final class WorkerMetrics: Sendable {
    public static let disabled = WorkerMetrics(factory: NOOPMetricsHandler.instance)

    public enum Name {
        public static let requests = "toki_worker_requests_total"
        public static let inFlight = "toki_worker_requests_in_flight"
        public static let backendErrors = "toki_worker_backend_errors_total"
        public static let reconnects = "toki_worker_reconnects_total"
        public static let connected = "toki_worker_connected"
    }

    let outcomes: [StreamOutcome: CoreMetrics.Counter]
    /// Backend failures by stage: the request could not be built or routed (`refused`), the
    /// backend could not be reached or answered nothing (`request`), its body failed midway (`body`).
    let backendErrors: (refused: CoreMetrics.Counter, request: CoreMetrics.Counter, body: CoreMetrics.Counter)
    let reconnects: CoreMetrics.Counter
    let inFlight: CoreMetrics.Gauge
    let connected: CoreMetrics.Gauge

    public init(factory: any MetricsFactory) {
        let all: [StreamOutcome] = [.completed, .failed, .cancelled, .hubClosed, .badRequest]
        outcomes = Dictionary(uniqueKeysWithValues: all.map {
            ($0, CoreMetrics.Counter(label: Name.requests, dimensions: [("outcome", $0.label)], factory: factory))
        })
        func backend(_ stage: String) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: Name.backendErrors, dimensions: [("stage", stage)], factory: factory)
        }
        backendErrors = (backend("refused"), backend("request"), backend("body"))
        reconnects = CoreMetrics.Counter(label: Name.reconnects, dimensions: [], factory: factory)
        inFlight = CoreMetrics.Gauge(label: Name.inFlight, dimensions: [], factory: factory)
        connected = CoreMetrics.Gauge(label: Name.connected, dimensions: [], factory: factory)
    }

    func relayed(_ outcome: StreamOutcome) { outcomes[outcome]?.increment() }
}

extension StreamOutcome {
    /// The metrics label (snake case, as Prometheus labels usually are).
    var label: String { self == .hubClosed ? "hub_closed" : self == .badRequest ? "bad_request" : rawValue }
}

extension WorkerService {
    /// Sets the gauges read off the service's state; call right before exporting.
    public func refreshMetrics() {
        let metrics = options.metrics
        metrics.inFlight.record(registry.count)
        metrics.connected.record(status.registered ? 1 : 0)
    }

    /// Ready: registered with the hub.
    public func readiness() -> (ready: Bool, reason: String) {
        status.registered ? (true, "ready") : (false, "not registered with the hub")
    }
}
