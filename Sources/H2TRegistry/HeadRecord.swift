import H2TCore
import H2TTrain

/// The kept columns of one tap: where the tap sits in the feature set and which of its pooled
/// features the head reads.
public struct TapIndices: Sendable, Hashable, Codable {
    /// Tap name, as the feature set records it.
    public var tap: String
    /// Position of the tap in network order (its index in the feature set's tap list).
    public var order: Int
    /// First global column of the tap in the feature set.
    public var offset: Int
    /// Pooled features of the tap in the feature set.
    public var width: Int
    /// Kept indices inside the tap (`0..<width`), ascending.
    public var indices: [Int]

    /// Creates a tap selection.
    public init(tap: String, order: Int, offset: Int, width: Int, indices: [Int]) {
        self.tap = tap
        self.order = order
        self.offset = offset
        self.width = width
        self.indices = indices
    }
}

/// How the head's inputs are normalised before the linear layer.
public struct NormalizationRule: Sendable, Hashable, Codable {
    /// `per_tap_unit_l2_over_kept`: for each example and each tap, the kept features of that tap
    /// are scaled to unit L2 norm (a zero vector stays zero), then concatenated in tap order;
    /// `raw_selected`: the kept features as stored, concatenated in tap order (per-tap training
    /// constants are folded into the weights). The values of `HeadInputRule`.
    public var rule: String
    /// Plain-language statement of the rule, for readers of exported files.
    public var description: String

    /// docs/architecture.md §1 step 6: the kept subset of each tap re-normalised per example (the baselines
    /// and heads trained with `KeptTapScaling.unit` or `.trainingShare`).
    public static let perTapUnitL2OverKept = NormalizationRule(
        rule: HeadInputRule.perTapUnitL2.rawValue,
        description: "for each example and each tap, scale the head's kept features of that tap to unit L2 norm (zero stays zero); concatenate taps in network order; logits = x W + b")
    /// The raw selected columns (heads trained with `KeptTapScaling.trainingConstant`, whose
    /// per-tap training constants are folded into the weights).
    public static let rawSelected = NormalizationRule(
        rule: HeadInputRule.raw.rawValue,
        description: "the head's kept features as stored (raw pooled values, no normalisation; per-tap training constants are folded into W); concatenate taps in network order; logits = x W + b")

    /// The rule of a training input rule.
    public init(_ rule: HeadInputRule) {
        self = rule == .raw ? .rawSelected : .perTapUnitL2OverKept
    }

    /// Creates a rule.
    public init(rule: String, description: String) {
        self.rule = rule
        self.description = description
    }

    /// The training module's input rule, `nil` for an unknown rule.
    public var inputRule: HeadInputRule? { HeadInputRule(rawValue: rule) }
}

/// Chosen hyper-parameters and the grid they were chosen from.
public struct HyperParameters: Sendable, Hashable, Codable {
    /// `head2toe` (or a baseline when a baseline head is registered).
    public var method: FitMethod
    /// Head2Toe pooling target size `F_T` of the chosen feature set.
    public var targetSize: Int
    /// Keep fraction.
    public var fraction: Double?
    /// `λ` as given in the grid.
    public var lambda: Double?
    /// `λ` actually used.
    public var lambdaAbsolute: Double?
    /// How grid `λ` values are read (`relativeToMax`, `absolute`).
    public var lambdaScale: String?
    /// Index of the selection solver in the grid.
    public var solver: Int?
    /// Cross-validation folds.
    public var folds: Int?
    /// Ridge strength of the final head.
    public var headL2: Double?
    /// Every training setting as given (the full `FitSettings`), for reproduction.
    public var settings: JSONValue

    /// Creates hyper-parameters.
    public init(method: FitMethod, targetSize: Int, fraction: Double? = nil, lambda: Double? = nil, lambdaAbsolute: Double? = nil,
                lambdaScale: String? = nil, solver: Int? = nil, folds: Int? = nil, headL2: Double? = nil, settings: JSONValue = .null) {
        self.method = method
        self.targetSize = targetSize
        self.fraction = fraction
        self.lambda = lambda
        self.lambdaAbsolute = lambdaAbsolute
        self.lambdaScale = lambdaScale
        self.solver = solver
        self.folds = folds
        self.headL2 = headL2
        self.settings = settings
    }
}

/// One method's scores.
public struct MethodScore: Sendable, Hashable, Codable {
    /// Which method.
    public var method: FitMethod
    /// Feature set id the method read.
    public var featureSet: String
    /// Input features of its head.
    public var keptFeatures: Int
    /// Pooled cross-validation accuracy.
    public var cvAccuracy: Double
    /// Test accuracy, when a test split was evaluated.
    public var testAccuracy: Double?

    /// Creates a score.
    public init(method: FitMethod, featureSet: String, keptFeatures: Int, cvAccuracy: Double, testAccuracy: Double?) {
        self.method = method
        self.featureSet = featureSet
        self.keptFeatures = keptFeatures
        self.cvAccuracy = cvAccuracy
        self.testAccuracy = testAccuracy
    }
}

/// The head's scores next to the baselines' (same folds, same test split).
public struct HeadMetrics: Sendable, Hashable, Codable {
    /// This head.
    public var head: MethodScore
    /// Linear probe on the pre-logits tap.
    public var linearProbe: MethodScore?
    /// All features, no selection.
    public var allFeatures: MethodScore?

    /// Creates metrics.
    public init(head: MethodScore, linearProbe: MethodScore?, allFeatures: MethodScore?) {
        self.head = head
        self.linearProbe = linearProbe
        self.allFeatures = allFeatures
    }
}

/// One point of the cross-validation sweep (a row of the CV table).
public struct CVPoint: Sendable, Hashable, Codable {
    /// Which method.
    public var method: FitMethod
    /// Feature set id.
    public var featureSet: String
    /// Its pooling target size.
    public var targetSize: Int
    /// Selection solver index (Head2Toe).
    public var solver: Int?
    /// `λ` as given in the grid (Head2Toe).
    public var lambda: Double?
    /// Keep fraction (Head2Toe).
    public var fraction: Double?
    /// Ridge strength of the final head (`nil` in heads registered before ridge was a grid axis).
    public var ridge: Double?
    /// Input features of the head.
    public var keptFeatures: Int
    /// Pooled CV accuracy.
    public var cvAccuracy: Double
    /// Accuracy per fold.
    public var foldAccuracies: [Double]
}

/// A dataset split as it was when the head was trained.
public struct SplitLineage: Sendable, Hashable, Codable {
    /// Split name.
    public var split: String
    /// `FeatureStore.splitDigest` of the whole split at training time.
    public var digest: String
    /// Examples used (a training limit may use a prefix of the split).
    public var count: Int

    /// Creates a split lineage.
    public init(split: String, digest: String, count: Int) {
        self.split = split
        self.digest = digest
        self.count = count
    }
}

/// Where a head came from.
public struct HeadLineage: Sendable, Hashable, Codable {
    /// Feature set id the head reads.
    public var featureSet: String
    /// Backbone id of that feature set.
    public var backbone: String
    /// Backbone architecture (`mobilenet_v2`, `external:<name>`), for people.
    public var architecture: String
    /// Dataset name.
    public var dataset: String
    /// Training split.
    public var train: SplitLineage
    /// Test split, if one was evaluated.
    public var test: SplitLineage?
    /// Seed of the fit.
    public var seed: UInt64
    /// Version of h2t-store that trained it.
    public var toolVersion: String
    /// Size of the training images before preprocessing, when the training examples came from
    /// image files of one size (prediction on new images checks it).
    public var sourceImage: SourceImageSize?
    /// The solver, validation rule and memory budget of the fit (absent in heads registered
    /// before the stochastic solver existed).
    public var plan: FitPlan?

    /// Creates a lineage.
    public init(featureSet: String, backbone: String, architecture: String, dataset: String, train: SplitLineage,
                test: SplitLineage?, seed: UInt64, toolVersion: String = H2TRegistryInfo.toolVersion, sourceImage: SourceImageSize? = nil,
                plan: FitPlan? = nil) {
        self.featureSet = featureSet
        self.backbone = backbone
        self.architecture = architecture
        self.dataset = dataset
        self.train = train
        self.test = test
        self.seed = seed
        self.toolVersion = toolVersion
        self.sourceImage = sourceImage
        self.plan = plan
    }
}

/// Pixel size and channels of source images.
public struct SourceImageSize: Sendable, Hashable, Codable {
    /// Rows.
    public var height: Int
    /// Columns.
    public var width: Int
    /// 1 (grayscale) or 3 (RGB).
    public var channels: Int

    /// Creates a size.
    public init(height: Int, width: Int, channels: Int) {
        self.height = height
        self.width = width
        self.channels = channels
    }
}

/// Module facts recorded in every head.
public enum H2TRegistryInfo {
    /// The h2t-store version written into lineage.
    public static let toolVersion = "0.1.0"
}

/// The head model: a linear classifier on selected features of one feature set, with how it was
/// chosen and where it came from. Defined once; every other form derives from it: a draft adds
/// initial tags, a record adds its version number and registration time, and the stored
/// (`HeadSummary`, `HeadEntry`, `HeadBody`), file (`HeadFile`) and `--json` forms are built from it.
public struct HeadModel: Sendable, Hashable {
    /// Task name (the head's name).
    public var task: String
    /// Class names; logits follow this order.
    public var classNames: [String]
    /// Kept features per tap, in network order.
    public var selection: [TapIndices]
    /// Normalisation applied before the linear layer.
    public var normalization: NormalizationRule
    /// Row-major `d × K` weights, rows in global-column order of the kept features.
    public var weights: [Float]
    /// `K` biases.
    public var bias: [Float]
    /// Chosen hyper-parameters.
    public var hyperParameters: HyperParameters
    /// Scores and baselines.
    public var metrics: HeadMetrics
    /// The cross-validation sweep.
    public var cvCurves: [CVPoint]
    /// Test metrics (accuracy, per class, confusion) per method name (`FitMethod` raw values).
    public var testMetrics: [String: ClassificationMetrics]
    /// Lineage.
    public var lineage: HeadLineage

    /// Creates a head model.
    public init(task: String, classNames: [String], selection: [TapIndices], normalization: NormalizationRule = .perTapUnitL2OverKept,
                weights: [Float], bias: [Float], hyperParameters: HyperParameters, metrics: HeadMetrics, cvCurves: [CVPoint] = [],
                testMetrics: [String: ClassificationMetrics] = [:], lineage: HeadLineage) {
        self.task = task
        self.classNames = classNames
        self.selection = selection
        self.normalization = normalization
        self.weights = weights
        self.bias = bias
        self.hyperParameters = hyperParameters
        self.metrics = metrics
        self.cvCurves = cvCurves
        self.testMetrics = testMetrics
        self.lineage = lineage
    }

    /// Input features `d` (kept features over all taps).
    public var inputCount: Int { selection.reduce(0) { $0 + $1.indices.count } }
    /// Global column indices of the kept features in the feature set, ascending (weight row order).
    public var selectedIndices: [Int] { selection.flatMap { tap in tap.indices.map { tap.offset + $0 } } }

    /// Checks shapes and indices; throws a one-line `RegistryError.invalidHead`.
    public func validate() throws(RegistryError) {
        try Naming.checkTask(task)
        let k = classNames.count
        guard k >= 2 else { throw .invalidHead("\(k) class names; a classifier needs at least 2") }
        guard Set(classNames).count == k else { throw .invalidHead("class names are not unique") }
        let d = inputCount
        guard d > 0 else { throw .invalidHead("no selected features") }
        guard weights.count == d * k else { throw .invalidHead("\(weights.count) weights for \(d) features × \(k) classes") }
        guard bias.count == k else { throw .invalidHead("\(bias.count) biases for \(k) classes") }
        guard weights.allSatisfy(\.isFinite), bias.allSatisfy(\.isFinite) else { throw .invalidHead("weights or bias are not finite") }
        var lastEnd = 0
        var lastOrder = -1
        for tap in selection {
            guard tap.order > lastOrder, tap.offset >= lastEnd, tap.width > 0 else {
                throw .invalidHead("taps are not in network order with disjoint columns (at '\(tap.tap)')")
            }
            guard !tap.indices.isEmpty else { throw .invalidHead("tap '\(tap.tap)' keeps no feature (omit it)") }
            guard zip(tap.indices, tap.indices.dropFirst()).allSatisfy({ $0 < $1 }), tap.indices.first! >= 0, tap.indices.last! < tap.width else {
                throw .invalidHead("indices of tap '\(tap.tap)' must be ascending, unique and inside 0..<\(tap.width)")
            }
            lastOrder = tap.order
            lastEnd = tap.offset + tap.width
        }
        guard normalization.inputRule != nil else {
            throw .invalidHead("unknown normalisation rule '\(normalization.rule)'")
        }
    }
}

/// Everything a new head version holds, before the registry numbers it: the model and its
/// initial tags. The model's fields read and write through the draft (`draft.task`).
@dynamicMemberLookup
public struct HeadDraft: Sendable, Hashable {
    /// The head.
    public var model: HeadModel
    /// Initial tags.
    public var tags: [String: String]

    /// Wraps a model.
    public init(_ model: HeadModel, tags: [String: String] = [:]) {
        self.model = model
        self.tags = tags
    }

    /// Creates a draft; `register` checks it.
    public init(task: String, classNames: [String], selection: [TapIndices], normalization: NormalizationRule = .perTapUnitL2OverKept,
                weights: [Float], bias: [Float], hyperParameters: HyperParameters, metrics: HeadMetrics, cvCurves: [CVPoint] = [],
                testMetrics: [String: ClassificationMetrics] = [:], lineage: HeadLineage, tags: [String: String] = [:]) {
        self.init(HeadModel(task: task, classNames: classNames, selection: selection, normalization: normalization, weights: weights,
                            bias: bias, hyperParameters: hyperParameters, metrics: metrics, cvCurves: cvCurves,
                            testMetrics: testMetrics, lineage: lineage),
                  tags: tags)
    }

    /// A field of the model.
    public subscript<Value>(dynamicMember field: WritableKeyPath<HeadModel, Value>) -> Value {
        get { model[keyPath: field] }
        set { model[keyPath: field] = newValue }
    }

    /// A derived property of the model (`inputCount`, `selectedIndices`).
    public subscript<Value>(dynamicMember property: KeyPath<HeadModel, Value>) -> Value { model[keyPath: property] }

    /// Checks shapes and indices; throws a one-line `RegistryError.invalidHead`.
    public func validate() throws(RegistryError) { try model.validate() }
}

/// A registered head: an immutable, numbered version of a task. The model's fields read through
/// the record (`record.weights`).
@dynamicMemberLookup
public struct HeadRecord: Sendable, Hashable {
    /// The head.
    public var model: HeadModel
    /// Version number (1, 2, ...), never reused.
    public var version: Int
    /// Registration time, ISO 8601 UTC.
    public var createdAt: String

    /// Numbers a model.
    public init(_ model: HeadModel, version: Int, createdAt: String) {
        self.model = model
        self.version = version
        self.createdAt = createdAt
    }

    /// A field of the model.
    public subscript<Value>(dynamicMember field: WritableKeyPath<HeadModel, Value>) -> Value {
        get { model[keyPath: field] }
        set { model[keyPath: field] = newValue }
    }

    /// A derived property of the model (`inputCount`, `selectedIndices`).
    public subscript<Value>(dynamicMember property: KeyPath<HeadModel, Value>) -> Value { model[keyPath: property] }

    /// `NAME@vN`.
    public var reference: String { "\(model.task)@v\(version)" }
    /// The head as a draft (for re-registering, e.g. after import).
    public var draft: HeadDraft { HeadDraft(model) }

    /// The summary part (what listings need).
    public var summary: HeadSummary {
        HeadSummary(task: model.task, version: version, createdAt: createdAt, classNames: model.classNames, inputCount: model.inputCount,
                    perTap: model.selection.map { TapCount(tap: $0.tap, order: $0.order, kept: $0.indices.count, width: $0.width) },
                    hyperParameters: model.hyperParameters, metrics: model.metrics, lineage: model.lineage)
    }
}

/// Kept features of one tap, counted.
public struct TapCount: Sendable, Hashable, Codable {
    /// Tap name.
    public var tap: String
    /// Network order.
    public var order: Int
    /// Kept features.
    public var kept: Int
    /// Tap width in the feature set.
    public var width: Int
}

/// The small part of a head record: everything but weights, indices and curves. Listings decode
/// only this (stored as its own LMDB value), so listing 10,000 heads stays fast.
public struct HeadSummary: Sendable, Hashable, Codable {
    /// Schema tag of the stored value.
    public var schema = "h2t.head/1"
    /// Task name.
    public var task: String
    /// Version.
    public var version: Int
    /// Registration time, ISO 8601 UTC.
    public var createdAt: String
    /// Class names.
    public var classNames: [String]
    /// Input features `d`.
    public var inputCount: Int
    /// Kept features per tap, in network order.
    public var perTap: [TapCount]
    /// Chosen hyper-parameters.
    public var hyperParameters: HyperParameters
    /// Scores and baselines.
    public var metrics: HeadMetrics
    /// Lineage.
    public var lineage: HeadLineage

    /// `NAME@vN`.
    public var reference: String { "\(task)@v\(version)" }
}

/// What a listing shows of a head: a few hundred bytes, stored as its own LMDB value so that
/// listing 10,000 heads decodes about 3 MB of JSON, not the 20 MB of their summaries.
public struct HeadEntry: Sendable, Hashable, Codable {
    /// Schema tag of the stored value.
    public var schema = "h2t.head-entry/1"
    /// Task name.
    public var task: String
    /// Version.
    public var version: Int
    /// Registration time, ISO 8601 UTC.
    public var createdAt: String
    /// `head2toe` (or a baseline).
    public var method: FitMethod
    /// Pooling target size `F_T` of its feature set.
    public var targetSize: Int
    /// Input features `d`.
    public var inputCount: Int
    /// Classes `K`.
    public var classCount: Int
    /// Dataset trained on.
    public var dataset: String
    /// Feature set id.
    public var featureSet: String
    /// Backbone architecture.
    public var architecture: String
    /// The head's CV and test accuracy, and the baselines'.
    public var cvAccuracy: Double
    public var testAccuracy: Double?
    public var probeCvAccuracy: Double?
    public var probeTestAccuracy: Double?
    public var allFeaturesCvAccuracy: Double?
    public var allFeaturesTestAccuracy: Double?

    /// `NAME@vN`.
    public var reference: String { "\(task)@v\(version)" }

    init(_ s: HeadSummary) {
        task = s.task
        version = s.version
        createdAt = s.createdAt
        method = s.hyperParameters.method
        targetSize = s.hyperParameters.targetSize
        inputCount = s.inputCount
        classCount = s.classNames.count
        dataset = s.lineage.dataset
        featureSet = s.lineage.featureSet
        architecture = s.lineage.architecture
        cvAccuracy = s.metrics.head.cvAccuracy
        testAccuracy = s.metrics.head.testAccuracy
        probeCvAccuracy = s.metrics.linearProbe?.cvAccuracy
        probeTestAccuracy = s.metrics.linearProbe?.testAccuracy
        allFeaturesCvAccuracy = s.metrics.allFeatures?.cvAccuracy
        allFeaturesTestAccuracy = s.metrics.allFeatures?.testAccuracy
    }
}

/// The large part of a head record, stored as its own LMDB value.
struct HeadBody: Sendable, Hashable, Codable {
    var schema = "h2t.head-body/1"
    var selection: [TapIndices]
    var normalization: NormalizationRule
    var weights: [Float]
    var bias: [Float]
    var cvCurves: [CVPoint]
    var testMetrics: [String: ClassificationMetrics]

    /// The body part of `model`.
    init(_ model: HeadModel) {
        selection = model.selection
        normalization = model.normalization
        weights = model.weights
        bias = model.bias
        cvCurves = model.cvCurves
        testMetrics = model.testMetrics
    }
}

extension HeadModel {
    /// The model a stored summary and body describe together.
    init(summary: HeadSummary, body: HeadBody) {
        self.init(task: summary.task, classNames: summary.classNames, selection: body.selection, normalization: body.normalization,
                  weights: body.weights, bias: body.bias, hyperParameters: summary.hyperParameters, metrics: summary.metrics,
                  cvCurves: body.cvCurves, testMetrics: body.testMetrics, lineage: summary.lineage)
    }
}

/// The JSON key of one field in a head form written flat (`HeadFile`'s metadata, `head show --json`).
public struct HeadField: CodingKey, Hashable, Sendable {
    /// The key.
    public var stringValue: String
    /// Keys are strings only.
    public var intValue: Int? { nil }

    /// A key named `name`.
    public init(_ name: String) { stringValue = name }
    /// A key named `stringValue`.
    public init?(stringValue: String) { self.init(stringValue) }
    /// Keys are strings only.
    public init?(intValue: Int) { nil }
}

extension HeadModel {
    /// Writes the model's fields, under their property names, into a form's object; with
    /// `tensors` false, weights and bias are left out (a head file carries them as tensors).
    public func encodeFields(into container: inout KeyedEncodingContainer<HeadField>, tensors: Bool) throws {
        try container.encode(task, forKey: HeadField("task"))
        try container.encode(classNames, forKey: HeadField("classNames"))
        try container.encode(selection, forKey: HeadField("selection"))
        try container.encode(normalization, forKey: HeadField("normalization"))
        try container.encode(hyperParameters, forKey: HeadField("hyperParameters"))
        try container.encode(metrics, forKey: HeadField("metrics"))
        try container.encode(cvCurves, forKey: HeadField("cvCurves"))
        try container.encode(testMetrics, forKey: HeadField("testMetrics"))
        try container.encode(lineage, forKey: HeadField("lineage"))
        if tensors {
            try container.encode(weights, forKey: HeadField("weights"))
            try container.encode(bias, forKey: HeadField("bias"))
        }
    }

    /// Reads the fields `encodeFields` writes; with `tensors` false, weights and bias are empty
    /// until the caller fills them in.
    public init(fieldsFrom container: KeyedDecodingContainer<HeadField>, tensors: Bool) throws {
        func field<Value: Decodable>(_ name: String) throws -> Value { try container.decode(Value.self, forKey: HeadField(name)) }
        self.init(task: try field("task"), classNames: try field("classNames"), selection: try field("selection"),
                  normalization: try field("normalization"), weights: tensors ? try field("weights") : [],
                  bias: tensors ? try field("bias") : [], hyperParameters: try field("hyperParameters"), metrics: try field("metrics"),
                  cvCurves: try field("cvCurves"), testMetrics: try field("testMetrics"), lineage: try field("lineage"))
    }
}

/// What a removed version leaves behind, so its number is never reused and lookups can say it was removed.
struct RemovedHead: Sendable, Hashable, Codable {
    var schema = "h2t.head-removed/1"
    var task: String
    var version: Int
    var removedAt: String
}

extension HeadBody {
    /// Decodes a stored body, as `CanonicalJSON.decode` would.
    ///
    /// The weights are the canonical JSON's last key (`d × K` numbers: 45,400 for the main job's
    /// head), and JSONDecoder's element-by-element `[Float]` took about 40 ms of every `predict`,
    /// serially. So ``CanonicalJSON/splitTrailingFloats(_:key:)`` reads them and only the rest of
    /// the object goes through JSONDecoder. A body of any other shape takes JSONDecoder whole,
    /// and so gets its errors.
    static func decode(_ value: some Collection<UInt8>) throws -> HeadBody {
        let bytes = Array(value)
        if let (rest, weights) = CanonicalJSON.splitTrailingFloats(bytes, key: "weights"),
           var body = try? CanonicalJSON.decode(HeadBody.self, from: rest) {
            body.weights = weights
            return body
        }
        return try CanonicalJSON.decode(HeadBody.self, from: bytes)
    }
}
