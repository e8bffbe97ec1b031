import ArgumentParser
import Foundation
import H2TStore

/// `h2t-store export`: a split's features (all or selected columns) as a `.npy` matrix.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a dataset split's features (all or selected columns) to a .npy file.")

    @Option(name: .long, help: "Feature set id or prefix.") var featureSet: String
    @Option(name: .long, help: "Dataset name.") var dataset: String
    @Option(name: .long, help: "Split name.") var split: String
    @Option(name: .long, parsing: .upToNextOption, help: "Global column indices (default: all).") var columns: [Int] = []
    @Option(name: .long, help: "Output .npy path (float32, examples × features).") var out: String

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let store = try storeOptions.open(create: false)
        let matrix = try store.read(featureSet: featureSet, dataset: dataset, split: split, columns: columns.isEmpty ? nil : columns)
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(matrix.features.rows), \(matrix.features.cols)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
        data.append(contentsOf: Array(header.utf8))
        matrix.features.values.withUnsafeBytes { data.append(contentsOf: $0) }
        do { try data.write(to: URL(fileURLWithPath: out)) } catch {
            throw ValidationError("cannot write \(out): \(error.localizedDescription)")
        }
        if output.json {
            try printJSON(["path": out, "rows": "\(matrix.features.rows)", "cols": "\(matrix.features.cols)"])
        } else {
            print("wrote \(matrix.features.rows)×\(matrix.features.cols) float32 to \(out)")
        }
    }
}
