import ArgumentParser
import H2TRegistry

/// `h2t-store tag REF [key=value ...] [--remove key]`.
struct Tag: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Set, remove or show key=value tags of a head (search them with `heads --tag`).")

    @Argument(help: "NAME, NAME@vN or NAME@alias.") var reference: String
    @Argument(help: "Tags to set, key=value.") var assignments: [String] = []
    @Option(name: .long, help: "Tag key to remove (repeatable).") var remove: [String] = []

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.tag-output/1"
        var head: String
        var tags: [TagView]
    }

    func run() throws {
        var set: [String: String] = [:]
        for text in assignments {
            guard let eq = text.firstIndex(of: "="), eq != text.startIndex else { throw ValidationError("tag '\(text)' is not key=value") }
            set[String(text[..<eq])] = String(text[text.index(after: eq)...])
        }
        let ref = try parseReference(reference)
        let (version, tags) = try openRegistry(storeOptions).tag(ref, set: set, remove: remove)
        if output.json { return try printJSON(Output(head: "\(ref.task)@v\(version)", tags: TagView.list(tags))) }
        print("\(ref.task)@v\(version): " + (tags.isEmpty ? "no tags" : tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")))
    }
}
