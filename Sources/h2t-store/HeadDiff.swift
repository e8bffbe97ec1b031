import ArgumentParser
import H2TRegistry

/// `h2t-store head diff A B`.
struct HeadDiff: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "diff", abstract: "Compare two heads: hyper-parameters, metrics, overlap of selected features per tap.")

    @Argument(help: "First head reference.") var a: String
    @Argument(help: "Second head reference.") var b: String

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let diff = HeadComparison(try registry.head(try parseReference(a)), try registry.head(try parseReference(b)))
        if output.json { return try printJSON(diff) }
        print("\(diff.a) vs \(diff.b)" + (diff.sameFeatureSet ? "" : "  (different feature sets: overlap is by tap and index)"))
        if !diff.hyperParameters.isEmpty {
            print("\nhyper-parameters")
            print(table(["NAME", diff.a, diff.b], diff.hyperParameters.map { [$0.name, $0.a, $0.b] }))
        }
        print("\nmetrics")
        print(table(["METRIC", diff.a, diff.b, "Δ"], diff.metrics.map {
            [$0.name, percent($0.a), percent($0.b), $0.delta.map { String(format: "%+.2f pts", $0 * 100) } ?? "-"]
        }))
        print("\nselected features per tap (Jaccard overlap)")
        print(table(["TAP", "ORDER", "ONLY A", "BOTH", "ONLY B", "JACCARD"], diff.taps.map {
            [$0.tap, "\($0.order)", "\($0.onlyA)", "\($0.both)", "\($0.onlyB)", String(format: "%.2f", $0.jaccard)]
        }))
        print(String(format: "\ntotal: %d shared of %d and %d (Jaccard %.2f)", diff.sharedFeatures, diff.featuresA, diff.featuresB, diff.jaccard))
    }
}
