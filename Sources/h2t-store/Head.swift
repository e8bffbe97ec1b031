import ArgumentParser

/// `h2t-store head`: one head (show, diff, report, export, import).
struct Head: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect, compare, report, export or import a head (NAME, NAME@vN or NAME@alias).",
        subcommands: [HeadShow.self, HeadDiff.self, HeadReport.self, HeadExport.self, HeadImport.self])
}
