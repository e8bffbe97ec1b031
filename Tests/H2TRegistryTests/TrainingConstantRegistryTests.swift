import Foundation
import H2TBackbone
import H2TCore
import H2TPipeline
import H2TRegistry
import H2TStore
import H2TTrain
import Testing

/// Heads trained with `KeptTapScaling.trainingConstant` through the pipeline: stored with the
/// `raw_selected` rule and applied to the raw selected columns by every predict path.
@Suite("Registry: training-constant heads")
struct TrainingConstantRegistryTests {
    /// The fixture's fit settings with another kept-tap scaling.
    static func settings(_ scaling: KeptTapScaling) -> FitSettings {
        FitSettings(fractions: [0.1, 0.25, 0.5], lambdas: [0.5, 0.1], folds: 3, keptTapScaling: scaling, seed: 0)
    }

    static func fit(_ fixture: RegistryFixture, _ scaling: KeptTapScaling) throws -> FitOutcome {
        try FitPipeline.run(store: fixture.store, request: FitRequest(dataset: "toys", trainSplit: "train", testSplit: "test",
                                                                      featureSets: [fixture.featureSet], settings: settings(scaling)))
    }

    /// `softmax(x W + b)` of the raw values, row by row, in Double.
    static func rawProbabilities(_ head: HeadRecord, values: [Float], rows: Int) -> [[Double]] {
        let d = head.inputCount, k = head.classNames.count
        return (0..<rows).map { r in
            let z = (0..<k).map { c in
                (0..<d).reduce(Double(head.bias[c])) { $0 + Double(values[r * d + $1]) * Double(head.weights[$1 * k + c]) }
            }
            let top = z.max()!
            let e = z.map { exp($0 - top) }
            let sum = e.reduce(0, +)
            return e.map { $0 / sum }
        }
    }

    @Test func trainingConstantHeadIsStoredRawSelectedAndPredictsOnRawColumns() throws {
        let fixture = try RegistryFixture(scaledExamples: 90, test: 60)
        let outcome = try Self.fit(fixture, .trainingConstant)
        let report = outcome.report
        #expect(report.head2toe.inputRule == .raw)
        #expect(report.linearProbe.inputRule == .perTapUnitL2 && report.allFeatures.inputRule == .perTapUnitL2)
        let head = try fixture.register("toys", outcome: outcome)
        #expect(head.normalization.rule == "raw_selected")
        #expect(head.normalization == .rawSelected)
        #expect(head.normalization.inputRule == .raw)
        let stored = try fixture.registry.head("toys@v1")
        #expect(stored.normalization.rule == "raw_selected")
        #expect(stored.weights == report.head2toe.head.weights)
        #expect(stored.selectedIndices == report.head2toe.selectedIndices)

        // Registry prediction on the stored test examples = the fit's test evaluation.
        let evaluation = try fixture.registry.evaluate(stored, dataset: "toys", split: "test")
        #expect(evaluation.metrics.accuracy == report.head2toe.testAccuracy)
        #expect(evaluation.metrics.confusion == report.head2toe.test?.confusion)
        #expect(evaluation.sameAsRecordedTest)
        #expect(try #require(report.head2toe.testAccuracy) > 0.6, "the signal in tap 'mid' is found (chance: 1/3)")

        // Independently: the head's weights applied to the raw stored columns, no normalisation.
        let items = try fixture.store.split(dataset: "toys", split: "test")
        let rawColumns = try fixture.store.read(featureSet: fixture.featureSet, examples: items.examples, columns: stored.selectedIndices)
        let expected = Self.rawProbabilities(stored, values: rawColumns.values, rows: rawColumns.rowCount)
        let predictions = try fixture.registry.predict(stored, examples: items.examples, batchSize: 7)
        #expect(predictions.labels == expected.map { p in p.firstIndex(of: p.max()!)! })
        var worst = 0.0
        for i in 0..<rawColumns.rowCount {
            for (a, b) in zip(predictions.probabilities(of: i), expected[i]) { worst = max(worst, abs(Double(a) - b)) }
        }
        #expect(worst <= 1e-4, "registry probabilities are softmax(raw x W + b)")
        #expect(predictions.labels == (try fixture.registry.predict(stored, dataset: "toys", split: "test").predictions.labels))
        #expect(ClassificationMetrics(predictions: predictions.labels, labels: items.labels, classCount: 3).accuracy == report.head2toe.testAccuracy)

        // The same weights on per-tap normalised inputs would give other probabilities: the rule matters here.
        var normalised = try FeatureMatrix(rowCount: rawColumns.rowCount, columnCount: stored.inputCount, values: rawColumns.values,
                                                    taps: HeadApplierTaps.of(stored))
        normalised.normalizeTaps()
        let wrong = Self.rawProbabilities(stored, values: normalised.values, rows: rawColumns.rowCount)
        let gap = zip(wrong, expected).map { zip($0, $1).map { abs($0 - $1) }.max()! }.max()!
        #expect(gap > 0.05)
        let wrongLabels = wrong.map { p in p.firstIndex(of: p.max()!)! }
        #expect(zip(wrongLabels, predictions.labels).filter { $0 != $1 }.count >= 3, "normalising would change predictions")

        // The pipeline's own predict path (both the materialised-cache and the batched read).
        let info = try fixture.store.featureSet(fixture.featureSet)
        for materialise in [true, false] {
            let labels = try FitPipeline.predict(store: fixture.store, info: info, method: report.head2toe, dataset: "toys", split: "test",
                                                 examples: items.examples, materialise: materialise)
            #expect(labels == predictions.labels, "materialise \(materialise)")
        }
        // Batches of 7 rows: each full batch decoded into the previous one's matrix, the last
        // (smaller) one read fresh.
        let sevenRows = 7 * report.head2toe.selectedIndices.count * 4
        let batched = try FitPipeline.predict(store: fixture.store, info: info, method: report.head2toe, dataset: "toys", split: "test",
                                              examples: items.examples, materialise: false, batchBytes: sevenRows)
        #expect(items.examples.count % 7 != 0 && items.examples.count > 14)
        #expect(batched == predictions.labels)
        // A matrix asked for again while its write-behind is under way is read once, then hit.
        let writes = CacheWrites()
        for _ in 0..<2 {
            let labels = try FitPipeline.predict(store: fixture.store, info: info, method: report.head2toe, dataset: "toys", split: "test",
                                                 examples: items.examples, materialise: true, writeBehind: writes)
            #expect(labels == predictions.labels)
        }
        try writes.wait()
    }

    @Test func theFitsOwnTestEvaluationAgreesWithTheStorePaths() throws {
        // Head2ToeFit evaluates test from the normalised matrix (headInputs(.raw)); the pipeline
        // from the raw selected columns of the store (applyInputRule). Both must agree.
        let fixture = try RegistryFixture(scaledExamples: 90, test: 60)
        let outcome = try Self.fit(fixture, .trainingConstant)
        let info = try fixture.store.featureSet(fixture.featureSet)
        let taps = info.manifest.taps.map { TapColumns(name: $0.name, offset: $0.offset, width: $0.width) }
        func matrix(_ split: String) throws -> (FeatureMatrix, [Int]) {
            let items = try fixture.store.split(dataset: "toys", split: split)
            let m = try fixture.store.read(featureSet: info.id, examples: items.examples)
            return (try FeatureMatrix(rowCount: m.rowCount, columnCount: m.columnCount, values: m.values, taps: taps), items.labels)
        }
        let (train, trainLabels) = try matrix("train")
        let (test, testLabels) = try matrix("test")
        let direct = try Head2ToeFit.run(featureSets: [FeatureSetInput(name: info.id, train: train, test: test)], trainLabels: trainLabels,
                                         testLabels: testLabels, classCount: 3, settings: outcome.report.settings)
        #expect(direct.head2toe.head == outcome.report.head2toe.head)
        #expect(direct.head2toe.selectedIndices == outcome.report.head2toe.selectedIndices)
        #expect(direct.head2toe.test?.confusion == outcome.report.head2toe.test?.confusion)
        #expect(direct.linearProbe.test?.confusion == outcome.report.linearProbe.test?.confusion)
        #expect(direct.allFeatures.test?.confusion == outcome.report.allFeatures.test?.confusion)
    }

    @Test func baselinesOfATrainingConstantFitAndDefaultHeadsKeepPerTapNormalisation() throws {
        let fixture = try RegistryFixture()
        let outcome = try Self.fit(fixture, .trainingConstant)
        let lineage = outcome.lineage
        for (method, result) in [(FitMethod.linearProbe, outcome.report.linearProbe), (.allFeatures, outcome.report.allFeatures)] {
            let head = try fixture.registry.register(task: "toys-\(method.rawValue.replacingOccurrences(of: "_", with: "-"))", report: outcome.report,
                                                     classNames: outcome.classNames, lineage: lineage, method: method)
            #expect(head.normalization.rule == "per_tap_unit_l2_over_kept", "\(method)")
            #expect(head.normalization == .perTapUnitL2OverKept)
            let evaluation = try fixture.registry.evaluate(head, dataset: "toys", split: "test")
            #expect(evaluation.metrics.accuracy == result.testAccuracy, "\(method)")
            #expect(evaluation.metrics.confusion == result.test?.confusion, "\(method)")
        }
        // A head with the default scaling (trainingShare) stores the per-tap rule and still evaluates as fitted.
        let defaultOutcome = try fixture.fit()
        #expect(defaultOutcome.report.settings.keptTapScaling == .trainingShare)
        #expect(defaultOutcome.report.head2toe.inputRule == .perTapUnitL2)
        let head = try fixture.register("toys", outcome: defaultOutcome)
        #expect(head.normalization.rule == "per_tap_unit_l2_over_kept")
        #expect(try fixture.registry.head("toys").normalization.rule == "per_tap_unit_l2_over_kept")
        #expect(try fixture.registry.evaluate(head, dataset: "toys", split: "test").metrics.accuracy == defaultOutcome.report.head2toe.testAccuracy)
        // Unit too.
        let unit = try Self.fit(fixture, .unit)
        #expect(try fixture.register("toys-unit", outcome: unit).normalization.rule == "per_tap_unit_l2_over_kept")
    }

    @Test func aRawSelectedHeadSurvivesExportAndImport() throws {
        let fixture = try RegistryFixture()
        let head = try fixture.register("toys", outcome: try Self.fit(fixture, .trainingConstant))
        let path = fixture.directory.file("toys.safetensors")
        try fixture.registry.export(HeadReference(task: "toys"), to: path)
        let (read, _) = try HeadFile.read(path)
        #expect(read.normalization == .rawSelected)
        let imported = try fixture.registry.importHead(from: path, as: "toys-copy")
        #expect(imported.normalization.rule == "raw_selected")
        let items = try fixture.store.split(dataset: "toys", split: "test")
        #expect(try fixture.registry.predict(imported, examples: items.examples).labels ==
                fixture.registry.predict(head, examples: items.examples).labels)
    }

    @Test func anUnknownNormalisationRuleIsRefused() throws {
        let fixture = try RegistryFixture()
        let head = try fixture.register("toys", outcome: try Self.fit(fixture, .trainingConstant))
        var draft = head.draft
        draft.normalization = NormalizationRule(rule: "per_tap_whatever", description: "made up")
        #expect(throws: RegistryError.invalidHead("unknown normalisation rule 'per_tap_whatever'")) { try fixture.registry.register(draft) }
        #expect(RegistryError.invalidHead("unknown normalisation rule 'per_tap_whatever'").description
                == "invalid head: unknown normalisation rule 'per_tap_whatever'")
        // Nothing was registered by the refused draft.
        #expect(try fixture.registry.list().map(\.entry.reference) == ["toys@v1"])
        // A head file with an unknown rule is refused on read and import, naming the file and the rule.
        var bogus = head
        bogus.normalization = NormalizationRule(rule: "RAW_SELECTED", description: "wrong case")
        let path = fixture.directory.file("bogus.safetensors")
        try HeadFile.write(bogus, to: path)
        do {
            _ = try fixture.registry.importHead(from: path, as: "bogus")
            Issue.record("a head file with an unknown normalisation rule was imported")
        } catch let error as RegistryError {
            #expect(error == .invalidHeadFile(path: path, reason: "invalid head: unknown normalisation rule 'RAW_SELECTED'"))
            #expect(error.description.contains(path) && error.description.contains("'RAW_SELECTED'"))
        }
        #expect(try fixture.registry.list().map(\.entry.reference) == ["toys@v1"])
    }
}

extension RegistryFixture {
    /// The fixture with `.scaled` examples (see `RegistryFixture.Examples`).
    init(scaledExamples train: Int, test: Int) throws {
        try self.init(train: train, test: test, examples: .scaled)
    }
}

/// The subset taps a head's applier uses (one per selected tap, in order), built independently.
enum HeadApplierTaps {
    static func of(_ head: HeadRecord) -> [TapColumns] {
        var offset = 0
        return head.selection.map { tap in
            defer { offset += tap.indices.count }
            return TapColumns(name: tap.tap, offset: offset, width: tap.indices.count)
        }
    }
}

/// The CLI with `--kept-scaling training-constant`: the registered head's JSON records the rule
/// and matches the registry schemas.
@Suite("Registry CLI: training-constant heads", .serialized)
struct TrainingConstantCLITests {
    @Test func fitWithTrainingConstantRegistersARawSelectedHeadThatMatchesTheSchemas() throws {
        try #require(FileManager.default.isExecutableFile(atPath: CLI.binary), "build h2t-store first (swift build)")
        let fixture = try RegistryFixture()
        let store = ["--store", fixture.store.path]
        let fit = try CLI.run(["fit", "--dataset", "toys", "--fractions", "0.1,0.25,0.5", "--lambdas", "0.5,0.1", "--folds", "3",
                               "--kept-scaling", "training-constant", "--task", "toys", "--json"] + store)
        #expect(fit.status == 0, "\(fit.stderr)")
        let head = try fixture.registry.head("toys")
        #expect(head.normalization.rule == "raw_selected")
        let show = try CLI.run(["head", "show", "toys@v1", "--json"] + store)
        #expect(show.status == 0, "\(show.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])
        #expect((object["normalization"] as? [String: Any])?["rule"] as? String == "raw_selected")
        let check = try CLI.validate(show.stdout, schema: "head-show-output", in: fixture.directory)
        #expect(check.status == 0, "head-show-output: \(check.stderr)")
        let records = try CLI.python(["tools/validate_json.py", "--registry", fixture.store.path])
        #expect(records.status == 0, "registry: \(records.stderr)")
        let file = fixture.directory.file("toys.safetensors")
        #expect(try CLI.run(["head", "export", "toys@v1", "--out", file] + store).status == 0)
        let headFile = try CLI.python(["tools/validate_json.py", "--head-file", file])
        #expect(headFile.status == 0, "head file: \(headFile.stderr)")
        // eval through the CLI gives the recorded test accuracy.
        let eval = try CLI.run(["eval", "toys@v1", "--dataset", "toys", "--split", "test", "--json"] + store)
        #expect(eval.status == 0, "\(eval.stderr)")
        let evaluation = try #require(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
        #expect(evaluation["same_as_recorded_test"] as? Bool == true)
        #expect((evaluation["metrics"] as? [String: Any])?["accuracy"] as? Double == head.metrics.head.testAccuracy)
        let evalCheck = try CLI.validate(eval.stdout, schema: "eval-output", in: fixture.directory)
        #expect(evalCheck.status == 0, "eval-output: \(evalCheck.stderr)")

        let bad = try CLI.run(["fit", "--dataset", "toys", "--kept-scaling", "raw", "--folds", "3"] + store)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--kept-scaling must be unit, training-share or training-constant, got 'raw'"))
    }
}

/// New images go through `HeadApplier` too: a `raw_selected` head reads the raw pooled features.
@Suite("Predict on new images: raw_selected heads", .enabled(if: ArtifactCache().isPresent(.mobilenetV2), "MobileNetV2 weights not in the artefact cache"))
struct TrainingConstantImagePredictTests {
    @Test func aRawSelectedHeadAppliesToTheRawPooledFeaturesOfNewImages() throws {
        let s = try ImagePredictTests.Setup()
        var draft = s.head.draft
        draft.task = "shapes-raw"
        draft.normalization = .rawSelected
        let head = try s.registry.register(draft)
        #expect(try s.registry.head("shapes-raw").normalization.rule == "raw_selected")
        let predictor = try ImagePredictor(head: head, registry: s.registry, network: s.network)
        let features = try predictor.selectedFeatures(try predictor.batch(s.images, names: []), count: s.images.count, parallelism: .serial)
        let expected = TrainingConstantRegistryTests.rawProbabilities(head, values: features, rows: s.images.count)
        let fromImages = try predictor.predict(s.images, names: s.ids.map(\.hex), batchSize: 2)
        let fromStore = try s.registry.predict(head, examples: s.ids)
        var worstImages = 0.0, worstStore = 0.0
        for i in 0..<s.images.count {
            for (a, b) in zip(fromImages.probabilities(of: i), expected[i]) { worstImages = max(worstImages, abs(Double(a) - b)) }
            for (a, b) in zip(fromStore.probabilities(of: i), expected[i]) { worstStore = max(worstStore, abs(Double(a) - b)) }
        }
        #expect(worstImages <= 1e-4 && worstStore <= 1e-4, "softmax(raw x W + b): images \(worstImages), store \(worstStore)")
        #expect(fromImages.labels == fromStore.labels)
        // The same weights under the per-tap rule (the original head) give other probabilities.
        let original = try ImagePredictor(head: s.head, registry: s.registry, network: s.network).predict(s.images, names: s.ids.map(\.hex), batchSize: 2)
        #expect(zip(original.probabilities, fromImages.probabilities).map { abs($0 - $1) }.max()! > 1e-3)
    }
}
