import ArgumentParser
import Foundation
import H2TCore
import H2TStore

/// `h2t-store verify`: re-reads every tile and checks checksums and counts.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Re-read every tile, check checksums and counts; exit 1 on any problem.")

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var progressOptions: ProgressOptions

    func run() throws {
        let store = try storeOptions.open(create: false, parallelism: try threadOptions.parallelism)
        let report = try store.verify(progress: ProgressReporter(label: "verify", unit: "tiles", enabled: progressOptions.reports(json: output.json)))
        if output.json {
            try printJSON(report)
        } else {
            print("checked \(report.featureSets) feature sets, \(report.tilesChecked) tiles, \(report.valuesChecked) values, \(report.splits) dataset splits")
            for problem in report.problems { print("problem: \(problem)") }
            print(report.ok ? "ok" : "\(report.problems.count) problems")
        }
        if !report.ok { throw ExitCode(1) }
    }
}
