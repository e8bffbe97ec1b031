import H2TCore

/// A linear multiclass model `logits = linear(θ) + 1·bᵀ` together with the penalty its
/// proximal step applies. The solver (`ProximalGradient`) only sees this interface.
protocol LinearModel {
    /// Training rows `n`.
    var rowCount: Int { get }
    /// Classes `K`.
    var classCount: Int { get }
    /// Size of the coefficient array (without the bias).
    var coefficientCount: Int { get }
    /// `z = linear(coef) + bias` (`n × K`).
    func forward(coef: [Float], bias: [Float]) -> [Float]
    /// The proximal gradient step from `(coef, bias)` with logit gradient `g` and step `step`.
    func proximalStep(coef: [Float], bias: [Float], logitGradient g: [Float], step: Float) -> (coef: [Float], bias: [Float])
    /// The squared Euclidean norm of the *weights* `(W, b)` that `(coef, bias)` stand for;
    /// `z` is `forward(coef, bias)` (used by the kernel form, where `‖W‖² = ⟨A, K A⟩`).
    func squaredNorm(coef: [Float], bias: [Float], z: [Float]) -> Double
    /// The non-smooth (or proximally handled) penalty at `(coef, bias)`.
    func penalty(coef: [Float], bias: [Float], z: [Float]) -> Double
    /// A starting Lipschitz estimate for the gradient of the mean cross-entropy; backtracking
    /// raises it when it is too small.
    func lipschitzGuess() -> Double
}

/// `z = A·coef + 1·biasᵀ` (`rows × classes`) for a row-major `A` (`rows × inner`) and `coef`
/// (`inner × classes`): the forward pass of both model forms.
private func affineLogits(_ a: [Float], rows n: Int, inner: Int, coef: [Float], bias: [Float], classes k: Int) -> [Float] {
    var z = [Float](repeating: 0, count: n * k)
    if inner > 0 {
        a.withUnsafeBufferPointer { pa in
            coef.withUnsafeBufferPointer { pc in
                z.withUnsafeMutableBufferPointer { pz in
                    BLAS.sgemm(m: n, n: k, k: inner, a: pa.baseAddress!, lda: inner, b: pc.baseAddress!, ldb: k,
                               c: pz.baseAddress!, ldc: k)
                }
            }
        }
    }
    addBias(bias, to: &z, rows: n, classes: k)
    return z
}

/// Adds `bias[c]` to column `c` of every row of the row-major `rows × classes` logits `z`.
private func addBias(_ bias: [Float], to z: inout [Float], rows: Int, classes k: Int) {
    for r in 0..<rows { for c in 0..<k { z[r * k + c] += bias[c] } }
}

/// The penalty a primal model applies through its proximal step.
enum PrimalPenalty: Sendable {
    /// None: plain gradient step.
    case none
    /// `λ Σ_i ‖W_i‖₂` over feature rows: the exact group soft-threshold.
    case groupLasso(Double)
    /// `μ/2 ‖W‖²`: shrinkage by `1/(1 + step·μ)`.
    case ridge(Double)
}

/// Weights `W` (`d × K`) on an explicit row-major design `X` (`n × d`).
struct PrimalModel: LinearModel {
    let x: [Float]
    let rowCount: Int
    let featureCount: Int
    let classCount: Int
    let penaltyKind: PrimalPenalty

    var coefficientCount: Int { featureCount * classCount }

    func forward(coef: [Float], bias: [Float]) -> [Float] {
        affineLogits(x, rows: rowCount, inner: featureCount, coef: coef, bias: bias, classes: classCount)
    }

    func proximalStep(coef: [Float], bias: [Float], logitGradient g: [Float], step: Float) -> (coef: [Float], bias: [Float]) {
        let n = rowCount, k = classCount, d = featureCount
        var out = coef
        var grad = [Float](repeating: 0, count: d * k)
        if d > 0 {
            x.withUnsafeBufferPointer { px in
                g.withUnsafeBufferPointer { pg in
                    grad.withUnsafeMutableBufferPointer { pr in
                        BLAS.sgemm(transA: true, m: d, n: k, k: n, a: px.baseAddress!, lda: d,
                                   b: pg.baseAddress!, ldb: k, c: pr.baseAddress!, ldc: k)
                    }
                }
            }
        }
        out.withUnsafeMutableBufferPointer { po in
            grad.withUnsafeBufferPointer { pr in
                for i in 0..<po.count { po[i] -= step * pr[i] }
                switch penaltyKind {
                case .none:
                    break
                case let .ridge(mu):
                    let shrink = Float(1 / (1 + Double(step) * mu))
                    for i in 0..<po.count { po[i] *= shrink }
                case let .groupLasso(lambda):
                    GroupSoftThreshold.apply(po.baseAddress!, rows: d, columns: k, threshold: Double(step) * lambda)
                }
            }
        }
        let gb = g.withUnsafeBufferPointer { Vec.columnSums($0.baseAddress!, rows: n, columns: k) }
        var newBias = bias
        for c in 0..<k { newBias[c] -= step * Float(gb[c]) }
        return (out, newBias)
    }

    func squaredNorm(coef: [Float], bias: [Float], z: [Float]) -> Double {
        Vec.squaredNorm(coef) + Vec.squaredNorm(bias)
    }

    func penalty(coef: [Float], bias: [Float], z: [Float]) -> Double {
        switch penaltyKind {
        case .none: return 0
        case let .ridge(mu): return 0.5 * mu * Vec.squaredNorm(coef)
        case let .groupLasso(lambda):
            return lambda * GroupSoftThreshold.rowNorms(coef, rows: featureCount, columns: classCount).reduce(0, +)
        }
    }

    func lipschitzGuess() -> Double {
        let n = rowCount
        guard n > 0 else { return 1 }
        let total = Vec.squaredNorm(x)
        return (total / Double(n) + 1) / Double(2 * max(classCount, 1))
    }
}

/// Ridge-penalised weights in kernel form: `W = Xᵀ A` with `A` (`n × K`) on the Gram matrix
/// `G = X Xᵀ` of the training rows.
///
/// With `W₀ = 0`, every proximal-gradient iterate of the primal ridge problem stays in the row
/// space of `X`, and the primal step `W − s(XᵀR)` followed by `1/(1+sμ)` shrinkage is exactly
/// `Xᵀ(A − sR)/(1+sμ)`. So this model runs *the same iterates* as `PrimalModel` with
/// `.ridge(μ)`, at `n²K` instead of `ndK` per product: the cheaper form when `d > n`.
struct KernelModel: LinearModel {
    let gram: [Float]
    let rowCount: Int
    let classCount: Int
    let mu: Double

    var coefficientCount: Int { rowCount * classCount }

    func forward(coef: [Float], bias: [Float]) -> [Float] {
        let n = rowCount, k = classCount
        var z = [Float](repeating: 0, count: n * k)
        gram.withUnsafeBufferPointer { pg in
            coef.withUnsafeBufferPointer { pc in
                z.withUnsafeMutableBufferPointer { pz in
                    GramProduct.multiply(gram: pg.baseAddress!, rows: n, coefficients: pc.baseAddress!, classes: k,
                                         into: pz.baseAddress!)
                }
            }
        }
        addBias(bias, to: &z, rows: n, classes: k)
        return z
    }

    func proximalStep(coef: [Float], bias: [Float], logitGradient g: [Float], step: Float) -> (coef: [Float], bias: [Float]) {
        let n = rowCount, k = classCount
        let shrink = Float(1 / (1 + Double(step) * mu))
        var out = coef
        for i in 0..<out.count { out[i] = (out[i] - step * g[i]) * shrink }
        let gb = g.withUnsafeBufferPointer { Vec.columnSums($0.baseAddress!, rows: n, columns: k) }
        var newBias = bias
        for c in 0..<k { newBias[c] -= step * Float(gb[c]) }
        return (out, newBias)
    }

    /// Logits of other rows from their kernel values against the training rows (`rows × n`).
    func crossForward(cross: [Float], rows: Int, coef: [Float], bias: [Float]) -> [Float] {
        let n = coef.count / classCount, k = classCount
        var z = [Float](repeating: 0, count: rows * k)
        if rows > 0, n > 0 {
            cross.withUnsafeBufferPointer { pc in
                coef.withUnsafeBufferPointer { pa in
                    z.withUnsafeMutableBufferPointer { pz in
                        BLAS.sgemm(m: rows, n: k, k: n, a: pc.baseAddress!, lda: n, b: pa.baseAddress!, ldb: k,
                                   c: pz.baseAddress!, ldc: k)
                    }
                }
            }
        }
        addBias(bias, to: &z, rows: rows, classes: k)
        return z
    }

    /// `‖W‖² + ‖b‖² = ⟨A, G A⟩ + ‖b‖²`, with `G A = z − 1bᵀ`.
    func squaredNorm(coef: [Float], bias: [Float], z: [Float]) -> Double {
        let k = classCount
        var s = 0.0
        // Row by row (the same order of additions as one pass over `i`, without a division per value).
        coef.withUnsafeBufferPointer { a in
            z.withUnsafeBufferPointer { zz in
                bias.withUnsafeBufferPointer { b in
                    var i = 0
                    while k > 0, i + k <= a.count {
                        for c in 0..<k { s += Double(a[i + c]) * (Double(zz[i + c]) - Double(b[c])) }
                        i += k
                    }
                }
            }
        }
        return max(s, 0) + Vec.squaredNorm(bias)
    }

    func penalty(coef: [Float], bias: [Float], z: [Float]) -> Double {
        0.5 * mu * (squaredNorm(coef: coef, bias: bias, z: z) - Vec.squaredNorm(bias))
    }

    func lipschitzGuess() -> Double {
        let n = rowCount
        guard n > 0 else { return 1 }
        var trace = 0.0
        for i in 0..<n { trace += Double(gram[i * n + i]) }
        return (trace / Double(n) + 1) / Double(2 * max(classCount, 1))
    }
}

/// The proximal operator of `t Σ_i ‖W_i‖₂` on the rows of a `rows × columns` matrix.
public enum GroupSoftThreshold {
    /// In place: each row `v` becomes `max(0, 1 − t/‖v‖) v` (zero when `‖v‖ ≤ t`).
    public static func apply(_ w: UnsafeMutablePointer<Float>, rows: Int, columns k: Int, threshold t: Double) {
        for r in 0..<rows {
            let row = w + r * k
            var s = 0.0
            for c in 0..<k { s += Double(row[c]) * Double(row[c]) }
            let norm = s.squareRoot()
            if norm <= t {
                for c in 0..<k { row[c] = 0 }
            } else {
                let scale = Float(1 - t / norm)
                for c in 0..<k { row[c] *= scale }
            }
        }
    }

    /// Row norms `‖W_i‖₂` of a `rows × columns` matrix.
    public static func rowNorms(_ w: [Float], rows: Int, columns k: Int) -> [Double] {
        (0..<rows).map { r in
            var s = 0.0
            for c in 0..<k { s += Double(w[r * k + c]) * Double(w[r * k + c]) }
            return s.squareRoot()
        }
    }
}
