import Foundation
import H2TCore
import H2TStore
import H2TTrain

/// What to fit: a dataset's training split, the feature sets (target sizes) to choose among, the
/// grid, and the split to test on once.
public struct FitRequest: Sendable {
    /// Dataset name.
    public var dataset: String
    /// Training split (cross-validated).
    public var trainSplit: String
    /// Test split, evaluated once after selection; `nil` for none.
    public var testSplit: String?
    /// Feature set ids or prefixes (one per target size); all share the dataset's examples.
    public var featureSets: [String]
    /// Use only the first `trainLimit` examples of the training split (VTAB-1k: 1000).
    public var trainLimit: Int?
    /// Grid and protocol.
    public var settings: FitSettings
    /// Solver, memory budget and validation rule by training-set size.
    public var scale: ScaleSettings

    /// Creates a request.
    public init(dataset: String, trainSplit: String, testSplit: String?, featureSets: [String], trainLimit: Int? = nil,
                settings: FitSettings = FitSettings(), scale: ScaleSettings = ScaleSettings()) {
        self.dataset = dataset
        self.trainSplit = trainSplit
        self.testSplit = testSplit
        self.featureSets = featureSets
        self.trainLimit = trainLimit
        self.settings = settings
        self.scale = scale
    }
}

/// The outcome of a fit: the training report (with test metrics filled in from the store) and
/// the lineage needed to register the head.
///
/// Encoded flat (`--report-out`): the lineage's fields sit next to `report`, as they did before
/// the lineage had a type of its own.
public struct FitOutcome: Sendable, Codable {
    /// The training report (`schemas/fit-output.schema.json`).
    public var report: FitReport
    /// Feature set ids, in request order (the report names feature sets by id).
    public var featureSets: [String]
    /// Backbone id of the feature sets.
    public var backbone: String
    /// Dataset, splits and their content hashes.
    public var lineage: FitLineage
    /// Class names of the dataset, in label order.
    public var classNames: [String]
    /// Seconds spent reading features from the store (train, full width).
    public var readSeconds: Double
    /// Seconds spent evaluating on test (selected columns).
    public var testSeconds: Double

    /// Creates an outcome.
    public init(report: FitReport, featureSets: [String], backbone: String, lineage: FitLineage, classNames: [String],
                readSeconds: Double, testSeconds: Double) {
        self.report = report
        self.featureSets = featureSets
        self.backbone = backbone
        self.lineage = lineage
        self.classNames = classNames
        self.readSeconds = readSeconds
        self.testSeconds = testSeconds
    }

    private enum CodingKeys: String, CodingKey {
        case report, featureSets, backbone, classNames, readSeconds, testSeconds
    }

    /// Decodes the flat layout.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        report = try container.decode(FitReport.self, forKey: .report)
        featureSets = try container.decode([String].self, forKey: .featureSets)
        backbone = try container.decode(String.self, forKey: .backbone)
        classNames = try container.decode([String].self, forKey: .classNames)
        readSeconds = try container.decode(Double.self, forKey: .readSeconds)
        testSeconds = try container.decode(Double.self, forKey: .testSeconds)
        lineage = try FitLineage(from: decoder)
    }

    /// Encodes the flat layout: the lineage's keys share the outcome's object.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(report, forKey: .report)
        try container.encode(featureSets, forKey: .featureSets)
        try container.encode(backbone, forKey: .backbone)
        try container.encode(classNames, forKey: .classNames)
        try container.encode(readSeconds, forKey: .readSeconds)
        try container.encode(testSeconds, forKey: .testSeconds)
        try lineage.encode(to: encoder)
    }
}

/// `h2t-store fit` as a library call: reads cached features through the query layer, runs the
/// Head2Toe sweep with baselines (H2TTrain), and evaluates every method once on the test split
/// reading only the columns it uses (the selected ones are materialised in the store's matrix cache).
public enum FitPipeline {
    /// Runs the fit. Every input check happens before any numeric work. `log` receives one line
    /// per stage; `progress` counts the cross-validation tasks.
    public static func run(store: FeatureStore, request: FitRequest, log: ((String) -> Void)? = nil,
                           progress: ProgressReporter? = nil) throws -> FitOutcome {
        let checked = try check(store: store, request: request)
        let (train, infos) = (checked.train, checked.infos)
        let settings = try withProbeTap(request.settings, infos[0])

        var (report, readSeconds) = try Self.train(store: store, request: request, checked: checked, settings: settings, log: log,
                                              progress: progress)
        let clock = ContinuousClock()

        // Only the columns each method uses, for the test split.
        let testStart = clock.now
        var testDigest: String?
        if let testSplit = request.testSplit, let test = checked.test {
            testDigest = try store.splitDigest(dataset: request.dataset, split: testSplit)
            try store.parallelism.withBLAS {
                try evaluate(&report, store: store, infos: infos, dataset: request.dataset, split: testSplit, test: test,
                             classCount: checked.classNames.count, log: log)
            }
        }
        let lineage = FitLineage(dataset: request.dataset, trainSplit: request.trainSplit,
                                 trainDigest: try store.splitDigest(dataset: request.dataset, split: request.trainSplit),
                                 trainCount: train.examples.count, testSplit: request.testSplit, testDigest: testDigest)
        return FitOutcome(report: report, featureSets: infos.map(\.id), backbone: infos[0].manifest.backbone, lineage: lineage,
                          classNames: checked.classNames, readSeconds: readSeconds, testSeconds: seconds(clock.now - testStart))
    }

    /// What `run` reads, once checked: the training split (cut to the limit), the test split,
    /// the feature sets and the dataset's class names.
    struct CheckedRequest {
        var train: SplitItems
        var test: SplitItems?
        var infos: [FeatureSetInfo]
        var classNames: [String]
    }

    /// Every check of `request` against the store: dataset, splits, feature sets of one backbone
    /// holding every example, grid, at least two training classes.
    static func check(store: FeatureStore, request: FitRequest) throws -> CheckedRequest {
        guard !request.featureSets.isEmpty else { throw TrainError.emptyGridAxis("feature sets (--feature-set)") }
        try request.settings.validate()
        let dataset = try store.dataset(request.dataset)
        var train = try store.split(dataset: request.dataset, split: request.trainSplit)
        let test = try request.testSplit.map { try store.split(dataset: request.dataset, split: $0) }
        if let limit = request.trainLimit {
            guard limit > 0 else { throw StoreError.invalidArgument("--train-limit must be positive, got \(limit)") }
            train.examples = Array(train.examples.prefix(limit))
            train.labels = Array(train.labels.prefix(limit))
        }
        let infos = try request.featureSets.map { try store.featureSet($0) }
        let backbones = Set(infos.map(\.manifest.backbone))
        guard backbones.count == 1 else {
            throw StoreError.invalidArgument("feature sets \(infos.map { $0.id.prefix(12) }) come from different backbones; fit one backbone at a time")
        }
        let distinct = Set(train.labels)
        guard distinct.count >= 2 else {
            throw StoreError.invalidArgument("split \(request.dataset)/\(request.trainSplit) has a single class (\(distinct.first.map { dataset.classNames[$0] } ?? "none")); a classifier needs at least two")
        }
        for info in infos {
            let present = try store.missing(train.examples, in: info.id)
            if let i = present.firstIndex(of: true) {
                throw StoreError.missingExample(example: train.examples[i].hex, featureSet: info.id)
            }
            if let test {
                let missing = try store.missing(test.examples, in: info.id)
                if let i = missing.firstIndex(of: true) { throw StoreError.missingExample(example: test.examples[i].hex, featureSet: info.id) }
            }
        }
        return CheckedRequest(train: train, test: test, infos: infos, classNames: dataset.classNames)
    }

    /// `settings` with the linear probe's tap resolved: the tap named `pre_logits` (or `pool`, its
    /// name in the built-in backbones), else the last tap that is not the logits. A tap given
    /// explicitly must exist.
    static func withProbeTap(_ settings: FitSettings, _ info: FeatureSetInfo) throws -> FitSettings {
        var settings = settings
        let names = info.manifest.taps.map(\.name)
        if settings.probeTap == nil {
            settings.probeTap = ["pre_logits", "prelogits", "pool"].first { names.contains($0) }
                ?? (names.last == "logits" && names.count > 1 ? names[names.count - 2] : names.last)
        } else if let tap = settings.probeTap, !names.contains(tap) {
            throw StoreError.invalidArgument("--probe-tap '\(tap)' is not a tap of feature set \(info.id.prefix(12))")
        }
        return settings
    }

    /// Evaluates every method of `report` (and each point of its fraction curve) once on the test
    /// split, reading only its columns.
    static func evaluate(_ report: inout FitReport, store: FeatureStore, infos: [FeatureSetInfo], dataset: String, split: String,
                         test: SplitItems, classCount: Int, log: ((String) -> Void)?) throws {
        // Selected matrices that were not cached yet are committed while the next methods are
        // tested (the main job's Head2Toe matrix is a 389 MB record); all of them before returning.
        let cacheWrites = CacheWrites()
        func score(_ method: inout MethodResult) throws {
            let info = infos.first { $0.id == method.featureSet }!
            log?("testing \(method.method)\(method.fraction.map { " (fraction \($0))" } ?? "") on \(test.examples.count) examples × \(method.selectedIndices.count) features")
            let predictions = try predict(store: store, info: info, method: method, dataset: dataset, split: split,
                                          examples: test.examples, materialise: method.method != .allFeatures, writeBehind: cacheWrites)
            let metrics = ClassificationMetrics(predictions: predictions, labels: test.labels, classCount: classCount)
            method.test = metrics
            method.testAccuracy = metrics.accuracy
        }
        do {
            for fitMethod in FitMethod.allCases { try score(&report[fitMethod]) }
            for index in report.fractionCurve.indices { try score(&report.fractionCurve[index]) }
        } catch {
            try? cacheWrites.wait()  // never leave a write running behind an error
            throw error
        }
        try cacheWrites.wait()
        report.testCount = test.examples.count
    }

    /// Predicts a method's classes on stored examples, reading only its columns: the head's
    /// inputs are formed by its input rule (`MethodResult.inputRule`), then the head applies.
    /// With `materialise`, the selected matrix of the whole split is cached in the store; given
    /// `writeBehind`, that record is committed behind the caller (see `FeatureStore.selectedMatrix`).
    /// Without, rows are read in batches of at most `batchBytes` of floats.
    public static func predict(store: FeatureStore, info: FeatureSetInfo, method: MethodResult, dataset: String, split: String,
                               examples: [ExampleID], materialise: Bool, writeBehind: CacheWrites? = nil,
                               batchBytes: Int = 256 << 20) throws -> [Int] {
        let columns = method.selectedIndices
        // The selected columns are ascending, so the matrices read carry their tap layout. Each
        // matrix is normalised in place: a copy (a mutation while the read still held it) was
        // 1.7 GB of fresh pages for the main job's head.
        func classify(_ matrix: inout FeatureMatrix) -> [Int] {
            matrix.applyInputRule(method.inputRule, parallelism: store.parallelism)
            return method.head.predict(matrix)
        }
        if materialise {
            var matrix = try store.selectedMatrix(featureSet: info.id, dataset: dataset, split: split, columns: columns,
                                                  writeBehind: writeBehind).matrix.features
            return classify(&matrix)
        }
        // Wide reads go in batches so memory stays bounded, each decoded into the previous
        // batch's matrix when it has the same shape (fresh pages per batch cost about 1 s of the
        // main job's all-features pass).
        let batch = max(1, batchBytes / max(columns.count * 4, 1))
        let readColumns = columns.count == info.manifest.width ? nil : columns
        var out: [Int] = []
        var first = 0
        var previous: FeatureMatrix?
        while first < examples.count {
            let chunk = Array(examples[first..<min(first + batch, examples.count)])
            var matrix: FeatureMatrix
            if previous?.rowCount == chunk.count {
                // Taken out, so the buffer is referenced once: decoded into, not copied.
                matrix = previous.take()!
                try matrix.values.withUnsafeMutableBufferPointer {
                    try store.read(featureSet: info.id, examples: chunk, columns: readColumns, into: $0)
                }
            } else {
                matrix = try store.read(featureSet: info.id, examples: chunk, columns: readColumns)
            }
            out += classify(&matrix)
            previous = consume matrix
            first += chunk.count
        }
        return out
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
