import Dispatch
import Foundation
import H2TBackbone
import H2TCore

/// The `backbone` section of h2t-bench: images/s of the Swift backbones with every tap computed
/// (and pooled), for comparison with ONNX Runtime by `tools/bench-backbone.sh`; and `gemm`, the
/// OpenBLAS throughput of the kernel table this process selected.
enum BackboneBench {
    static let usage = """
        usage: h2t-bench backbone [--network mobilenet_v2|efficientnet_lite0] [--size 64] [--batch 32]
                                  [--threads N (default: every core)] [--mode split|blas] [--targets 8192,...] [--seconds 10] [--clock wall|cpu] [--json]
               h2t-bench backbone gemm [--json]
               h2t-bench backbone isa [--json]    (the kernels this process selects: CPU, H2T_ISA, OpenBLAS table)
        """

    /// Seconds on the monotonic clock, or (`cpu`) of CPU time used by the whole process: on a
    /// loaded shared machine the CPU time of a one-thread run is the steadier A/B measure.
    static func now(cpu: Bool = false) -> Double {
        var t = timespec()
        clock_gettime(cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func option(_ args: [String], _ name: String) -> String? {
        guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
        return args[i + 1]
    }

    /// Repeats `body` for at least `seconds` (and 3 runs) after one warm-up; returns per-run times
    /// (CPU seconds with `cpu`).
    static func measure(seconds: Double, cpu: Bool = false, _ body: () throws -> Void) rethrows -> [Double] {
        try body()
        var times: [Double] = []
        let start = now()
        while now() - start < seconds || times.count < 3 {
            let t = now(cpu: cpu)
            try body()
            times.append(now(cpu: cpu) - t)
        }
        return times
    }

    static func emit(_ json: Bool, _ record: [String: Any], _ line: String) {
        if json, let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]) {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(line)
        }
    }

    static func run(arguments args: [String]) throws {
        let json = args.contains("--json")
        if args.first == "gemm" { return gemm(json: json) }
        if args.first == "isa" { return isa(json: json) }
        guard !args.contains("--help") else { return print(usage) }
        let architecture = BackboneArchitecture(rawValue: option(args, "--network") ?? "mobilenet_v2") ?? .mobileNetV2
        let size = Int(option(args, "--size") ?? "") ?? 64
        let batchSize = Int(option(args, "--batch") ?? "") ?? 32
        let threads = Int(option(args, "--threads") ?? "") ?? Parallel.defaultWorkers
        let seconds = Double(option(args, "--seconds") ?? "") ?? 10
        let mode = option(args, "--mode") ?? "split"
        let cpu = option(args, "--clock") == "cpu"
        let targets = (option(args, "--targets") ?? "8192").split(separator: ",").compactMap { Int($0) }
        let network = try BackboneNetwork.load(architecture, from: ArtifactCache())
        var random = SystemRandomNumberGenerator()
        let batch = (0..<(batchSize * 3 * size * size)).map { _ in Float.random(in: -2...2, using: &random) }
        // "split": the batch's slices shared by `threads` workers with single-threaded GEMMs;
        // "blas": one worker, OpenBLAS using `threads` threads inside each GEMM.
        let parallelism = mode == "split" ? Parallelism(threads: threads) : Parallelism(threads: 1, setsBLASThreads: false)
        let taps = network.taps(height: size, width: size).count
        let base: [String: Any] = ["engine": "swift", "network": architecture.rawValue, "size": size, "batch": batchSize,
                                   "threads": threads, "mode": mode, "taps": taps, "blas_core": BLAS.configuration.core,
                                   "isa": InstructionSet.selected.description, "clock": cpu ? "cpu" : "wall"]
        let stage = option(args, "--stage") ?? "both"
        // Every tap computed and handed out where the network wrote it (the callback reads one
        // value: gathering each example's planes, as `withExample` does, is work an ingest, which
        // pools the taps in place, does not do, and the engines' harness does not do either).
        if stage != "pooled" {
        let computeTimes = try measure(seconds: seconds, cpu: cpu) {
            try BLAS.withThreadLimit(mode == "blas" ? threads : 1) {
            try network.run(batch, count: batchSize, height: size, width: size, parallelism: parallelism) { a in
                _ = a.values[0]
            }
            }
        }
        var record = base
        record["stage"] = "all_taps"
        record["median_seconds"] = median(computeTimes)
        record["images_per_second"] = Double(batchSize) / median(computeTimes)
        record["runs"] = computeTimes.count
        emit(json, record, "swift \(architecture.rawValue) \(size)x\(size) batch \(batchSize) \(mode)/\(threads): all taps "
             + String(format: "%.1f img/s", Double(batchSize) / median(computeTimes)))
        }
        guard stage != "compute" else { return }
        // Every tap computed and pooled for the target sizes in one pass.
        // Into reused buffers, as an ingest loop would.
        let layouts = try targets.map { try network.pooledLayout(height: size, width: size, targetSize: $0) }
        let buffers = layouts.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0.width * batchSize) }
        defer { buffers.forEach { $0.deallocate() } }
        let pooledTimes = try measure(seconds: seconds, cpu: cpu) {
            _ = try BLAS.withThreadLimit(mode == "blas" ? threads : 1) {
                try network.pooledFeatures(batch, count: batchSize, height: size, width: size, targetSizes: targets,
                                           parallelism: parallelism, into: buffers)
            }
        }
        var record = base
        record["stage"] = "all_taps_pooled"
        record["targets"] = targets
        record["features_per_image"] = layouts.map(\.width)
        record["median_seconds"] = median(pooledTimes)
        record["images_per_second"] = Double(batchSize) / median(pooledTimes)
        record["runs"] = pooledTimes.count
        emit(json, record, "swift \(architecture.rawValue) \(size)x\(size) batch \(batchSize) \(mode)/\(threads): all taps pooled "
             + "(F_T \(targets)) " + String(format: "%.1f img/s", Double(batchSize) / median(pooledTimes)))
    }

    /// The instruction set of the backbone kernels and the OpenBLAS table this process selects under
    /// its environment (`H2T_ISA`, `H2T_OPENBLAS_CORETYPE`), for `tools/bench-ingest` to print.
    static func isa(json: Bool) {
        let blas = BLAS.configuration
        emit(json, ["isa": InstructionSet.selected.description, "detected": InstructionSet.detected.description,
                    "blas_core": blas.core, "blas_reason": blas.reason],
             "kernels \(InstructionSet.selected) (CPU \(InstructionSet.detected)); \(blas)")
    }

    /// sgemm GFLOP/s on the kernel table this process runs (run it under different
    /// `H2T_OPENBLAS_CORETYPE` values to compare tables), for a large and a 1×1-conv shape.
    static func gemm(json: Bool) {
        for threads in [1, 2] { BLAS.withThreadLimit(threads) {
            for (m, n, k) in [(1024, 1024, 1024), (96, 1024, 32), (960, 512, 160)] {
                var random = SystemRandomNumberGenerator()
                let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &random) }
                let b = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &random) }
                var c = [Float](repeating: 0, count: m * n)
                let times = measure(seconds: 1) {
                    BLAS.sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
                }
                let gflops = 2.0 * Double(m * n * k) / (times.min() ?? 1) / 1e9
                emit(json, ["engine": "openblas", "core": BLAS.configuration.core, "initial_core": BLAS.configuration.initialCore,
                            "threads": threads, "shape": "\(m)x\(n)x\(k)", "gflops": gflops],
                     "sgemm \(m)x\(n)x\(k) threads \(threads) on \(BLAS.configuration.core): " + String(format: "%.1f GFLOP/s", gflops))
            }
        } }
    }
}
