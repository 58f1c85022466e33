// The metrics layer: label sets stay bounded whatever clients send, handles are made once per
// label set (not per request), the histograms use the hub's buckets, and the hub's routes count
// what they answered (in-process, with fake workers).
import CoreMetrics
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Prometheus
import Synchronization
import TestSupport
import Testing
import TokiProtocol
import TokiTunnel

@testable import TokiHub

/// A Prometheus factory that counts the handles it was asked to make.
final class CountingFactory: MetricsFactory, Sendable {
    let registry = PrometheusCollectorRegistry()
    let inner: PrometheusMetricsFactory
    let made = Atomic<Int>(0)

    init() {
        var inner = PrometheusMetricsFactory(registry: registry)
        inner.durationHistogramBuckets = HubMetrics.histogramBuckets
        self.inner = inner
    }

    var text: PrometheusText { get throws { try PrometheusText(registry.emitToString()) } }
    var handlesMade: Int { made.load(ordering: .relaxed) }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        made.add(1, ordering: .relaxed)
        return inner.makeCounter(label: label, dimensions: dimensions)
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        made.add(1, ordering: .relaxed)
        return inner.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        made.add(1, ordering: .relaxed)
        return inner.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        made.add(1, ordering: .relaxed)
        return inner.makeMeter(label: label, dimensions: dimensions)
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        made.add(1, ordering: .relaxed)
        return inner.makeTimer(label: label, dimensions: dimensions)
    }
    func destroyCounter(_ handler: any CounterHandler) { inner.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { inner.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { inner.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { inner.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { inner.destroyTimer(handler) }
}

@Suite("hub metrics")
struct HubMetricsTests {
    @Test("a model nobody serves is labelled unknown, whatever its name: a client cannot add series")
    func unknownModelsCollapse() throws {
        let factory = CountingFactory()
        let metrics = HubMetrics(factory: factory)
        let route = metrics.route(.chatCompletions)
        for i in 0..<500 {
            route.series(model: "made-up-\(i)", served: { _ in false }).answered(status: 404)
        }
        route.series(model: nil, served: { _ in true }).answered(status: 400)
        let text = try factory.text
        let requests = text.matching(HubMetrics.Name.requests)
        #expect(Set(requests.map { $0.labels["model"] }) == ["unknown"])
        #expect(text.sum(HubMetrics.Name.requests, ["route": "chat_completions", "model": "unknown", "status": "404"]) == 500)
        #expect(text.sum(HubMetrics.Name.requests, ["model": "unknown", "status": "400"]) == 1)
    }

    @Test("served models get their own label up to the cap; the rest share `other`")
    func servedModelsAreCapped() throws {
        let factory = CountingFactory()
        let metrics = HubMetrics(factory: factory, maxModelLabels: 3)
        let route = metrics.route(.embeddings)
        for i in 0..<10 { route.series(servedModel: "m\(i)").answered(status: 200) }
        let text = try factory.text
        let models = Set(text.matching(HubMetrics.Name.requests).compactMap { $0.labels["model"] })
        #expect(models == ["m0", "m1", "m2", "other"])
        #expect(text.sum(HubMetrics.Name.requests, ["model": "other"]) == 7)
        #expect(text.sum(HubMetrics.Name.requests, ["route": "embeddings"]) == 10)
    }

    @Test("handles are made once per label set: more requests make no more handles")
    func handlesAreCached() throws {
        let factory = CountingFactory()
        let metrics = HubMetrics(factory: factory)
        let route = metrics.route(.chatCompletions)
        func request(_ status: Int) {
            let series = route.series(servedModel: "llama")
            series.answered(status: status)
            series.finished(duration: .milliseconds(30), firstByte: .milliseconds(5), promptTokens: 10, completionTokens: 20)
            metrics.retries.increment()
        }
        for status in [200, 429, 502] { request(status) }
        let warm = factory.handlesMade
        for i in 0..<1000 { request([200, 429, 502][i % 3]) }
        #expect(factory.handlesMade == warm)
        let text = try factory.text
        #expect(text.sum(HubMetrics.Name.requests, ["model": "llama"]) == 1003)
        #expect(text.sum(HubMetrics.Name.promptTokens, ["model": "llama"]) == 10030)
        #expect(text.sum(HubMetrics.Name.completionTokens, ["model": "llama"]) == 20060)
    }

    @Test("durations land in the hub's buckets, which reach past the backend's 10 s default")
    func histogramBuckets() throws {
        let factory = CountingFactory()
        let series = HubMetrics(factory: factory).route(.chatCompletions).series(servedModel: "llama")
        series.finished(duration: .seconds(42), firstByte: .milliseconds(300), promptTokens: nil, completionTokens: nil)
        series.finished(duration: .milliseconds(7), firstByte: .milliseconds(3), promptTokens: nil, completionTokens: nil)
        let text = try factory.text
        let buckets = text.matching(HubMetrics.Name.duration + "_bucket", ["model": "llama"])
        #expect(buckets.count == HubMetrics.durationBuckets.count + 1)  // and +Inf
        func le(_ bound: String) -> Double? { buckets.first { $0.labels["le"] == bound }?.value }
        #expect(le("0.005") == 0)
        #expect(le("0.01") == 1)
        #expect(le("30.0") == 1)
        #expect(le("60.0") == 2)
        #expect(le("+Inf") == 2)
        #expect(text.sum(HubMetrics.Name.firstByte + "_count", ["model": "llama"]) == 2)
        let firstByte = text.matching(HubMetrics.Name.firstByte + "_bucket", ["model": "llama"])
        #expect(firstByte.first { $0.labels["le"] == "0.25" }?.value == 1)
        #expect(firstByte.first { $0.labels["le"] == "0.5" }?.value == 2)
    }

    @Test("rate-limit refusals are counted by reason and scope")
    func rateLimitReasons() throws {
        let factory = CountingFactory()
        let metrics = HubMetrics(factory: factory)
        let status = RateLimitStatus()
        func refusal(_ kind: RateLimitRefusal.Kind, _ scope: RateLimitRefusal.Scope) -> RateLimitRefusal {
            RateLimitRefusal(kind: kind, scope: scope, limit: 1, remaining: 0, requested: 1, resetNanoseconds: 0, retryAfter: 1,
                             exceedsLimit: false, status: status)
        }
        metrics.rateLimited(refusal(.requests, .token))
        metrics.rateLimited(refusal(.requests, .token))
        metrics.rateLimited(refusal(.tokens, .user))
        let text = try factory.text
        #expect(text.sum(HubMetrics.Name.rateLimited, ["reason": "requests", "scope": "token"]) == 2)
        #expect(text.sum(HubMetrics.Name.rateLimited, ["reason": "tokens", "scope": "user"]) == 1)
        #expect(text.sum(HubMetrics.Name.rateLimited) == 3)
    }

    @Test("the routes count answers by route, model and status; refusals before the handler count as unknown")
    func routesCount() async throws {
        let factory = CountingFactory()
        let fixture = try await HubFixture.make { configuration in
            configuration.metrics = HubMetrics(factory: factory)
            configuration.metricsExposition = MetricsExposition(contentType: "text/plain; version=0.0.4") { [registry = factory.registry] in
                ByteBuffer(bytes: registry.emitToBuffer())
            }
        }
        try fixture.hub.registry.addFake("w1", models: ["llama"]) { _ in
            .respond(status: 200, headers: ["Content-Type": "application/json"],
                     body: #"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#)
        }
        let text = try await fixture.test { client in
            for _ in 0..<3 { #expect(try await client.post(token: fixture.alice, json: chat("llama")).status == .ok) }
            #expect(try await client.post(token: fixture.alice, json: chat("nope")).status == .notFound)
            #expect(try await client.post(token: "sk-toki-wrong", json: chat("llama")).status == .unauthorized)
            #expect(try await client.post(token: fixture.alice, json: "{").status == .badRequest)
            let scraped = try await client.execute(uri: "/metrics", method: .get)
            #expect(scraped.status == .ok)
            return try PrometheusText(String(buffer: scraped.body))
        }
        let labels = ["route": "chat_completions"]
        #expect(text.sum(HubMetrics.Name.requests, labels.merging(["model": "llama", "status": "200"]) { $1 }) == 3)
        #expect(text.sum(HubMetrics.Name.requests, labels.merging(["model": "unknown", "status": "404"]) { $1 }) == 1)
        #expect(text.sum(HubMetrics.Name.requests, labels.merging(["model": "unknown", "status": "401"]) { $1 }) == 1)
        #expect(text.sum(HubMetrics.Name.requests, labels.merging(["model": "unknown", "status": "400"]) { $1 }) == 1)
        #expect(text.sum(HubMetrics.Name.requests) == 6)
        #expect(text.sum(HubMetrics.Name.promptTokens, ["model": "llama"]) == 21)
        #expect(text.sum(HubMetrics.Name.completionTokens, ["model": "llama"]) == 9)
        #expect(text.sum(HubMetrics.Name.duration + "_count", ["model": "llama"]) == 3)
        #expect(text.sum(HubMetrics.Name.workersOnline) == 1)
        #expect(text.sum(HubMetrics.Name.inFlight) == 0)
    }

    @Test("/readyz: ready while the store answers, 503 while draining")
    func readiness() async throws {
        let fixture = try await HubFixture.make()
        try await fixture.test { client in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            fixture.hub.draining.withLock { $0 = true }
            let draining = try await client.execute(uri: "/readyz", method: .get)
            #expect(draining.status == .serviceUnavailable)
            #expect(String(buffer: draining.body) == "draining\n")
        }
    }

    @Test("link traffic: wire and plain bytes, and their ratio")
    func trafficRatio() {
        let traffic = LinkTraffic()
        #expect(traffic.totals.compressionRatio == 0)
        traffic.received(wire: 100, plain: 1000)
        traffic.sent(wire: 25, plain: 250)
        #expect(traffic.totals == LinkTraffic.Totals(wireIn: 100, wireOut: 25, plainIn: 1000, plainOut: 250))
        #expect(traffic.totals.compressionRatio == 10)
    }
}
