import Foundation
import TokiTunnel

/// Everything `toki hub` can be told. Defaults are the README's.
public struct HubConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var dataDirectory = "./toki-data"
    /// Serve HTTPS/WSS with this certificate (reloadable); nil: plain HTTP (behind a TLS proxy).
    public var tls: ServerCertificate?
    /// Largest request body accepted (413 above). Base64 in the tunnel adds a third.
    public var maxBodyBytes = 32 * 1024 * 1024
    /// Control-stream deadlines (Tokilake: 30 s before registration, 45 s after).
    public var registerTimeout: Duration = .seconds(30)
    public var heartbeatTimeout: Duration = .seconds(45)
    /// How long a worker may take to send the response head (504 after).
    public var responseTimeout: Duration = .seconds(300)
    /// A request that waited this long for its head while its worker sent nothing at all makes
    /// the hub ping the worker; no pong within `workerProbeTimeout` and the worker is treated as
    /// dead (its pending requests are retried elsewhere): a frozen worker costs no more than a dead one.
    public var workerProbeAfter: Duration = .seconds(2)
    public var workerProbeTimeout: Duration = .seconds(5)
    /// Worker links silent this long get a WebSocket ping (`LinkWatch`); a link still silent a period
    /// later is closed: a silently dead link is closed within two periods,
    /// so a reconnecting worker is not locked out of its namespace for long.
    public var pingInterval: Duration = .seconds(15)
    /// A client that accepts no bytes for this long while a write to it is pending is cut off
    /// (progress is judged, not elapsed time: a steady slow reader is never cut).
    public var slowClientTimeout: Duration = .seconds(10)
    /// Response bytes the hub holds for one client beyond what its socket took. On smux v1 links
    /// (original workers) a client over it is cut off; on v2 links the stream's window holds the rest.
    public var responseBufferBytes = 4 * 1024 * 1024
    /// After the head, a worker silent this long fails the response (504-like `worker_timeout`).
    /// Long, for slow reasoning models; SSE keep-alives stop proxies cutting the client meanwhile.
    public var streamIdleTimeout: Duration = .seconds(300)
    /// While an SSE response is idle, a comment line is sent this often.
    public var sseKeepAliveInterval: Duration = .seconds(15)
    /// Whether workers that offer `toki-lz4` get it.
    public var allowLZ4 = true
    /// Whether workers that offer smux v2 (per-stream windows) get it.
    public var allowSmux2 = true
    /// Workers tried for one request before giving up (only before the first response byte).
    public var maxAttempts = 3
    public var maxModelsPerWorker = 1024
    /// How long graceful shutdown (SIGTERM/SIGINT) waits for in-flight requests before closing worker tunnels.
    public var drainTimeout: Duration = .seconds(30)
    /// Token lookups are cached this long (a revoked token stops working within it).
    public var tokenCacheTTL: Duration = .seconds(10)
    public var tunnelLimits = TunnelLimits()
    /// Rate limits of every token (a token's own limits replace these) and of every user (all
    /// their tokens together). Unlimited by default.
    public var tokenRateLimit = RateLimit.unlimited
    public var userRateLimit = RateLimit.unlimited
    /// Usage rows older than this are deleted (hourly); nil keeps them. The ledger is never pruned.
    public var usageRetention: Duration?
    // HTTP server limits: timeouts, header size, connections (HTTPServerLimits.swift).
    public var httpLimits = HTTPServerLimits()

    /// This node's id in relay chains (loop detection, `/admin/workers`' `via`): the host name
    /// and a random suffix, new at each start.
    public var nodeID = HubConfiguration.makeNodeID()
    /// Where the node records its metrics (`.disabled`: nowhere), and what `GET /metrics` on
    /// the API port answers (nil: the route does not exist; `toki` may serve it on its own port).
    public var metrics: HubMetrics = .disabled
    public var metricsExposition: MetricsExposition?

    public init() {}

    public static func makeNodeID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        return "\(host.isEmpty ? "node" : host)-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }
}
