import Foundation

// What every dialling side of the tunnel (a worker, a relay) shares: where a hub's tunnel
// endpoint is, and how to wait between attempts.

/// Exponential back-off with full jitter: the n-th delay is uniform in [0, min(cap, base·2ⁿ)].
public struct ReconnectBackoff: Sendable {
    public var base: Duration
    public var cap: Duration
    public private(set) var attempt = 0

    public init(base: Duration, cap: Duration) {
        self.base = base
        self.cap = max(cap, base)
    }

    /// The upper bound of the next delay.
    public var ceiling: Duration {
        let factor = attempt >= 30 ? Double(1 << 30) : Double(1 << attempt)
        let seconds = min(base.seconds * factor, cap.seconds)
        return .nanoseconds(Int64(seconds * 1e9))
    }

    public mutating func nextDelay<R: RandomNumberGenerator>(using generator: inout R) -> Duration {
        let bound = ceiling.seconds
        attempt += 1
        guard bound > 0 else { return .zero }
        return .nanoseconds(Int64(Double.random(in: 0...bound, using: &generator) * 1e9))
    }

    public mutating func nextDelay() -> Duration {
        var generator = SystemRandomNumberGenerator()
        return nextDelay(using: &generator)
    }

    /// Back to the first step (after a connection that stayed up).
    public mutating func reset() { attempt = 0 }

    /// Straight to the capped step (for rejections that will not go away soon).
    public mutating func saturate() {
        while ceiling < cap, attempt < 30 { attempt += 1 }
    }
}

extension TunnelDialOptions {
    /// The path Tokiame configs point at.
    public static let defaultHubPath = "/api/tokilake/connect"

    /// A hub's tunnel URL from what a user gives: a base URL (`http://host:port`, any scheme)
    /// gets the default path; a URL with a path is used as it is.
    public static func hubURL(_ raw: String) -> String {
        let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let components = URLComponents(string: trimmed), components.host != nil else { return trimmed }
        guard components.percentEncodedPath.isEmpty || components.percentEncodedPath == "/" else { return trimmed }
        var c = components
        c.percentEncodedPath = defaultHubPath
        return c.string ?? trimmed
    }
}

extension Duration {
    /// In seconds, as a Double.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
