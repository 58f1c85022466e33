// HTTPS/WSS served by toki itself: the hub's and the relay's listener wrapped in TLS, with a
// certificate that SIGHUP reloads (new connections get the new one, open ones keep theirs).

import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The server's certificate chain and key, from PEM files, swappable at run time.
public final class ServerCertificate: Sendable {
    public let certificatePath: String
    public let keyPath: String
    private let context: Mutex<NIOSSLContext>

    /// Loads both files; an unreadable file or a key that does not match is an error here, at start.
    public init(certificatePath: String, keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        context = Mutex(try Self.makeContext(certificatePath: certificatePath, keyPath: keyPath))
    }

    /// The context new connections use.
    public var current: NIOSSLContext { context.withLock { $0 } }

    /// Reads the files again. On failure the previous certificate stays in use.
    public func reload() throws {
        let fresh = try Self.makeContext(certificatePath: certificatePath, keyPath: keyPath)
        context.withLock { $0 = fresh }
    }

    static func makeContext(certificatePath: String, keyPath: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificatePath) } catch {
            throw ServerCertificateError("cannot read the certificate \(certificatePath): \(error)")
        }
        guard !chain.isEmpty else { throw ServerCertificateError("no PEM certificate in \(certificatePath)") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw ServerCertificateError("cannot read the private key \(keyPath): \(error)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        tls.applicationProtocols = ["http/1.1"]
        do { return try NIOSSLContext(configuration: tls) } catch {
            // BoringSSL refuses a key that does not belong to the certificate here.
            throw ServerCertificateError("certificate \(certificatePath) and key \(keyPath) do not form a usable pair: \(error)")
        }
    }
}

public struct ServerCertificateError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// `base` behind TLS: the TLS handler goes first, with the certificate current at accept time.
public struct TLSServerChildChannel<Base: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Base.Value
    let base: Base
    let certificate: ServerCertificate

    public init(base: Base, certificate: ServerCertificate) {
        self.base = base
        self.certificate = certificate
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: certificate.current))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Reloads `certificate` on every SIGHUP until graceful shutdown; a failed reload is logged and
/// the previous certificate kept.
public struct CertificateReloader: Service {
    let certificate: ServerCertificate
    let logger: Logger

    public init(certificate: ServerCertificate, logger: Logger) {
        self.certificate = certificate
        self.logger = logger
    }

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            do {
                try certificate.reload()
                logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(certificate.certificatePath)"])
            } catch {
                logger.error("TLS certificate reload failed; the previous one stays in use", metadata: ["error": "\(error)"])
            }
        }
    }
}
