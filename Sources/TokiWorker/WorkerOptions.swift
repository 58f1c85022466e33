// Everything a WorkerService needs: the tokiame configuration plus the toki additions
// (discovery from bare backends, LZ4, TLS roots, limits, timings).

import Foundation
import NIOSSL
import TokiProtocol
import TokiTunnel

public struct WorkerOptions: Sendable {
    /// Hub URL, namespace, token, group, node name, backend type and the configured
    /// `model_targets`. Validation of `model_targets` is relaxed when `discoveryBackends` is set.
    public var config: TokiameConfig
    /// Bare backend base URLs whose models are discovered (and re-discovered periodically).
    /// Discovered names never replace a configured `model_targets` entry.
    public var discoveryBackends: [String] = []
    public var discoveryInterval: Duration = .seconds(30)
    /// Re-try interval while discovery has not found any model yet.
    public var discoveryRetryInterval: Duration = .seconds(2)
    public var discoveryTimeout: Duration = .seconds(10)

    /// Ask the hub for the `toki-lz4` subprotocol.
    public var offerLZ4 = false
    /// TLS for wss:// (nil: system roots, full verification; see also `caFile`).
    public var tls: TLSConfiguration?
    /// PEM file of CA certificates trusted for wss:// (used when `tls` is nil).
    public var caFile: String?
    public var dialTimeout: Duration = .seconds(10)

    /// Heartbeat period (the hub drops a worker silent for 45 s: keep it well below).
    public var heartbeatInterval: Duration
    /// No control message for this long means the link is dead (default 3 × heartbeat).
    public var livenessTimeout: Duration?
    /// Wait for each handshake ack (register, models_sync).
    public var ackTimeout: Duration = .seconds(TunnelProtocol.controlAckTimeoutSeconds)
    /// Reconnect back-off: full jitter, base doubling up to the cap.
    public var reconnectDelay: Duration
    public var reconnectDelayCap: Duration = .seconds(60)
    /// A connection registered at least this long resets the back-off.
    public var stableConnectionDuration: Duration = .seconds(60)

    /// Concurrent data streams; beyond it a stream is answered with an error line at once.
    public var maxConcurrentRequests = 1024
    /// Time allowed to receive the TunnelRequest line of a new data stream.
    public var requestLineTimeout: Duration = .seconds(30)
    /// On graceful shutdown, how long in-flight requests may take to finish.
    public var drainTimeout: Duration = .seconds(30)
    /// TCP connect timeout towards the local backends (no overall request timeout).
    public var backendConnectTimeout: Duration = .seconds(10)

    /// Host name reported in `hardware_info`.
    public var hostname: String = ProcessInfo.processInfo.hostName
    /// Where the worker records its metrics (`.disabled`: nowhere).
    public var metrics: WorkerMetrics = .disabled

    public init(config: TokiameConfig) {
        self.config = config
        self.heartbeatInterval = .seconds(config.heartbeatIntervalSeconds > 0
            ? config.heartbeatIntervalSeconds : TunnelProtocol.defaultHeartbeatIntervalSeconds)
        self.reconnectDelay = .seconds(config.reconnectDelaySeconds > 0
            ? config.reconnectDelaySeconds : TunnelProtocol.defaultReconnectDelaySeconds)
    }

    /// The TLS configuration used to dial a wss:// hub.
    public var effectiveTLS: TLSConfiguration? {
        if let tls { return tls }
        guard caFile != nil || config.insecureSkipVerify else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile { tls.trustRoots = .file(caFile) }
        // Only when set explicitly (tokiame.json, the file or the flag), with a warning at start.
        if config.insecureSkipVerify { tls.certificateVerification = .none }
        return tls
    }

    public var effectiveLivenessTimeout: Duration { livenessTimeout ?? heartbeatInterval * 3 }

    /// The path appended to a hub URL that has none.
    public static let defaultHubPath = TunnelDialOptions.defaultHubPath

    /// See `TunnelDialOptions.hubURL`.
    public static func hubURL(_ raw: String) -> String { TunnelDialOptions.hubURL(raw) }

    /// Checks what the service needs; throws `TokiameConfigError` with a readable message.
    public func validate() throws {
        var probe = config
        if probe.modelTargets.isEmpty, let first = discoveryBackends.first {
            // Discovery fills the targets in later; validate everything else now.
            probe.modelTargets["(discovered)"] = ModelTargetConfig(url: first)
        }
        try probe.validate()
        for backend in discoveryBackends {
            guard let c = URLComponents(string: backend), let scheme = c.scheme?.lowercased(),
                  scheme == "http" || scheme == "https", c.host?.isEmpty == false
            else { throw TokiameConfigError("backend URL must be http:// or https:// with a host: \(backend)") }
        }
        for (name, target) in config.modelTargets {
            guard let c = URLComponents(string: target.url), let scheme = c.scheme?.lowercased(),
                  scheme == "http" || scheme == "https", c.host?.isEmpty == false
            else { throw TokiameConfigError("model_targets[\(name)].url must be http:// or https:// with a host: \(target.url)") }
        }
        if heartbeatInterval <= .zero || heartbeatInterval >= .seconds(TunnelProtocol.heartbeatTimeoutSeconds) {
            throw TokiameConfigError("the heartbeat interval must be > 0 and < \(TunnelProtocol.heartbeatTimeoutSeconds) s (the hub drops a worker silent for \(TunnelProtocol.heartbeatTimeoutSeconds) s)")
        }
        if maxConcurrentRequests < 1 { throw TokiameConfigError("max concurrent requests must be at least 1") }
        if reconnectDelay < .zero { throw TokiameConfigError("the reconnect delay must not be negative") }
    }
}
