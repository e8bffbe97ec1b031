import Foundation
import H2TStore

/// `h2t-bench read`: the Swift reader on an existing store, in process (no process start, no
/// output file), as the baseline of the Python reader's benchmark (`tools/bench-python.sh`).
/// Prints the median seconds of `--reps` reads of a split (all columns, or `--columns`) as JSON.
enum ReadBench {
    static let usage = "usage: h2t-bench read --store DIR --feature-set ID --dataset NAME --split NAME [--columns 1,2,3] [--reps N]"

    static func run(arguments: [String]) throws {
        var path = "", featureSet = "", dataset = "", split = "", columns: [Int]?, reps = 3
        var i = 0
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--store": path = value
            case "--feature-set": featureSet = value
            case "--dataset": dataset = value
            case "--split": split = value
            case "--columns": columns = value.split(separator: ",").compactMap { Int($0) }
            case "--reps": reps = max(1, Int(value) ?? reps)
            default: print(usage); return
            }
            i += 2
        }
        guard !path.isEmpty, !featureSet.isEmpty, !dataset.isEmpty, !split.isEmpty else { print(usage); return }
        let store = try FeatureStore(path: path, create: false, readOnly: true)
        var times: [Double] = []
        var values = 0
        for _ in 0..<reps {
            let start = DispatchTime.now().uptimeNanoseconds
            let matrix = try store.read(featureSet: featureSet, dataset: dataset, split: split, columns: columns)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            values = matrix.features.values.count
        }
        let median = times.sorted()[times.count / 2]
        print("{\"seconds\":\(median),\"values\":\(values)}")
    }
}
