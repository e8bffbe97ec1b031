/// Two heads side by side: differing hyper-parameters, metrics, and overlap of selected features
/// per tap (`h2t-store head diff`, `schemas/head-diff-output.schema.json`).
public struct HeadComparison: Sendable, Hashable, Codable {
    /// A hyper-parameter whose value differs (values as text).
    public struct Parameter: Sendable, Hashable, Codable {
        public var name: String
        public var a: String
        public var b: String
    }

    /// One metric of both heads.
    public struct Metric: Sendable, Hashable, Codable {
        public var name: String
        public var a: Double?
        public var b: Double?
        /// `b - a` when both exist.
        public var delta: Double?
    }

    /// Overlap of the kept features of one tap.
    public struct TapOverlap: Sendable, Hashable, Codable {
        public var tap: String
        public var order: Int
        public var onlyA: Int
        public var both: Int
        public var onlyB: Int
        /// `both / (onlyA + both + onlyB)`; 1 when neither keeps anything.
        public var jaccard: Double
    }

    /// Schema tag.
    public var schema = "h2t.head-diff/1"
    /// `NAME@vN` of each side.
    public var a: String
    public var b: String
    /// Whether both read the same feature set (otherwise taps are matched by name).
    public var sameFeatureSet: Bool
    /// Differing hyper-parameters and lineage fields.
    public var hyperParameters: [Parameter]
    /// Metrics of both.
    public var metrics: [Metric]
    /// Per-tap overlap, in network order, for every tap either head keeps.
    public var taps: [TapOverlap]
    /// Totals.
    public var featuresA: Int
    public var featuresB: Int
    public var sharedFeatures: Int
    public var jaccard: Double

    /// Compares `a` with `b`.
    public init(_ a: HeadRecord, _ b: HeadRecord) {
        self.a = a.reference
        self.b = b.reference
        sameFeatureSet = a.lineage.featureSet == b.lineage.featureSet
        func text(_ v: Double?) -> String { v.map { "\($0)" } ?? "-" }
        let ha = a.hyperParameters, hb = b.hyperParameters
        let pairs: [(String, String, String)] = [
            ("method", ha.method.rawValue, hb.method.rawValue),
            ("target_size", "\(ha.targetSize)", "\(hb.targetSize)"),
            ("fraction", text(ha.fraction), text(hb.fraction)),
            ("lambda", text(ha.lambda), text(hb.lambda)),
            ("lambda_absolute", text(ha.lambdaAbsolute), text(hb.lambdaAbsolute)),
            ("lambda_scale", ha.lambdaScale ?? "-", hb.lambdaScale ?? "-"),
            ("solver", ha.solver.map(String.init) ?? "-", hb.solver.map(String.init) ?? "-"),
            ("folds", ha.folds.map(String.init) ?? "-", hb.folds.map(String.init) ?? "-"),
            ("head_l2", text(ha.headL2), text(hb.headL2)),
            ("normalization", a.normalization.rule, b.normalization.rule),
            ("features", "\(a.inputCount)", "\(b.inputCount)"),
            ("feature_set", String(a.lineage.featureSet.prefix(12)), String(b.lineage.featureSet.prefix(12))),
            ("dataset", a.lineage.dataset, b.lineage.dataset),
            ("train_split", "\(a.lineage.train.split)@\(a.lineage.train.digest.prefix(12))", "\(b.lineage.train.split)@\(b.lineage.train.digest.prefix(12))"),
            ("seed", "\(a.lineage.seed)", "\(b.lineage.seed)"),
            ("classes", a.classNames.joined(separator: ","), b.classNames.joined(separator: ",")),
        ]
        hyperParameters = pairs.filter { $0.1 != $0.2 }.map { Parameter(name: $0.0, a: $0.1, b: $0.2) }
        func metric(_ name: String, _ x: Double?, _ y: Double?) -> Metric {
            Metric(name: name, a: x, b: y, delta: x.flatMap { x in y.map { $0 - x } })
        }
        metrics = [
            metric("test_accuracy", a.metrics.head.testAccuracy, b.metrics.head.testAccuracy),
            metric("cv_accuracy", a.metrics.head.cvAccuracy, b.metrics.head.cvAccuracy),
            metric("linear_probe_test_accuracy", a.metrics.linearProbe?.testAccuracy, b.metrics.linearProbe?.testAccuracy),
            metric("all_features_test_accuracy", a.metrics.allFeatures?.testAccuracy, b.metrics.allFeatures?.testAccuracy),
        ]
        var byTap: [String: (order: Int, a: Set<Int>, b: Set<Int>)] = [:]
        for t in a.selection { byTap[t.tap] = (t.order, Set(t.indices), []) }
        for t in b.selection { byTap[t.tap, default: (t.order, [], [])].b = Set(t.indices) }
        taps = byTap.map { name, v in
            let both = v.a.intersection(v.b).count
            let union = v.a.union(v.b).count
            return TapOverlap(tap: name, order: v.order, onlyA: v.a.count - both, both: both, onlyB: v.b.count - both,
                              jaccard: union == 0 ? 1 : Double(both) / Double(union))
        }.sorted { $0.order != $1.order ? $0.order < $1.order : $0.tap < $1.tap }
        featuresA = a.inputCount
        featuresB = b.inputCount
        sharedFeatures = taps.reduce(0) { $0 + $1.both }
        let union = featuresA + featuresB - sharedFeatures
        jaccard = union == 0 ? 1 : Double(sharedFeatures) / Double(union)
    }
}
