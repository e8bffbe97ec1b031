import Foundation
import H2TTrain

/// The `train` section of h2t-bench: one fit with fixed hyper-parameters and the default CV
/// sweep on synthetic cached features, each compared with the numpy reference on the same features.
enum TrainBench {
    static func run(arguments: [String]) throws {
        let quick = arguments.contains("--quick")
        let rows = quick ? 400 : 1000
        let tapWidths = quick ? [Int](repeating: 200, count: 50) : [Int](repeating: 1000, count: 50)
        let data = SyntheticFeatures(rows: rows + 200, tapWidths: tapWidths, classCount: 10, informativeCount: 300,
                                     signal: 0.6, seed: 7)
        let d = data.features.columnCount
        let train = try FeatureMatrix(rowCount: rows, columnCount: d, values: Array(data.features.values[0..<(rows * d)]),
                                      taps: data.features.taps)
        let test = try FeatureMatrix(rowCount: 200, columnCount: d, values: Array(data.features.values[(rows * d)...]),
                                     taps: data.features.taps)
        let trainLabels = Array(data.labels[0..<rows]), testLabels = Array(data.labels[rows...])
        print("train bench: N=\(rows) D=\(d) K=10 informative=\(data.informative.count)")
        let clock = ContinuousClock()
        var normalized = train
        normalized.normalizeTaps()
        let t0 = clock.now
        let lmax = GroupLasso.lambdaMax(features: normalized, labels: trainLabels, classCount: 10)
        let path = try GroupLasso.path(features: normalized, labels: trainLabels, classCount: 10, lambdas: [0.25 * lmax])
        let t1 = clock.now
        let sel = path[0].selection(fraction: 0.01)
        let recovered = Set(sel).intersection(data.informative).count
        print("group lasso: \(t1 - t0), report \(path[0].report), recovered \(recovered)/\(data.informative.count) in top \(sel.count)")
        let t2 = clock.now
        let report = try Head2ToeFit.run(featureSets: [FeatureSetInput(name: "syn", train: train, test: test)],
                                         trainLabels: trainLabels, testLabels: testLabels, classCount: 10)
        let t3 = clock.now
        print("cv sweep: \(t3 - t2) timings \(report.timings)")
        print("head2toe cv \(report.head2toe.cvAccuracy) test \(report.head2toe.testAccuracy ?? -1) frac \(report.head2toe.fraction!) lambda \(report.head2toe.lambda!)")
        print("all cv \(report.allFeatures.cvAccuracy) test \(report.allFeatures.testAccuracy ?? -1)")
        print("probe cv \(report.linearProbe.cvAccuracy) test \(report.linearProbe.testAccuracy ?? -1)")
    }
}
