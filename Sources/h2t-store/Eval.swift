import ArgumentParser
import H2TCore
import H2TRegistry

/// `h2t-store eval REF --dataset D --split S`.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Evaluate a head on a labelled stored split (accuracy, per-class accuracy, confusion matrix).")

    @Argument(help: "NAME, NAME@vN or NAME@alias.") var reference: String
    @Option(name: .long, help: "Dataset.") var dataset: String
    @Option(name: .long, help: "Split.") var split: String = "test"

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let registry = try openRegistry(storeOptions, parallelism: try threadOptions.parallelism)
        let head = try registry.head(try parseReference(reference))
        let evaluation = try registry.evaluate(head, dataset: dataset, split: split)
        if output.json { return try printJSON(evaluation) }
        print("\(head.reference) on \(dataset)/\(split): accuracy \(percent(evaluation.metrics.accuracy)) on \(evaluation.metrics.count) examples"
              + (evaluation.sameAsRecordedTest ? " (the split it was tested on at registration: \(percent(head.metrics.head.testAccuracy)))" : ""))
        print(table(["CLASS", "ACCURACY"], zip(head.classNames, evaluation.metrics.perClassAccuracy).map { [$0, percent($1)] }))
    }
}
