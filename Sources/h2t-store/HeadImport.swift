import ArgumentParser
import H2TRegistry

/// `h2t-store head import FILE`.
struct HeadImport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Register a head file as the next version of its task (the store must hold its feature set).")

    @Argument(help: "Head file written by `h2t-store head export`.") var file: String
    @Option(name: .customLong("as"), help: "Register under this task name instead of the file's.") var task: String?

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.head-import-output/1"
        var head: String
        var source: String
        var featureSet: String
    }

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let (original, _) = try HeadFile.read(file)
        let head = try registry.importHead(from: file, as: task)
        if output.json { return try printJSON(Output(head: head.reference, source: original.reference, featureSet: head.lineage.featureSet)) }
        print("imported \(original.reference) from \(file) as \(head.reference)")
    }
}
