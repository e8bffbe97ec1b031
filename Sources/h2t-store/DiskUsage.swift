import ArgumentParser
import Foundation
import H2TStore

/// `h2t-store du`: bytes per feature set, tap and dataset, and the ratio against raw float32.
struct DiskUsage: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "du", abstract: "Show disk usage per feature set, tap and dataset.")

    @Flag(name: .long, help: "Also list every tap.")
    var taps = false

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let report = try storeOptions.open(create: false).diskUsage()
        if output.json { return try printJSON(report) }
        print("Store data in use: \(formatBytes(report.storeBytes))\n")
        print(table(["FEATURE SET", "F_T", "EXAMPLES", "FEATURES", "DTYPE", "STORED", "FLOAT32", "RATIO"], report.featureSets.map {
            [String($0.id.prefix(12)), "\($0.targetSize)", "\($0.rows)", "\($0.width)", $0.dtype, formatBytes($0.bytes),
             formatBytes($0.float32Bytes), String(format: "%.2fx", $0.ratio)]
        }))
        if taps {
            for fs in report.featureSets {
                print("\nTaps of \(fs.id.prefix(12))")
                print(table(["TAP", "FEATURES", "STORED", "RATIO"], fs.taps.map {
                    [$0.name, "\($0.width)", formatBytes($0.bytes), String(format: "%.2fx", $0.ratio)]
                }))
            }
        }
        print("\nDatasets")
        print(table(["DATASET", "EXAMPLES", "STORED (per feature set)"], report.datasets.map { d in
            [d.name, "\(d.examples)", d.byFeatureSet.map { "\($0.featureSet.prefix(12))=\(formatBytes($0.bytes))" }.joined(separator: " ")]
        }))
    }
}
