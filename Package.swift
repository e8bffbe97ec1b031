// swift-tools-version: 6.0
// h2t-store: an on-disk feature store and model registry for Head2Toe transfer learning.
import PackageDescription

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
        // glibc's <malloc.h> (mallopt), for the command-line tool's allocation policy; part of libc, nothing to link.
        .systemLibrary(name: "CMalloc"),
        // libjpeg behind setjmp/longjmp, so that its fatal errors return a status instead of exiting.
        .target(name: "CJPEGDecode", linkerSettings: [.linkedLibrary("jpeg")]),

        // The backbone's and the trainer's vector loops for AVX2+FMA and AVX-512 (per-function target attributes), chosen at
        // run time from CPUID (H2TCore's InstructionSet); a baseline CPU keeps the Swift loops.
        .target(name: "CH2TKernels"),
        // No -Ounchecked on code that parses input: bounds and overflow checks turn a hostile file into a
        // trap instead of undefined behaviour. The one exception is this numeric kernel (Head2Toe's pooling
        // loops, no parsing), where the checks cost 1.39x the instructions (docs/reliability.md).
        .target(name: "H2TKernels", dependencies: ["CH2TKernels"], swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        // Pure code shared by every layer: pooling, half-precision conversion, hashing, canonical JSON.
        .target(name: "H2TCore", dependencies: ["COpenBLAS", "CH2TKernels", "H2TKernels", .product(name: "Crypto", package: "swift-crypto")], linkerSettings: [.linkedLibrary("m")]),
        // Storage: LMDB environment/transactions/tables, tile codec, feature-set store, query layer.
        .target(name: "H2TStore", dependencies: ["H2TCore", "CH2TKernels", "CLMDB", "CZstd", "CZlib"]),
        // Backbones: weight readers, networks on BLAS, taps, preprocessing, dataset readers.
        .target(name: "H2TBackbone", dependencies: ["H2TCore", "H2TKernels", "CH2TKernels", "COpenBLAS", "CImageCodecs", "CJPEGDecode", "CZlib"]),
        // Training: pure numerics, arrays in and a fit report out.
        .target(name: "H2TTrain", dependencies: ["H2TCore", "COpenBLAS"]),
        // Pipelines that join the layers: external-activation ingest, image ingest.
        .target(name: "H2TPipeline", dependencies: ["H2TCore", "H2TStore", "H2TBackbone", "H2TTrain"]),
        // Registry: heads, versions, aliases, tags, lineage, prediction, reports.
        .target(name: "H2TRegistry", dependencies: ["H2TCore", "H2TStore", "H2TTrain", "H2TBackbone", "CH2TKernels"]),
        // The command-line tool: parses, calls the libraries, formats.
        .executableTarget(
            name: "h2t-store",
            dependencies: ["H2TPipeline", "H2TStore", "H2TBackbone", "H2TTrain", "H2TRegistry", "CMalloc",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Benchmarks (run in release by tools/bench-*.sh, or directly: h2t-bench registry / map).
        .executableTarget(name: "h2t-bench", dependencies: ["H2TPipeline", "H2TStore", "H2TBackbone", "H2TTrain", "H2TRegistry"],
                          path: "tools/bench"),

        // Fuzzing (tools/fuzz): the harnesses, one per reader of untrusted bytes; the executable is a
        // libFuzzer binary when built with -D H2T_LIBFUZZER, a replayer of inputs otherwise.
        .target(name: "H2TFuzzHarness", dependencies: ["H2TCore", "H2TStore", "H2TBackbone", "H2TRegistry"], path: "Tests/Fuzz/Harness"),
        .executableTarget(name: "h2t-fuzz", dependencies: ["H2TFuzzHarness"], path: "Tests/Fuzz/Runner"),

        // Helpers shared by the test targets (temporary directories, seeded numbers, safetensors files).
        .target(name: "H2TTestSupport", dependencies: ["H2TCore"], path: "Tests/Support"),
        .testTarget(name: "H2TStoreTests", dependencies: ["H2TStore", "H2TPipeline", "H2TTestSupport"]),
        .testTarget(name: "H2TBackboneTests", dependencies: ["H2TBackbone", "H2TKernels", "H2TCore", "H2TTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "H2TTrainTests", dependencies: ["H2TTrain"]),
        .testTarget(name: "H2TCLITests", dependencies: ["H2TStore", "H2TCore"]),
        .testTarget(name: "H2TFuzzTests", dependencies: ["H2TFuzzHarness", "H2TCore"]),
        .testTarget(name: "H2TRegistryTests", dependencies: ["H2TTestSupport", "H2TRegistry", "H2TStore", "H2TTrain", "H2TPipeline", "H2TBackbone"]),
    ],
    swiftLanguageModes: [.v6]
)
