import CH2TKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The softmax of a row of logits, in Double: the one implementation behind the training loss,
/// a head's predicted probabilities and a backbone's ImageNet scores.
public enum Softmax {
    /// Writes `exp(z_c − max z)` for each of the `count` logits at `logits` into `exponentials`
    /// and returns the maximum and the sum of the exponentials (accumulated in order), so that
    /// `exponentials[c] / sum` is the probability of class `c` and `log(sum) − (z_c − maximum)`
    /// its cross-entropy. Subtracting the maximum keeps every exponential in `(0, 1]`.
    public static func exponentials(of logits: UnsafePointer<Float>, count: Int,
                                    into exponentials: UnsafeMutablePointer<Double>) -> (maximum: Double, sum: Double) {
        var maximum = 0.0, sum = 0.0
        rowExponentials(of: logits, rows: 1, count: count, into: exponentials, maxima: &maximum, sums: &sum)
        return (maximum, sum)
    }

    /// ``exponentials(of:count:into:)`` for each of the `rows` rows of a row-major `rows × count`
    /// logit matrix at once: row `r`'s exponentials go to `exponentials + r * count`, its maximum
    /// to `maxima[r]` and its sum to `sums[r]`.
    ///
    /// With AVX2 or AVX-512 the exponentials are `CH2TKernels`' vector `exp` (within 2 ulp of
    /// libm's, the same bits at both levels): in a fit's kernel-form final heads, two softmax
    /// passes per step over `n × K` logits were a sixth of the fit's CPU with libm's scalar `exp`.
    /// A CPU without AVX2 uses libm's `exp`.
    public static func rowExponentials(of logits: UnsafePointer<Float>, rows: Int, count: Int,
                                       into exponentials: UnsafeMutablePointer<Double>,
                                       maxima: UnsafeMutablePointer<Double>, sums: UnsafeMutablePointer<Double>) {
        for r in 0..<rows {
            let z = logits + r * count, e = exponentials + r * count
            var maximum = -Double.infinity
            for c in 0..<count { maximum = max(maximum, Double(z[c])) }
            for c in 0..<count { e[c] = Double(z[c]) - maximum }
            maxima[r] = maximum
        }
        let isa = InstructionSet.selected
        if isa >= .avx2 {
            h2t_exp_nonpositive(Int32(isa.rawValue), exponentials, rows * count)
        } else {
            for i in 0..<(rows * count) { exponentials[i] = exp(exponentials[i]) }
        }
        for r in 0..<rows {
            let e = exponentials + r * count
            var sum = 0.0
            for c in 0..<count { sum += e[c] }
            sums[r] = sum
        }
    }

    /// The probabilities of one row of logits.
    public static func probabilities(_ logits: some Collection<Float>) -> [Float] {
        let row = Array(logits)
        var exponentials = [Double](repeating: 0, count: row.count)
        let sum = row.withUnsafeBufferPointer { z in
            exponentials.withUnsafeMutableBufferPointer { e in
                row.isEmpty ? 0 : Self.exponentials(of: z.baseAddress!, count: z.count, into: e.baseAddress!).sum
            }
        }
        return exponentials.map { Float($0 / sum) }
    }
}
