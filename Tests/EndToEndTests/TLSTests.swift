import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import TestSupport
import Testing

/// CAs and server certificates for 127.0.0.1, made with the openssl CLI in a temporary directory.
struct TestPKI {
    let directory = TemporaryDirectory(prefix: "toki-tls")
    var path: String { directory.path }

    static var openssl: String? {
        ["/usr/bin/openssl", "/usr/local/bin/openssl"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ arguments: [String]) async throws {
        guard let openssl = Self.openssl else { throw ChildProcessError("openssl is not installed (contrib/setup.sh installs it)") }
        let process = try ChildProcess(openssl, arguments, name: "openssl")
        let status = try await process.waitForExit()
        guard status == 0 else { throw ChildProcessError("openssl \(arguments.first ?? "") failed (\(status)): \(process.stderr)") }
    }

    /// `NAME.pem` and `NAME.key`: a self-signed CA.
    func makeCA(_ name: String) async throws {
        try await run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                       "-subj", "/CN=toki test \(name)", "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                       "-keyout", "\(path)/\(name).key", "-out", "\(path)/\(name).pem"])
    }

    /// `NAME.pem` and `NAME.key`: a server certificate for 127.0.0.1 signed by the CA `ca`.
    func makeServer(_ name: String, ca: String) async throws {
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: "\(path)/\(name).ext", atomically: true, encoding: .utf8)
        try await run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
                       "-keyout", "\(path)/\(name).key", "-out", "\(path)/\(name).csr"])
        try await run(["x509", "-req", "-in", "\(path)/\(name).csr", "-CA", "\(path)/\(ca).pem", "-CAkey", "\(path)/\(ca).key",
                       "-set_serial", "\(Int.random(in: 1000...999_999))", "-days", "2", "-extfile", "\(path)/\(name).ext",
                       "-out", "\(path)/\(name).pem"])
    }

    /// Copies `NAME.pem`/`NAME.key` over the files the hub serves (`live.pem`/`live.key`).
    func install(_ name: String) throws {
        let fm = FileManager.default
        for ext in ["pem", "key"] {
            try? fm.removeItem(atPath: "\(path)/live.\(ext)")
            try fm.copyItem(atPath: "\(path)/\(name).\(ext)", toPath: "\(path)/live.\(ext)")
        }
    }
}

/// An HTTPS client that trusts only one CA.
struct TLSClient {
    let client: HTTPClient

    init(trusting caFile: String) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
    }

    func request(_ url: String, token: String, body: String? = nil) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await client.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    func shutdown() async { try? await client.shutdown() }
}

/// Polls `condition` (errors count as not yet) until it holds, or fails after `timeout`.
func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw ChildProcessError("timed out waiting for \(what)")
}

@Suite("native TLS: toki hub serves HTTPS and WSS itself", .serialized)
struct TLSTests {
    @Test("a worker trusting the hub's CA registers and serves, one trusting another CA is refused, SIGHUP swaps the certificate")
    func hubServesTLS() async throws {
        try #require(TestPKI.openssl != nil, "openssl is not installed (contrib/setup.sh installs it)")
        let pki = TestPKI()
        try await pki.makeCA("ca")
        try await pki.makeCA("other-ca")
        try await pki.makeServer("server", ca: "ca")
        try pki.install("server")

        let hub = try await HubProcess(arguments: ["--tls-cert", "\(pki.path)/live.pem", "--tls-key", "\(pki.path)/live.key"])
        let backend = try await StubBackend(models: ["tls-model"])
        let token = try await hub.createToken(user: "alice")
        let admin = try #require(hub.adminToken)
        let base = "https://127.0.0.1:\(hub.port)"
        let client = TLSClient(trusting: "\(pki.path)/ca.pem")
        func worker(_ namespace: String, caFile: String) throws -> ChildProcess {
            try ChildProcess(Products.path("toki"), [
                "worker", "--hub", base, "--token", token, "--backend", backend.url, "--namespace", namespace,
                "--ca-file", caFile, "--reconnect-delay-ms", "200",
            ], name: "toki worker \(namespace)")
        }
        let good = try worker("tls-good", caFile: "\(pki.path)/ca.pem")
        let bad = try worker("tls-bad", caFile: "\(pki.path)/other-ca.pem")
        defer {
            Task {
                await good.stop()
                await bad.stop()
                await backend.stop()
                await hub.stop()
                await client.shutdown()
            }
        }
        #expect(hub.process.stderr.contains("https://127.0.0.1:\(hub.port)/v1"), "the banner names the HTTPS API")

        // The right CA: the worker registers over WSS and serves a request that came over HTTPS.
        try await eventually("the worker's model on the hub over HTTPS") {
            let (status, body) = try await client.request(base + "/v1/models", token: token)
            return status == 200 && body.contains("\"tls-model\"")
        }
        let chat = try await client.request(base + "/v1/chat/completions", token: token,
                                            body: #"{"model":"tls-model","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(chat.status == 200, "\(chat.body)")
        #expect(chat.body.contains("choices"))

        // Another CA: the worker refuses the hub's certificate, says so, and never registers.
        try await eventually("the wrong-CA worker's verification error") { bad.stderr.contains("CERTIFICATE_VERIFY_FAILED") }
        #expect(bad.stderr.contains("TLS"), "\(bad.stderr.suffix(1500))")
        let workers = try await client.request(base + "/admin/workers", token: admin)
        #expect(workers.status == 200)
        #expect(workers.body.contains("tls-good") && !workers.body.contains("tls-bad"), "\(workers.body)")

        // SIGHUP: new connections get the certificate now in the files (signed by the other CA),
        // so the worker that trusts the other CA gets in.
        try await pki.makeServer("server2", ca: "other-ca")
        try pki.install("server2")
        kill(hub.process.pid, SIGHUP)
        try await eventually("the reload's log line") { hub.process.stderr.contains("TLS certificate reloaded") }
        let other = TLSClient(trusting: "\(pki.path)/other-ca.pem")
        defer { Task { await other.shutdown() } }
        let afterReload = try await other.request(base + "/v1/models", token: token)
        #expect(afterReload.status == 200)
        try await eventually("the other-CA worker registering after the reload") {
            try await other.request(base + "/admin/workers", token: admin).body.contains("tls-bad")
        }
    }

    @Test("a certificate without its key, or an unreadable one, stops the hub at start with a clear error")
    func badCertificateConfiguration() async throws {
        try #require(TestPKI.openssl != nil, "openssl is not installed (contrib/setup.sh installs it)")
        let pki = TestPKI()
        try await pki.makeCA("ca")
        let data = TemporaryDirectory()
        for (arguments, message) in [
            (["--tls-cert", "\(pki.path)/ca.pem"], "tls_cert and tls_key go together"),
            (["--tls-cert", "\(pki.path)/missing.pem", "--tls-key", "\(pki.path)/ca.key"], "cannot read the certificate"),
        ] {
            let hub = try ChildProcess(Products.path("toki"), ["hub", "--listen", "127.0.0.1:0", "--data-dir", data.path] + arguments, name: "toki hub")
            let status = try await hub.waitForExit()
            #expect(status != 0)
            #expect(hub.stderr.contains(message), "\(hub.stderr)")
        }
    }
}
