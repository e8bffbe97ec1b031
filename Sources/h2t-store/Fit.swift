import ArgumentParser
import Foundation
import H2TCore
import H2TPipeline
import H2TRegistry
import H2TStore
import H2TTrain

/// `h2t-store fit`: Head2Toe on cached features, with cross-validation and baselines.
struct Fit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a Head2Toe head on cached features: CV over the grid, baselines, one test evaluation.",
        discussion: """
        Reads the training split at full width for the group-lasso selection, then only the selected \
        columns (materialised and cached in the store) for the test split. Defaults follow the \
        VTAB-1k protocol: 5 stratified folds of the training split. The grid (--fractions × --lambdas \
        × --ridges, for every feature set) and the baselines' ridge are chosen by cross-validation only.
        """)

    @Option(name: .long, help: "Dataset name.") var dataset: String
    @Option(name: .long, help: "Training split (cross-validated).") var trainSplit: String = "train"
    @Option(name: .long, help: "Test split, evaluated once; 'none' to skip.") var testSplit: String = "test"
    @Option(name: .customLong("feature-set"), help: "Feature set id or prefix (repeat: one per target size). Default: every feature set holding the training split.")
    var featureSets: [String] = []
    @Option(name: .long, parsing: .unconditional, help: "Use the first N training examples (VTAB-1k uses 1000).") var trainLimit: Int?
    @Option(name: .long, parsing: .unconditional, help: "Comma-separated keep fractions, each in (0, 1].") var fractions = Fit.list(FitSettings.defaultFractions)
    @Option(name: .long, parsing: .unconditional, help: "Comma-separated group-lasso strengths, each >= 0 (× λ_max unless --absolute-lambda).")
    var lambdas = Fit.list(FitSettings.defaultLambdas)
    @Option(name: .long, parsing: .unconditional, help: "Comma-separated ridge strengths of the final head, each >= 0, every method (a CV axis).")
    var ridges = Fit.list(FitSettings.defaultRidges)
    @Flag(name: .long, help: "Read --lambdas as absolute values, as the reference code does.") var absoluteLambda = false
    @Option(name: .long, help: "Solver: exact (full batch, features in memory), stochastic (mini-batch proximal SAGA on features streamed from the store, memory bounded by --memory), or auto (exact up to 2,000 training rows when it fits the budget).")
    var solver: String = "auto"
    @Option(name: .long, help: "Group-lasso optimiser of the exact solver: proximal (exact group soft-threshold), adam (reference parity), or both.")
    var selectionSolver: String = "proximal"
    @Option(name: .long, parsing: .unconditional, help: "Memory budget of the fit, e.g. 2G or 512M (default: half the machine's memory).")
    var memory: String?
    @Option(name: .long, parsing: .unconditional, help: "K-fold cross-validation up to this many training rows; above it one validation split (the first fold).")
    var cvFoldLimit: Int = ScaleSettings().foldRowLimit
    @Option(name: .long, help: "Head2Toe's kept subsets in the final head: unit (re-normalised per tap and example), training-share (re-normalised, weighted by the share selection saw), training-constant (raw values over one training constant per tap).")
    var keptScaling = "training-share"
    @Option(name: .long, parsing: .unconditional, help: "Cross-validation folds (at least 2).") var folds: Int = 5
    @Option(name: .long, parsing: .unconditional, help: "Seed of folds and Adam batches (0...2^64-1).") var seed: UInt64 = 0
    @Option(name: .long, help: "Registry task name of the new head version (default: the dataset name).") var task: String?
    @Option(name: .long, help: "Move this alias (e.g. staging) to the new version.") var alias: String?
    @Flag(name: .long, help: "Do not register the head (only report).") var noRegister = false
    @Option(name: .long, help: "Tap of the linear-probe baseline (default: the pre-logits: pre_logits or pool).") var probeTap: String?
    @Option(name: .long, help: "Write the full fit report (JSON) here.") var reportOut: String?
    @Option(name: .long, help: "Head2Toe's grid point: best (highest CV accuracy) or one-se (the smallest keep fraction within one standard error, over folds, of the best).")
    var selectionRule = "best"
    @Flag(name: .long, help: "Also train and test Head2Toe's best point at every keep fraction (accuracy against fraction, next to all features).")
    var fractionCurve = false

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var progressOptions: ProgressOptions

    static func list(_ values: [Double]) -> String { values.map { String($0) }.joined(separator: ",") }

    func parseList(_ text: String, option: String) throws -> [Double] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, !text.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--\(option) is empty: give at least one value") }
        return try parts.map { part in
            guard let value = Double(part) else { throw ValidationError("--\(option): '\(part)' is not a number") }
            return value
        }
    }

    func settings() throws -> FitSettings {
        let fractionList = try parseList(fractions, option: "fractions")
        try checkRange("--fractions", fractionList, .fraction)
        let lambdaList = try parseList(lambdas, option: "lambdas")
        try checkRange("--lambdas", lambdaList, .finiteNonNegative)
        let ridgeList = try parseList(ridges, option: "ridges")
        try checkRange("--ridges", ridgeList, .finiteNonNegative)
        let solvers: [SelectionSolver]
        // `--solver proximal|adam|both` named the group-lasso optimiser before --selection-solver.
        let optimiser = ["proximal", "adam", "both"].contains(solver) ? solver : selectionSolver
        switch optimiser {
        case "proximal": solvers = [.proximal(GroupLassoSettings())]
        case "adam": solvers = [.adam(AdamSettings())]
        case "both": solvers = [.proximal(GroupLassoSettings()), .adam(AdamSettings())]
        default: throw ValidationError("--selection-solver must be proximal, adam or both, got '\(optimiser)'")
        }
        let scalings: [String: KeptTapScaling] = ["unit": .unit, "training-share": .trainingShare, "training-constant": .trainingConstant]
        guard let scaling = scalings[keptScaling] else {
            throw ValidationError("--kept-scaling must be unit, training-share or training-constant, got '\(keptScaling)'")
        }
        let rules: [String: SelectionRule] = ["best": .best, "one-se": .oneStandardError]
        guard let rule = rules[selectionRule] else { throw ValidationError("--selection-rule must be best or one-se, got '\(selectionRule)'") }
        return FitSettings(fractions: fractionList, lambdas: lambdaList, lambdaScale: absoluteLambda ? .absolute : .relativeToMax,
                           solvers: solvers, folds: folds, ridges: ridgeList, keptTapScaling: scaling, selectionRule: rule,
                           fractionCurve: fractionCurve, probeTap: probeTap, seed: seed)
    }

    /// The solver, memory budget and validation rule.
    func scale() throws -> ScaleSettings {
        var scale = ScaleSettings()
        if let choice = SolverChoice(rawValue: solver) {
            scale.solver = choice
        } else if !["proximal", "adam", "both"].contains(solver) {
            throw ValidationError("--solver must be exact, stochastic or auto, got '\(solver)'")
        }
        if let memory { scale.memoryBudget = try Fit.parseSize(memory, option: "--memory") }
        scale.foldRowLimit = cvFoldLimit
        return scale
    }

    /// Bytes from `2G`, `1.5GB`, `512M`, `64k` or a plain number of bytes.
    static func parseSize(_ text: String, option: String) throws -> Int {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Double)] = [("GB", 1_073_741_824), ("G", 1_073_741_824), ("MB", 1_048_576), ("M", 1_048_576), ("KB", 1024), ("K", 1024), ("B", 1)]
        var number = trimmed, factor = 1.0
        for (suffix, value) in units where trimmed.hasSuffix(suffix) {
            number = String(trimmed.dropLast(suffix.count))
            factor = value
            break
        }
        guard let value = Double(number), value.isFinite, value > 0, value * factor < 9e18 else {
            throw ValidationError("\(option): '\(text)' is not a size (give e.g. 2G, 512M or a number of bytes)")
        }
        return Int(value * factor)
    }

    func validate() throws {
        try checkRange("--train-limit", trainLimit, .positiveCount)
        try checkRange("--cv-fold-limit", cvFoldLimit, .positiveCount)
        _ = try scale()
        try checkRange("--folds", folds, .atLeast(2, "cross-validation needs two folds"))
        _ = try settings()
    }

    func run() throws {
        let store = try storeOptions.open(create: false, parallelism: try threadOptions.parallelism)
        var chosen = featureSets
        if chosen.isEmpty {
            let train = try store.split(dataset: dataset, split: trainSplit)
            let probe = Array(train.examples.prefix(trainLimit ?? train.examples.count))
            chosen = try store.allFeatureSets().filter { try !store.missing(probe, in: $0.id).contains(true) }
                .sorted { $0.manifest.targetSize < $1.manifest.targetSize }.map(\.id)
            guard !chosen.isEmpty else { throw ValidationError("no feature set holds every example of \(dataset)/\(trainSplit); ingest them first") }
        }
        let request = FitRequest(dataset: dataset, trainSplit: trainSplit, testSplit: testSplit == "none" ? nil : testSplit,
                                 featureSets: chosen, trainLimit: trainLimit, settings: try settings(), scale: try scale())
        let reports = progressOptions.reports(json: output.json)
        let progress = ProgressReporter(label: "fit: cross-validation", unit: "tasks", enabled: reports)
        let outcome = try FitPipeline.run(store: store, request: request, log: { message in
            if reports { FileHandle.standardError.write(Data("fit: \(message)\n".utf8)) }
        }, progress: progress)
        if let reportOut {
            let data = try FitReport.jsonEncoder().encode(outcome)
            do { try data.write(to: URL(fileURLWithPath: reportOut)) } catch { throw ValidationError("cannot write \(reportOut): \(error.localizedDescription)") }
        }
        var registered: FitSummary.RegisteredHead?
        if !noRegister {
            let draft = try HeadDraft(task: task ?? dataset, report: outcome.report, classNames: outcome.classNames, lineage: outcome.lineage,
                                      store: store)
            let registry = try Registry(store: store)
            let record = try registry.register(draft, alias: alias)
            registered = .init(task: record.task, version: record.version)
        }
        let summary = FitSummary(outcome: outcome, head: registered)
        if output.json {
            let encoder = FitReport.jsonEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            return
        }
        let sizes = Dictionary(uniqueKeysWithValues: try outcome.featureSets.map { ($0, try store.featureSet($0).manifest.targetSize) })
        func rows(_ methods: [FitSummary.Method]) -> [[String]] {
            methods.map { m in
                [m.method.rawValue, "\(sizes[m.featureSet] ?? 0)", "\(m.features)", m.fraction.map { String($0) } ?? "-", m.lambda.map { String($0) } ?? "-",
                 String(m.ridge), String(format: "%.4f", m.cvAccuracy), m.testAccuracy.map { String(format: "%.4f", $0) } ?? "-"]
            }
        }
        let header = ["METHOD", "F_T", "FEATURES", "FRACTION", "λ/λmax", "RIDGE", "CV ACC", "TEST ACC"]
        print(table(header, rows(summary.methods)))
        if let floor = summary.selectionFloor {
            print(String(format: "\none-standard-error rule: the smallest fraction with CV accuracy >= %.4f", floor))
        }
        if !summary.fractionCurve.isEmpty {
            print("\nHead2Toe's best point at each keep fraction, next to all features:")
            print(table(header, rows(summary.fractionCurve + summary.methods.filter { $0.method == .allFeatures })))
        }
        if let plan = outcome.report.plan {
            print("\nsolver \(plan.solver.rawValue) (\(plan.requested.rawValue)), validation \(plan.validation), memory budget \(ScaleSettings.describe(bytes: plan.memoryBudget))"
                  + (plan.heldOutRows.map { ", \($0) rows held out for the stopping rule" } ?? ""))
        }
        print(String(format: "\ntrain %d examples, test %d; read %.1f s, fit %.1f s (CV %.1f s), test %.1f s",
                     outcome.lineage.trainCount, outcome.report.testCount, outcome.readSeconds, outcome.report.timings.total,
                     outcome.report.timings.crossValidation, outcome.testSeconds))
        if let registered { print("registered head \(registered.task)@v\(registered.version)" + (alias.map { " (alias \($0))" } ?? "")) }
    }
}

/// The `--json` output of `fit` (`schemas/fit-output.schema.json`): one entry per method with
/// `test_accuracy` and `cv_accuracy`, plus lineage.
struct FitSummary: Encodable {
    struct Method: Encodable {
        var method: FitMethod
        var featureSet: String
        var features: Int
        var fraction: Double?
        var lambda: Double?
        var ridge: Double
        var cvAccuracy: Double
        var testAccuracy: Double?
        var selectedPerTap: [TapCount]
    }

    struct TapCount: Encodable {
        var tap: String
        var count: Int
    }

    var dataset: String
    var trainSplit: String
    var trainDigest: String
    var trainCount: Int
    var testSplit: String?
    var testDigest: String?
    var testCount: Int
    var backbone: String
    var featureSets: [String]
    var methods: [Method]
    /// How Head2Toe's point was chosen (`best` or `one_standard_error`).
    var selectionRule: SelectionRule
    /// The one-standard-error rule's CV accuracy floor.
    var selectionFloor: Double?
    /// Head2Toe at each keep fraction (with `--fraction-curve`).
    var fractionCurve: [Method]
    var seconds: Double
    var head: RegisteredHead?
    /// The solver used, the validation rule and the memory budget.
    var plan: FitPlan?

    struct RegisteredHead: Encodable {
        var task: String
        var version: Int
    }

    init(outcome: FitOutcome, head: RegisteredHead? = nil) {
        dataset = outcome.lineage.dataset
        trainSplit = outcome.lineage.trainSplit
        trainDigest = outcome.lineage.trainDigest
        trainCount = outcome.lineage.trainCount
        testSplit = outcome.lineage.testSplit
        testDigest = outcome.lineage.testDigest
        testCount = outcome.report.testCount
        backbone = outcome.backbone
        featureSets = outcome.featureSets
        seconds = outcome.readSeconds + outcome.report.timings.total + outcome.testSeconds
        plan = outcome.report.plan
        self.head = head
        func method(_ m: MethodResult) -> Method {
            Method(method: m.method, featureSet: m.featureSet, features: m.selectedIndices.count, fraction: m.fraction, lambda: m.lambda,
                   ridge: m.ridge, cvAccuracy: m.cvAccuracy, testAccuracy: m.testAccuracy,
                   selectedPerTap: m.selectedPerTap.map { TapCount(tap: $0.tap, count: $0.indices.count) })
        }
        methods = FitMethod.allCases.map { method(outcome.report[$0]) }
        selectionRule = outcome.report.settings.selectionRule
        selectionFloor = outcome.report.selectionFloor
        fractionCurve = outcome.report.fractionCurve.map(method)
    }
}
