import Foundation
import H2TRegistry
@_spi(Testing) import H2TStore
import Testing

/// Garbage collection asks the store for data left without a manifest (a collection interrupted
/// between deleting a manifest and its data) and has the store delete it.
@Suite("Garbage collection of orphaned feature data")
struct GarbageOrphanTests {
    @Test func dataWithoutAManifestIsReportedByPrefixAndCollected() throws {
        let fixture = try RegistryFixture(targetSizes: [16, 4])
        let other = try #require(try fixture.store.allFeatureSets().first { $0.id != fixture.featureSet })
        let tileBytes = try fixture.store.tileBytes(featureSet: other.id)
        #expect(tileBytes > 0)
        #expect(try fixture.store.featureSetsHoldingDatasetExamples([other.id, fixture.featureSet]) == [other.id, fixture.featureSet])
        #expect(try fixture.store.orphanedFeatureData().isEmpty)

        // The manifest goes, the data stays (as after a crash inside `deleteFeatureSet`).
        let env = fixture.store.rawEnvironment
        try env.write { txn in _ = try txn.delete(env.table("featuresets"), Array(other.id.utf8)) }
        let orphans = try fixture.store.orphanedFeatureData()
        #expect(orphans.map(\.keyPrefix) == [String(other.id.prefix(32))])
        #expect(orphans.map(\.tileBytes) == [tileBytes])

        let dry = try fixture.registry.collectGarbage()
        #expect(dry.featureSets.map(\.id) == [String(other.id.prefix(32))])
        #expect(dry.featureSets.first?.reason == "data without a feature set manifest (an interrupted collection)")
        #expect(dry.featureSets.first?.tileBytes == tileBytes)
        #expect(try fixture.store.orphanedFeatureData().count == 1, "a dry run changes nothing")

        let applied = try fixture.registry.collectGarbage(apply: true)
        #expect(applied.featureSets.map(\.id) == [String(other.id.prefix(32))])
        #expect(try fixture.store.orphanedFeatureData().isEmpty)
        #expect(try fixture.store.tileBytes(featureSet: other.id) == 0)
        #expect(try fixture.store.verify().ok)
        #expect(try fixture.store.allFeatureSets().map(\.id) == [fixture.featureSet])
        // Ids are checked before anything is deleted: an empty or malformed one would be a prefix
        // of every key.
        #expect(throws: StoreError.self) { try fixture.store.deleteOrphanedFeatureData(keyPrefix: "not hex") }
        #expect(throws: StoreError.self) { try fixture.store.deleteFeatureSet("", check: { _ in }) }
        #expect(throws: StoreError.self) { try fixture.store.deleteFeatureSet(String(fixture.featureSet.prefix(32)), check: { _ in }) }
        #expect(throws: StoreError.self) { _ = try fixture.store.tileBytes(featureSet: "3fa1") }
        #expect(try fixture.store.tileBytes(featureSet: fixture.featureSet) > 0)
        #expect(try fixture.store.verify().ok)
    }
}
