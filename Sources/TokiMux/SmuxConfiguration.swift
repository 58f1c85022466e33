/// Session settings. Defaults are xtaci/smux's `DefaultConfig()`; Tokilake turns keepalive off.
public struct SmuxConfiguration: Sendable, Equatable {
    /// Protocol version, 1 or 2. Both peers must agree (Tokilake uses 1).
    public var version: UInt8 = 1
    /// NOP interval; nil disables keepalive (no NOPs, no idle close) as Tokilake does.
    public var keepAliveInterval: Duration? = nil
    /// With keepalive on: close the session when nothing arrived for this long.
    public var keepAliveTimeout: Duration = .seconds(30)
    /// Largest PSH payload this side sends.
    public var maxFrameSize: Int = 32768
    /// Largest PSH payload accepted from the peer (Go accepts the whole 16-bit range).
    public var maxReceiveFrameSize: Int = 65535
    /// Session-wide budget of received bytes not yet read by the application.
    /// When it is used up the session stops reading the transport (TCP back-pressure).
    public var maxReceiveBuffer: Int = 4 * 1024 * 1024
    /// Version 2: the per-stream window advertised in UPD frames.
    public var maxStreamBuffer: Int = 65536
    /// Streams opened by the peer and not yet accepted; when full, reading pauses.
    public var acceptBacklog: Int = 1024
    /// Bytes of data frames queued for the transport before writers wait.
    public var maxOutboundQueue: Int = 1024 * 1024
    /// Largest batch of frames handed to the transport as one message: two full frames. Small
    /// enough that a received frame is at least a quarter of its message (so it is kept as a
    /// slice, not copied), large enough to batch many small frames (SSE events) for LZ4.
    public var maxBatchSize: Int = 2 * (8 + 32768)
    /// Version 2: window assumed before the peer's first UPD (fixed in Go).
    public var initialPeerWindow: UInt32 = 262_144

    public init() {}

    /// Tokilake's settings: version 1, keepalive disabled.
    public static let tokilake = SmuxConfiguration()

    public func validated() throws -> SmuxConfiguration {
        func fail(_ reason: String) -> SmuxConfigurationError { SmuxConfigurationError(reason: reason) }
        guard version == 1 || version == 2 else { throw fail("version must be 1 or 2") }
        guard (1...65535).contains(maxFrameSize) else { throw fail("maxFrameSize must be in 1...65535") }
        guard (1...65535).contains(maxReceiveFrameSize) else { throw fail("maxReceiveFrameSize must be in 1...65535") }
        guard maxReceiveBuffer > 0, maxReceiveBuffer <= Int(Int32.max) else { throw fail("maxReceiveBuffer must be in 1...2^31-1") }
        guard maxStreamBuffer > 0, maxStreamBuffer <= maxReceiveBuffer else { throw fail("maxStreamBuffer must be in 1...maxReceiveBuffer") }
        guard acceptBacklog > 0 else { throw fail("acceptBacklog must be positive") }
        guard maxOutboundQueue > 0 else { throw fail("maxOutboundQueue must be positive") }
        // One full data frame, and one UPD (8-byte payload) even when maxFrameSize is smaller:
        // a queued frame that never fits a batch would stop all output.
        guard maxBatchSize >= SmuxFrame.headerSize + max(maxFrameSize, 8) else {
            throw fail("maxBatchSize must hold one full frame (and one 16-byte UPD)")
        }
        if let interval = keepAliveInterval {
            guard interval > .zero else { throw fail("keepAliveInterval must be positive") }
            guard keepAliveTimeout >= interval else { throw fail("keepAliveTimeout must be at least keepAliveInterval") }
        }
        return self
    }
}

public struct SmuxConfigurationError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public var description: String { "invalid smux configuration: \(reason)" }
}

/// Which end of the session this is; decides stream id parity (client odd from 3, server even from 2).
public enum SmuxRole: Sendable {
    case client
    case server
}
