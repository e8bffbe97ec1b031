import CH2TKernels
import Foundation
import H2TCore

/// `h2t-bench train --kernels`: the two loops of a kernel-form final-head step at the main job's
/// shape (`n` = 800 training rows of a fold, `K` = 10), each against what it replaced, in one run:
/// `G a` by OpenBLAS `sgemm` (one thread) and by `CH2TKernels` at each vector level this CPU runs,
/// and the `n × K` softmax exponentials by libm's `exp` and by the vector `exp`. Medians over
/// rounds of many calls, microseconds per call.
enum TrainKernelBench {
    static func run(arguments: [String]) {
        let n = 800, k = 10, calls = 200, rounds = 7
        var random = SplitMix64(seed: 3)
        func uniform() -> Float { Float(Double(random.next() >> 11) / Double(1 << 53) * 2 - 1) }
        let x = (0..<(n * 64)).map { _ in uniform() }
        var g = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i {
            var s: Float = 0
            for p in 0..<64 { s += x[i * 64 + p] * x[j * 64 + p] }
            g[i * n + j] = s
            g[j * n + i] = s
        } }
        let a = (0..<(n * k)).map { _ in uniform() * 0.01 }
        var z = [Float](repeating: 0, count: n * k)
        let shifted = (0..<(n * k)).map { _ in -Double(random.next() >> 11) / Double(1 << 53) * 20 }
        var e = shifted

        func time(_ body: () -> Void) -> Double {
            var samples: [Double] = []
            for _ in 0..<rounds {
                let start = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<calls { body() }
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e3 / Double(calls))
            }
            return TrainBench.median(samples)
        }
        let levels = InstructionSet.allCases.filter { $0 >= .avx2 && $0 <= InstructionSet.detected }
        var rows: [(String, String, Double, Double)] = []
        let blas = BLAS.withThreadLimit(1) {
            time { BLAS.sgemm(m: n, n: k, k: n, a: g, lda: n, b: a, ldb: k, c: &z, ldc: k) }
        }
        rows.append(("G a (800 × 800 × 10)", "OpenBLAS sgemm, 1 thread (\(BLAS.configuration.core))", blas, blas))
        for isa in levels {
            rows.append(("G a (800 × 800 × 10)", "CH2TKernels \(isa)",
                         time { h2t_gram_times(Int32(isa.rawValue), g, n, a, k, &z) }, blas))
        }
        let libm = time {
            e = shifted
            for i in 0..<e.count { e[i] = Foundation.exp(e[i]) }
        }
        rows.append(("exp of 800 × 10 doubles", "libm exp", libm, libm))
        for isa in levels {
            rows.append(("exp of 800 × 10 doubles", "CH2TKernels \(isa)",
                         time { e = shifted; h2t_exp_nonpositive(Int32(isa.rawValue), &e, e.count) }, libm))
        }
        TrainBench.say("machine: \(Self.cpuModel()), \(InstructionSet.detected) detected, H2T_ISA cap \(InstructionSet.selected), load \(Self.load())")
        TrainBench.say("| loop | implementation | µs per call (median of \(rounds) × \(calls)) | speed-up vs the first row |")
        TrainBench.say("|---|---|---|---|")
        for (loop, name, micros, base) in rows {
            TrainBench.say("| \(loop) | \(name) | \(String(format: "%.1f", micros)) | \(String(format: "%.2f×", base / micros)) |")
        }
    }

    static func cpuModel() -> String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        return info.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":").last
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }

    static func load() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
    }
}
