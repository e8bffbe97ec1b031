import ArgumentParser
import Foundation
import H2TRegistry
import H2TStore
import H2TTrain

/// Opens the registry of the store the options name (never creates a store).
func openRegistry(_ options: StoreOptions) throws -> Registry {
    try Registry(store: try options.open(create: false))
}

/// Parses a head reference argument into a one-line validation error on bad syntax.
func parseReference(_ text: String) throws -> HeadReference {
    do { return try HeadReference(parsing: text) } catch { throw ValidationError(error.description) }
}

/// `0.8731` as `87.31%`; `-` for none.
func percent(_ value: Double?) -> String {
    guard let value else { return "-" }
    return String(format: "%.2f%%", value * 100)
}

/// One tag in `--json` outputs (a list, not a map keyed by user names).
struct TagView: Encodable {
    var key: String
    var value: String

    static func list(_ tags: [String: String]) -> [TagView] { tags.sorted { $0.key < $1.key }.map { TagView(key: $0.key, value: $0.value) } }
}

/// A listed head in `heads --json`.
struct ListingView: Encodable {
    var entry: HeadEntry
    var tags: [TagView]
    var aliases: [String]

    init(_ listing: HeadListing) {
        entry = listing.entry
        tags = TagView.list(listing.tags)
        aliases = listing.aliases
    }
}

/// A head as printed by `head show --json` (weights only on request).
struct HeadView: Encodable {
    var schema = "h2t.head-view/1"
    var task: String
    var version: Int
    var reference: String
    var createdAt: String
    var classNames: [String]
    var inputCount: Int
    var selection: [TapIndices]
    var normalization: NormalizationRule
    var hyperParameters: HyperParameters
    var metrics: HeadMetrics
    var cvCurves: [CVPoint]
    var testMetrics: [String: ClassificationMetrics]
    var lineage: HeadLineage
    var tags: [TagView]
    var aliases: [String]
    var weights: [Float]?
    var bias: [Float]?

    init(_ head: HeadRecord, tags: [String: String], aliases: [String], includeWeights: Bool) {
        task = head.task
        version = head.version
        reference = head.reference
        createdAt = head.createdAt
        classNames = head.classNames
        inputCount = head.inputCount
        selection = head.selection
        normalization = head.normalization
        hyperParameters = head.hyperParameters
        metrics = head.metrics
        cvCurves = head.cvCurves
        testMetrics = head.testMetrics
        lineage = head.lineage
        self.tags = TagView.list(tags)
        self.aliases = aliases
        weights = includeWeights ? head.weights : nil
        bias = includeWeights ? head.bias : nil
    }
}

