import H2TCore

/// A trained linear classifier `logits = x W + b` on a fixed list of input features.
public struct LinearHead: Codable, Sendable, Hashable {
    /// Input features `d`.
    public var inputCount: Int
    /// Classes `K`.
    public var classCount: Int
    /// Row-major `d × K` weights.
    public var weights: [Float]
    /// `K` biases.
    public var bias: [Float]

    /// Creates a head; `weights.count` must be `inputCount * classCount`.
    public init(inputCount: Int, classCount: Int, weights: [Float], bias: [Float]) {
        precondition(weights.count == inputCount * classCount && bias.count == classCount)
        self.inputCount = inputCount
        self.classCount = classCount
        self.weights = weights
        self.bias = bias
    }

    /// Logits (`rows × K`) of a matrix with `inputCount` columns.
    public func logits(_ x: FeatureMatrix) -> [Float] {
        precondition(x.columnCount == inputCount)
        return PrimalModel(x: x.values, rowCount: x.rowCount, featureCount: inputCount, classCount: classCount,
                           penaltyKind: .none).forward(coef: weights, bias: bias)
    }

    /// The head that gives on `x` the logits this head gives on `x` with tap `t`'s columns
    /// multiplied by `scales[t]`: each tap's weight rows multiplied by its scale. `taps` partition
    /// the head's inputs.
    public func foldingTapScales(_ scales: [Float], taps: [TapColumns]) -> LinearHead {
        precondition(scales.count == taps.count, "one scale per tap")
        var w = weights
        for (tap, scale) in zip(taps, scales) {
            for i in (tap.offset * classCount)..<((tap.offset + tap.width) * classCount) { w[i] *= scale }
        }
        return LinearHead(inputCount: inputCount, classCount: classCount, weights: w, bias: bias)
    }

    /// Predicted classes (first maximum on ties).
    public func predict(_ x: FeatureMatrix) -> [Int] {
        SoftmaxCrossEntropy.predictions(logits: logits(x), rowCount: x.rowCount, classCount: classCount)
    }
}

/// Settings of the final (selection-free) head.
public struct HeadSettings: Codable, Sendable, Hashable {
    /// FISTA stopping rule.
    public var solver: ProximalSettings
    /// Ridge strength `μ` of `μ/2 ‖W‖²` (bias unpenalised); `Head2ToeFit` takes it from the
    /// `FitSettings.ridges` grid axis.
    ///
    /// Why not 0: with `N ≈ 800` training rows and hundreds to thousands of kept features the
    /// classes are almost always linearly separable, so the unregularised minimiser is at
    /// infinity and the result would depend on where the solver stops. `1e-4` is small next to
    /// the mean cross-entropy of a fitted head (it shrinks logits by well under 1%), makes the
    /// problem strongly convex with a unique solution that the numpy reference reaches too, and
    /// lets the kernel form (`d > n`) run the same iterates as the primal form. At `1e-5` (and
    /// at 0, which is accepted) the solver may stop at its iteration cap instead of converging;
    /// the head is then that iterate, the same in cross-validation and in the final fit.
    public var l2: Double

    /// Defaults: at most 1000 iterations, relative tolerance 1e-5, `μ = 1e-4`.
    public init(solver: ProximalSettings = ProximalSettings(maxIterations: 1000, tolerance: 1e-5), l2: Double = 1e-4) {
        self.solver = solver
        self.l2 = l2
    }

    func validate() throws {
        try solver.validate("final head")
        guard l2 >= 0, l2.isFinite else { throw TrainError.invalidSetting("final head l2 must be finite and >= 0") }
    }
}

/// The final head of docs/architecture.md §1 step 6 on an already gathered (and re-normalised) matrix.
public enum FinalHead {
    /// Fits `W, b` on all rows of `features` with FISTA on mean cross-entropy + `μ/2‖W‖²`.
    ///
    /// Uses the kernel form (Gram matrix of the rows) when there are more features than rows,
    /// which runs the same iterates at `n²K` instead of `ndK` per product (valid for any `μ ≥ 0`:
    /// the iterates stay in the row space of `X`); otherwise the primal form. `forceKernel`
    /// exists for tests that check both forms agree; `gram` (`n × n`, `X Xᵀ`) skips recomputing it.
    public static func fit(features: FeatureMatrix, labels: [Int], classCount k: Int,
                           settings: HeadSettings = HeadSettings(), forceKernel: Bool? = nil,
                           gram precomputed: [Float]? = nil) throws -> (head: LinearHead, report: SolverReport) {
        try settings.validate()
        guard labels.count == features.rowCount else {
            throw TrainError.shapeMismatch(what: "labels", expected: features.rowCount, actual: labels.count)
        }
        let n = features.rowCount, d = features.columnCount
        let y = labels.map { Int32($0) }
        let useKernel = forceKernel ?? (d > n)
        if useKernel {
            if let precomputed, precomputed.count != n * n {
                throw TrainError.shapeMismatch(what: "Gram matrix", expected: n * n, actual: precomputed.count)
            }
            let gram = precomputed ?? gramMatrix(features)
            let (a, bias, report) = fitKernel(gram: gram, labels: y, classCount: k, settings: settings)
            let w = GroupLasso.fullGradient(features: features, rows: Array(0..<n), logitGradient: a, classCount: k)
            return (LinearHead(inputCount: d, classCount: k, weights: w, bias: bias), report)
        }
        let model = PrimalModel(x: features.values, rowCount: n, featureCount: d, classCount: k,
                                penaltyKind: settings.l2 > 0 ? .ridge(settings.l2) : .none)
        var w = [Float](repeating: 0, count: d * k)
        var bias = GroupLasso.priorBias(labels: y, classCount: k)
        var lipschitz = 0.0
        let report = ProximalGradient.minimize(model, labels: y, coef: &w, bias: &bias, lipschitz: &lipschitz,
                                               settings: settings.solver)
        return (LinearHead(inputCount: d, classCount: k, weights: w, bias: bias), report)
    }

    /// One head per ridge strength in `ridges` (in that order), on the same rows, each exactly
    /// as `fit(features:labels:classCount:settings:)` would train it alone (a cold start, so the
    /// head that cross-validation scores is the head a final fit trains); the kernel form's Gram
    /// matrix (or `gram`, when given) is computed once and shared by every strength.
    ///
    /// Not warm-started from the next larger ridge: the relative-step stopping rule would then
    /// stop after one step, still at the larger ridge's solution.
    public static func fit(features: FeatureMatrix, labels: [Int], classCount k: Int, solver: ProximalSettings,
                           ridges: [Double], gram precomputed: [Float]? = nil) throws -> [(head: LinearHead, report: SolverReport)] {
        let useKernel = features.columnCount > features.rowCount
        let gram = useKernel ? (precomputed ?? gramMatrix(features)) : nil
        return try ridges.map { ridge in
            try fit(features: features, labels: labels, classCount: k, settings: HeadSettings(solver: solver, l2: ridge),
                    forceKernel: useKernel, gram: gram)
        }
    }

    /// `X Xᵀ` (`n × n`) of a row-major matrix, exactly symmetric (the upper triangle mirrored).
    public static func gramMatrix(_ features: FeatureMatrix) -> [Float] {
        let n = features.rowCount, d = features.columnCount
        var gram = [Float](repeating: 0, count: n * n)
        guard n > 0, d > 0 else { return gram }
        features.values.withUnsafeBufferPointer { px in
            gram.withUnsafeMutableBufferPointer { pg in
                BLAS.sgemm(transB: true, m: n, n: n, k: d, a: px.baseAddress!, lda: d, b: px.baseAddress!, ldb: d,
                           c: pg.baseAddress!, ldc: n)
                GramProduct.symmetrize(pg.baseAddress!, rows: n)
            }
        }
        return gram
    }

    /// `X Xᵀ` like ``gramMatrix(_:)``, in blocks of `blockRows` rows on `parallelism`'s threads:
    /// block `b` is `X[b] X[b...]ᵀ`, one single-threaded product from its diagonal to the right
    /// edge, and the lower triangle is mirrored from the upper one, so it costs half the
    /// multiply-adds and gives the same bits whatever the thread count (the blocks do not depend
    /// on it). The last bits can differ from ``gramMatrix(_:)``'s one product.
    ///
    /// For the all-features baseline's Gram matrix of every training row, which was one
    /// single-threaded product on one worker while the others waited (3-6 s at 2,000 rows).
    public static func gramMatrix(_ features: FeatureMatrix, parallelism: Parallelism, blockRows: Int = 256) throws -> [Float] {
        let n = features.rowCount, d = features.columnCount
        var gram = [Float](repeating: 0, count: n * n)
        guard n > 0, d > 0 else { return gram }
        let blocks = (n + blockRows - 1) / blockRows
        try features.values.withUnsafeBufferPointer { px in
            try gram.withUnsafeMutableBufferPointer { pg in
                let x = px.baseAddress!, g = pg.baseAddress!
                try Parallel.forEachWorker(itemCount: blocks, parallelism: parallelism, singleThreadedBLAS: true) { _, next in
                    while let b = next() {
                        let first = b * blockRows, rows = min(blockRows, n - first)
                        BLAS.sgemm(transB: true, m: rows, n: n - first, k: d, a: x + first * d, lda: d, b: x + first * d, ldb: d,
                                   c: g + first * n + first, ldc: n)
                    }
                }
                // Within each diagonal block the product filled both triangles; mirror from above.
                GramProduct.symmetrize(g, rows: n)
            }
        }
        return gram
    }

    /// Kernel-form FISTA on a Gram matrix of the training rows; returns the coefficients `A`
    /// (`n × K`, `W = Xᵀ A`), the bias and the report.
    static func fitKernel(gram: [Float], labels y: [Int32], classCount k: Int, settings: HeadSettings)
        -> (coefficients: [Float], bias: [Float], report: SolverReport) {
        let n = y.count
        let model = KernelModel(gram: gram, rowCount: n, classCount: k, mu: settings.l2)
        var a = [Float](repeating: 0, count: n * k)
        var bias = GroupLasso.priorBias(labels: y, classCount: k)
        var lipschitz = 0.0
        let report = ProximalGradient.minimize(model, labels: y, coef: &a, bias: &bias, lipschitz: &lipschitz,
                                               settings: settings.solver)
        return (a, bias, report)
    }
}

/// Accuracy, per-class accuracy and confusion matrix of a set of predictions.
public struct ClassificationMetrics: Codable, Sendable, Hashable {
    /// Examples evaluated.
    public var count: Int
    /// Fraction predicted correctly.
    public var accuracy: Double
    /// Recall of each class; `nil` for a class with no example.
    public var perClassAccuracy: [Double?]
    /// `confusion[true][predicted]` counts.
    public var confusion: [[Int]]

    /// Computes the metrics; labels and predictions must be in `0..<classCount`.
    public init(predictions: [Int], labels: [Int], classCount k: Int) {
        precondition(predictions.count == labels.count)
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        for (p, l) in zip(predictions, labels) { confusion[l][p] += 1 }
        let correct = (0..<k).reduce(0) { $0 + confusion[$1][$1] }
        self.count = labels.count
        self.accuracy = labels.isEmpty ? 0 : Double(correct) / Double(labels.count)
        self.perClassAccuracy = (0..<k).map { c in
            let total = confusion[c].reduce(0, +)
            return total == 0 ? nil : Double(confusion[c][c]) / Double(total)
        }
        self.confusion = confusion
    }
}
