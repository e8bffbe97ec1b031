import ArgumentParser
import H2TRegistry

/// `h2t-store rm NAME@vN`.
struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a head version (refused while an alias points to it; its number is never reused).")

    @Argument(help: "NAME@vN (an explicit version).") var reference: String

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.rm-output/1"
        var removed: String
    }

    func run() throws {
        let ref = try parseReference(reference)
        guard case .version = ref.selector else {
            throw ValidationError("give an explicit version, e.g. \(ref.task)@v1 (removal never guesses which version)")
        }
        let removed = try openRegistry(storeOptions).remove(ref)
        if output.json { return try printJSON(Output(removed: removed.reference)) }
        print("removed \(removed.reference)")
    }
}
