import Foundation
import H2TCore

/// One feature set of the training rows, read through a `RowSource` (the stochastic path).
public struct StreamingFeatureSet: Sendable {
    /// Name used in the report (the feature set's id).
    public var name: String
    /// The training rows, in the order of the training labels.
    public var source: any RowSource

    /// Creates an input.
    public init(name: String, source: any RowSource) {
        self.name = name
        self.source = source
    }
}

/// Head2Toe on training rows too many for memory (docs/architecture.md §1, "Training at scale"):
/// the same grid, baselines, selection rule and report as `Head2ToeFit.run`, with every model
/// trained by mini-batch proximal SAGA (`StochasticPass`) on windows streamed from the source.
///
/// Protocol: a seeded held-out part of the training rows (`StochasticSettings.heldOutCount`) is
/// never trained on; it decides when every model stops, in cross-validation and in the final fit
/// alike. The other rows are dealt into folds; `ScaleSettings.validation` says whether every fold
/// is validated or only the first (one validation split). Selection runs at each `λ` from zero
/// (no path warm start), `λ_max` coming from one statistics pass.
public enum StreamingFit {
    /// Runs the fit; `progress` receives a line per stage.
    /// Every product runs single-threaded, in fixed slices on `parallelism`'s threads.
    public static func run(featureSets: [StreamingFeatureSet], trainLabels: [Int], classCount: Int,
                           settings: FitSettings, scale: ScaleSettings, parallelism: Parallelism = .default,
                           log: ((String) -> Void)? = nil) throws -> FitReport {
        try parallelism.withBLAS {
            try fit(featureSets: featureSets, trainLabels: trainLabels, classCount: classCount, settings: settings, scale: scale,
                    parallelism: parallelism, log: log)
        }
    }

    static func fit(featureSets: [StreamingFeatureSet], trainLabels: [Int], classCount: Int,
                    settings: FitSettings, scale: ScaleSettings, parallelism: Parallelism, log: ((String) -> Void)?) throws -> FitReport {
        let clock = ContinuousClock()
        let started = clock.now
        try settings.validate()
        try scale.validate()
        try check(featureSets: featureSets, trainLabels: trainLabels, classCount: classCount, settings: settings, scale: scale)
        let n = trainLabels.count
        let rule = scale.validation(rowCount: n, folds: settings.folds)
        let protocolRows = RowPlan(labels: trainLabels, classCount: classCount, settings: settings, scale: scale, rule: rule)
        let probeName = settings.probeTap ?? featureSets[0].source.taps.last!.name
        let prepared = clock.now

        var table: [CVRow] = []
        var statistics: [SetStatistics] = []
        var finals: [Runner.CrossValidation] = []
        for (s, set) in featureSets.enumerated() {
            log?("statistics pass over \(n) × \(set.source.columnCount) features of \(set.name.prefix(12))")
            let stats = try SetStatistics(source: set.source, labels: trainLabels, classCount: classCount, plan: protocolRows,
                                          settings: scale.stochastic)
            statistics.append(stats)
            let runner = Runner(featureSet: set, stats: stats, protocolRows: protocolRows, labels: trainLabels, classCount: classCount,
                                settings: settings, scale: scale, parallelism: parallelism, log: log)
            let swept = try runner.crossValidate(probe: s == 0 ? probeName : nil)
            table += swept.rows
            finals.append(swept)
        }
        let crossValidated = clock.now

        let names = featureSets.map(\.name)
        let placeholders = names.map { FeatureSetInput(name: $0, train: FeatureMatrix(rowCount: 0, columnCount: 0)) }
        let (best, floor) = Head2ToeFit.bestHead2Toe(table, rule: settings.selectionRule, sets: placeholders)
        let bestAll = Head2ToeFit.bestBaseline(table, method: .allFeatures)
        let probeRow = Head2ToeFit.bestBaseline(table, method: .linearProbe)
        func runner(_ s: Int) -> Runner {
            Runner(featureSet: featureSets[s], stats: statistics[s], protocolRows: protocolRows, labels: trainLabels, classCount: classCount,
                   settings: settings, scale: scale, parallelism: parallelism, log: log)
        }
        log?("final fit on \(protocolRows.finalTrain.count) rows (\(protocolRows.heldOut.count) held out for the stopping rule)")
        let allIndex = names.firstIndex(of: bestAll.featureSet)!
        let selector = finals[best.set].finalSelectors[settings.lambdas.firstIndex(of: best.lambda)!]
        let allModel = finals[allIndex].finalAll[settings.ridges.firstIndex(of: bestAll.ridge)!]
        let final = try runner(best.set).finalHead2Toe(best: best, selector: selector)
        let allFeatures = runner(allIndex).finalAllFeatures(allModel, ridge: bestAll.ridge, cvAccuracy: bestAll.cvAccuracy)
        let probe = try runner(0).finalKept(method: .linearProbe, columns: Array(featureSets[0].source.taps.first { $0.name == probeName }!.columns),
                                            scaling: .unit, ridge: probeRow.ridge, cvAccuracy: probeRow.cvAccuracy)
        let finished = clock.now
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
        var report = FitReport(
            classCount: classCount, trainCount: n, testCount: 0,
            featureSets: featureSets.map { FeatureSetSummary(name: $0.name, columnCount: $0.source.columnCount, tapCount: $0.source.taps.count) },
            settings: settings, head2toe: final.result, linearProbe: probe.result, allFeatures: allFeatures, cvTable: table,
            selectionFloor: floor, foldAssignment: protocolRows.folds,
            timings: FitTimings(prepare: seconds(prepared - started), crossValidation: seconds(crossValidated - prepared),
                                final: seconds(finished - crossValidated), total: seconds(finished - started)))
        report.plan = FitPlan(solver: .stochastic, requested: scale.solver, validation: rule.description, memoryBudget: scale.memoryBudget,
                              heldOutRows: protocolRows.heldOut.count, selectedInMemory: final.inMemory,
                              finalEpochs: [selector.epochs, final.result.headReport.iterations])
        return report
    }

    /// The checks of `Head2ToeFit.validate` that apply to streamed inputs, and the memory budget:
    /// one window of the widest feature set with the models' state must fit.
    static func check(featureSets: [StreamingFeatureSet], trainLabels: [Int], classCount: Int, settings: FitSettings,
                      scale: ScaleSettings) throws {
        guard classCount >= 2 else { throw TrainError.invalidSetting("class count must be >= 2, got \(classCount)") }
        guard !featureSets.isEmpty else { throw TrainError.emptyGridAxis("feature sets") }
        guard !settings.fractionCurve else {
            throw TrainError.invalidSetting("the fraction curve needs the exact solver (--solver exact), which holds the training split in memory")
        }
        for (row, label) in trainLabels.enumerated() where !(0..<classCount).contains(label) {
            throw TrainError.labelOutOfRange(split: "train", row: row, label: label, classCount: classCount)
        }
        if Set(trainLabels).count < 2 { throw TrainError.singleClass(split: "train", label: trainLabels.first ?? 0) }
        let heldOut = scale.stochastic.heldOutCount(rowCount: trainLabels.count)
        guard trainLabels.count - heldOut >= 2 * settings.folds else {
            throw TrainError.invalidSetting("\(settings.folds) folds and \(heldOut) held-out rows need at least \(2 * settings.folds + heldOut) training rows, got \(trainLabels.count)")
        }
        for set in featureSets {
            guard set.source.rowCount == trainLabels.count else {
                throw TrainError.shapeMismatch(what: "feature set '\(set.name)' training rows", expected: trainLabels.count, actual: set.source.rowCount)
            }
            try FeatureMatrix.validateTapLayout(set.source.taps, columnCount: set.source.columnCount, featureSet: set.name)
        }
        if let probe = settings.probeTap, !featureSets[0].source.taps.contains(where: { $0.name == probe }) {
            throw TrainError.unknownTap(featureSet: featureSets[0].name, tap: probe)
        }
        let width = featureSets.map(\.source.columnCount).max()!
        let needs = minimumBytes(rowCount: trainLabels.count, width: width, classCount: classCount, settings: settings, scale: scale)
        guard needs <= scale.memoryBudget else {
            throw TrainError.invalidSetting("memory budget \(ScaleSettings.describe(bytes: scale.memoryBudget)) is too small for one window of \(scale.stochastic.windowRows) rows × \(width) features and the models' state; the smallest that works is \(ScaleSettings.describe(bytes: needs)) (--memory \(needs / (1 << 20) + 1)M)")
        }
    }

    /// `λ_max` of `rows` (per-tap normalised as the fit normalises them) from the statistics
    /// pass's class sums: what the stochastic path scales `λ` by.
    public static func lambdaMax(source: some RowSource, labels: [Int], classCount: Int, rows: [Int],
                                 settings: StochasticSettings = StochasticSettings()) throws -> Double {
        var folds = [Int](repeating: -1, count: source.rowCount)
        for row in rows { folds[row] = 0 }
        let plan = RowPlan(folds: folds, rule: .holdout(folds: 1))
        return try SetStatistics(source: source, labels: labels, classCount: classCount, plan: plan, settings: settings)
            .lambdaMax(excluding: nil)
    }

    /// The fewest bytes the stochastic path needs: a window read at full width and the batch
    /// formed from it, the tap norms of every row, and per full-width model its weights, gradient
    /// sum, best iterate and `N × K` table (a model per validated fold and grid point, and the
    /// final fit's per grid point), the held-out rows read once at full width, plus a fixed
    /// allowance for the process.
    public static func minimumBytes(rowCount n: Int, width d: Int, classCount k: Int, settings: FitSettings, scale: ScaleSettings) -> Int {
        let window = 2 * scale.stochastic.windowRows * d * 4 + scale.stochastic.batchSize * d * 4
            + scale.stochastic.heldOutCount(rowCount: n) * d * 4
        let models = (scale.validation(rowCount: n, folds: settings.folds).validatedFolds.count + 1) * (settings.lambdas.count + settings.ridges.count)
        let perModel = 3 * d * k * 4 + n * k * 4 + n
        return window + models * perModel + n * 256 * 4 + (96 << 20)
    }
}

/// The rows of the stochastic protocol: held out for the stopping rule, and the folds of the rest.
struct RowPlan {
    /// Training rows held out (never trained on), ascending.
    let heldOut: [Int]
    /// Fold of each row (`-1` for a held-out row).
    let folds: [Int]
    let rule: ValidationRule
    /// Rows the final fit trains on.
    let finalTrain: [Int]

    init(folds: [Int], rule: ValidationRule) {
        self.folds = folds
        self.rule = rule
        heldOut = folds.indices.filter { folds[$0] == -1 }
        finalTrain = folds.indices.filter { folds[$0] >= 0 }
    }

    init(labels: [Int], classCount: Int, settings: FitSettings, scale: ScaleSettings, rule: ValidationRule) {
        let n = labels.count
        var order = Array(0..<n)
        var rng = SplitMix64(seed: settings.seed ^ 0x5EED_0F_4E1D_0017)
        rng.shuffle(&order)
        let held = Set(order.prefix(scale.stochastic.heldOutCount(rowCount: n)))
        heldOut = held.sorted()
        let rest = (0..<n).filter { !held.contains($0) }
        let restFolds = Head2ToeFit.foldAssignment(labels: rest.map { labels[$0] }, classCount: classCount, folds: rule.folds,
                                                   stratified: settings.stratified, seed: settings.seed)
        var folds = [Int](repeating: -1, count: n)
        for (i, row) in rest.enumerated() { folds[row] = restFolds[i] }
        self.folds = folds
        self.rule = rule
        finalTrain = rest
    }

    /// Roles of a model trained without fold `fold` (`nil`: the final fit): 1 train, 2 held out.
    func roles(excluding fold: Int?) -> [UInt8] {
        folds.map { $0 == -1 ? 2 : ($0 == fold ? 0 : 1) }
    }

    func validation(_ fold: Int) -> [Int] { folds.indices.filter { folds[$0] == fold } }
}

/// What one full-width pass learns about a feature set: each row's tap norms and, per fold, the
/// class sums `Σ x_i e_{y_i}ᵀ` of the normalised rows, which give `λ_max` of any union of folds.
struct SetStatistics: Sendable {
    /// `N × T` tap norms.
    let norms: [Float]
    let tapCount: Int
    let featureCount: Int
    let folds: Int
    let classCount: Int
    /// `D × (folds · K)`: column `f·K + c` sums the normalised rows of fold `f` and class `c`
    /// (held-out rows excluded).
    let classSums: [Float]
    /// Rows per fold and class.
    let classCounts: [[Int]]

    init(source: any RowSource, labels: [Int], classCount k: Int, plan rows: RowPlan, settings: StochasticSettings) throws {
        let d = source.columnCount, t = source.taps.count, folds = rows.rule.folds
        var norms = [Float](repeating: 0, count: source.rowCount * t)
        var sums = [Float](repeating: 0, count: d * folds * k)
        var counts = [[Int]](repeating: [Int](repeating: 0, count: k), count: folds)
        let pass = StochasticPass(source: source, readColumns: nil, forms: [], labels: labels, classCount: k, settings: settings, seed: 0)
        try pass.forEachWindow(rows: Array(0..<source.rowCount), epochSeed: nil) { raw, window in
            var x = raw
            let windowNorms = x.normalizeTaps()
            // One-hot of (fold, class) per row, so one product adds every fold's class sums.
            var indicator = [Float](repeating: 0, count: window.count * folds * k)
            for (r, row) in window.enumerated() {
                for j in 0..<t { norms[row * t + j] = windowNorms[r * t + j] }
                let f = rows.folds[row]
                guard f >= 0 else { continue }
                counts[f][labels[row]] += 1
                indicator[r * folds * k + f * k + labels[row]] = 1
            }
            x.values.withUnsafeBufferPointer { px in
                indicator.withUnsafeBufferPointer { py in
                    sums.withUnsafeMutableBufferPointer { ps in
                        BLAS.sgemm(transA: true, m: d, n: folds * k, k: window.count, a: px.baseAddress!, lda: d, b: py.baseAddress!,
                                   ldb: folds * k, beta: 1, c: ps.baseAddress!, ldc: folds * k)
                    }
                }
            }
        }
        self.norms = norms
        tapCount = t
        featureCount = d
        self.folds = folds
        classCount = k
        classSums = sums
        classCounts = counts
    }

    /// `λ_max` of the rows of every fold but `fold` (`nil`: all folds): `max_i ‖∇_i‖` at `W = 0`
    /// with the prior bias, `∇ = (1/n) Σ_i x_i (p − e_{y_i})ᵀ`, from the class sums.
    func lambdaMax(excluding fold: Int?) -> Double {
        let included = (0..<folds).filter { $0 != fold }
        let k = classCount
        var counts = [Int](repeating: 0, count: k)
        for f in included { for c in 0..<k { counts[c] += classCounts[f][c] } }
        let n = Double(max(counts.reduce(0, +), 1))
        let bias = GroupLasso.priorBias(labels: counts.indices.flatMap { c in [Int32](repeating: Int32(c), count: counts[c]) }, classCount: k)
        let exps = bias.map { exp(Double($0)) }
        let prior = exps.map { $0 / exps.reduce(0, +) }
        var best = 0.0
        var perClass = [Double](repeating: 0, count: k)
        for j in 0..<featureCount {
            for c in 0..<k { perClass[c] = 0 }
            for f in included { for c in 0..<k { perClass[c] += Double(classSums[j * folds * k + f * k + c]) } }
            let total = perClass.reduce(0, +)
            var s = 0.0
            for c in 0..<k {
                let g = total * prior[c] - perClass[c]
                s += g * g
            }
            best = max(best, s.squareRoot() / n)
        }
        return best
    }
}
