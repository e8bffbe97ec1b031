import Foundation
import H2TCore
import H2TPipeline
import H2TRegistry
@_spi(Testing) import H2TStore
import H2TTrain
import Testing

@Suite("Registry")
struct RegistryTests {
    @Test func registersAFitWithLineageAndNumbersVersions() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        let first = try fixture.register("toys", outcome: outcome)
        let second = try fixture.register("toys", outcome: outcome)
        #expect(first.version == 1 && second.version == 2)
        let stored = try fixture.registry.head("toys@v1")
        #expect(stored == first)
        #expect(stored.weights == outcome.report.head2toe.head.weights)
        // The body's weights come back through `CanonicalJSON.splitTrailingFloats`, bit for bit.
        #expect(stored.weights.map(\.bitPattern) == outcome.report.head2toe.head.weights.map(\.bitPattern))
        #expect(stored.selectedIndices == outcome.report.head2toe.selectedIndices)
        #expect(stored.lineage.featureSet == fixture.featureSet)
        #expect(stored.lineage.train.digest == (try fixture.store.splitDigest(dataset: "toys", split: "train")))
        #expect(stored.lineage.test?.digest == (try fixture.store.splitDigest(dataset: "toys", split: "test")))
        #expect(stored.metrics.head.testAccuracy == outcome.report.head2toe.testAccuracy)
        #expect(stored.metrics.linearProbe?.cvAccuracy == outcome.report.linearProbe.cvAccuracy)
        #expect(stored.cvCurves.count == outcome.report.cvTable.count)
        #expect(stored.testMetrics[FitMethod.head2toe.rawValue]?.confusion == outcome.report.head2toe.test?.confusion)
        #expect(try fixture.registry.head("toys").version == 2)
        // Per-tap grouping agrees with the trainer's.
        #expect(stored.selection.map(\.tap) == outcome.report.head2toe.selectedPerTap.map(\.tap))
        #expect(stored.selection.map(\.indices) == outcome.report.head2toe.selectedPerTap.map(\.indices))
    }

    /// A damaged body (here a weight that is not a JSON number, which the fast weights reader
    /// refuses and JSONDecoder then rejects) is one line naming the record, not a bare
    /// `DecodingError`.
    @Test func aDamagedHeadBodyIsOneLineNamingTheRecord() throws {
        let fixture = try RegistryFixture()
        try fixture.register("toys")
        let env = fixture.store.rawEnvironment
        let table = env.table("registry")
        try env.write { txn in
            var found: ([UInt8], [UInt8])?
            try txn.scan(table, prefix: []) { key, value in
                if value.starts(with: Array(#"{"bias""#.utf8)) { found = (Array(key), Array(value)) }
                return found == nil
            }
            let (key, value) = try #require(found)
            let damaged = Array(value.dropLast(2)) + Array(",1.e5]}".utf8)
            try txn.put(table, key, damaged)
        }
        #expect {
            try fixture.registry.head("toys@v1")
        } throws: { error in
            "\(error)" == "invalid head: registry/toys@v1/body is damaged: not valid JSON"
        }
    }

    /// `fit --alias` registers the version and moves the alias in one transaction: a failed (or
    /// killed) commit leaves neither, and a commit that lands holds both.
    @Test func registerWithAnAliasIsOneTransaction() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        let lineage = outcome.lineage
        let draft = try HeadDraft(task: "toys", report: outcome.report, classNames: outcome.classNames, lineage: lineage, store: fixture.store)
        let path = fixture.store.path
        defer { LMDBFaults.disarm(path: path) }
        LMDBFaults.arm("mdb_txn_commit", path: path, code: 5 /* EIO */)
        #expect(throws: LMDBError.self) { try fixture.registry.register(draft, alias: "prod") }
        #expect(throws: RegistryError.self) { try fixture.registry.head("toys") }
        #expect(try fixture.registry.aliases(task: "toys").isEmpty)
        // The commit after the registration's would be a second transaction's: it must not be needed.
        LMDBFaults.arm("mdb_txn_commit", path: path, code: 5, skip: 1)
        let record = try fixture.registry.register(draft, alias: "prod")
        #expect(record.version == 1)
        #expect(try fixture.registry.aliases(task: "toys").map(\.version) == [1])
        #expect(try fixture.registry.head("toys@prod").version == 1)
        #expect(try fixture.registry.aliasHistory(task: "toys", alias: "prod").map(\.to) == [1])
        #expect(throws: RegistryError.self) { try fixture.registry.register(draft, alias: "bad alias!") }
    }

    /// `fit --report-out` writes the outcome flat: the lineage's fields sit next to `report`, as
    /// before the lineage had a type of its own, and the file reads back.
    @Test func reportOutKeepsTheLineageFlat() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        let json = try FitReport.jsonEncoder().encode(outcome)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(Set(object.keys) == ["report", "feature_sets", "backbone", "class_names", "read_seconds", "test_seconds",
                                     "dataset", "train_split", "train_digest", "train_count", "test_split", "test_digest"])
        #expect(object["train_digest"] as? String == outcome.lineage.trainDigest)
        let decoded = try FitReport.jsonDecoder().decode(FitOutcome.self, from: json)
        #expect(decoded.lineage == outcome.lineage && decoded.classNames == outcome.classNames)
    }

    @Test func unknownNamesVersionsAndAliasesSuggestTheNearest() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        try fixture.register("flowers", outcome: outcome)
        try fixture.register("flowers", outcome: outcome)
        try fixture.registry.setAlias("prod", to: HeadReference(task: "flowers", selector: .version(1)))

        #expect(throws: RegistryError.unknownTask("flower", suggestion: "flowers")) { try fixture.registry.head("flower") }
        #expect(throws: RegistryError.unknownTask("zzzzzzzz", suggestion: nil)) { try fixture.registry.head("zzzzzzzz") }
        #expect(throws: RegistryError.unknownVersion(task: "flowers", version: 7, available: [1, 2])) { try fixture.registry.head("flowers@v7") }
        #expect(throws: RegistryError.unknownAlias(task: "flowers", alias: "prd", suggestion: "prod", known: ["prod"])) {
            try fixture.registry.head("flowers@prd")
        }
        let message = RegistryError.unknownTask("flower", suggestion: "flowers").description
        #expect(message.contains("did you mean 'flowers'"))
        #expect(RegistryError.unknownVersion(task: "flowers", version: 7, available: [1, 2]).description.contains("did you mean v2?"))
    }

    @Test func aliasesMoveWithHistoryAndRemovalRefusesToOrphanThem() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        for _ in 0..<3 { try fixture.register("toys", outcome: outcome) }
        let r = fixture.registry
        try r.setAlias("prod", to: HeadReference(task: "toys", selector: .version(1)))
        try r.setAlias("prod", to: HeadReference(task: "toys", selector: .version(3)))
        try r.setAlias("staging", to: HeadReference(task: "toys", selector: .version(2)))
        #expect(try r.head("toys@prod").version == 3)
        #expect(try r.aliasHistory(task: "toys", alias: "prod").map(\.to) == [1, 3])
        #expect(try r.aliasHistory(task: "toys", alias: "prod").map(\.from) == [nil, 1])

        #expect(throws: RegistryError.aliasedVersion(task: "toys", version: 3, aliases: ["prod"])) {
            try r.remove(HeadReference(task: "toys", selector: .version(3)))
        }
        try r.remove(HeadReference(task: "toys", selector: .version(1)))
        // An alias cannot be pointed at a removed version; the lookup says it was removed.
        #expect(throws: RegistryError.removedVersion(task: "toys", version: 1, available: [2, 3])) {
            try r.setAlias("prod", to: HeadReference(task: "toys", selector: .version(1)))
        }
        #expect(throws: RegistryError.removedVersion(task: "toys", version: 1, available: [2, 3])) { try r.head("toys@v1") }
        // Numbers are never reused.
        #expect(try fixture.register("toys", outcome: outcome).version == 4)
        try r.deleteAlias("prod", task: "toys")
        #expect(try r.aliasHistory(task: "toys", alias: "prod").map(\.to) == [1, 3, nil])
        #expect(throws: RegistryError.self) { try r.head("toys@prod") }
        try r.remove(HeadReference(task: "toys", selector: .version(3)))
        #expect(try r.list().map(\.entry.version) == [2, 4])
    }

    @Test func tagsAreSearchableAndListsFilterAndSort() throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        try fixture.register("a", outcome: outcome, tags: ["team": "vision", "stage": "dev"])
        try fixture.register("b", outcome: outcome, tags: ["team": "audio"])
        try fixture.register("b", outcome: outcome)
        let r = fixture.registry
        #expect(try r.list(HeadFilter(tags: [("team", "vision")])).map(\.entry.reference) == ["a@v1"])
        #expect(try r.list(HeadFilter(tags: [("team", nil)])).map(\.entry.reference) == ["a@v1", "b@v1"])
        try r.tag(HeadReference(task: "b"), set: ["team": "vision"])
        #expect(try r.list(HeadFilter(tags: [("team", "vision")])).map(\.entry.reference) == ["a@v1", "b@v2"])
        try r.tag(HeadReference(task: "a", selector: .version(1)), set: ["team": "audio"], remove: ["stage"])
        #expect(try r.tags(HeadReference(task: "a")) == ["team": "audio"])
        #expect(try r.list(HeadFilter(tags: [("team", "vision")])).map(\.entry.reference) == ["b@v2"])
        #expect(try r.list(HeadFilter(task: "b")).map(\.entry.version) == [1, 2])
        #expect(try r.list(HeadFilter(latestOnly: true)).map(\.entry.reference) == ["a@v1", "b@v2"])
        try r.setAlias("prod", to: HeadReference(task: "b", selector: .version(1)))
        let byAlias = try r.list(HeadFilter(alias: "prod"))
        #expect(byAlias.map(\.entry.reference) == ["b@v1"] && byAlias[0].aliases == ["prod"])
        #expect(throws: RegistryError.self) { try r.list(HeadFilter(sort: "bogus")) }
        #expect(try r.list(HeadFilter(sort: "created")).first?.entry.reference == "b@v2")
    }

    @Test func concurrentRegistrationsGetDistinctVersions() async throws {
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        let record = try fixture.register("toys", outcome: outcome)
        let draft = record.draft
        let registry = fixture.registry
        let versions = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 { group.addTask { try registry.register(draft).version } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(versions.sorted() == Array(2...9))
    }

    @Test func draftsWithBadShapesAreRefused() throws {
        let fixture = try RegistryFixture()
        var draft = try fixture.register("toys").draft
        draft.weights.removeLast()
        #expect(throws: RegistryError.self) { try fixture.registry.register(draft) }
        draft = try fixture.registry.head("toys").draft
        draft.selection[0].indices = [draft.selection[0].width]
        #expect(throws: RegistryError.self) { try fixture.registry.register(draft) }
    }
}
