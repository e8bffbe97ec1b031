import Foundation
import H2TCore
import H2TPipeline
import H2TRegistry
import H2TStore
import H2TTrain
import Testing

@Suite("Head files, prediction and garbage collection")
struct HeadLifecycleTests {
    @Test func predictOnStoredExamplesMatchesTheFitsTestEvaluation() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        let head = try fixture.register("toys", outcome: outcome)
        let evaluation = try fixture.registry.evaluate(head, dataset: "toys", split: "test")
        #expect(evaluation.metrics.accuracy == outcome.report.head2toe.testAccuracy)
        #expect(evaluation.metrics.confusion == outcome.report.head2toe.test?.confusion)
        #expect(evaluation.sameAsRecordedTest)
        let items = try fixture.store.split(dataset: "toys", split: "test")
        let subset = Array(items.examples[3..<9])
        let predictions = try fixture.registry.predict(head, examples: subset, batchSize: 4)
        let all = try fixture.registry.predict(head, dataset: "toys", split: "test").predictions
        #expect(predictions.labels == Array(all.labels[3..<9]))
        #expect(predictions.inputs == subset.map(\.hex))
        for i in 0..<subset.count {
            let p = predictions.probabilities(of: i)
            #expect(abs(p.reduce(0, +) - 1) < 1e-5)
            #expect(p.firstIndex(of: p.max()!)! - p.startIndex == predictions.labels[i])
        }
    }

    @Test func exportedHeadRoundTripsAndImportsAsANewVersion() throws {
        let fixture = try RegistryFixture()
        let head = try fixture.register("toys", tags: ["team": "vision"])
        let path = fixture.directory.file("toys.safetensors")
        try fixture.registry.export(HeadReference(task: "toys"), to: path)
        let (read, tags) = try HeadFile.read(path)
        #expect(read == head)
        #expect(tags == ["team": "vision"])
        // The tensors are what a PyTorch user loads: weight [K, d] = Wᵀ.
        let file = try SafetensorsFile(path: path)
        let weight = try #require(file.tensors.first { $0.entry.name == "weight" })
        #expect(weight.entry.shape == [head.classNames.count, head.inputCount])
        var w = [Float](repeating: 0, count: head.classNames.count * head.inputCount)
        try w.withUnsafeMutableBufferPointer { try weight.readRows(0, count: head.classNames.count, into: $0.baseAddress!) }
        #expect(w[1 * head.inputCount + 0] == head.weights[0 * head.classNames.count + 1])
        #expect(try file.tensors.first { $0.entry.name == "selected_indices" }?.integers() == head.selectedIndices)
        let imported = try fixture.registry.importHead(from: path, as: "toys-copy")
        #expect(imported.reference == "toys-copy@v1")
        #expect(imported.weights == head.weights && imported.lineage == head.lineage)
        #expect(try fixture.registry.tags(HeadReference(task: "toys-copy")) == ["team": "vision"])
    }

    @Test func importingAHeadWhoseFeatureSetIsMissingSaysWhatIsNeeded() throws {
        let source = try RegistryFixture()
        let head = try source.register("toys")
        let path = source.directory.file("toys.safetensors")
        try source.registry.export(HeadReference(task: "toys"), to: path)
        // Another store with other features (another target size: another feature set).
        let other = try RegistryFixture(targetSizes: [4])
        #expect(other.featureSet != head.lineage.featureSet)
        do {
            try other.registry.importHead(from: path)
            Issue.record("import succeeded without the feature set")
        } catch let error as RegistryError {
            #expect(error == .missingFeatureSet(featureSet: head.lineage.featureSet, backbone: head.lineage.backbone,
                                                 backboneDescription: "external:toy, F_T 16"))
            #expect(error.description.contains(String(head.lineage.featureSet.prefix(12))))
            #expect(error.description.contains(String(head.lineage.backbone.prefix(12))))
        }
        #expect(try other.registry.list().isEmpty)
        // A truncated file is refused with the path.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: path + ".cut"))
        #expect(throws: RegistryError.self) { try source.registry.importHead(from: path + ".cut") }
    }

    @Test func gcKeepsWhatHeadsAndDatasetsUseAndCollectsTheRest() throws {
        let fixture = try RegistryFixture(targetSizes: [16, 4])
        let outcome = try fixture.fit()
        let head = try fixture.register("toys", outcome: outcome)
        let other = try #require(try fixture.store.allFeatureSets().first { $0.id != fixture.featureSet })
        let matrices = try fixture.store.cachedMatrices()
        #expect(matrices.count == 2, "the fit cached the test matrices of head2toe and the linear probe")

        // Default policy: datasets use both feature sets; only the probe's matrix is unused.
        let dry = try fixture.registry.collectGarbage()
        #expect(!dry.applied && dry.featureSets.isEmpty && dry.keptFeatureSets == 2)
        #expect(dry.matrices.map(\.reason) == ["no live head uses this selection"])
        #expect(dry.keptMatrices == 1)
        #expect(try fixture.store.cachedMatrices().count == 2, "a dry run changes nothing")

        // Heads only: the other target size goes, with its tiles, rows and segments.
        let applied = try fixture.registry.collectGarbage(policy: .headsOnly, apply: true)
        #expect(applied.featureSets.map(\.id) == [other.id])
        #expect(applied.featureSets[0].tileBytes > 0)
        #expect(try fixture.store.allFeatureSets().map(\.id) == [fixture.featureSet])
        #expect(try fixture.store.cachedMatrices().count == 1)
        #expect(try fixture.store.verify().ok)
        #expect(throws: StoreError.self) { try fixture.store.read(featureSet: other.id, examples: [ExampleID(name: "test-0")]) }
        // The head still predicts; a second gc finds nothing.
        #expect(try fixture.registry.evaluate(head, dataset: "toys", split: "test").metrics.accuracy == outcome.report.head2toe.testAccuracy)
        let again = try fixture.registry.collectGarbage(policy: .headsOnly, apply: true)
        #expect(again.featureSets.isEmpty && again.matrices.isEmpty)
        // Removing the only head frees its feature set under heads-only.
        try fixture.registry.remove(HeadReference(task: "toys", selector: .version(1)))
        #expect(try fixture.registry.collectGarbage(policy: .headsOnly).featureSets.map(\.id) == [fixture.featureSet])
    }
}
