// h2t-bench: benchmark sections, one file each; this file only dispatches.
import Foundation

let benchArguments = Array(CommandLine.arguments.dropFirst())
switch benchArguments.first {
case "train":
    try TrainBench.run(arguments: Array(benchArguments.dropFirst()))
default:
    print("usage: h2t-bench train [--quick] [--json]")
}
