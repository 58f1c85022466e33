// swift-tools-version:6.2
// libFuzzer targets for toki's untrusted-input decoders (docs/fuzzing.md).
//
// A separate package so that the instrumented build (-sanitize=fuzzer,address) lives in its
// own .build and never touches the main one. Build and run everything with `bash run.sh`.
import PackageDescription

let nio: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
func toki(_ product: String) -> Target.Dependency { .product(name: product, package: "toki") }

/// One executable per fuzz target; each one's main.swift exports LLVMFuzzerTestOneInput.
func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzSupport", nio] + dependencies)
}

let package = Package(
    name: "toki-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The root package (products TokiMux, TokiProtocol, TokiTunnel, TokiHub), by path.
        // Named, so that targets can refer to it whatever the clone's directory is called.
        .package(name: "toki", path: "../.."),
        // Already a dependency of the root: resolves from the same mirror, same version.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // Runs libFuzzer's driver from SwiftPM's renamed entry point (see driver.c).
        .target(name: "CFuzzDriver"),
        // Input cursor, invariant checks, the shared main.
        .target(name: "FuzzSupport", dependencies: ["CFuzzDriver", nio]),
        // The reference LZ4 decoder the link decoder is compared with (same system liblz4).
        .systemLibrary(name: "CLZ4Reference", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),

        fuzzTarget("FuzzSmuxFrame", [toki("TokiMux")]),
        fuzzTarget("FuzzSmuxSession", [toki("TokiMux")]),
        fuzzTarget("FuzzLZ4Link", [toki("TokiTunnel"), "CLZ4Reference"]),
        fuzzTarget("FuzzLineFramer", [toki("TokiProtocol")]),
        fuzzTarget("FuzzControlLine", [toki("TokiProtocol")]),
        fuzzTarget("FuzzDataLine", [toki("TokiProtocol")]),
        fuzzTarget("FuzzJSONReader", [toki("TokiProtocol")]),
        fuzzTarget("FuzzBodyInspector", [toki("TokiHub")]),
        fuzzTarget("FuzzResponseHead", [toki("TokiProtocol")]),
    ]
)
