import Foundation
import H2TCore
import H2TPipeline
import H2TRegistry
import H2TStore
import H2TTrain
@_exported import H2TTestSupport

/// A small external-activation store: three taps (a 4×4×4 map, a 16-vector, an 8-vector "logits"),
/// three classes whose signal lives in the middle tap, a train and a test split.
struct RegistryFixture {
    static let classNames = ["ant", "bee", "cat"]
    let directory = TemporaryDirectory(prefix: "h2t-reg")
    let store: FeatureStore
    let featureSet: String
    let registry: Registry

    /// How the examples are drawn.
    enum Examples {
        /// A strong class signal in `mid`.
        case plain
        /// A weak class signal in `mid`, and every example multiplied by its own scale in
        /// [0.25, 4): per-tap normalisation removes that scale, the raw rule does not, so the two
        /// input rules give different predictions (with `plain` they agree).
        case scaled
    }

    init(train: Int = 60, test: Int = 30, targetSizes: [Int] = [16], path: String? = nil, examples: Examples = .plain) throws {
        store = try FeatureStore(path: path ?? directory.file("store"))
        var ids: [String] = []
        let seeds: (UInt64, UInt64) = examples == .plain ? (1, 2) : (11, 12)
        for (split, count, seed) in [("train", train, seeds.0), ("test", test, seeds.1)] {
            var random = SplitMix64(seed: seed)
            var conv: [Float] = [], mid: [Float] = [], logits: [Float] = []
            var labels: [String] = [], names: [String] = []
            for e in 0..<count {
                let label = e % 3
                switch examples {
                case .plain:
                    for _ in 0..<64 { conv.append(random.uniform()) }
                    for j in 0..<16 { mid.append(random.uniform() * 0.5 + (j % 3 == label ? 1.5 : 0)) }
                    for _ in 0..<8 { logits.append(random.uniform()) }
                case .scaled:
                    let scale = Float(pow(16.0, Double(random.uniform()))) / 4
                    for _ in 0..<64 { conv.append(scale * random.uniform()) }
                    for j in 0..<16 { mid.append(scale * (random.uniform() + (j % 3 == label ? 0.45 : 0))) }
                    for _ in 0..<8 { logits.append(scale * random.uniform()) }
                }
                labels.append(Self.classNames[label])
                names.append("\(split)-\(e)")
            }
            let path = directory.file("\(split).safetensors")
            func jsonArray(_ items: [String]) -> String { "[" + items.map { "\"\($0)\"" }.joined(separator: ",") + "]" }
            try writeSafetensors(path, tensors: [("conv", [count, 4, 4, 4], conv), ("mid", [count, 16], mid), ("logits", [count, 8], logits)],
                                 metadata: ["example_ids": jsonArray(names), "labels": jsonArray(labels),
                                            "class_names": jsonArray(Self.classNames)])
            var options = ExternalIngestOptions(backboneName: "toy", dataset: "toys", split: split, targetSizes: targetSizes)
            options.columnBlock = 16
            options.segmentRows = 32
            options.codec = .lossless
            let summary = try ExternalIngest(store: store, options: options).run(paths: [path])
            ids = summary.featureSets.map(\.id)
        }
        featureSet = ids[0]
        registry = try Registry(store: store)
    }

    /// A real (small) fit through the lead's pipeline.
    func fit(seed: UInt64 = 0) throws -> FitOutcome {
        let settings = FitSettings(fractions: [0.1, 0.25, 0.5], lambdas: [0.5, 0.1], folds: 3, seed: seed)
        return try FitPipeline.run(store: store, request: FitRequest(dataset: "toys", trainSplit: "train", testSplit: "test",
                                                                     featureSets: [featureSet], settings: settings))
    }

    /// Registers a fitted head under `task`.
    @discardableResult
    func register(_ task: String, outcome: FitOutcome? = nil, tags: [String: String] = [:]) throws -> HeadRecord {
        let fitted = try outcome ?? fit()
        return try registry.register(task: task, report: fitted.report, classNames: fitted.classNames,
                                     lineage: fitted.lineage,
                                     tags: tags)
    }
}
