import ArgumentParser
import H2TCore
import Foundation
import H2TStore

/// `h2t-store export`: a split's features (all or selected columns) as a `.npy` matrix.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a dataset split's features (all or selected columns) to a .npy file.")

    @Option(name: .long, help: "Feature set id or prefix.") var featureSet: String
    @Option(name: .long, help: "Dataset name.") var dataset: String
    @Option(name: .long, help: "Split name.") var split: String
    @Option(name: .long, parsing: .unconditionalSingleValue, help: "Global column indices (default: all): --columns 17 4096, or repeat the option.")
    var columns: [Int] = []
    @Option(name: .long, help: "Output .npy path (float32, examples × features).") var out: String
    // `--columns` takes the one value after it even when it starts with a dash (so `--columns -1`
    // is a range error, not a missing value); the further values of `--columns 17 4096` then
    // arrive here, as positionals.
    @Argument(help: .hidden) var moreColumns: [String] = []

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    /// Every requested column: `--columns` values, then the values that followed the last one.
    var allColumns: [Int] {
        get throws {
            guard let first = moreColumns.first else { return columns }
            guard !columns.isEmpty else { throw ValidationError("unexpected argument '\(first)' (column indices follow --columns)") }
            return try columns + moreColumns.map { text in
                guard let column = Int(text) else { throw ValidationError("unexpected argument '\(text)' (not a column index for --columns)") }
                return column
            }
        }
    }

    func validate() throws {
        // The upper bound is the feature set's width, checked when it is read.
        try checkRange("--columns", try allColumns, .atLeast(0, "a global column index"))
    }

    func run() throws {
        let store = try storeOptions.open(create: false, parallelism: try threadOptions.parallelism)
        let columns = try allColumns
        let summary: NPYExportSummary
        do {
            summary = try store.exportNPY(featureSet: featureSet, dataset: dataset, split: split, columns: columns.isEmpty ? nil : columns, to: out)
        } catch let error as NPYExportError {
            throw ValidationError(error.description)
        }
        if output.json {
            try printJSON(["path": out, "rows": "\(summary.rows)", "cols": "\(summary.columns)"])
        } else {
            print("wrote \(summary.rows)×\(summary.columns) float32 to \(out)")
        }
    }
}
