import Foundation
import H2TRegistry
import H2TStore
import Testing

/// The format documents are normative for readers in other languages: the tables they list, and
/// which layer owns each, must be the code's.
@Suite("Format documents match the code")
struct FormatDocumentTests {
    static let schemas = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("schemas")

    /// The first-column names (`` `name` ``) of the Markdown table whose header starts with `| table |`.
    static func tableNames(in document: String) throws -> [String] {
        let text = try String(contentsOf: schemas.appendingPathComponent(document), encoding: .utf8)
        var names: [String] = []
        var inTable = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("| table |") { inTable = true; continue }
            guard inTable else { continue }
            guard line.hasPrefix("|") else { inTable = false; continue }
            let cell = line.split(separator: "|", omittingEmptySubsequences: false)[1].trimmingCharacters(in: .whitespaces)
            guard cell.hasPrefix("`"), cell.hasSuffix("`") else { continue } // the `---` row
            let name = String(cell.dropFirst().dropLast())
            if names.last != name { names.append(name) }
        }
        return names
    }

    @Test func storeFormatListsTheStoresTablesInOrder() throws {
        let documented = try Self.tableNames(in: "store-format.md")
        #expect(documented == FeatureStore.tableNames)
        #expect(documented.count == 12)
        let text = try String(contentsOf: Self.schemas.appendingPathComponent("store-format.md"), encoding: .utf8)
        #expect(text.contains("feature store's twelve **named databases**"))
        #expect(text.contains("`max_dbs = \(FeatureStore.maxTables)`"))
        // The registry's tables are named there as the registry's, not as the store's.
        #expect(text.contains("`" + Registry.tableNames.joined(separator: "`, `").replacingOccurrences(of: ", `tags", with: " and\n`tags") + "`"))
    }

    @Test func registryFormatListsTheRegistrysTables() throws {
        let documented = try Self.tableNames(in: "registry-format.md")
        #expect(documented == Registry.tableNames)
        // One owner per table, and room for both layers.
        #expect(Set(documented).isDisjoint(with: FeatureStore.tableNames))
        #expect(FeatureStore.tableNames.count + Registry.tableNames.count <= FeatureStore.maxTables)
    }

    /// A store opened without the registry has only the store's tables; opening the registry
    /// creates its own, and a foreign layer cannot take over a store table.
    @Test func theRegistryCreatesItsTablesAndCannotTakeTheStores() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-format-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try FeatureStore(path: dir)
            #expect(throws: StoreError.self) { _ = try store.companionTables(["tiles"]) }
        }
        do {
            let readOnly = try FeatureStore(path: dir, readOnly: true)
            #expect(throws: StoreError.self) { _ = try Registry(store: readOnly) }
        }
        do {
            let store = try FeatureStore(path: dir)
            let registry = try Registry(store: store)
            #expect(try registry.tasks().isEmpty)
        }
        let readOnly = try FeatureStore(path: dir, readOnly: true)
        #expect(try Registry(store: readOnly).tasks().isEmpty)
    }
}
