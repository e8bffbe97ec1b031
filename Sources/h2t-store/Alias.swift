import ArgumentParser
import H2TRegistry

/// `h2t-store alias`: movable names (`prod`, `staging`, ...) for head versions, with history.
struct Alias: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Point an alias at a head version, delete it, list aliases or show an alias's history.",
        subcommands: [Set.self, Delete.self, ListAliases.self, History.self])

    struct Output: Encodable {
        var schema = "h2t.alias-output/1"
        var aliases: [AliasState]?
        var history: [AliasEvent]?
        var event: AliasEvent?
    }

    /// `alias set REF ALIAS`.
    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Point ALIAS of REF's task at the version REF selects (NAME@vN, NAME@other-alias, NAME for latest).")
        @Argument(help: "Head reference.") var reference: String
        @Argument(help: "Alias name, e.g. prod.") var alias: String
        @OptionGroup var storeOptions: StoreOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let event = try openRegistry(storeOptions).setAlias(alias, to: try parseReference(reference))
            if output.json { return try printJSON(Output(event: event)) }
            print("\(event.task)@\(event.alias) -> v\(event.to!)" + (event.from.map { " (was v\($0))" } ?? " (new)"))
        }
    }

    /// `alias rm TASK ALIAS`.
    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete an alias (recorded in its history).")
        @Argument(help: "Task name.") var task: String
        @Argument(help: "Alias name.") var alias: String
        @OptionGroup var storeOptions: StoreOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let event = try openRegistry(storeOptions).deleteAlias(alias, task: task)
            if output.json { return try printJSON(Output(event: event)) }
            print("deleted \(task)@\(alias) (was v\(event.from.map(String.init) ?? "?"))")
        }
    }

    /// `alias ls [TASK]`.
    struct ListAliases: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List current aliases.")
        @Argument(help: "Only this task.") var task: String?
        @OptionGroup var storeOptions: StoreOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let aliases = try openRegistry(storeOptions).aliases(task: task)
            if output.json { return try printJSON(Output(aliases: aliases)) }
            if aliases.isEmpty { return print("no aliases") }
            print(table(["ALIAS", "VERSION", "MOVES", "UPDATED"], aliases.map { ["\($0.task)@\($0.alias)", "v\($0.version)", "\($0.seq)", $0.updatedAt] }))
        }
    }

    /// `alias history TASK ALIAS`.
    struct History: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every move of an alias, oldest first.")
        @Argument(help: "Task name.") var task: String
        @Argument(help: "Alias name.") var alias: String
        @OptionGroup var storeOptions: StoreOptions
        @OptionGroup var output: OutputOptions

        func run() throws {
            let registry = try openRegistry(storeOptions)
            let history = try registry.aliasHistory(task: task, alias: alias)
            if history.isEmpty {
                // Say why: unknown task or alias (with suggestions).
                _ = try registry.resolve(HeadReference(task: task, selector: .alias(alias)))
            }
            if output.json { return try printJSON(Output(history: history)) }
            print(table(["SEQ", "FROM", "TO", "AT", "BY"], history.map {
                ["\($0.seq)", $0.from.map { "v\($0)" } ?? "-", $0.to.map { "v\($0)" } ?? "(deleted)", $0.at, $0.actor]
            }))
        }
    }
}
