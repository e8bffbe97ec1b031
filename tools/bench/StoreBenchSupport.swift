import Foundation
import H2TCore

// Support for the `store` section of h2t-bench: timing, tables, memory readings, and the
// generator of realistic pooled activations. Everything is nested in `StoreBench` so that the
// other sections' files can use any names they like.

extension StoreBench {
    /// Seconds on the monotonic clock.
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Runs `body` and returns the seconds it took.
    @discardableResult
    static func time(_ body: () throws -> Void) rethrows -> Double {
        let t0 = now()
        try body()
        return now() - t0
    }

    /// CPU seconds used by the whole process (all threads).
    static func cpuNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Wall and process-CPU seconds of one measurement. On a loaded machine the wall time
    /// stretches with the load while the CPU time mostly does not, so both are reported.
    struct Sample {
        var wall = 0.0
        var cpu = 0.0
        static func + (a: Sample, b: Sample) -> Sample { Sample(wall: a.wall + b.wall, cpu: a.cpu + b.cpu) }
        static func += (a: inout Sample, b: Sample) { a = a + b }
    }

    /// Runs `body` and returns its wall and CPU seconds.
    @discardableResult
    static func measure(_ body: () throws -> Void) rethrows -> Sample {
        let w0 = now(), c0 = cpuNow()
        try body()
        return Sample(wall: now() - w0, cpu: cpuNow() - c0)
    }

    static func median(_ xs: [Double]) -> Double {
        precondition(!xs.isEmpty, "median of nothing")
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func fmt(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }

    /// A `key:  value kB` line of /proc/self/status, in KiB.
    static func procStatusKiB(_ key: String) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
        }
        return -1
    }

    static func loadAverage() -> String {
        (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?
            .split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
    }

    /// A plain-text table with right-aligned cells.
    struct Table {
        var title: String
        var header: [String]
        var rows: [[String]] = []

        init(_ title: String, _ header: [String]) {
            self.title = title
            self.header = header
        }

        mutating func add(_ row: [String]) { rows.append(row) }

        func render() -> String {
            var widths = header.map(\.count)
            for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
            func line(_ cells: [String]) -> String {
                cells.enumerated().map { i, c in String(repeating: " ", count: widths[i] - c.count) + c }
                    .joined(separator: "  ")
            }
            var out = "\n## \(title)\n" + line(header) + "\n"
            out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
            for row in rows { out += line(row) + "\n" }
            return out
        }

        func print() { Swift.print(render(), terminator: ""); fflush(nil) }
    }

    /// Benchmark data comes from the project's SplitMix64.
    typealias SplitMix = SplitMix64

    /// Realistic pooled post-activation features, generated one row (example) at a time, so a
    /// dataset of any size is produced batch by batch and never held whole.
    ///
    /// Model (all parameters drawn from `seed`):
    /// - columns come in taps of `tapWidth` features; even taps are ReLU6 taps, odd taps ReLU;
    /// - feature `j` has a scale `s_j ~ LogNormal(ln 0.5, 1.0)` (about two decades across
    ///   features, as pooled activations of different layers and channels have) and a shift
    ///   `m_j ~ N(1.8, 0.35)` (floored at 0.6);
    /// - example `i` has 32 latent factors `f_ik ~ N(0, 1)`; feature `j` loads on factor `j mod 32`:
    ///   `u_ij = m_j + 0.6 f_i,(j mod 32) + 0.8 e_ij`, `e_ij ~ N(0, 1)` (correlated Gaussians);
    /// - the value is `s_j * max(0, u_ij)`, clipped at 6 in ReLU6 taps: dense, non-negative,
    ///   a few percent exact zeros (P(u < 0) ≈ 4%), and a small fraction saturated at 6.
    /// The normals `e_ij` come from a 2^20-entry table indexed by a per-row SplitMix64 stream
    /// (three 20-bit indices per draw), which makes generation cheap next to what is measured.
    final class ActivationGenerator: @unchecked Sendable {
        // @unchecked Sendable: immutable after init.
        let width: Int
        let tapWidth: Int
        let seed: UInt64
        private let scale: [Float]
        private let shift: [Float]
        private let cap: [Float]
        private let table: [Float]
        static let factorCount = 32
        static let loading: Float = 0.6
        static let noise: Float = 0.8

        init(width: Int, tapWidth: Int = 5000, seed: UInt64) {
            self.width = width
            self.tapWidth = tapWidth
            self.seed = seed
            var rng = SplitMix(seed)
            table = (0..<(1 << 20)).map { _ in rng.normal() }
            scale = (0..<width).map { _ in Float(Foundation.exp(Foundation.log(0.5) + Double(rng.normal()))) }
            shift = (0..<width).map { _ in max(0.6, 1.8 + 0.35 * rng.normal()) }
            cap = (0..<width).map { j in (j / tapWidth) % 2 == 0 ? 6 : .infinity }
        }

        /// Writes example `row`'s `width` features to `dest`.
        func fill(row: Int, into dest: UnsafeMutablePointer<Float>) {
            var rng = SplitMix(seed ^ (UInt64(row) &+ 1) &* 0xD1B5_4A32_D192_ED03)
            var factors = [Float](repeating: 0, count: Self.factorCount)
            for k in 0..<Self.factorCount { factors[k] = Self.loading * rng.normal() }
            let noise = Self.noise
            table.withUnsafeBufferPointer { t in
            scale.withUnsafeBufferPointer { s in
            shift.withUnsafeBufferPointer { m in
            cap.withUnsafeBufferPointer { c in
            factors.withUnsafeBufferPointer { f in
                @inline(__always) func value(_ j: Int, _ index: UInt64) -> Float {
                    let u = m[j] + f[j & (StoreBench.ActivationGenerator.factorCount - 1)] + noise * t[Int(index)]
                    return min(s[j] * max(0, u), c[j])
                }
                var j = 0
                while j + 3 <= width {
                    let r = rng.next()
                    dest[j] = value(j, r & 0xFFFFF)
                    dest[j + 1] = value(j + 1, (r >> 20) & 0xFFFFF)
                    dest[j + 2] = value(j + 2, (r >> 40) & 0xFFFFF)
                    j += 3
                }
                while j < width {
                    dest[j] = value(j, rng.next() & 0xFFFFF)
                    j += 1
                }
            }}}}}
        }

        /// Writes rows `rows` to `dest` (row-major, `width` per row), on every core.
        func fill(rows: Range<Int>, into dest: UnsafeMutablePointer<Float>) {
            // Each row is generated from its own seed, so which worker writes it does not matter.
            try! Parallel.forEachWorker(itemCount: rows.count, parallelism: .allCores) { _, next in
                while let i = next() { self.fill(row: rows.lowerBound + i, into: dest + i * self.width) }
            }
        }
    }
}

extension SplitMix64 {
    init(_ seed: UInt64) { self.init(seed: seed) }

    /// A standard normal (Box–Muller).
    mutating func normal() -> Float {
        Float((-2 * Foundation.log(unitOpen())).squareRoot() * Foundation.cos(2 * Double.pi * unitOpen()))
    }
}
