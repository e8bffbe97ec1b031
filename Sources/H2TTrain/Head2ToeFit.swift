import COpenBLAS
import Dispatch
import Foundation
import H2TCore

/// The optimiser that produces the group-lasso scores for selection.
public enum SelectionSolver: Codable, Sendable, Hashable {
    /// Working-set FISTA with the exact group soft-threshold (the default).
    case proximal(GroupLassoSettings)
    /// Adam on the subgradient with cosine decay, as the reference code (for parity).
    case adam(AdamSettings)
}

/// How the `λ` grid values are read.
public enum LambdaScale: String, Codable, Sendable, Hashable {
    /// `λ = value · λ_max`, where `λ_max` (the smallest `λ` with an all-zero solution) is computed
    /// on the rows being trained on. Scale-free: the same grid means the same sparsity regime
    /// whatever `D`, the number of taps or the label balance.
    case relativeToMax
    /// `λ = value` as in the reference code (1e-5 … 1e-4 with Adam).
    case absolute
}

/// How each tap's kept subset is scaled for Head2Toe's final head.
public enum KeptTapScaling: String, Codable, Sendable, Hashable {
    /// Every tap that keeps a column weighs the same: its kept subset has unit norm (the reference
    /// code's rule). A tap that keeps 3 weak columns then counts as much as one kept whole.
    case unit
    /// Each tap's re-normalised subset is multiplied by the RMS, over the training rows, of the
    /// kept subset's norm in the per-tap normalised features (`FeatureMatrix.keptTapShares`): the
    /// taps keep the relative weights that selection saw. The factors are folded into the head's
    /// weight rows afterwards, so the stored head applies to the plain per-tap re-normalised subset
    /// and prediction reads only the selected columns, as with `unit`.
    ///
    /// Why (measured, docs/architecture.md §1 protocol, MobileNetV2 F_T 512 on Fashion-MNIST, 5-fold CV on
    /// the 1,000 training images): over 12 grid points (λ 0.5/0.1/0.025 × fractions 0.05–0.3)
    /// this beat `unit` at 11 and by 0.5 points of CV accuracy on average.
    case trainingShare
    /// No per-example re-normalisation of the kept subset: each kept column is its raw pooled
    /// value divided by one constant per tap, the root mean square over the training rows of the
    /// tap's full L2 norm (what per-tap normalisation divides by, on average). A tap that keeps
    /// a few columns then keeps their sizes relative to each other and across examples, instead
    /// of being stretched to unit norm per example. The constants are folded into the head's
    /// weight rows, so the stored head applies to the raw selected columns
    /// (`HeadInputRule.raw`) and prediction reads only those columns.
    ///
    /// Measured on the same protocol with both target sizes (λ 0.1/0.025/0.01 × 6 fractions ×
    /// 3 ridges, 108 points): it beat `trainingShare` at 64 points and lost at 31, by 0.15 points
    /// of CV on average and by up to 1.2 at 1% kept; its best point (0.903) was below
    /// `trainingShare`'s (0.905), so it is not the default.
    case trainingConstant
}

/// The hyper-parameter grid and protocol of a Head2Toe fit.
public struct FitSettings: Codable, Sendable, Hashable {
    /// Keep fractions (global top-k by score).
    public var fractions: [Double]
    /// Group-lasso strengths, read according to `lambdaScale`.
    public var lambdas: [Double]
    /// How `lambdas` are read.
    public var lambdaScale: LambdaScale
    /// Selection optimisers (a grid axis).
    public var solvers: [SelectionSolver]
    /// Cross-validation folds of the training split.
    public var folds: Int
    /// Stratified folds (each class dealt round-robin after a seeded shuffle) or plain (one
    /// seeded shuffle of all rows dealt round-robin).
    public var stratified: Bool
    /// The final head's stopping rule (all methods).
    public var headSolver: ProximalSettings
    /// Ridge strengths `μ` of the final head (`μ/2 ‖W‖²`, bias unpenalised): a grid axis of every
    /// method (Head2Toe and both baselines), the analogue of the reference code's search over the
    /// final head's learning rate and steps, which regularise it implicitly.
    public var ridges: [Double]
    /// Weighting of the kept taps in Head2Toe's final head (the baselines keep whole taps).
    public var keptTapScaling: KeptTapScaling
    /// The linear-probe tap (pre-logits), looked up in the first feature set; `nil` means the last tap.
    public var probeTap: String?
    /// Seed of fold assignment and Adam's batch order.
    public var seed: UInt64
    /// Parallel workers over (feature set, solver, fold) tasks; 0 means one per active core.
    public var workers: Int
    /// Make OpenBLAS single-threaded while the parallel workers run, so that two workers do not
    /// each start two BLAS threads on two cores. OpenBLAS's thread count is process-wide: other
    /// BLAS work in the same process during the fit runs single-threaded too (and a GEMM split
    /// differently may round differently); turn this off when embedding a fit next to such work.
    public var singleThreadedBlasInWorkers: Bool

    /// Default keep fractions (see `init` for why).
    public static let defaultFractions: [Double] = [0.01, 0.05, 0.1, 0.2, 0.35, 0.5]
    /// Default group-lasso strengths, × λ_max (see `init`).
    public static let defaultLambdas: [Double] = [0.1, 0.03, 0.01]
    /// Default ridge strengths of the final head (see `init`).
    public static let defaultRidges: [Double] = [1e-5, 1e-4, 1e-3]

    /// Defaults, chosen for `N ≈ 1000`, `D ≈ 10⁴–10⁵`, `K ≈ 10` (VTAB-1k-like):
    /// - fractions 0.01, 0.05, 0.1, 0.2, 0.35, 0.5: the paper's 0.01/0.1/0.2 plus 0.05 between
    ///   them, and 0.35/0.5 because on the real protocol (MobileNetV2 on Fashion-MNIST) CV picked
    ///   0.2, the edge of the shorter grid; extra fractions cost only a small head each, since one
    ///   group-lasso run serves them all;
    /// - λ = 0.1, 0.03, 0.01 × λ_max: a decade of the path. On the real protocol (N = 800
    ///   per fold, D = 45,400 and 84,136) λ = 0.25 × λ_max leaves about 16 non-zero rows and
    ///   0.01 × λ_max about 280, so even 1% keeps more rows than are non-zero and the rest are
    ///   ranked by their gradient norm at the solution; smaller λ makes more of the ranking come
    ///   from the weights, and CV preferred it at every fraction (0.5 and 0.25 never won);
    /// - final-head ridge 1e-5, 1e-4, 1e-3 for every method (CV picks; larger values lost
    ///   everywhere on the real protocol, down to 0.72 at 1e-1);
    /// - the proximal solver only (Adam is the reference's parity path, not a better optimum);
    /// - 5 stratified folds as the VTAB-1k protocol; seed 0; one worker per core;
    /// - kept taps weighted by their training share (see `KeptTapScaling.trainingShare`).
    public init(fractions: [Double] = FitSettings.defaultFractions, lambdas: [Double] = FitSettings.defaultLambdas,
                lambdaScale: LambdaScale = .relativeToMax, solvers: [SelectionSolver] = [.proximal(GroupLassoSettings())],
                folds: Int = 5, stratified: Bool = true,
                headSolver: ProximalSettings = HeadSettings().solver, ridges: [Double] = FitSettings.defaultRidges,
                keptTapScaling: KeptTapScaling = .trainingShare, probeTap: String? = nil,
                seed: UInt64 = 0, workers: Int = 0, singleThreadedBlasInWorkers: Bool = true) {
        self.fractions = fractions
        self.lambdas = lambdas
        self.lambdaScale = lambdaScale
        self.solvers = solvers
        self.folds = folds
        self.stratified = stratified
        self.headSolver = headSolver
        self.ridges = ridges
        self.keptTapScaling = keptTapScaling
        self.probeTap = probeTap
        self.seed = seed
        self.workers = workers
        self.singleThreadedBlasInWorkers = singleThreadedBlasInWorkers
    }

    /// Checks every axis and setting; throws the first problem as a one-line error.
    public func validate() throws {
        guard !fractions.isEmpty else { throw TrainError.emptyGridAxis("fractions") }
        guard !lambdas.isEmpty else { throw TrainError.emptyGridAxis("lambdas") }
        guard !solvers.isEmpty else { throw TrainError.emptyGridAxis("solvers") }
        guard !ridges.isEmpty else { throw TrainError.emptyGridAxis("ridges") }
        for ridge in ridges where !(ridge >= 0 && ridge.isFinite) {
            throw TrainError.invalidSetting("final head ridge must be finite and >= 0, got \(ridge)")
        }
        for fraction in fractions where !(fraction > 0 && fraction <= 1) { throw TrainError.invalidFraction(fraction) }
        for lambda in lambdas where !(lambda >= 0 && lambda.isFinite) { throw TrainError.invalidLambda(lambda) }
        guard folds >= 2 else { throw TrainError.invalidSetting("folds must be >= 2, got \(folds)") }
        guard workers >= 0 else { throw TrainError.invalidSetting("workers must be >= 0") }
        try headSolver.validate("final head")
        for solver in solvers {
            switch solver {
            case let .proximal(settings): try settings.validate()
            case let .adam(settings): try settings.validate()
            }
        }
    }
}

/// One feature set (one target size `F_T`) of the same examples: training rows and optional test rows.
public struct FeatureSetInput: Sendable {
    /// Name used in the report (e.g. the feature set's id or `ft8192`).
    public var name: String
    /// Training rows, in the order of the training labels.
    public var train: FeatureMatrix
    /// Test rows, in the order of the test labels; `nil` for no test evaluation.
    public var test: FeatureMatrix?

    /// Creates an input.
    public init(name: String, train: FeatureMatrix, test: FeatureMatrix? = nil) {
        self.name = name
        self.train = train
        self.test = test
    }
}

/// Head2Toe model selection and training on cached features (docs/architecture.md §1 steps 3–7).
public enum Head2ToeFit {
    /// Checks the inputs, normalises them, runs the cross-validation sweep over the grid
    /// (feature sets × solvers × λ × fractions × ridges) and the two baselines (× ridges), picks
    /// the best grid point, retrains it on the whole training split and evaluates it once on test.
    ///
    /// Selection rule: highest pooled CV accuracy; ties go to the smaller fraction (fewer
    /// features to read and store), then the larger λ (sparser), then the larger ridge, then the
    /// earlier feature set, then the earlier solver. All checks run before any numeric work.
    /// `progress` counts the cross-validation tasks as they finish.
    public static func run(featureSets: [FeatureSetInput], trainLabels: [Int], testLabels: [Int] = [],
                           classCount: Int, settings: FitSettings = FitSettings(),
                           progress: ProgressReporter? = nil) throws -> FitReport {
        let clock = ContinuousClock()
        let started = clock.now
        try settings.validate()
        try validate(featureSets: featureSets, trainLabels: trainLabels, testLabels: testLabels,
                     classCount: classCount, settings: settings)
        var sets = featureSets
        var trainNorms: [[Float]] = [], testNorms: [[Float]] = []
        for index in sets.indices {
            trainNorms.append(sets[index].train.normalizeTaps())
            testNorms.append(sets[index].test?.normalizeTaps() ?? [])
        }
        let probeName = settings.probeTap ?? sets[0].train.taps.last!.name
        let folds = foldAssignment(labels: trainLabels, classCount: classCount, folds: settings.folds,
                                   stratified: settings.stratified, seed: settings.seed)
        let prepared = clock.now

        // Cross-validation: one task per (feature set, solver, fold) runs the whole λ path, every
        // fraction and every ridge; one per (feature set, fold) for all features; one per fold
        // for the probe (both baselines over every ridge).
        var tasks: [CVTask] = []
        for s in sets.indices { for v in settings.solvers.indices { for f in 0..<settings.folds { tasks.append(.head2toe(set: s, solver: v, fold: f)) } } }
        for s in sets.indices { for f in 0..<settings.folds { tasks.append(.allFeatures(set: s, fold: f)) } }
        for f in 0..<settings.folds { tasks.append(.probe(fold: f)) }
        // The all-features baseline works in kernel form on one Gram matrix per feature set,
        // shared by its folds and its final fit (BLAS uses every core here).
        let grams = sets.map { FinalHead.gramMatrix($0.train) }
        let context = CVContext(sets: sets, norms: trainNorms, grams: grams, labels: trainLabels, classCount: classCount, folds: folds,
                                settings: settings, probeTap: probeName)
        progress?.setTotal(tasks.count)
        let results = try ParallelRunner.map(tasks, workers: settings.workers,
                                             singleThreadedBLAS: settings.singleThreadedBlasInWorkers) { task in
            defer { progress?.advance(by: 1) }
            return try context.run(task)
        }
        progress?.finish()
        let table = context.table(tasks: tasks, results: results)
        let crossValidated = clock.now

        // Final fits on the whole training split.
        let best = try bestHead2Toe(table, settings: settings, sets: sets)
        let allRows = Array(0..<trainLabels.count)
        let chosenSet = sets[best.set]
        let lambdaRatios = settings.lambdas.sorted(by: >).filter { $0 >= best.lambda }
        let selection = try context.selectionPath(set: best.set, solver: best.solver, rows: allRows, lambdas: lambdaRatios).last!
        let columns = selection.solution.selection(fraction: best.fraction)
        let head2toe = try finalMethod(method: "head2toe", set: chosenSet, norms: (trainNorms[best.set], testNorms[best.set]),
                                       columns: columns, scaling: settings.keptTapScaling, ridge: best.ridge, trainLabels: trainLabels, testLabels: testLabels, classCount: classCount,
                                       settings: settings, cvAccuracy: best.accuracy)
        var h2t = head2toe
        h2t.fraction = best.fraction
        h2t.lambda = best.lambda
        h2t.lambdaAbsolute = selection.solution.lambda
        h2t.solver = best.solver
        h2t.selectionReport = selection.solution.report

        let bestAll = bestBaseline(table, method: "all_features")
        let allSet = sets.first { $0.name == bestAll.featureSet }!
        let allFeatures = try finalMethod(method: "all_features", set: allSet, norms: ([], []), columns: Array(0..<allSet.train.columnCount),
                                          scaling: nil, ridge: bestAll.ridge, trainLabels: trainLabels, testLabels: testLabels,
                                          classCount: classCount, settings: settings, cvAccuracy: bestAll.cvAccuracy,
                                          gram: grams[sets.firstIndex { $0.name == allSet.name }!])
        let probeRow = bestBaseline(table, method: "linear_probe")
        let probeColumns = Array(sets[0].train.columns(ofTap: probeName)!)
        let probe = try finalMethod(method: "linear_probe", set: sets[0], norms: (trainNorms[0], testNorms[0]), columns: probeColumns,
                                    scaling: .unit, ridge: probeRow.ridge, trainLabels: trainLabels, testLabels: testLabels, classCount: classCount,
                                    settings: settings, cvAccuracy: probeRow.cvAccuracy)
        let finished = clock.now
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        return FitReport(
            classCount: classCount, trainCount: trainLabels.count, testCount: testLabels.count,
            featureSets: sets.map { FeatureSetSummary(name: $0.name, columnCount: $0.train.columnCount, tapCount: $0.train.taps.count) },
            settings: settings, head2toe: h2t, linearProbe: probe, allFeatures: allFeatures, cvTable: table,
            foldAssignment: folds,
            timings: FitTimings(prepare: seconds(prepared - started), crossValidation: seconds(crossValidated - prepared),
                                final: seconds(finished - crossValidated), total: seconds(finished - started)))
    }

    /// Every input check of `run`, in the order a user would want to hear about them.
    public static func validate(featureSets: [FeatureSetInput], trainLabels: [Int], testLabels: [Int],
                                classCount: Int, settings: FitSettings) throws {
        guard classCount >= 2 else { throw TrainError.invalidSetting("class count must be >= 2, got \(classCount)") }
        guard !featureSets.isEmpty else { throw TrainError.emptyGridAxis("feature sets") }
        for (row, label) in trainLabels.enumerated() where !(0..<classCount).contains(label) {
            throw TrainError.labelOutOfRange(split: "train", row: row, label: label, classCount: classCount)
        }
        for (row, label) in testLabels.enumerated() where !(0..<classCount).contains(label) {
            throw TrainError.labelOutOfRange(split: "test", row: row, label: label, classCount: classCount)
        }
        let distinct = Set(trainLabels)
        if distinct.count < 2 { throw TrainError.singleClass(split: "train", label: trainLabels.first ?? 0) }
        guard trainLabels.count >= settings.folds else {
            throw TrainError.invalidSetting("\(settings.folds) folds need at least as many training rows, got \(trainLabels.count)")
        }
        var names = Set<String>()
        for set in featureSets {
            guard names.insert(set.name).inserted else { throw TrainError.inconsistentInput("duplicate feature set '\(set.name)'") }
            guard set.train.rowCount == trainLabels.count else {
                throw TrainError.shapeMismatch(what: "feature set '\(set.name)' training rows", expected: trainLabels.count,
                                               actual: set.train.rowCount)
            }
            try set.train.validate(featureSet: set.name, split: "train")
            if let test = set.test {
                guard test.rowCount == testLabels.count else {
                    throw TrainError.shapeMismatch(what: "feature set '\(set.name)' test rows", expected: testLabels.count,
                                                   actual: test.rowCount)
                }
                guard test.taps == set.train.taps else {
                    throw TrainError.inconsistentInput("feature set '\(set.name)': test taps differ from train taps")
                }
                try test.validate(featureSet: set.name, split: "test")
            } else if !testLabels.isEmpty {
                throw TrainError.inconsistentInput("feature set '\(set.name)' has no test rows but test labels were given")
            }
        }
        if let probe = settings.probeTap, featureSets[0].train.columns(ofTap: probe) == nil {
            throw TrainError.unknownTap(featureSet: featureSets[0].name, tap: probe)
        }
    }

    /// The fold (`0..<folds`) of each row. Stratified: for each class in order, its rows are
    /// shuffled by the seeded generator and dealt round-robin, the deal continuing across classes
    /// so fold sizes differ by at most one. Plain: all rows shuffled once and dealt round-robin.
    public static func foldAssignment(labels: [Int], classCount: Int, folds: Int, stratified: Bool, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed)
        var assignment = [Int](repeating: 0, count: labels.count)
        var dealt = 0
        let groups: [[Int]] = stratified
            ? (0..<classCount).map { c in labels.indices.filter { labels[$0] == c } }
            : [Array(labels.indices)]
        for var group in groups {
            rng.shuffle(&group)
            for row in group {
                assignment[row] = dealt % folds
                dealt += 1
            }
        }
        return assignment
    }

    /// Fits a method's final head on the whole training split and evaluates it on test.
    /// `scaling` forms the inputs from the kept `columns` (`nil`: every column as normalised,
    /// the all-features baseline, which may pass its `gram`); `norms` are the train and test
    /// tap norms of the per-tap normalisation.
    static func finalMethod(method: String, set: FeatureSetInput, norms: (train: [Float], test: [Float]), columns: [Int],
                            scaling: KeptTapScaling?, ridge: Double, trainLabels: [Int], testLabels: [Int], classCount: Int,
                            settings: FitSettings, cvAccuracy: Double, gram: [Float]? = nil) throws -> MethodResult {
        let allTrain = Array(0..<set.train.rowCount)
        let kept = scaling.map { set.train.keptInputs(norms: norms.train, rows: allTrain, columns: columns, scaling: $0, statisticsRows: allTrain) }
        var (head, report) = try FinalHead.fit(features: kept?.inputs ?? set.train, labels: trainLabels, classCount: classCount,
                                               settings: HeadSettings(solver: settings.headSolver, l2: ridge), gram: kept == nil ? gram : nil)
        // The stored head applies to inputs formed by its input rule from the selected columns alone.
        if let kept { head = head.foldingTapScales(kept.tapScales, taps: kept.inputs.taps) }
        let rule = scaling?.inputRule ?? .perTapUnitL2
        var metrics: ClassificationMetrics?
        if let test = set.test {
            let testMatrix = scaling == nil ? test
                : test.headInputs(norms: norms.test, rows: Array(0..<test.rowCount), columns: columns, rule: rule)
            metrics = ClassificationMetrics(predictions: head.predict(testMatrix), labels: testLabels, classCount: classCount)
        }
        let perTap = set.train.tapsOfSubset(columns).map { tap -> TapSelection in
            let original = set.train.taps.first { $0.name == tap.name }!
            return TapSelection(tap: tap.name, indices: columns[tap.offset..<(tap.offset + tap.width)].map { $0 - original.offset })
        }
        return MethodResult(method: method, featureSet: set.name, fraction: nil, lambda: nil, lambdaAbsolute: nil, solver: nil,
                            ridge: ridge, inputRule: rule, cvAccuracy: cvAccuracy, testAccuracy: metrics?.accuracy, test: metrics,
                            selectedIndices: columns, selectedPerTap: perTap, head: head, headReport: report,
                            selectionReport: nil)
    }

    struct BestPoint {
        var set: Int, solver: Int, lambda: Double, fraction: Double, ridge: Double, accuracy: Double
    }

    /// The best Head2Toe row: highest CV accuracy; ties go to the smaller fraction, the larger λ,
    /// the larger ridge (each the simpler model), then the earlier feature set and solver.
    static func bestHead2Toe(_ table: [CVRow], settings: FitSettings, sets: [FeatureSetInput]) throws -> BestPoint {
        let setIndex = Dictionary(uniqueKeysWithValues: sets.enumerated().map { ($0.element.name, $0.offset) })
        var best: BestPoint?
        for row in table where row.method == "head2toe" {
            let candidate = BestPoint(set: setIndex[row.featureSet]!, solver: row.solver!, lambda: row.lambda!,
                                      fraction: row.fraction!, ridge: row.ridge, accuracy: row.cvAccuracy)
            guard let current = best else { best = candidate; continue }
            func key(_ p: BestPoint) -> (Double, Double, Double, Double, Int, Int) {
                (p.accuracy, -p.fraction, p.lambda, p.ridge, -p.set, -p.solver)
            }
            if key(candidate) > key(current) { best = candidate }
        }
        return best!
    }

    /// The best row of a baseline: highest CV accuracy; ties go to the larger ridge, then the earlier row.
    static func bestBaseline(_ table: [CVRow], method: String) -> CVRow {
        let rows = table.filter { $0.method == method }
        return rows.enumerated().max { a, b in
            (a.element.cvAccuracy, a.element.ridge, -a.offset) < (b.element.cvAccuracy, b.element.ridge, -b.offset)
        }!.element
    }
}

enum CVTask: Sendable {
    case head2toe(set: Int, solver: Int, fold: Int)
    case allFeatures(set: Int, fold: Int)
    case probe(fold: Int)
}

/// Correct counts of one task, `correct[λ][fraction][ridge]` (grid indices) for Head2Toe and
/// `correct[0][0][ridge]` for the baselines; kept columns per (λ, fraction).
struct CVTaskResult: Sendable {
    var correct: [[[Int]]]
    var validated: Int
    var kept: [[Int]]
}

/// Everything a cross-validation task reads; immutable and shared by the workers.
struct CVContext: Sendable {
    let sets: [FeatureSetInput]
    /// Per-row tap norms of each set's training rows (`FeatureMatrix.normalizeTaps`).
    let norms: [[Float]]
    /// `X Xᵀ` of each set's (normalised) training rows.
    let grams: [[Float]]
    let labels: [Int]
    let classCount: Int
    let folds: [Int]
    let settings: FitSettings
    let probeTap: String

    func rows(fold: Int) -> (train: [Int], validation: [Int]) {
        (folds.indices.filter { folds[$0] != fold }, folds.indices.filter { folds[$0] == fold })
    }

    /// The group-lasso path (descending λ, as given in the grid) on `rows` of feature set `set`.
    func selectionPath(set: Int, solver: Int, rows: [Int], lambdas: [Double]) throws -> [(ratio: Double, solution: GroupLassoSolution)] {
        let features = sets[set].train
        let ordered = lambdas.sorted(by: >)
        let scale = settings.lambdaScale == .relativeToMax
            ? GroupLasso.lambdaMax(features: features, rows: rows, labels: labels, classCount: classCount) : 1
        switch settings.solvers[solver] {
        case let .proximal(gl):
            let path = try GroupLasso.path(features: features, rows: rows, labels: labels, classCount: classCount,
                                           lambdas: ordered.map { $0 * scale }, settings: gl)
            return zip(ordered, path).map { ($0, $1) }
        case let .adam(adam):
            return try ordered.map { ratio in
                (ratio, try GroupLasso.adam(features: features, rows: rows, labels: labels, classCount: classCount,
                                            lambda: ratio * scale, settings: adam, seed: settings.seed))
            }
        }
    }

    /// Trains one head per ridge on `train` rows of `columns`, scaled per `scaling` with
    /// statistics from the fold's training rows only, and counts correct validation predictions of each.
    func evaluate(set: Int, columns: [Int], scaling: KeptTapScaling, train: [Int], validation: [Int]) throws -> [Int] {
        let (matrix, _) = sets[set].train.keptInputs(norms: norms[set], rows: train + validation, columns: columns,
                                                     scaling: scaling, statisticsRows: train)
        let d = columns.count
        let trainPart = try FeatureMatrix(rowCount: train.count, columnCount: d,
                                          values: Array(matrix.values[0..<(train.count * d)]), taps: matrix.taps)
        let validationPart = try FeatureMatrix(rowCount: validation.count, columnCount: d,
                                               values: Array(matrix.values[(train.count * d)...]), taps: matrix.taps)
        let heads = try FinalHead.fit(features: trainPart, labels: train.map { labels[$0] }, classCount: classCount,
                                      solver: settings.headSolver, ridges: settings.ridges)
        return heads.map { head, _ in
            zip(head.predict(validationPart), validation).filter { $0 == labels[$1] }.count
        }
    }

    func run(_ task: CVTask) throws -> CVTaskResult {
        switch task {
        case let .head2toe(set, solver, fold):
            let (train, validation) = rows(fold: fold)
            let path = try selectionPath(set: set, solver: solver, rows: train, lambdas: settings.lambdas)
            // Results are indexed by the grid's λ order, not the path's descending order.
            var correct = [[[Int]]](repeating: [], count: settings.lambdas.count)
            var kept = [[Int]](repeating: [], count: settings.lambdas.count)
            for (ratio, solution) in path {
                let ranking = solution.ranking()
                let li = settings.lambdas.firstIndex(of: ratio)!
                for fraction in settings.fractions {
                    let columns = solution.selection(fraction: fraction, ranking: ranking)
                    correct[li].append(try evaluate(set: set, columns: columns, scaling: settings.keptTapScaling,
                                                    train: train, validation: validation))
                    kept[li].append(columns.count)
                }
            }
            return CVTaskResult(correct: correct, validated: validation.count, kept: kept)
        case let .allFeatures(set, fold):
            // Kernel form on the shared Gram matrix: the fold's training block for the fit, the
            // validation × training block for the predictions; no pass over the features at all.
            let (train, validation) = rows(fold: fold)
            let n = sets[set].train.rowCount, m = train.count
            let gram = grams[set]
            var block = [Float](repeating: 0, count: m * m)
            for (i, ri) in train.enumerated() { for (j, rj) in train.enumerated() { block[i * m + j] = gram[ri * n + rj] } }
            var cross = [Float](repeating: 0, count: validation.count * m)
            for (i, ri) in validation.enumerated() { for (j, rj) in train.enumerated() { cross[i * m + j] = gram[ri * n + rj] } }
            let correct = settings.ridges.map { ridge in
                let (a, bias, _) = FinalHead.fitKernel(gram: block, labels: train.map { Int32(labels[$0]) }, classCount: classCount,
                                                      settings: HeadSettings(solver: settings.headSolver, l2: ridge))
                let z = KernelModel(gram: [], rowCount: 0, classCount: classCount, mu: 0)
                    .crossForward(cross: cross, rows: validation.count, coef: a, bias: bias)
                let predictions = SoftmaxCrossEntropy.predictions(logits: z, rowCount: validation.count, classCount: classCount)
                return zip(predictions, validation).filter { $0 == labels[$1] }.count
            }
            return CVTaskResult(correct: [[correct]], validated: validation.count, kept: [[sets[set].train.columnCount]])
        case let .probe(fold):
            let (train, validation) = rows(fold: fold)
            let columns = Array(sets[0].train.columns(ofTap: probeTap)!)
            let correct = try evaluate(set: 0, columns: columns, scaling: .unit, train: train, validation: validation)
            return CVTaskResult(correct: [[correct]], validated: validation.count, kept: [[columns.count]])
        }
    }

    /// Pools task results into the CV table.
    func table(tasks: [CVTask], results: [CVTaskResult]) -> [CVRow] {
        var rows: [CVRow] = []
        func pooled(_ indices: [Int], li: Int, fi: Int, ri: Int) -> (Double, [Double], Int) {
            let correct = indices.map { results[$0].correct[li][fi][ri] }
            let total = indices.map { results[$0].validated }
            let folds = zip(correct, total).map { Double($0) / Double(max($1, 1)) }
            return (Double(correct.reduce(0, +)) / Double(max(total.reduce(0, +), 1)), folds, results[indices[0]].kept[li][fi])
        }
        for s in sets.indices {
            for v in settings.solvers.indices {
                let indices = tasks.indices.filter {
                    if case let .head2toe(ts, tv, _) = tasks[$0] { return ts == s && tv == v }
                    return false
                }
                for (li, lambda) in settings.lambdas.enumerated() {
                    for (fi, fraction) in settings.fractions.enumerated() {
                        for (ri, ridge) in settings.ridges.enumerated() {
                            let (accuracy, folds, kept) = pooled(indices, li: li, fi: fi, ri: ri)
                            rows.append(CVRow(method: "head2toe", featureSet: sets[s].name, solver: v, lambda: lambda,
                                              fraction: fraction, ridge: ridge, keptFeatures: kept, cvAccuracy: accuracy,
                                              foldAccuracies: folds))
                        }
                    }
                }
            }
        }
        for s in sets.indices {
            let indices = tasks.indices.filter {
                if case let .allFeatures(ts, _) = tasks[$0] { return ts == s }
                return false
            }
            for (ri, ridge) in settings.ridges.enumerated() {
                let (accuracy, folds, kept) = pooled(indices, li: 0, fi: 0, ri: ri)
                rows.append(CVRow(method: "all_features", featureSet: sets[s].name, solver: nil, lambda: nil, fraction: nil,
                                  ridge: ridge, keptFeatures: kept, cvAccuracy: accuracy, foldAccuracies: folds))
            }
        }
        let probeIndices = tasks.indices.filter {
            if case .probe = tasks[$0] { return true }
            return false
        }
        for (ri, ridge) in settings.ridges.enumerated() {
            let (accuracy, folds, kept) = pooled(probeIndices, li: 0, fi: 0, ri: ri)
            rows.append(CVRow(method: "linear_probe", featureSet: sets[0].name, solver: nil, lambda: nil, fraction: nil,
                              ridge: ridge, keptFeatures: kept, cvAccuracy: accuracy, foldAccuracies: folds))
        }
        return rows
    }
}

/// Runs independent tasks on a fixed number of worker threads, results in input order.
enum ParallelRunner {
    /// Slots written by exactly one worker each, read after all workers joined.
    final class Slots<T>: @unchecked Sendable { // Sendable: each index is written once under `lock`, read after the join.
        var values: [T?]
        var firstError: Error?
        var next = 0
        let lock = NSLock()
        init(count: Int) { values = [T?](repeating: nil, count: count) }
    }

    static func map<T: Sendable, R: Sendable>(_ items: [T], workers: Int, singleThreadedBLAS: Bool,
                                              _ body: @escaping @Sendable (T) throws -> R) throws -> [R] {
        let slots = Slots<R>(count: items.count)
        let count = workers > 0 ? workers : ProcessInfo.processInfo.activeProcessorCount
        let threads = max(1, min(count, items.count))
        let previousThreads = openblas_get_num_threads()
        if singleThreadedBLAS, threads > 1 { openblas_set_num_threads(1) }
        defer { if singleThreadedBLAS, threads > 1 { openblas_set_num_threads(previousThreads) } }
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                slots.lock.lock()
                let index = slots.next
                slots.next += 1
                let stop = slots.firstError != nil
                slots.lock.unlock()
                if index >= items.count || stop { return }
                do {
                    let result = try body(items[index])
                    slots.lock.lock()
                    slots.values[index] = result
                    slots.lock.unlock()
                } catch {
                    slots.lock.lock()
                    if slots.firstError == nil { slots.firstError = error }
                    slots.lock.unlock()
                }
            }
        }
        if let error = slots.firstError { throw error }
        return slots.values.map { $0! }
    }
}
