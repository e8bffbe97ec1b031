import Foundation
import H2TCore

/// Settings of the working-set proximal group-lasso solver.
public struct GroupLassoSettings: Codable, Sendable, Hashable {
    /// FISTA on the working set.
    public var inner: ProximalSettings
    /// A row outside the working set violates the optimality conditions when `‖∇_i‖ > λ(1 + kktTolerance)`.
    public var kktTolerance: Double
    /// Upper bound on working-set rounds (each costs one pass over all `D` columns).
    public var maxOuterIterations: Int
    /// The working set starts with at least this many candidate rows and grows by at least this many.
    public var minWorkingSetGrowth: Int

    /// Defaults: inner relative tolerance 1e-4 (selection only needs the ranking of rows, which is
    /// stable well before that; tighter costs iterations without changing the top-k), KKT slack 1%,
    /// at most 20 rounds (3–6 are typical), growth 64 rows.
    public init(inner: ProximalSettings = ProximalSettings(maxIterations: 2000, tolerance: 1e-4),
                kktTolerance: Double = 1e-2, maxOuterIterations: Int = 20, minWorkingSetGrowth: Int = 64) {
        self.inner = inner
        self.kktTolerance = kktTolerance
        self.maxOuterIterations = maxOuterIterations
        self.minWorkingSetGrowth = minWorkingSetGrowth
    }

    func validate() throws {
        try inner.validate("group lasso")
        guard kktTolerance >= 0, kktTolerance.isFinite else { throw TrainError.invalidSetting("kktTolerance must be >= 0") }
        guard maxOuterIterations > 0 else { throw TrainError.invalidSetting("maxOuterIterations must be > 0") }
        guard minWorkingSetGrowth > 0 else { throw TrainError.invalidSetting("minWorkingSetGrowth must be > 0") }
    }
}

/// Adam on the subgradient of the group-lasso loss, as the reference implementation trains it.
public struct AdamSettings: Codable, Sendable, Hashable {
    /// Optimiser steps (the reference searches 500–5000).
    public var steps: Int
    /// Peak learning rate, decayed to 0 by a cosine over `steps` (the reference searches 0.01–0.1).
    public var learningRate: Double
    /// Mini-batch size (128 as in the reference); batches walk through shuffled epochs.
    public var batchSize: Int
    /// Adam's moment decay rates and epsilon (Keras defaults, which the reference uses).
    public var beta1: Double
    /// Second-moment decay.
    public var beta2: Double
    /// Denominator guard.
    public var epsilon: Double

    /// Defaults follow the reference's lower end: 500 steps, learning rate 0.01, batch 128.
    public init(steps: Int = 500, learningRate: Double = 0.01, batchSize: Int = 128,
                beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7) {
        self.steps = steps
        self.learningRate = learningRate
        self.batchSize = batchSize
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    func validate() throws {
        guard steps > 0 else { throw TrainError.invalidSetting("adam steps must be > 0") }
        guard learningRate > 0, learningRate.isFinite else { throw TrainError.invalidSetting("adam learning rate must be > 0") }
        guard batchSize > 0 else { throw TrainError.invalidSetting("adam batch size must be > 0") }
        guard (0..<1).contains(beta1), (0..<1).contains(beta2), epsilon > 0 else {
            throw TrainError.invalidSetting("adam betas must be in [0, 1) and epsilon > 0")
        }
    }
}

/// A group-lasso head on all `D` features at one strength `λ`, with what selection needs.
public struct GroupLassoSolution: Sendable {
    /// The penalty strength (absolute).
    public var lambda: Double
    /// Weights, row-major `D × K`; rows are features.
    public var weights: [Float]
    /// Bias (`K`), unpenalised.
    public var bias: [Float]
    /// `‖∇_i‖₂` of the mean cross-entropy at the solution for every feature row (proximal solver);
    /// empty for Adam. It ranks the zero rows: the first to enter as `λ` decreases.
    public var gradientNorms: [Float]
    /// Classes `K`.
    public var classCount: Int
    /// Solver summary.
    public var report: SolverReport

    /// Feature scores `s_i = ‖W_i‖²` (docs/architecture.md §1 step 5).
    public var scores: [Double] {
        GroupSoftThreshold.rowNorms(weights, rows: weights.count / max(classCount, 1), columns: classCount).map { $0 * $0 }
    }

    /// All features, best first: by score, then (for the many exact zeros of the proximal solver)
    /// by gradient norm, then by index, so the order is total and deterministic.
    public func ranking() -> [Int] {
        let s = scores
        let g = gradientNorms
        return s.indices.sorted { a, b in
            if s[a] != s[b] { return s[a] > s[b] }
            if !g.isEmpty, g[a] != g[b] { return g[a] > g[b] }
            return a < b
        }
    }

    /// The kept features for `fraction`, ascending: the global top `keepCount(D, fraction)` of `ranking`.
    public func selection(fraction: Double, ranking: [Int]? = nil) -> [Int] {
        let order = ranking ?? self.ranking()
        return Array(order.prefix(GroupLasso.keepCount(featureCount: order.count, fraction: fraction))).sorted()
    }
}

/// Group-lasso selection (docs/architecture.md §1 step 4).
public enum GroupLasso {
    /// `floor(D · fraction)`, at least 1; a `1e-9` guard keeps products such as `0.29 · 100`
    /// (28.999…96 in binary) from losing a feature.
    public static func keepCount(featureCount: Int, fraction: Double) -> Int {
        max(1, min(featureCount, Int((Double(featureCount) * fraction + 1e-9).rounded(.down))))
    }

    /// `Xᵀ R` over the full matrix where `R` has `gradient`'s rows at `rows` and zeros elsewhere:
    /// the gradient with respect to all `D` weight rows in one BLAS call, without copying the rows.
    static func fullGradient(features x: FeatureMatrix, rows: [Int], logitGradient g: [Float], classCount k: Int) -> [Float] {
        let n = x.rowCount, d = x.columnCount
        var scattered = [Float](repeating: 0, count: n * k)
        for (i, row) in rows.enumerated() {
            for c in 0..<k { scattered[row * k + c] = g[i * k + c] }
        }
        var out = [Float](repeating: 0, count: d * k)
        x.values.withUnsafeBufferPointer { px in
            scattered.withUnsafeBufferPointer { ps in
                out.withUnsafeMutableBufferPointer { po in
                    BLAS.sgemm(transA: true, m: d, n: k, k: n, a: px.baseAddress!, lda: d, b: ps.baseAddress!, ldb: k,
                               c: po.baseAddress!, ldc: k)
                }
            }
        }
        return out
    }

    /// The bias that is optimal when `W = 0` (log class frequencies); classes absent from `rows`
    /// get `log(0.5 / n)` instead of `−∞`, a finite start that the solver then refines.
    static func priorBias(labels: [Int32], classCount k: Int) -> [Float] {
        var counts = [Double](repeating: 0, count: k)
        for label in labels { counts[Int(label)] += 1 }
        let n = Double(max(labels.count, 1))
        return counts.map { Float(log(max($0, 0.5) / n)) }
    }

    /// The smallest `λ` at which `W = 0` is optimal: `max_i ‖∇_i‖` at `W = 0` with the prior bias.
    public static func lambdaMax(features: FeatureMatrix, rows: [Int]? = nil, labels: [Int], classCount: Int) -> Double {
        let rows = rows ?? Array(0..<features.rowCount)
        let y = rows.map { Int32(labels[$0]) }
        return lambdaMaxAndNorms(features: features, rows: rows, labels: y, classCount: classCount).lambda
    }

    static func lambdaMaxAndNorms(features: FeatureMatrix, rows: [Int], labels y: [Int32], classCount k: Int)
        -> (lambda: Double, norms: [Float], bias: [Float]) {
        let bias = priorBias(labels: y, classCount: k)
        var z = [Float](repeating: 0, count: rows.count * k)
        for r in 0..<rows.count { for c in 0..<k { z[r * k + c] = bias[c] } }
        var g = [Float](repeating: 0, count: rows.count * k)
        _ = g.withUnsafeMutableBufferPointer {
            SoftmaxCrossEntropy.evaluate(logits: z, labels: y, classCount: k, gradient: $0.baseAddress!)
        }
        let grad = fullGradient(features: features, rows: rows, logitGradient: g, classCount: k)
        let norms = GroupSoftThreshold.rowNorms(grad, rows: features.columnCount, columns: k).map { Float($0) }
        return (Double(norms.max() ?? 0), norms, bias)
    }

    /// Solves the group-lasso problem on `rows` of the (already per-tap normalised) features for
    /// each `λ` in `lambdas`, largest first, warm-starting each from the previous one.
    ///
    /// Working-set method: FISTA with the exact group soft-threshold runs on the gathered columns
    /// of a working set; one pass over all `D` columns then checks the optimality conditions
    /// (`‖∇_i‖ ≤ λ` for zero rows) and adds the worst violators, doubling the set, until none is
    /// left. The first set for each `λ` comes from the sequential strong rule
    /// (`‖∇_i(λ_prev)‖ ≥ 2λ − λ_prev`, Tibshirani et al. 2012). With `N ≪ D` and a sparse solution
    /// this needs a handful of full passes per `λ` instead of one or two per iteration.
    public static func path(features: FeatureMatrix, rows: [Int]? = nil, labels: [Int], classCount k: Int,
                            lambdas: [Double], settings: GroupLassoSettings = GroupLassoSettings()) throws -> [GroupLassoSolution] {
        try settings.validate()
        for lambda in lambdas where !(lambda >= 0 && lambda.isFinite) { throw TrainError.invalidLambda(lambda) }
        let rows = rows ?? Array(0..<features.rowCount)
        let y = rows.map { Int32(labels[$0]) }
        let d = features.columnCount
        let start = lambdaMaxAndNorms(features: features, rows: rows, labels: y, classCount: k)
        var weights = [Float](repeating: 0, count: d * k)
        var bias = start.bias
        var previousNorms = start.norms
        var previousLambda = start.lambda
        var active: [Int] = []
        var solutions: [GroupLassoSolution] = []
        for lambda in lambdas.sorted(by: >) {
            let activeSet = Set(active)
            let strongCut = Float(2 * lambda - previousLambda)
            let candidates = (0..<d).filter { !activeSet.contains($0) && previousNorms[$0] >= strongCut && previousNorms[$0] > 0 }
                .sorted { previousNorms[$0] != previousNorms[$1] ? previousNorms[$0] > previousNorms[$1] : $0 < $1 }
            var workingSet = (active + candidates.prefix(max(settings.minWorkingSetGrowth, active.count))).sorted()
            var totalIterations = 0, restarts = 0, outer = 0
            var converged = false
            var objective = 0.0
            var lipschitz = 0.0
            var norms = previousNorms
            while outer < settings.maxOuterIterations {
                outer += 1
                let xw = features.gathered(rows: rows, columns: workingSet, renormalize: false)
                let model = PrimalModel(x: xw.values, rowCount: rows.count, featureCount: workingSet.count, classCount: k,
                                        penaltyKind: .groupLasso(lambda))
                var coef = [Float](repeating: 0, count: workingSet.count * k)
                for (j, feature) in workingSet.enumerated() {
                    for c in 0..<k { coef[j * k + c] = weights[feature * k + c] }
                }
                var innerL = 0.0
                let report = ProximalGradient.minimize(model, labels: y, coef: &coef, bias: &bias, lipschitz: &innerL,
                                                       settings: settings.inner)
                totalIterations += report.iterations
                restarts += report.restarts
                objective = report.objective
                lipschitz = innerL
                for (j, feature) in workingSet.enumerated() {
                    for c in 0..<k { weights[feature * k + c] = coef[j * k + c] }
                }
                // Optimality check on every row, with one pass over the full matrix.
                let z = model.forward(coef: coef, bias: bias)
                var g = [Float](repeating: 0, count: rows.count * k)
                _ = g.withUnsafeMutableBufferPointer {
                    SoftmaxCrossEntropy.evaluate(logits: z, labels: y, classCount: k, gradient: $0.baseAddress!)
                }
                let grad = fullGradient(features: features, rows: rows, logitGradient: g, classCount: k)
                norms = GroupSoftThreshold.rowNorms(grad, rows: d, columns: k).map { Float($0) }
                let inSet = Set(workingSet)
                let bound = Float(lambda * (1 + settings.kktTolerance))
                let violators = (0..<d).filter { !inSet.contains($0) && norms[$0] > bound }
                    .sorted { norms[$0] != norms[$1] ? norms[$0] > norms[$1] : $0 < $1 }
                if violators.isEmpty {
                    converged = report.converged
                    break
                }
                workingSet = (workingSet + violators.prefix(max(settings.minWorkingSetGrowth, workingSet.count))).sorted()
            }
            active = (0..<d).filter { feature in (0..<k).contains { weights[feature * k + $0] != 0 } }
            solutions.append(GroupLassoSolution(
                lambda: lambda, weights: weights, bias: bias, gradientNorms: norms, classCount: k,
                report: SolverReport(iterations: totalIterations, objective: objective, converged: converged,
                                     restarts: restarts, lipschitz: lipschitz, outerIterations: outer,
                                     activeRows: active.count)))
            previousNorms = norms
            previousLambda = lambda
        }
        return solutions
    }

    /// The reference implementation's optimiser, for parity: Adam on mean cross-entropy plus the
    /// subgradient `λ W_i/‖W_i‖` (0 at a zero row), zero initialisation, cosine decay of the
    /// learning rate to 0, mini-batches that walk through epochs shuffled by `SplitMix64(seed)`.
    public static func adam(features: FeatureMatrix, rows: [Int]? = nil, labels: [Int], classCount k: Int,
                            lambda: Double, settings: AdamSettings = AdamSettings(), seed: UInt64) throws -> GroupLassoSolution {
        try settings.validate()
        guard lambda >= 0, lambda.isFinite else { throw TrainError.invalidLambda(lambda) }
        let rows = rows ?? Array(0..<features.rowCount)
        let d = features.columnCount
        let batch = min(settings.batchSize, rows.count)
        var rng = SplitMix64(seed: seed)
        var order = rows
        rng.shuffle(&order)
        var position = 0
        var w = [Float](repeating: 0, count: d * k), b = [Float](repeating: 0, count: k)
        var weightMoments = AdamMoments(count: d * k), biasMoments = AdamMoments(count: k)
        var xb = [Float](repeating: 0, count: batch * d)
        var gradW = [Float](repeating: 0, count: d * k)
        var batchRows = [Int](repeating: 0, count: batch)
        for step in 0..<settings.steps {
            for i in 0..<batch {
                if position == order.count {
                    rng.shuffle(&order)
                    position = 0
                }
                batchRows[i] = order[position]
                position += 1
            }
            let gradB = batchGradient(features, rows: batchRows, labels: labels, classCount: k, weights: w, bias: b,
                                      batchScratch: &xb, weightGradient: &gradW)
            addGroupSubgradient(&gradW, weights: w, rowCount: d, classCount: k, lambda: lambda)
            let t = Float(step + 1)
            let rate = Float(settings.learningRate * 0.5 * (1 + cos(Double.pi * Double(step) / Double(settings.steps))))
            weightMoments.step(&w, gradient: gradW, rate: rate, t: t, settings: settings)
            biasMoments.step(&b, gradient: gradB, rate: rate, t: t, settings: settings)
        }
        // Final objective on all training rows (one pass), for the report.
        let full = PrimalModel(x: features.values, rowCount: features.rowCount, featureCount: d, classCount: k, penaltyKind: .none)
        let zAll = full.forward(coef: w, bias: b)
        var zRows = [Float](repeating: 0, count: rows.count * k)
        for (i, row) in rows.enumerated() { for c in 0..<k { zRows[i * k + c] = zAll[row * k + c] } }
        let y = rows.map { Int32(labels[$0]) }
        let penalty = lambda * GroupSoftThreshold.rowNorms(w, rows: d, columns: k).reduce(0, +)
        let objective = SoftmaxCrossEntropy.evaluate(logits: zRows, labels: y, classCount: k) + penalty
        let active = GroupSoftThreshold.rowNorms(w, rows: d, columns: k).filter { $0 > 0 }.count
        return GroupLassoSolution(lambda: lambda, weights: w, bias: b, gradientNorms: [], classCount: k,
                                  report: SolverReport(iterations: settings.steps, objective: objective, converged: true,
                                                       activeRows: active))
    }

    /// The mean cross-entropy gradient of one mini-batch: gathers its rows into `batchScratch`,
    /// writes `Xᵀ G` into `weightGradient` and returns the bias gradient (column sums of `G`).
    static func batchGradient(_ features: FeatureMatrix, rows batchRows: [Int], labels: [Int], classCount k: Int,
                              weights w: [Float], bias b: [Float], batchScratch xb: inout [Float], weightGradient gradW: inout [Float]) -> [Float] {
        let d = features.columnCount, batch = batchRows.count
        features.values.withUnsafeBufferPointer { px in
            xb.withUnsafeMutableBufferPointer { pb in
                for (i, row) in batchRows.enumerated() {
                    (pb.baseAddress! + i * d).update(from: px.baseAddress! + row * d, count: d)
                }
            }
        }
        let model = PrimalModel(x: xb, rowCount: batch, featureCount: d, classCount: k, penaltyKind: .none)
        let z = model.forward(coef: w, bias: b)
        var g = [Float](repeating: 0, count: batch * k)
        let yb = batchRows.map { Int32(labels[$0]) }
        _ = g.withUnsafeMutableBufferPointer {
            SoftmaxCrossEntropy.evaluate(logits: z, labels: yb, classCount: k, gradient: $0.baseAddress!)
        }
        xb.withUnsafeBufferPointer { px in
            g.withUnsafeBufferPointer { pg in
                gradW.withUnsafeMutableBufferPointer { pr in
                    BLAS.sgemm(transA: true, m: d, n: k, k: batch, a: px.baseAddress!, lda: d,
                               b: pg.baseAddress!, ldb: k, c: pr.baseAddress!, ldc: k)
                }
            }
        }
        return g.withUnsafeBufferPointer { Vec.columnSums($0.baseAddress!, rows: batch, columns: k) }.map { Float($0) }
    }

    /// Adds the group-lasso subgradient `λ W_i/‖W_i‖` of each non-zero weight row to `gradient`
    /// (0 at a zero row).
    static func addGroupSubgradient(_ gradient: inout [Float], weights: [Float], rowCount d: Int, classCount k: Int, lambda: Double) {
        guard lambda > 0 else { return }
        weights.withUnsafeBufferPointer { pw in
            gradient.withUnsafeMutableBufferPointer { pg in
                for r in 0..<d {
                    var s: Float = 0
                    for c in 0..<k { s += pw[r * k + c] * pw[r * k + c] }
                    if s > 0 {
                        let scale = Float(lambda) / s.squareRoot()
                        for c in 0..<k { pg[r * k + c] += scale * pw[r * k + c] }
                    }
                }
            }
        }
    }
}

/// Adam's first and second moment estimates of one parameter array.
struct AdamMoments {
    var first: [Float]
    var second: [Float]

    init(count: Int) {
        first = [Float](repeating: 0, count: count)
        second = first
    }

    /// One Adam step of `parameters` at step number `t` (from 1) with learning rate `rate`.
    mutating func step(_ parameters: inout [Float], gradient: [Float], rate: Float, t: Float, settings: AdamSettings) {
        let b1 = Float(settings.beta1), b2 = Float(settings.beta2), eps = Float(settings.epsilon)
        let c1 = 1 - pow(b1, t), c2 = 1 - pow(b2, t)
        parameters.withUnsafeMutableBufferPointer { pw in
            gradient.withUnsafeBufferPointer { pg in
                first.withUnsafeMutableBufferPointer { pm in
                    second.withUnsafeMutableBufferPointer { pv in
                        for i in 0..<pw.count {
                            pm[i] = b1 * pm[i] + (1 - b1) * pg[i]
                            pv[i] = b2 * pv[i] + (1 - b2) * pg[i] * pg[i]
                            pw[i] -= rate * (pm[i] / c1) / ((pv[i] / c2).squareRoot() + eps)
                        }
                    }
                }
            }
        }
    }
}
