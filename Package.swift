// swift-tools-version: 6.0
// h2t-store: an on-disk feature store and model registry for Head2Toe transfer learning.
import PackageDescription

/// Release builds of the numeric modules are what users run; these flags are safe in debug too.
let numericSettings: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "h2t-store",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "h2t-store", targets: ["h2t-store"]),
        .library(name: "H2TStore", targets: ["H2TStore"]),
        .library(name: "H2TBackbone", targets: ["H2TBackbone"]),
        .library(name: "H2TTrain", targets: ["H2TTrain"]),
        .library(name: "H2TPipeline", targets: ["H2TPipeline"]),
        .library(name: "H2TRegistry", targets: ["H2TRegistry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // SHA-256 (BoringSSL's assembly on Linux, CryptoKit on Apple platforms): ids and example ids.
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // System-library shims: a module map and one header each, no logic.
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CImageCodecs", pkgConfig: "libpng", providers: [.apt(["libpng-dev", "libjpeg-dev"])]),

        // Pure code shared by every layer: pooling, half-precision conversion, hashing, canonical JSON.
        .target(name: "H2TCore", dependencies: ["COpenBLAS", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: numericSettings, linkerSettings: [.linkedLibrary("m")]),
        // Storage: LMDB environment/transactions/tables, tile codec, feature-set store, query layer.
        .target(name: "H2TStore", dependencies: ["H2TCore", "CLMDB", "CZstd", "CZlib"], swiftSettings: numericSettings),
        // Backbones: weight readers, networks on BLAS, taps, preprocessing, dataset readers.
        .target(name: "H2TBackbone", dependencies: ["H2TCore", "COpenBLAS", "CImageCodecs", "CZlib"], swiftSettings: numericSettings),
        // Training: pure numerics, arrays in and a fit report out.
        .target(name: "H2TTrain", dependencies: ["H2TCore", "COpenBLAS"], swiftSettings: numericSettings),
        // Pipelines that join the layers: external-activation ingest, image ingest.
        .target(name: "H2TPipeline", dependencies: ["H2TCore", "H2TStore", "H2TBackbone", "H2TTrain"], swiftSettings: numericSettings),
        // Registry: heads, versions, aliases, tags, lineage, prediction, reports.
        .target(name: "H2TRegistry", dependencies: ["H2TCore", "H2TStore", "H2TTrain", "H2TBackbone"], swiftSettings: numericSettings),
        // The command-line tool: parses, calls the libraries, formats.
        .executableTarget(
            name: "h2t-store",
            dependencies: ["H2TPipeline", "H2TStore", "H2TBackbone", "H2TTrain", "H2TRegistry",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Benchmarks (run in release by tools/bench-*.sh, or directly: h2t-bench registry / map).
        .executableTarget(name: "h2t-bench", dependencies: ["H2TPipeline", "H2TStore", "H2TBackbone", "H2TTrain", "H2TRegistry"],
                          path: "tools/bench", swiftSettings: numericSettings),

        // Helpers shared by the test targets (temporary directories, seeded numbers, safetensors files).
        .target(name: "H2TTestSupport", dependencies: ["H2TCore"], path: "Tests/Support"),
        .testTarget(name: "H2TStoreTests", dependencies: ["H2TStore", "H2TPipeline", "H2TTestSupport"]),
        .testTarget(name: "H2TBackboneTests", dependencies: ["H2TBackbone"], resources: [.copy("Fixtures")]),
        .testTarget(name: "H2TTrainTests", dependencies: ["H2TTrain"]),
        .testTarget(name: "H2TCLITests", dependencies: ["H2TStore", "H2TCore"]),
        .testTarget(name: "H2TRegistryTests", dependencies: ["H2TTestSupport", "H2TRegistry", "H2TStore", "H2TTrain", "H2TPipeline", "H2TBackbone"]),
    ],
    swiftLanguageModes: [.v6]
)
