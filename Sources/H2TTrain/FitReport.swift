import Foundation

/// The kept columns of one tap, as indices inside the tap (`0..<width`), in the trainer's terms.
///
/// The registry's `TapIndices` says the same with where the tap sits (network order, offset,
/// width), which it takes from the feature set's manifest, the authority on layout; the fit
/// report keeps this smaller form, which is its `--report-out` format.
public struct KeptTapIndices: Codable, Sendable, Hashable {
    /// Tap name.
    public var tap: String
    /// Local column indices inside the tap, ascending.
    public var indices: [Int]
}

/// The three ways a fit trains a head. Its raw values are the names stored in registry records
/// and printed by `--json` outputs (`head2toe`, `linear_probe`, `all_features`).
public enum FitMethod: String, Codable, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Group-lasso selection of features from every tap, then a fresh head on the kept ones.
    case head2toe
    /// Baseline: a head on the probe tap (the pre-logits) only.
    case linearProbe = "linear_probe"
    /// Baseline: a head on every feature, no selection.
    case allFeatures = "all_features"

    /// The raw value, so that interpolation prints the stored name.
    public var description: String { rawValue }
}

/// One method's outcome: what it chose, how it scored in cross-validation and on test, and its head.
public struct MethodResult: Codable, Sendable {
    /// Which method.
    public var method: FitMethod
    /// The feature set (target size) the method ended up using.
    public var featureSet: String
    /// Keep fraction (Head2Toe only).
    public var fraction: Double?
    /// `λ` as given in the grid (a ratio of `λ_max` when `lambdaScale` is relative; Head2Toe only).
    public var lambda: Double?
    /// `λ` actually used for the final selection on the whole training split.
    public var lambdaAbsolute: Double?
    /// Index into `FitSettings.solvers` (Head2Toe only).
    public var solver: Int?
    /// Ridge strength of the final head, chosen by cross-validation from `FitSettings.ridges`.
    public var ridge: Double
    /// How `head`'s inputs are formed from the raw selected columns.
    public var inputRule: HeadInputRule
    /// Pooled cross-validation accuracy of the chosen configuration (correct / validated rows).
    public var cvAccuracy: Double
    /// Test accuracy (nil without a test split).
    public var testAccuracy: Double?
    /// Test metrics (nil without a test split).
    public var test: ClassificationMetrics?
    /// The head's input columns, as global column indices of the feature set, ascending.
    public var selectedIndices: [Int]
    /// The same columns grouped by tap.
    public var selectedPerTap: [KeptTapIndices]
    /// The final head on the selected columns (in `selectedIndices` order, inputs formed by `inputRule`).
    public var head: LinearHead
    /// Final-head solver summary.
    public var headReport: SolverReport
    /// Group-lasso solver summary of the final selection run (Head2Toe only).
    public var selectionReport: SolverReport?
}

/// One row of the cross-validation table.
public struct CVRow: Codable, Sendable, Hashable {
    /// Which method.
    public var method: FitMethod
    /// Feature set name.
    public var featureSet: String
    /// Index into `FitSettings.solvers` (Head2Toe rows).
    public var solver: Int?
    /// `λ` as given in the grid (Head2Toe rows).
    public var lambda: Double?
    /// Keep fraction (Head2Toe rows).
    public var fraction: Double?
    /// Ridge strength of the final head.
    public var ridge: Double
    /// Number of kept features (columns the head sees).
    public var keptFeatures: Int
    /// Pooled accuracy over all validation folds.
    public var cvAccuracy: Double
    /// Accuracy of each fold.
    public var foldAccuracies: [Double]

    /// Creates a row.
    public init(method: FitMethod, featureSet: String, solver: Int?, lambda: Double?, fraction: Double?, ridge: Double,
                keptFeatures: Int, cvAccuracy: Double, foldAccuracies: [Double]) {
        self.method = method
        self.featureSet = featureSet
        self.solver = solver
        self.lambda = lambda
        self.fraction = fraction
        self.ridge = ridge
        self.keptFeatures = keptFeatures
        self.cvAccuracy = cvAccuracy
        self.foldAccuracies = foldAccuracies
    }
}

/// Wall-clock seconds per phase.
public struct FitTimings: Codable, Sendable, Hashable {
    /// Input checks and per-tap normalisation.
    public var prepare: Double
    /// The cross-validation sweep (all methods), until its last task finished; final heads that
    /// start earlier (a method's final starts once its own tasks are done) run within it.
    public var crossValidation: Double
    /// Final selection, heads and test evaluation after the last cross-validation task.
    public var final: Double
    /// Everything.
    public var total: Double
}

/// Summary of an input feature set.
public struct FeatureSetSummary: Codable, Sendable, Hashable {
    /// Name.
    public var name: String
    /// Columns `D`.
    public var columnCount: Int
    /// Taps.
    public var tapCount: Int
}

/// The data lineage of a fit that its report does not carry: dataset, splits and their digests
/// (`FeatureStore.splitDigest`). The pipeline fills it in; the registry records it with the head.
public struct FitLineage: Codable, Sendable, Hashable {
    /// Dataset name.
    public var dataset: String
    /// Training split.
    public var trainSplit: String
    /// `splitDigest` of the whole training split.
    public var trainDigest: String
    /// Rows trained on (a training limit may use a prefix of the split).
    public var trainCount: Int
    /// Test split, if the fit was tested.
    public var testSplit: String?
    /// `splitDigest` of the test split, if the fit was tested.
    public var testDigest: String?

    /// Creates a lineage.
    public init(dataset: String, trainSplit: String, trainDigest: String, trainCount: Int, testSplit: String? = nil, testDigest: String? = nil) {
        self.dataset = dataset
        self.trainSplit = trainSplit
        self.trainDigest = trainDigest
        self.trainCount = trainCount
        self.testSplit = testSplit
        self.testDigest = testDigest
    }
}

/// Everything a fit produced: the `h2t-store fit --json` payload and what the registry stores.
///
/// Encode it with `FitReport.jsonEncoder()` (snake_case keys, sorted): `head2toe.test_accuracy`,
/// `linear_probe.cv_accuracy`, and so on.
public struct FitReport: Codable, Sendable {
    /// Version of this layout.
    public var formatVersion: Int = 1
    /// Classes `K`.
    public var classCount: Int
    /// Training rows.
    public var trainCount: Int
    /// Test rows (0 without a test split).
    public var testCount: Int
    /// Input feature sets in input order.
    public var featureSets: [FeatureSetSummary]
    /// The settings used (including defaults that were not overridden).
    public var settings: FitSettings
    /// Head2Toe: group-lasso selection, then a fresh head.
    public var head2toe: MethodResult
    /// Baseline: the probe tap only.
    public var linearProbe: MethodResult
    /// Baseline: every feature, no selection.
    public var allFeatures: MethodResult
    /// The cross-validation table of every method and grid point.
    public var cvTable: [CVRow]
    /// With `FitSettings.fractionCurve`: Head2Toe's best point at each keep fraction, ascending,
    /// retrained on the whole training split (tested with the other methods); otherwise empty.
    public var fractionCurve: [MethodResult] = []
    /// With `SelectionRule.oneStandardError`: the CV accuracy a grid point needed (the best
    /// point's minus one standard error over its folds).
    public var selectionFloor: Double?
    /// Training fold of each training row (`0..<folds`; `-1`: held out for the stochastic
    /// solver's stopping rule), for reproducibility.
    public var foldAssignment: [Int]
    /// Timings.
    public var timings: FitTimings
    /// Which solver and validation rule the fit used, and its memory budget (`nil` in reports
    /// written before the stochastic path existed).
    public var plan: FitPlan?

    /// The outcome of `method`.
    public subscript(method: FitMethod) -> MethodResult {
        get {
            switch method {
            case .head2toe: head2toe
            case .linearProbe: linearProbe
            case .allFeatures: allFeatures
            }
        }
        set {
            switch method {
            case .head2toe: head2toe = newValue
            case .linearProbe: linearProbe = newValue
            case .allFeatures: allFeatures = newValue
            }
        }
    }

    /// A JSON encoder with the report's conventions (snake_case keys, sorted keys).
    public static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    /// The matching decoder.
    public static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
