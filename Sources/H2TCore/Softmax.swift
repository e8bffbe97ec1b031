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
    @inlinable
    public static func exponentials(of logits: UnsafePointer<Float>, count: Int,
                                    into exponentials: UnsafeMutablePointer<Double>) -> (maximum: Double, sum: Double) {
        var maximum = -Double.infinity
        for c in 0..<count { maximum = max(maximum, Double(logits[c])) }
        var sum = 0.0
        for c in 0..<count {
            exponentials[c] = exp(Double(logits[c]) - maximum)
            sum += exponentials[c]
        }
        return (maximum, sum)
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
