import Foundation
import H2TCore

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

/// Head2Toe model selection and training on cached features (docs/architecture.md §1 steps 3–7): the
/// driver. The grid and protocol are in `FitSettings.swift`, the cross-validation engine in
/// `CrossValidation.swift`.
public enum Head2ToeFit {
    /// Checks the inputs, normalises them, runs the cross-validation sweep over the grid
    /// (feature sets × solvers × λ × fractions × ridges) and the two baselines (× ridges), picks
    /// the best grid point, retrains it on the whole training split and evaluates it once on test.
    ///
    /// Selection rule (`settings.selectionRule`): highest pooled CV accuracy; ties go to the
    /// smaller fraction (fewer features to read and store), then the larger λ (sparser), then the
    /// larger ridge, then the earlier feature set, then the earlier solver; or the
    /// one-standard-error rule over that order. All checks run before any numeric work.
    /// `progress` counts the cross-validation tasks as they finish.
    ///
    /// Threads: the Gram matrices, the cross-validation tasks (feature set, solver, fold) and the
    /// three final heads run on `parallelism`'s threads, each with single-threaded BLAS; a
    /// method's final head starts once its own tasks are done, while other methods' tasks still
    /// run. The report does not depend on them (which is why they are not a setting); its
    /// `timings.final` is the time after the last task.
    ///
    /// The features are normalised in place when the caller hands them over (`consume`), else in
    /// a copy.
    public static func run(featureSets: consuming [FeatureSetInput], trainLabels: [Int], testLabels: [Int] = [],
                           classCount: Int, settings: FitSettings = FitSettings(), parallelism: Parallelism = .default,
                           progress: ProgressReporter? = nil) throws -> FitReport {
        var sets = consume featureSets
        return try parallelism.withBLAS {
            try fit(featureSets: &sets, trainLabels: trainLabels, testLabels: testLabels, classCount: classCount,
                    settings: settings, parallelism: parallelism, progress: progress)
        }
    }

    private static func fit(featureSets sets: inout [FeatureSetInput], trainLabels: [Int], testLabels: [Int], classCount: Int,
                            settings: FitSettings, parallelism: Parallelism, progress: ProgressReporter?) throws -> FitReport {
        let clock = ContinuousClock()
        let started = clock.now
        try settings.validate()
        try validate(featureSets: sets, trainLabels: trainLabels, testLabels: testLabels,
                     classCount: classCount, settings: settings)
        var trainNorms: [[Float]] = [], testNorms: [[Float]] = []
        for index in sets.indices {
            trainNorms.append(sets[index].train.normalizeTaps(parallelism: parallelism))
            testNorms.append(sets[index].test?.normalizeTaps(parallelism: parallelism) ?? [])
        }
        let probeName = settings.probeTap ?? sets[0].train.taps.last!.name
        let folds = foldAssignment(labels: trainLabels, classCount: classCount, folds: settings.folds,
                                   stratified: settings.stratified, seed: settings.seed)
        let prepared = clock.now

        // The all-features baseline works in kernel form on one Gram matrix per feature set,
        // shared by its folds and its final fit.
        let grams = try sets.map { try FinalHead.gramMatrix($0.train, parallelism: parallelism) }
        let context = CVContext(sets: sets, norms: trainNorms, grams: grams, labels: trainLabels, classCount: classCount, folds: folds,
                                settings: settings, probeTap: probeName)
        // Each method's final fit on the whole training split starts as soon as its CV rows are
        // known, overlapping the rest of the sweep.
        let (table, finals, crossValidated) = try context.sweep(parallelism: parallelism, progress: progress) { method, rows in
            switch method {
            case .head2toe:
                return try finalHead2Toe(best: bestHead2Toe(rows, rule: settings.selectionRule, sets: sets).point, context: context,
                                         testNorms: testNorms, testLabels: testLabels)
            case .allFeatures:
                let best = bestBaseline(rows, method: .allFeatures)
                let s = sets.firstIndex { $0.name == best.featureSet }!, set = sets[s]
                return try finalMethod(method: .allFeatures, set: set, norms: ([], []), columns: Array(0..<set.train.columnCount),
                                       scaling: nil, ridge: best.ridge, trainLabels: trainLabels, testLabels: testLabels,
                                       classCount: classCount, settings: settings, cvAccuracy: best.cvAccuracy,
                                       gram: grams[s])
            case .linearProbe:
                let best = bestBaseline(rows, method: .linearProbe)
                return try finalMethod(method: .linearProbe, set: sets[0], norms: (trainNorms[0], testNorms[0]),
                                       columns: Array(sets[0].train.columns(ofTap: probeName)!), scaling: .unit, ridge: best.ridge,
                                       trainLabels: trainLabels, testLabels: testLabels, classCount: classCount, settings: settings,
                                       cvAccuracy: best.cvAccuracy)
            }
        }
        let floor = bestHead2Toe(table, rule: settings.selectionRule, sets: sets).floor
        let (h2t, allFeatures, probe) = (finals[.head2toe]!, finals[.allFeatures]!, finals[.linearProbe]!)
        let curve = settings.fractionCurve
            ? try settings.fractions.sorted().map { fraction in
                try finalHead2Toe(best: bestHead2Toe(table.filter { $0.fraction == fraction }, rule: .best, sets: sets).point,
                                  context: context, testNorms: testNorms, testLabels: testLabels)
            } : []
        let finished = clock.now
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        return FitReport(
            classCount: classCount, trainCount: trainLabels.count, testCount: testLabels.count,
            featureSets: sets.map { FeatureSetSummary(name: $0.name, columnCount: $0.train.columnCount, tapCount: $0.train.taps.count) },
            settings: settings, head2toe: h2t, linearProbe: probe, allFeatures: allFeatures, cvTable: table,
            fractionCurve: curve, selectionFloor: floor, foldAssignment: folds,
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

    /// Head2Toe's final fit at the chosen grid point: the group-lasso path on every training row
    /// down to the chosen λ, the chosen fraction of its ranking, and a fresh head on those columns.
    static func finalHead2Toe(best: BestPoint, context: CVContext, testNorms: [[Float]], testLabels: [Int]) throws -> MethodResult {
        let settings = context.settings
        let allRows = Array(0..<context.labels.count)
        let lambdaRatios = settings.lambdas.sorted(by: >).filter { $0 >= best.lambda }
        let selection = try context.selectionPath(set: best.set, solver: best.solver, rows: allRows, lambdas: lambdaRatios).last!
        let columns = selection.solution.selection(fraction: best.fraction)
        var result = try finalMethod(method: .head2toe, set: context.sets[best.set], norms: (context.norms[best.set], testNorms[best.set]),
                                     columns: columns, scaling: settings.keptTapScaling, ridge: best.ridge, trainLabels: context.labels,
                                     testLabels: testLabels, classCount: context.classCount, settings: settings, cvAccuracy: best.accuracy)
        result.fraction = best.fraction
        result.lambda = best.lambda
        result.lambdaAbsolute = selection.solution.lambda
        result.solver = best.solver
        result.selectionReport = selection.solution.report
        return result
    }

    /// Fits a method's final head on the whole training split and evaluates it on test.
    /// `scaling` forms the inputs from the kept `columns` (`nil`: every column as normalised,
    /// the all-features baseline, which may pass its `gram`); `norms` are the train and test
    /// tap norms of the per-tap normalisation.
    static func finalMethod(method: FitMethod, set: FeatureSetInput, norms: (train: [Float], test: [Float]), columns: [Int],
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
        let perTap = set.train.tapsOfSubset(columns).map { tap -> KeptTapIndices in
            let original = set.train.taps.first { $0.name == tap.name }!
            return KeptTapIndices(tap: tap.name, indices: columns[tap.offset..<(tap.offset + tap.width)].map { $0 - original.offset })
        }
        return MethodResult(method: method, featureSet: set.name, fraction: nil, lambda: nil, lambdaAbsolute: nil, solver: nil,
                            ridge: ridge, inputRule: rule, cvAccuracy: cvAccuracy, testAccuracy: metrics?.accuracy, test: metrics,
                            selectedIndices: columns, selectedPerTap: perTap, head: head, headReport: report,
                            selectionReport: nil)
    }

    struct BestPoint {
        var set: Int, solver: Int, lambda: Double, fraction: Double, ridge: Double, accuracy: Double
    }

    /// The Head2Toe row of `table` that `rule` picks, and for the one-standard-error rule the CV
    /// accuracy floor it applied. The order of rows: higher CV accuracy, then the smaller
    /// fraction, the larger λ, the larger ridge (each the simpler model), then the earlier feature
    /// set (in `featureSets` order) and solver.
    public static func chosenRow(_ table: [CVRow], rule: SelectionRule, featureSets: [String]) -> (row: CVRow, floor: Double?) {
        let setIndex = Dictionary(uniqueKeysWithValues: featureSets.enumerated().map { ($0.element, $0.offset) })
        let rows = table.filter { $0.method == .head2toe }
        func key(_ row: CVRow) -> (Double, Double, Double, Double, Int, Int) {
            (row.cvAccuracy, -row.fraction!, row.lambda!, row.ridge, -setIndex[row.featureSet]!, -row.solver!)
        }
        let best = rows.max { key($0) < key($1) }!
        guard rule == .oneStandardError else { return (best, nil) }
        let floor = best.cvAccuracy - standardError(best.foldAccuracies)
        // Pooled accuracies of the same folds: the tolerance absorbs rounding only.
        let within = rows.filter { $0.cvAccuracy >= floor - 1e-12 }
        let fraction = within.map { $0.fraction! }.min()!
        return (within.filter { $0.fraction == fraction }.max { key($0) < key($1) }!, floor)
    }

    /// `chosenRow` as a grid point of `sets`.
    static func bestHead2Toe(_ table: [CVRow], rule: SelectionRule, sets: [FeatureSetInput]) -> (point: BestPoint, floor: Double?) {
        let names = sets.map(\.name)
        let (row, floor) = chosenRow(table, rule: rule, featureSets: names)
        return (BestPoint(set: names.firstIndex(of: row.featureSet)!, solver: row.solver!, lambda: row.lambda!, fraction: row.fraction!,
                          ridge: row.ridge, accuracy: row.cvAccuracy), floor)
    }

    /// Standard error of the mean of `values`: sample standard deviation over √count (0 for one value).
    public static func standardError(_ values: [Double]) -> Double {
        guard values.count > 1 else { return 0 }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
        return (variance / Double(values.count)).squareRoot()
    }

    /// The best row of a baseline: highest CV accuracy; ties go to the larger ridge, then the earlier row.
    static func bestBaseline(_ table: [CVRow], method: FitMethod) -> CVRow {
        let rows = table.filter { $0.method == method }
        return rows.enumerated().max { a, b in
            (a.element.cvAccuracy, a.element.ridge, -a.offset) < (b.element.cvAccuracy, b.element.ridge, -b.offset)
        }!.element
    }
}
