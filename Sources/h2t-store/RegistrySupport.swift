import ArgumentParser
import Foundation
import H2TCore
import H2TRegistry
import H2TStore
import H2TTrain

/// Opens the registry of the store the options name (never creates a store).
func openRegistry(_ options: StoreOptions, parallelism: Parallelism = .default) throws -> Registry {
    try Registry(store: try options.open(create: false, parallelism: parallelism))
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

/// A head as printed by `head show --json` (`schemas/head-show-output.schema.json`): the record's
/// fields flat, with its reference, tags and aliases; weights and bias only on request.
struct HeadView: Encodable {
    var head: HeadRecord
    var tags: [TagView]
    var aliases: [String]
    var includeWeights: Bool

    init(_ head: HeadRecord, tags: [String: String], aliases: [String], includeWeights: Bool) {
        self.head = head
        self.tags = TagView.list(tags)
        self.aliases = aliases
        self.includeWeights = includeWeights
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: HeadField.self)
        try container.encode("h2t.head-view/1", forKey: HeadField("schema"))
        try container.encode(head.version, forKey: HeadField("version"))
        try container.encode(head.reference, forKey: HeadField("reference"))
        try container.encode(head.createdAt, forKey: HeadField("createdAt"))
        try container.encode(head.inputCount, forKey: HeadField("inputCount"))
        try container.encode(tags, forKey: HeadField("tags"))
        try container.encode(aliases, forKey: HeadField("aliases"))
        try head.model.encodeFields(into: &container, tensors: includeWeights)
    }
}

