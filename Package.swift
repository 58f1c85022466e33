// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "toki",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "toki", targets: ["toki"]),
        .library(name: "TokiMux", targets: ["TokiMux"]),
        .library(name: "TokiProtocol", targets: ["TokiProtocol"]),
        .library(name: "TokiTunnel", targets: ["TokiTunnel"]),
        .library(name: "TokiHub", targets: ["TokiHub"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // System libraries (apt: liblz4-dev, libssl-dev). Zero build cost.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // glibc's heap statistics and malloc_trim (not in Swift's Glibc module).
        .systemLibrary(name: "CMalloc"),

        // smux v1/v2 (sans-IO codec + session).
        .target(name: "TokiMux", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The Tokilake tunnel's wire vocabulary, pure: control messages, data lines, JSON reader
        // and writer, Base64, the NDJSON framer, response-head checks. No I/O.
        .target(name: "TokiProtocol", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // The tunnel's I/O: WebSocket client/server, masking, endpoint, LZ4 link framing.
        .target(name: "TokiTunnel", dependencies: [
            "TokiMux", "TokiProtocol", "CLZ4",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The echo/sink stream protocol shared with the Go reference peer (interop tests, benchmarks).
        .target(name: "TokiProbe", dependencies: [
            "TokiMux",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Users, tokens, workers' namespaces, usage: SQLite (system libsqlite3) through GRDB.
        .target(name: "TokiStore", dependencies: [
            "CCrypto",
            .product(name: "GRDB", package: "GRDB.swift"),
            // The raw SQLite API, for binding the per-request statements directly (StatementRunner.swift).
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The gateway: OpenAI HTTP API, worker registry, routing.
        .target(name: "TokiHub", dependencies: [
            "TokiTunnel", "TokiProtocol", "TokiStore", "CMalloc",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A regional hop: the hub's tunnel endpoint with admission and presence delegated to
        // its parent over one upstream link, and data streams spliced through.
        .target(name: "TokiRelay", dependencies: [
            "TokiHub", "TokiTunnel", "TokiProtocol", "TokiMux",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The edge daemon: registers models, answers tunnelled requests from local backends.
        .target(name: "TokiWorker", dependencies: [
            "TokiTunnel", "TokiProtocol", "TokiMux",
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Configuration files and settings: one declaration per setting drives its flag, environment
        // variable and file key; a strict TOML-subset reader with line numbers. Pure.
        .target(name: "TokiConfig", dependencies: ["TokiProtocol", .product(name: "NIOCore", package: "swift-nio")]),
        // A node's process-level operations: sd_notify (READY, STOPPING, WATCHDOG, STATUS) without
        // libsystemd, and the logfmt/JSON log handlers. No NIO: hub, relay and worker share it.
        .target(name: "TokiOps", dependencies: [
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // `toki admin`'s pure parts: the envelope, JSON kept verbatim, tables, argument parsing.
        .target(name: "TokiAdminClient", dependencies: ["TokiProtocol"]),
        .executableTarget(name: "toki", dependencies: [
            "TokiAdminClient", "TokiConfig", "TokiMux", "TokiOps", "TokiProtocol", "TokiTunnel", "TokiStore", "TokiHub", "TokiRelay", "TokiWorker",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        .executableTarget(name: "toki-bench", dependencies: ["TokiMux", "TokiProtocol", "TokiTunnel", "TokiProbe", .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"), .product(name: "AsyncHTTPClient", package: "async-http-client")], path: "benchmarks/TokiBench"),
        // A stub OpenAI backend for the worker's tests, end-to-end tests and benchmarks.
        .executableTarget(name: "toki-stub-backend", dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/StubBackend"),
        // Helpers for tests that start processes (the Go peer, toki itself).
        .target(name: "TestSupport", path: "Tests/Support"),
        .testTarget(name: "TokiMuxTests", dependencies: [
            "TokiMux", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
        ], exclude: ["Vectors"], resources: []),
        .testTarget(name: "TokiProtocolTests", dependencies: [
            "TokiProtocol", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "TokiTunnelTests", dependencies: [
            "TokiTunnel", "TokiProtocol", "TokiMux", "TokiProbe", "TestSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TokiAdminClientTests", dependencies: ["TokiAdminClient"]),
        .testTarget(name: "TokiConfigTests", dependencies: ["TokiConfig"]),
        .testTarget(name: "TokiOpsTests", dependencies: [
            "TokiOps", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "TokiStoreTests", dependencies: [
            "TokiStore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TokiWorkerTests", dependencies: [
            "TokiWorker", "TokiTunnel", "TokiProtocol", "TokiMux", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "TokiHubTests", dependencies: [
            "TokiHub", "TokiTunnel", "TokiProtocol", "TokiMux", "TokiStore", "TestSupport",
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        // Real toki processes, the stub backend and the Go peer, over loopback.
        // TokiTunnel/TokiProtocol/TokiMux: the scripted hostile worker speaks the real wire format.
        .testTarget(name: "EndToEndTests", dependencies: [
            "TestSupport", "TokiTunnel", "TokiProtocol", "TokiMux",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
