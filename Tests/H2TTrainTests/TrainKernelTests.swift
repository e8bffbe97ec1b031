import CH2TKernels
import Foundation
import H2TCore
import H2TTrain
import Testing

/// The kernel-form head's product and the softmax's exponentials in `CH2TKernels`: the same bits
/// at AVX2 and AVX-512, equal to a scalar chain in the documented order, close to exact values.
@Suite("H2TTrain vector kernels")
struct TrainKernelTests {
    /// The vector levels this CPU can run.
    static let vectorSets = InstructionSet.allCases.filter { $0 >= .avx2 && $0 <= InstructionSet.detected }

    /// Seeded values in `[-1, 1)`.
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float(Double(random.next() >> 11) / Double(1 << 53) * 2 - 1) }
    }

    @Test("G a: one fused chain per output, the same bits at every vector level, close to exact",
          arguments: [(1, 1), (5, 10), (16, 10), (17, 6), (31, 7), (32, 12), (33, 13), (47, 1), (64, 25), (100, 10), (129, 3)])
    func gramProduct(n: Int, k: Int) {
        let x = Self.values(n * 9, seed: UInt64(n * 100 + k))
        var g = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i {
            var s: Float = 0
            for p in 0..<9 { s += x[i * 9 + p] * x[j * 9 + p] }
            g[i * n + j] = s
            g[j * n + i] = s
        } }
        let a = Self.values(n * k, seed: UInt64(7 + n + k))
        // The documented order: z[i][c] = fma chain over j ascending from 0.
        var chain = [Float](repeating: 0, count: n * k)
        var worst = 0.0
        for i in 0..<n { for c in 0..<k {
            var s: Float = 0, exact = 0.0, magnitude = 0.0
            for j in 0..<n {
                s = s.addingProduct(g[j * n + i], a[j * k + c])
                exact += Double(g[j * n + i]) * Double(a[j * k + c])
                magnitude += abs(Double(g[j * n + i]) * Double(a[j * k + c]))
            }
            chain[i * k + c] = s
            worst = max(worst, abs(Double(s) - exact) / (magnitude + 1e-30))
        } }
        #expect(worst < 1e-5)
        for isa in Self.vectorSets {
            var z = [Float](repeating: .nan, count: n * k)
            h2t_gram_times(Int32(isa.rawValue), g, n, a, k, &z)
            #expect(z == chain, "\(isa) differs from the scalar chain")
        }
        var selected = [Float](repeating: .nan, count: n * k)
        g.withUnsafeBufferPointer { pg in a.withUnsafeBufferPointer { pa in selected.withUnsafeMutableBufferPointer { pz in
            GramProduct.multiply(gram: pg.baseAddress!, rows: n, coefficients: pa.baseAddress!, classes: k, into: pz.baseAddress!)
        } } }
        if InstructionSet.selected >= .avx2 {
            #expect(selected == chain)
        } else {
            for i in 0..<(n * k) { #expect(abs(selected[i] - chain[i]) <= 1e-5 * (abs(chain[i]) + 1)) }
        }
    }

    @Test("exp of non-positive values: within 2 ulp of libm, the same bits at every vector level and position")
    func exponentials() {
        var inputs: [Double] = [0, -0.0, -1e-300, -1e-17, -0.5 * log(2.0), -log(2.0), -1, -2.5, -10, -87.3, -300,
                                -700, -707.9, -708, -708.5, -745, -1e6, -Double.infinity, .nan]
        var random = SplitMix64(seed: 42)
        for _ in 0..<4000 { inputs.append(-Double(random.next() >> 11) / Double(1 << 53) * 40) }
        for _ in 0..<1000 { inputs.append(-Double(random.next() >> 11) / Double(1 << 53) * 708) }
        var reference: [Double]?
        for isa in Self.vectorSets {
            // Every offset, so that each value goes through both the vector body and the scalar tail.
            for offset in 0..<9 {
                var values = Array(inputs[offset...])
                h2t_exp_nonpositive(Int32(isa.rawValue), &values, values.count)
                let full = Array(repeating: Double.nan, count: offset) + values
                if let reference {
                    for i in offset..<inputs.count {
                        #expect(full[i].bitPattern == reference[i].bitPattern, "\(isa) at \(inputs[i]), offset \(offset)")
                    }
                } else if offset == 0 {
                    reference = full
                }
            }
        }
        guard let reference else { return }
        let floor = reference[inputs.firstIndex(of: -708)!]
        #expect(floor == Foundation.exp(-708.0) || abs(floor - Foundation.exp(-708.0)) <= 2 * Foundation.exp(-708.0).ulp)
        for (x, y) in zip(inputs, reference) {
            if x.isNaN { #expect(y.isNaN); continue }
            if x < -708 { #expect(y == floor, "exp(\(x))"); continue }
            let exact = Foundation.exp(x)
            #expect(abs(y - exact) <= 2 * exact.ulp, "exp(\(x)) = \(y), libm \(exact)")
        }
    }

    @Test("softmax rows: what the per-row call gives, and probabilities that sum to 1")
    func softmaxRows() {
        let rows = 37, k = 11
        var logits = Self.values(rows * k, seed: 9).map { $0 * 30 }
        logits[5] = -1e30
        var e = [Double](repeating: 0, count: rows * k), maxima = [Double](repeating: 0, count: rows)
        var sums = [Double](repeating: 0, count: rows)
        Softmax.rowExponentials(of: logits, rows: rows, count: k, into: &e, maxima: &maxima, sums: &sums)
        for r in 0..<rows {
            var one = [Double](repeating: 0, count: k)
            let (m, s) = logits.withUnsafeBufferPointer { Softmax.exponentials(of: $0.baseAddress! + r * k, count: k, into: &one) }
            #expect(m == maxima[r] && s == sums[r] && one == Array(e[(r * k)..<((r + 1) * k)]))
            let probabilities = Softmax.probabilities(logits[(r * k)..<((r + 1) * k)])
            #expect(abs(probabilities.reduce(0, +) - 1) < 1e-5)
            for c in 0..<k {
                let exact = Foundation.exp(Double(logits[r * k + c]) - m) / s
                #expect(abs(Double(probabilities[c]) - exact) <= 1e-7 * exact + 1e-38)
            }
        }
    }

    @Test("the Gram matrix of a fit is exactly symmetric")
    func gramIsSymmetric() {
        let n = 64, d = 700
        let x = FeatureMatrix(rowCount: n, columnCount: d, wrapping: Self.values(n * d, seed: 5))
        let g = FinalHead.gramMatrix(x)
        for i in 0..<n { for j in 0..<n { #expect(g[i * n + j] == g[j * n + i]) } }
    }

    @Test("the blocked Gram matrix: the same bits at 1-4 threads, symmetric, equal to X Xᵀ within rounding")
    func blockedGram() throws {
        let n = 70, d = 333
        let x = FeatureMatrix(rowCount: n, columnCount: d, wrapping: Self.values(n * d, seed: 8))
        let one = FinalHead.gramMatrix(x)
        let blocked = try (1...4).map { try FinalHead.gramMatrix(x, parallelism: Parallelism(threads: $0), blockRows: 16) }
        for g in blocked.dropFirst() { #expect(g == blocked[0]) }
        let g = blocked[0]
        for i in 0..<n { for j in 0..<n {
            #expect(g[i * n + j] == g[j * n + i])
            var exact = 0.0, magnitude = 0.0
            for p in 0..<d {
                exact += Double(x.values[i * d + p]) * Double(x.values[j * d + p])
                magnitude += abs(Double(x.values[i * d + p]) * Double(x.values[j * d + p]))
            }
            #expect(abs(Double(g[i * n + j]) - exact) <= 1e-5 * magnitude)
            #expect(abs(Double(one[i * n + j]) - Double(g[i * n + j])) <= 1e-5 * magnitude)
        } }
    }
}
