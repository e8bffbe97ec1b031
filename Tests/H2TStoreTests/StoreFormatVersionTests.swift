import Foundation
import H2TCore
@_spi(Testing) import H2TStore
import Testing

/// Store format 2: the pooling rule is part of a feature set's identity; version-1 stores are
/// read and written without changing their ids or their format record.
@Suite("Store format versions and the pooling rule")
struct StoreFormatVersionTests {
    static let otherRule = PoolingRule(name: "head2toe-avgpool", version: 2)

    @Test func theDefaultRuleIsOmittedAndAnyOtherRuleChangesTheID() throws {
        let backbone = toyBackbone()
        let backboneID = try backbone.identity()
        let v1 = FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 16)
        let explicitV1 = FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 16, poolingRule: .head2toeAvgPool)
        let v2 = FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 16, poolingRule: Self.otherRule)
        let v1Text = String(decoding: try CanonicalJSON.encode(v1), as: UTF8.self)
        let v2Text = String(decoding: try CanonicalJSON.encode(v2), as: UTF8.self)
        #expect(!v1Text.contains("poolingRule"))
        #expect(v2Text.contains(#","poolingRule":{"name":"head2toe-avgpool","version":2},"#))
        #expect(try explicitV1.identity() == v1.identity())
        #expect(try v2.identity() != v1.identity())
        // Read back: absent means v1.
        #expect(try CanonicalJSON.decode(FeatureSetManifest.self, from: Array(v1Text.utf8)).poolingRule == .head2toeAvgPool)
        #expect(try CanonicalJSON.decode(FeatureSetManifest.self, from: Array(v2Text.utf8)).poolingRule == Self.otherRule)
        // Features of a rule this build does not implement cannot be extended.
        #expect(try v1.pooling() == Head2ToePooling(targetSize: 16))
        do {
            _ = try v2.pooling()
            Issue.record("an unimplemented pooling rule was applied")
        } catch {
            #expect("\(error)".contains("head2toe-avgpool v2"))
        }
    }

    @Test func newStoresAreVersion2AndVersion1StoresStayVersion1UntilAnotherRuleIsStored() throws {
        let dir = TemporaryDirectory()
        let backbone = toyBackbone()
        var fsID = ""
        do {
            let store = try FeatureStore(path: dir.file("store"))
            #expect(try store.storedFormatVersion() == 2)
            // Make it a version-1 store, as written by the builds before format 2.
            let meta = store.rawEnvironment.table("meta")
            try store.rawEnvironment.write { try $0.put(meta, Array("format".utf8), [1, 0, 0, 0]) }
        }
        do {
            let store = try FeatureStore(path: dir.file("store"))
            #expect(try store.storedFormatVersion() == 1, "opening for writing does not upgrade")
            let backboneID = try store.register(backbone: backbone)
            fsID = try store.register(featureSet: FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 16))
            #expect(try store.storedFormatVersion() == 1, "a rule-v1 feature set is format-1 content")
            #expect(try store.featureSet(fsID).manifest.poolingRule == .head2toeAvgPool)
            let other = try store.register(featureSet: FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 16,
                                                                          poolingRule: Self.otherRule))
            #expect(other != fsID)
            #expect(try store.storedFormatVersion() == 2)
            #expect(try store.allFeatureSets().count == 2)
        }
        // Reopened read-only, both feature sets are there with their rules.
        let store = try FeatureStore(path: dir.file("store"), readOnly: true)
        #expect(Set(try store.allFeatureSets().map(\.manifest.poolingRule)) == [.head2toeAvgPool, Self.otherRule])
        #expect(try store.featureSet(fsID).id == fsID)
    }

    @Test func aStoreOfAnUnknownVersionNamesTheVersionsThisBuildReads() throws {
        let dir = TemporaryDirectory()
        do {
            let store = try FeatureStore(path: dir.file("store"))
            let meta = store.rawEnvironment.table("meta")
            try store.rawEnvironment.write { try $0.put(meta, Array("format".utf8), [3, 0, 0, 0]) }
        }
        do {
            _ = try FeatureStore(path: dir.file("store"))
            Issue.record("a format-3 store was opened")
        } catch {
            #expect("\(error)".contains("format version 3; this h2t-store reads versions 1 to 2"))
        }
    }
}
