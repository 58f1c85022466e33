import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization
import TokiMux
import TokiProtocol

// MARK: Client side (the worker dials out; SwiftNIO directly, so the upgrade response is visible)

public enum TunnelDialError: Error, CustomStringConvertible, Sendable {
    case invalidURL(String)
    case upgradeRefused(url: String)
    case timeout(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid hub URL '\(url)': expected ws://, wss://, http:// or https:// with a host"
        case .upgradeRefused(let url): "\(url) refused the WebSocket upgrade (wrong token, wrong path, or not a toki/Tokilake hub)"
        case .timeout(let what): "timed out: \(what)"
        }
    }
}

/// Where and how to dial a hub.
public struct TunnelDialOptions: Sendable {
    public var url: String
    /// Extra request headers, e.g. `Authorization: Bearer …`.
    public var headers: [(String, String)] = []
    public var offerLZ4 = false
    /// Offer smux v2 (per-stream windows). The caller must then run a session of the version
    /// `ClientTunnel.features` says was agreed.
    public var offerSmux2 = false
    /// For wss://; nil means the system trust roots with full verification.
    public var tls: TLSConfiguration?
    public var connectTimeout: Duration = .seconds(10)
    public var limits = TunnelLimits()

    public init(url: String) { self.url = url }

    /// `http→ws`, `https→wss`, as the Go worker does; other schemes are an error.
    public static func normalize(_ raw: String) throws -> (secure: Bool, host: String, port: Int, target: String, url: String) {
        guard let components = URLComponents(string: raw.trimmingCharacters(in: .whitespaces)),
              let scheme = components.scheme?.lowercased(), let host = components.host, !host.isEmpty
        else { throw TunnelDialError.invalidURL(raw) }
        let secure: Bool
        switch scheme {
        case "ws", "http": secure = false
        case "wss", "https": secure = true
        default: throw TunnelDialError.invalidURL(raw)
        }
        let port = components.port ?? (secure ? 443 : 80)
        var target = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        if let query = components.percentEncodedQuery { target += "?" + query }
        let hostForURL = host.contains(":") ? "[\(host)]" : host
        return (secure, host, port, target, "\(secure ? "wss" : "ws")://\(hostForURL):\(port)\(target)")
    }
}

/// A dialled tunnel: a WebSocket whose binary messages carry the mux byte stream.
public final class ClientTunnel: Sendable {
    let channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>
    /// What the hub agreed to (LZ4, smux version).
    public let features: TunnelFeatures
    public let url: String
    /// The 101 response's headers (what the hub said about itself, e.g. its relay node id).
    public let responseHeaders: HTTPHeaders
    let limits: TunnelLimits

    /// Whether the link is LZ4-compressed.
    public var lz4: Bool { features.lz4 }

    init(channel: NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, features: TunnelFeatures, url: String,
         responseHeaders: HTTPHeaders, limits: TunnelLimits) {
        self.channel = channel
        self.features = features
        self.url = url
        self.responseHeaders = responseHeaders
        self.limits = limits
    }

    private enum Upgrade: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>, headers: HTTPHeaders)
        case refused
    }

    /// Connects and upgrades. Throws `TunnelDialError` or the connection error.
    public static func connect(_ options: TunnelDialOptions, logger: Logger) async throws -> ClientTunnel {
        let target = try TunnelDialOptions.normalize(options.url)
        let sslContext: NIOSSLContext? = try target.secure
            ? NIOSSLContext(configuration: options.tls ?? .makeClientConfiguration()) : nil
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: target.port == (target.secure ? 443 : 80) ? target.host : "\(target.host):\(target.port)")
        headers.add(name: "Sec-WebSocket-Protocol", value: TunnelSubprotocol.offer(lz4: options.offerLZ4, smux2: options.offerSmux2))
        headers.add(name: "Content-Length", value: "0")
        for (name, value) in options.headers { headers.add(name: name, value: value) }
        let requestHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: target.target, headers: headers)
        let maxFrame = max(options.limits.maxMessageSize, 1 << 16)

        let negotiated: EventLoopFuture<Upgrade> = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.init(options.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let isIP = (try? SocketAddress(ipAddress: target.host, port: 0)) != nil
                        let tls = try NIOSSLClientHandler(context: sslContext, serverHostname: isIP ? nil : target.host)
                        try channel.pipeline.syncOperations.addHandler(tls)
                    }
                    let upgrader = TunnelClientUpgrader<Upgrade>(maxFrameSize: maxFrame) { channel, response in
                        channel.eventLoop.makeCompletedFuture {
                            let asyncChannel = try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel)
                            return Upgrade.websocket(asyncChannel, headers: response.headers)
                        }
                    }
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<Upgrade>(
                        upgradeRequestHead: requestHead,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(.refused) }
                    )
                    // Bytes that arrive in the same read as the 101 response are the first tunnel
                    // bytes (a hub may open streams at once): NIO drops them by default.
                    var pipelineConfiguration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    pipelineConfiguration.leftOverBytesStrategy = .forwardBytes
                    return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: pipelineConfiguration
                    )
                }
            }
        guard let upgrade = try await withTimeLimit(options.connectTimeout, { try await negotiated.get() }) else {
            throw TunnelDialError.timeout("WebSocket upgrade with \(target.url)")
        }
        switch upgrade {
        case .refused:
            throw TunnelDialError.upgradeRefused(url: target.url)
        case .websocket(let channel, let responseHeaders):
            // Only what was offered counts: a server cannot force a feature on us.
            var features = TunnelSubprotocol.features(of: responseHeaders.first(name: "Sec-WebSocket-Protocol"))
            features.lz4 = features.lz4 && options.offerLZ4
            if !options.offerSmux2 { features.smuxVersion = 1 }
            logger.debug("tunnel connected", metadata: ["url": "\(target.url)", "lz4": "\(features.lz4)", "smux": "\(features.smuxVersion)"])
            return ClientTunnel(channel: channel, features: features, url: target.url, responseHeaders: responseHeaders, limits: options.limits)
        }
    }

    /// Runs `session` over this connection until either ends; then the connection is closed
    /// (like Go, without a close frame when the session fails).
    /// `traffic` counts the link's bytes on the wire and as the mux saw them.
    public func run(_ session: MuxSession, traffic: LinkTraffic? = nil) async throws {
        try await channel.executeThenClose { inbound, outbound in
            let input = ClientTunnelInbound(base: inbound, outbound: outbound, reader: TunnelFrameReader(lz4: lz4, limits: limits), traffic: traffic)
            let output = ClientTunnelOutbound(outbound, lz4: lz4, limits: limits, traffic: traffic)
            try await session.run(inbound: input, outbound: output)
        }
    }
}

/// Inbound side of a client tunnel: answers pings, ends on a close frame, yields stream bytes.
struct ClientTunnelInbound: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let base: NIOAsyncChannelInboundStream<WebSocketFrame>
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let reader: TunnelFrameReader
    var traffic: LinkTraffic? = nil

    struct AsyncIterator: AsyncIteratorProtocol {
        var base: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
        var reader: TunnelFrameReader
        let traffic: LinkTraffic?

        mutating func next() async throws -> ByteBuffer? {
            while let frame = try await base.next() {
                guard let opcode = TunnelFrameReader.Opcode(frame.opcode) else {
                    switch frame.opcode {
                    case .ping:
                        try await outbound.write(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData))
                    case .connectionClose:
                        // Echo the status code back, as RFC 6455 asks.
                        let payload = frame.unmaskedData
                        let code = payload.getSlice(at: payload.readerIndex, length: Swift.min(2, payload.readableBytes)) ?? ByteBuffer()
                        try? await outbound.write(WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: code))
                        return nil
                    default:
                        break  // pong and reserved opcodes: nothing to do
                    }
                    continue
                }
                let wire = frame.length
                if let bytes = try reader.receive(opcode: opcode, fin: frame.fin, data: frame.unmaskedData) {
                    traffic?.received(wire: wire, plain: bytes.readableBytes)
                    return bytes
                }
                traffic?.received(wire: wire, plain: 0)
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: base.makeAsyncIterator(), outbound: outbound, reader: reader, traffic: traffic)
    }
}

/// Outbound side of a client tunnel: masked binary frames, one per mux batch.
final class ClientTunnelOutbound: MuxOutbound {
    let writer: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    let messages: Mutex<TunnelMessageWriter>
    let compressing: Bool
    let traffic: LinkTraffic?

    init(_ writer: NIOAsyncChannelOutboundWriter<WebSocketFrame>, lz4: Bool, limits: TunnelLimits, traffic: LinkTraffic? = nil) {
        self.traffic = traffic
        self.writer = writer
        self.messages = Mutex(TunnelMessageWriter(lz4: lz4, limits: limits))
        self.compressing = lz4
    }

    func write(_ batch: ByteBuffer) async throws {
        let message = compressing ? messages.withLock { $0.message(for: batch) } : batch
        traffic?.sent(wire: message.readableBytes, plain: batch.readableBytes)
        try await writer.write(WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: message))
    }
}
