// h2t-bench: benchmark sections, one file each; this file only dispatches.
import Foundation

let benchArguments = Array(CommandLine.arguments.dropFirst())
switch benchArguments.first {
case "train":
    try TrainBench.run(arguments: Array(benchArguments.dropFirst()))
case "store":
    try StoreBench.run(arguments: Array(benchArguments.dropFirst()))
case "codec":
    try StoreBench.run(arguments: ["codec"] + Array(benchArguments.dropFirst()))
case "registry":
    try RegistryBench.run(arguments: Array(benchArguments.dropFirst()))
case "read":
    try ReadBench.run(arguments: Array(benchArguments.dropFirst()))
case "map":
    try MapBench.run(arguments: Array(benchArguments.dropFirst()))
case "hash":
    try HashBench.run(arguments: Array(benchArguments.dropFirst()))
case "backbone":
    try BackboneBench.run(arguments: Array(benchArguments.dropFirst()))
default:
    print("usage: h2t-bench train [--quick] [--blas-study] [--no-reference] | train --kernels")
    print(StoreBench.usage)
    print(BackboneBench.usage)
    print(RegistryBench.usage)
    print(MapBench.usage)
    print(ReadBench.usage)
    print(HashBench.usage)
}
