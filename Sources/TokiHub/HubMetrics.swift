import CoreMetrics
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization
import TokiProtocol
import TokiTunnel

/// The hub's (and a relay's) metrics, through swift-metrics: the backend is whatever factory
/// the caller passes (`toki` bootstraps Prometheus); `HubMetrics.disabled` records nothing.
///
/// Cost on the request path: handles are created once per (route, model) and per status code
/// and then reused, so a request does one dictionary lookup under its route's lock (not a
/// global one) and a few handle updates. Gauges that can be read off the registry (workers,
/// relays, requests in flight) and the tunnels' byte counts are set when metrics are scraped
/// (`refresh`), never per request or per tunnel message.
///
/// Labels are bounded so that no client can grow the series set: the `model` label is a model a
/// worker serves, at most `maxModelLabels` of them per route (then `other`); a model nobody
/// serves, or a request refused before its model was read, is `unknown`.
public final class HubMetrics: Sendable {
    public static let disabled = HubMetrics(factory: NOOPMetricsHandler.instance)

    /// Model label values kept per route before new ones collapse into `other`.
    public let maxModelLabels: Int
    let factory: any MetricsFactory
    let routes: [RouteKind: RouteMetrics]
    /// The tunnel server's links count their bytes here (read in `refresh`).
    public let traffic: TunnelTraffic

    let retries: CoreMetrics.Counter
    let insufficientQuota: CoreMetrics.Counter
    let rateLimited: [RateLimitRefusal.Kind: [RateLimitRefusal.Scope: CoreMetrics.Counter]]
    /// Workers registered, directly and announced through a relay (a reconnect counts again).
    let workerConnects: (direct: CoreMetrics.Counter, relayed: CoreMetrics.Counter)
    let workersOnline: CoreMetrics.Gauge
    let relaysOnline: CoreMetrics.Gauge
    let inFlight: CoreMetrics.Gauge
    let upstreamConnected: CoreMetrics.Gauge
    let upstreamReconnects: CoreMetrics.Counter
    let tunnel: [(kind: String, traffic: LinkTraffic, bytes: TrafficCounters)]
    /// The traffic totals last reported, to turn the atomics into counter increments.
    let reported: Mutex<(links: [LinkTraffic.Totals], reconnects: Int)>

    /// Metric names, in one place (docs/metrics.md lists them with their labels).
    public enum Name {
        public static let requests = "toki_hub_requests_total"
        public static let duration = "toki_hub_request_duration_seconds"
        public static let firstByte = "toki_hub_time_to_first_byte_seconds"
        public static let promptTokens = "toki_hub_prompt_tokens_total"
        public static let completionTokens = "toki_hub_completion_tokens_total"
        public static let inFlight = "toki_hub_requests_in_flight"
        public static let workersOnline = "toki_hub_workers_online"
        public static let relaysOnline = "toki_hub_relays_online"
        public static let workerConnects = "toki_hub_worker_connects_total"
        public static let retries = "toki_hub_retries_total"
        public static let rateLimited = "toki_hub_rate_limited_total"
        public static let insufficientQuota = "toki_hub_insufficient_quota_total"
        public static let tunnelBytes = "toki_tunnel_bytes_total"
        public static let lz4Ratio = "toki_tunnel_lz4_ratio"
        public static let upstreamConnected = "toki_upstream_connected"
        public static let upstreamReconnects = "toki_upstream_reconnects_total"
    }

    /// Histogram buckets for the backend to use (LLM answers take seconds to minutes; the
    /// backends' defaults stop at 10 s).
    public static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300),
    ]
    public static let histogramBuckets: [String: [Duration]] = [Name.duration: durationBuckets, Name.firstByte: durationBuckets]

    public init(factory: any MetricsFactory, maxModelLabels: Int = 100) {
        self.factory = factory
        self.maxModelLabels = maxModelLabels
        let traffic = TunnelTraffic()
        self.traffic = traffic
        var routes: [RouteKind: RouteMetrics] = [:]
        for kind in RouteKind.allCases { routes[kind] = RouteMetrics(route: kind.rawValue, factory: factory, maxModels: maxModelLabels) }
        self.routes = routes
        retries = CoreMetrics.Counter(label: Name.retries, dimensions: [], factory: factory)
        insufficientQuota = CoreMetrics.Counter(label: Name.insufficientQuota, dimensions: [], factory: factory)
        let kinds: [RateLimitRefusal.Kind] = [.requests, .tokens, .concurrency, .capacity]
        rateLimited = Dictionary(uniqueKeysWithValues: kinds.map { kind in
            (kind, Dictionary(uniqueKeysWithValues: [RateLimitRefusal.Scope.token, .user].map { scope in
                (scope, CoreMetrics.Counter(label: Name.rateLimited, dimensions: [("reason", kind.rawValue), ("scope", scope.rawValue)], factory: factory))
            }))
        })
        workerConnects = (CoreMetrics.Counter(label: Name.workerConnects, dimensions: [("link", "direct")], factory: factory),
                          CoreMetrics.Counter(label: Name.workerConnects, dimensions: [("link", "relay")], factory: factory))
        workersOnline = CoreMetrics.Gauge(label: Name.workersOnline, dimensions: [], factory: factory)
        relaysOnline = CoreMetrics.Gauge(label: Name.relaysOnline, dimensions: [], factory: factory)
        inFlight = CoreMetrics.Gauge(label: Name.inFlight, dimensions: [], factory: factory)
        tunnel = [("worker", traffic.worker, TrafficCounters(link: "worker", factory: factory)),
                  ("relay", traffic.relay, TrafficCounters(link: "relay", factory: factory))]
        upstreamConnected = CoreMetrics.Gauge(label: Name.upstreamConnected, dimensions: [], factory: factory)
        upstreamReconnects = CoreMetrics.Counter(label: Name.upstreamReconnects, dimensions: [], factory: factory)
        reported = Mutex((links: Array(repeating: LinkTraffic.Totals(), count: 2), reconnects: 0))
    }

    func route(_ kind: RouteKind) -> RouteMetrics { routes[kind]! }

    func rateLimited(_ refusal: RateLimitRefusal) {
        rateLimited[refusal.kind]?[refusal.scope]?.increment()
    }

    /// Brings the gauges read off the node's state and the tunnels' byte counters up to date;
    /// called right before the metrics are exported.
    public func refresh(registry: WorkerRegistry, relays: Int, upstream: UpstreamStatus? = nil) {
        let workers = registry.workers
        workersOnline.record(workers.count)
        relaysOnline.record(relays)
        inFlight.record(workers.reduce(0) { $0 + $1.inFlight })
        reported.withLock { reported in
            for (i, link) in tunnel.enumerated() {
                let now = link.traffic.totals
                link.bytes.add(now, since: reported.links[i])
                reported.links[i] = now
            }
            if let upstream {
                upstreamConnected.record(upstream.connected ? 1 : 0)
                if upstream.reconnects > reported.reconnects { upstreamReconnects.increment(by: upstream.reconnects - reported.reconnects) }
                reported.reconnects = upstream.reconnects
            }
        }
    }

    /// Bytes counters of one link kind, and its ratio gauge.
    struct TrafficCounters: Sendable {
        let wireIn, wireOut, plainIn, plainOut: CoreMetrics.Counter
        let ratio: CoreMetrics.Gauge

        init(link: String, factory: any MetricsFactory) {
            func counter(_ direction: String, _ layer: String) -> CoreMetrics.Counter {
                CoreMetrics.Counter(label: Name.tunnelBytes, dimensions: [("link", link), ("direction", direction), ("layer", layer)], factory: factory)
            }
            wireIn = counter("in", "wire")
            wireOut = counter("out", "wire")
            plainIn = counter("in", "plain")
            plainOut = counter("out", "plain")
            ratio = CoreMetrics.Gauge(label: Name.lz4Ratio, dimensions: [("link", link)], factory: factory)
        }

        func add(_ now: LinkTraffic.Totals, since then: LinkTraffic.Totals) {
            wireIn.increment(by: now.wireIn &- then.wireIn)
            wireOut.increment(by: now.wireOut &- then.wireOut)
            plainIn.increment(by: now.plainIn &- then.plainIn)
            plainOut.increment(by: now.plainOut &- then.plainOut)
            ratio.record(now.compressionRatio)
        }
    }
}

/// One API route's series: one `RequestSeries` per model label, created on first use.
final class RouteMetrics: Sendable {
    let route: String
    let factory: any MetricsFactory
    let maxModels: Int
    let models: Mutex<[String: RequestSeries]>
    /// A model nobody serves, or a request refused before its model was known.
    let unknown: RequestSeries
    /// Served models past `maxModels`.
    let other: RequestSeries

    static let unknownModel = "unknown"
    static let otherModel = "other"

    init(route: String, factory: any MetricsFactory, maxModels: Int) {
        self.route = route
        self.factory = factory
        self.maxModels = maxModels
        models = Mutex([:])
        unknown = RequestSeries(route: route, model: Self.unknownModel, factory: factory)
        other = RequestSeries(route: route, model: Self.otherModel, factory: factory)
    }

    /// The series of `model`, which a worker serves (the caller checked).
    func series(servedModel model: String) -> RequestSeries {
        models.withLock { models in
            if let found = models[model] { return found }
            guard models.count < maxModels else { return other }
            let made = RequestSeries(route: route, model: model, factory: factory)
            models[model] = made
            return made
        }
    }

    /// The series of a request that was not answered by a worker: its model's if a worker
    /// serves it (`served`), else `unknown`.
    func series(model: String?, served: (String) -> Bool) -> RequestSeries {
        guard let model else { return unknown }
        // A model already labelled needs no look at the registry (whose lock requests share).
        if let known = models.withLock({ $0[model] }) { return known }
        return served(model) ? series(servedModel: model) : unknown
    }
}

/// The handles of one (route, model): answers by status, durations, tokens.
final class RequestSeries: Sendable {
    let route: String
    let model: String
    let factory: any MetricsFactory
    let duration: CoreMetrics.Timer
    let firstByte: CoreMetrics.Timer
    let promptTokens: CoreMetrics.Counter
    let completionTokens: CoreMetrics.Counter
    /// Answers by HTTP status, a handle per status seen (statuses are 100...599: bounded).
    let statuses: Mutex<[Int: CoreMetrics.Counter]>

    init(route: String, model: String, factory: any MetricsFactory) {
        self.route = route
        self.model = model
        self.factory = factory
        let labels = [("route", route), ("model", model)]
        duration = CoreMetrics.Timer(label: HubMetrics.Name.duration, dimensions: labels, factory: factory)
        firstByte = CoreMetrics.Timer(label: HubMetrics.Name.firstByte, dimensions: labels, factory: factory)
        promptTokens = CoreMetrics.Counter(label: HubMetrics.Name.promptTokens, dimensions: labels, factory: factory)
        completionTokens = CoreMetrics.Counter(label: HubMetrics.Name.completionTokens, dimensions: labels, factory: factory)
        statuses = Mutex([:])
    }

    /// Counts one answer with `status` (the head's: a stream that fails later still counts as sent).
    func answered(status: Int) {
        let status = (100...599).contains(status) ? status : 500
        let counter = statuses.withLock { statuses in
            if let found = statuses[status] { return found }
            let made = CoreMetrics.Counter(label: HubMetrics.Name.requests, dimensions: [("route", route), ("model", model), ("status", String(status))],
                               factory: factory)
            statuses[status] = made
            return made
        }
        counter.increment()
    }

    /// A forwarded answer has ended: its duration (arrival to last byte), time to the head, tokens.
    func finished(duration: Duration, firstByte: Duration, promptTokens: Int?, completionTokens: Int?) {
        self.duration.recordNanoseconds(duration.metricNanoseconds)
        self.firstByte.recordNanoseconds(firstByte.metricNanoseconds)
        if let promptTokens, promptTokens > 0 { self.promptTokens.increment(by: promptTokens) }
        if let completionTokens, completionTokens > 0 { self.completionTokens.increment(by: completionTokens) }
    }
}

extension Duration {
    var metricNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// What a node's `/metrics` answers: the backend's text, rendered when scraped. The library
/// never picks the format; the `toki` command passes its registry's exporter.
public struct MetricsExposition: Sendable {
    public var contentType: String
    public var render: @Sendable () -> ByteBuffer

    public init(contentType: String, render: @escaping @Sendable () -> ByteBuffer) {
        self.contentType = contentType
        self.render = render
    }

    /// `GET /metrics`'s answer with `text`.
    public func response(_ text: ByteBuffer) -> Response {
        Response(status: .ok, headers: [.contentType: contentType], body: .init(byteBuffer: text))
    }
}

/// A node's link to its parent, as the metrics see it (relays and `toki hub --upstream`).
public struct UpstreamStatus: Sendable {
    public var connected: Bool
    /// Reconnects since the start (monotonic).
    public var reconnects: Int

    public init(connected: Bool, reconnects: Int) {
        self.connected = connected
        self.reconnects = reconnects
    }
}
