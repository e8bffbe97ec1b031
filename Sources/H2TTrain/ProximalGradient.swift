import Foundation

/// Stopping rule of the accelerated proximal-gradient solver.
public struct ProximalSettings: Codable, Sendable, Hashable {
    /// Upper bound on accepted iterations.
    public var maxIterations: Int
    /// Stop when `‖θ_{k+1} − θ_k‖ ≤ tolerance · ‖θ_{k+1}‖` (weights and bias together): a
    /// relative, scale-free criterion, unaffected by rescaling the features or the loss.
    public var tolerance: Double

    /// Creates settings.
    public init(maxIterations: Int, tolerance: Double) {
        self.maxIterations = maxIterations
        self.tolerance = tolerance
    }

    func validate(_ what: String) throws {
        guard maxIterations > 0 else { throw TrainError.invalidSetting("\(what): maxIterations must be > 0") }
        guard tolerance > 0, tolerance.isFinite else { throw TrainError.invalidSetting("\(what): tolerance must be > 0") }
    }
}

/// What one solver run did.
public struct SolverReport: Codable, Sendable, Hashable {
    /// Accepted iterations (FISTA), or steps (Adam), summed over working-set rounds.
    public var iterations: Int
    /// Final objective: mean cross-entropy plus the penalty.
    public var objective: Double
    /// Whether the stopping rule (and for group lasso the KKT check on all rows) was met.
    public var converged: Bool
    /// Momentum restarts (FISTA).
    public var restarts: Int
    /// Final Lipschitz estimate (FISTA; 0 for Adam).
    public var lipschitz: Double
    /// Working-set rounds, i.e. full passes over all `D` columns for the KKT check (group lasso).
    public var outerIterations: Int
    /// Non-zero weight rows at the end.
    public var activeRows: Int

    /// Creates a report.
    public init(iterations: Int, objective: Double, converged: Bool, restarts: Int = 0, lipschitz: Double = 0,
                outerIterations: Int = 0, activeRows: Int = 0) {
        self.iterations = iterations
        self.objective = objective
        self.converged = converged
        self.restarts = restarts
        self.lipschitz = lipschitz
        self.outerIterations = outerIterations
        self.activeRows = activeRows
    }
}

/// FISTA (Beck & Teboulle 2009) with backtracking on the Lipschitz estimate and function-value
/// adaptive restart (O'Donoghue & Candès 2015).
///
/// Why this solver: the penalty's proximal operator (group soft-threshold, ridge shrinkage) is
/// exact and cheap, so FISTA produces exact zero rows, which Adam on the subgradient never does;
/// backtracking avoids the global bound `‖X̃‖²/2n`, which is several times the local curvature;
/// restarts remove the oscillation of momentum on strongly convex parts. It needs one forward
/// and one backward product per iteration: the logits of the extrapolated point are a linear
/// combination of the logits already computed, `z_y = z_k + β(z_k − z_{k−1})`.
enum ProximalGradient {
    static func minimize<M: LinearModel>(_ model: M, labels: [Int32], coef: inout [Float], bias: inout [Float],
                                         lipschitz: inout Double, settings: ProximalSettings) -> SolverReport {
        let k = model.classCount
        let n = model.rowCount
        var L = lipschitz > 0 ? lipschitz : model.lipschitzGuess()
        var xc = coef, xb = bias
        var zx = model.forward(coef: xc, bias: xb)
        var fxAll = SoftmaxCrossEntropy.evaluate(logits: zx, labels: labels, classCount: k)
            + model.penalty(coef: xc, bias: xb, z: zx)
        var yc = xc, yb = xb, zy = zx
        var t = 1.0
        var momentum = false
        var restarts = 0
        var iterations = 0
        var converged = false
        var g = [Float](repeating: 0, count: n * k)
        var attempts = 0
        while iterations < settings.maxIterations, attempts < 4 * settings.maxIterations {
            attempts += 1
            let fy = g.withUnsafeMutableBufferPointer {
                SoftmaxCrossEntropy.evaluate(logits: zy, labels: labels, classCount: k, gradient: $0.baseAddress!)
            }
            var nc: [Float] = [], nb: [Float] = [], zn: [Float] = []
            var fn = 0.0
            while true {
                (nc, nb) = model.proximalStep(coef: yc, bias: yb, logitGradient: g, step: Float(1 / L))
                zn = model.forward(coef: nc, bias: nb)
                fn = SoftmaxCrossEntropy.evaluate(logits: zn, labels: labels, classCount: k)
                let dz = Vec.difference(zn, zy)
                let linear = Vec.dot(g, dz)
                let quadratic = model.squaredNorm(coef: Vec.difference(nc, yc), bias: Vec.difference(nb, yb), z: dz)
                // The slack absorbs float32 rounding of the logits, which would otherwise make
                // the test fail spuriously near convergence and inflate L without bound.
                if fn <= fy + linear + 0.5 * L * quadratic + 1e-6 * abs(fy) || L > 1e12 { break }
                L *= 2
            }
            let fnAll = fn + model.penalty(coef: nc, bias: nb, z: zn)
            if fnAll > fxAll, momentum {
                // Momentum overshot: restart from the last accepted point with a plain step.
                restarts += 1
                t = 1
                momentum = false
                yc = xc; yb = xb; zy = zx
                continue
            }
            iterations += 1
            let dz = Vec.difference(zn, zx)
            let change = model.squaredNorm(coef: Vec.difference(nc, xc), bias: Vec.difference(nb, xb), z: dz).squareRoot()
            let size = model.squaredNorm(coef: nc, bias: nb, z: zn).squareRoot()
            let tNext = (1 + (1 + 4 * t * t).squareRoot()) / 2
            let beta = Float((t - 1) / tNext)
            yc = Vec.extrapolate(nc, xc, beta: beta)
            yb = Vec.extrapolate(nb, xb, beta: beta)
            zy = Vec.extrapolate(zn, zx, beta: beta)
            xc = nc; xb = nb; zx = zn; fxAll = fnAll
            t = tNext
            momentum = true
            if change <= settings.tolerance * max(size, 1e-30) {
                converged = true
                break
            }
        }
        coef = xc
        bias = xb
        lipschitz = L
        return SolverReport(iterations: iterations, objective: fxAll, converged: converged, restarts: restarts, lipschitz: L)
    }
}
