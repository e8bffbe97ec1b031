import Foundation
import H2TCore

/// Mean softmax cross-entropy of a logit matrix, the smooth part of every objective here.
///
/// Kept apart from the parameterisation (primal weights, kernel coefficients) so that all
/// solvers share one loss, as liblinear separates the function from the optimiser.
enum SoftmaxCrossEntropy {
    /// Mean cross-entropy of `logits` (`n × k`, row-major) against `labels`.
    ///
    /// When `gradient` is given it receives `(softmax(logits) - onehot(labels)) / n`, the gradient
    /// of the mean loss with respect to the logits. Accumulation is in Double.
    static func evaluate(logits: [Float], labels: [Int32], classCount k: Int,
                         gradient: UnsafeMutablePointer<Float>? = nil) -> Double {
        let n = labels.count
        guard n > 0 else { return 0 }
        var total = 0.0
        let invN = 1.0 / Double(n)
        // Rows in blocks whose exponentials fit a small scratch buffer: a fresh n × k array per
        // call (two calls per solver step) made the allocator hand back and re-fault its pages.
        let block = max(1, 2048 / max(k, 1))
        withUnsafeTemporaryAllocation(of: Double.self, capacity: block * (k + 2)) { scratch in
            let p = scratch.baseAddress!, maxima = p + block * k, sums = maxima + block
            logits.withUnsafeBufferPointer { z in
                for first in stride(from: 0, to: n, by: block) {
                    let rows = min(block, n - first)
                    Softmax.rowExponentials(of: z.baseAddress! + first * k, rows: rows, count: k, into: p,
                                            maxima: maxima, sums: sums)
                    for r in 0..<rows {
                        let row = first + r
                        let zr = z.baseAddress! + row * k, pr = p + r * k
                        let label = Int(labels[row]), sum = sums[r]
                        total += log(sum) - (Double(zr[label]) - maxima[r])
                        if let gradient {
                            let gr = gradient + row * k
                            for c in 0..<k {
                                let target = c == label ? 1.0 : 0.0
                                gr[c] = Float((pr[c] / sum - target) * invN)
                            }
                        }
                    }
                }
            }
        }
        return total * invN
    }

    /// The arg-max class of each row of `logits` (first maximum on ties).
    static func predictions(logits: [Float], rowCount n: Int, classCount k: Int) -> [Int] {
        var result = [Int](repeating: 0, count: n)
        for row in 0..<n {
            var best = 0
            for c in 1..<max(k, 1) where logits[row * k + c] > logits[row * k + best] { best = c }
            result[row] = best
        }
        return result
    }
}

/// Elementwise helpers on Float buffers with Double accumulation.
enum Vec {
    static func dot(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        var s = 0.0
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                for i in 0..<pa.count { s += Double(pa[i]) * Double(pb[i]) }
            }
        }
        return s
    }

    static func squaredNorm(_ a: [Float]) -> Double { dot(a, a) }

    /// `a - b`.
    static func difference(_ a: [Float], _ b: [Float]) -> [Float] {
        precondition(a.count == b.count)
        var out = a
        out.withUnsafeMutableBufferPointer { po in
            b.withUnsafeBufferPointer { pb in
                for i in 0..<po.count { po[i] -= pb[i] }
            }
        }
        return out
    }

    /// `a + beta * (a - b)`.
    static func extrapolate(_ a: [Float], _ b: [Float], beta: Float) -> [Float] {
        precondition(a.count == b.count)
        var out = a
        out.withUnsafeMutableBufferPointer { po in
            b.withUnsafeBufferPointer { pb in
                for i in 0..<po.count { po[i] += beta * (po[i] - pb[i]) }
            }
        }
        return out
    }

    /// Column sums of a row-major `n × k` matrix.
    static func columnSums(_ m: UnsafePointer<Float>, rows n: Int, columns k: Int) -> [Double] {
        var s = [Double](repeating: 0, count: k)
        for r in 0..<n {
            for c in 0..<k { s[c] += Double(m[r * k + c]) }
        }
        return s
    }
}
