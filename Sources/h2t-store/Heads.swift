import ArgumentParser
import Foundation
import H2TRegistry

/// `h2t-store heads`: list registered heads.
struct Heads: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List registered heads (filter by task, tag or alias; sort by a metric).",
        discussion: "Sort keys: \(HeadFilter.sortKeys.joined(separator: ", ")). Metrics sort best first, created newest first.")

    @Option(name: .long, help: "Only this task.") var task: String?
    @Option(name: .long, help: "Only heads with this tag: key=value, or key for any value (repeat to require several).") var tag: [String] = []
    @Option(name: .long, help: "Only heads an alias of this name points to (e.g. prod).") var alias: String?
    @Option(name: .long, help: "Sort key.") var sort: String?
    @Flag(name: .long, help: "Only the latest version of each task.") var latest = false
    @Option(name: .long, parsing: .unconditional, help: "Print at most N heads.") var limit: Int?

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.heads-output/1"
        var count: Int
        var heads: [ListingView]
    }

    func validate() throws {
        try checkRange("--limit", limit, .positiveCount)
    }

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let tags: [(key: String, value: String?)] = tag.map { text in
            guard let eq = text.firstIndex(of: "=") else { return (text, nil) }
            return (String(text[..<eq]), String(text[text.index(after: eq)...]))
        }
        var heads = try registry.list(HeadFilter(task: task, tags: tags, alias: alias, sort: sort, latestOnly: latest))
        let total = heads.count
        if let limit { heads = Array(heads.prefix(limit)) }
        if output.json { return try printJSON(Output(count: total, heads: heads.map(ListingView.init))) }
        if heads.isEmpty { return print("no heads") }
        print(table(["HEAD", "TEST", "CV", "PROBE TEST", "ALL TEST", "FEATURES", "F_T", "DATASET", "ALIASES", "TAGS", "CREATED"], heads.map { h in
            let e = h.entry
            return [e.reference, percent(e.testAccuracy), percent(e.cvAccuracy), percent(e.probeTestAccuracy),
                    percent(e.allFeaturesTestAccuracy), "\(e.inputCount)", "\(e.targetSize)", e.dataset,
                    h.aliases.joined(separator: ","), h.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                    String(e.createdAt.prefix(19))]
        }))
        if heads.count < total { print("(\(total - heads.count) more; raise --limit)") }
    }
}
