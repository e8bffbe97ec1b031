import Foundation
import H2TCore

/// Synthetic cached features with a planted class signal, for tests and benchmarks.
///
/// Activation-like: every value is non-negative (post-ReLU noise, `|N(0, 1)|`); a set of
/// `informative` columns, spread evenly over the taps, additionally carries
/// `signal · max(0, μ[class][column])` with `μ ~ N(0, 1)`. Everything comes from one `SplitMix64`.
public struct SyntheticFeatures: Sendable {
    /// The matrix (not normalised).
    public var features: FeatureMatrix
    /// Labels, cycling through the classes in a shuffled order.
    public var labels: [Int]
    /// The planted informative columns, ascending.
    public var informative: [Int]

    /// Generates `rows × (tapWidths.reduce(+))` features in `classCount` classes.
    public init(rows: Int, tapWidths: [Int], classCount: Int, informativeCount: Int, signal: Float, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        func uniform() -> Double { (Double(rng.next() >> 11) + 0.5) / 9_007_199_254_740_992.0 }
        func normal() -> Double { (-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform()) }
        let d = tapWidths.reduce(0, +)
        var taps: [TapColumns] = []
        var offset = 0
        for (i, width) in tapWidths.enumerated() {
            taps.append(TapColumns(name: "tap\(i)", offset: offset, width: width))
            offset += width
        }
        let stride = max(1, d / max(informativeCount, 1))
        let informative = (0..<min(informativeCount, d)).map { ($0 * stride + stride / 2) % d }
        var means = [Float](repeating: 0, count: classCount * informative.count)
        for i in means.indices { means[i] = Float(max(0, normal())) * signal }
        var labels = (0..<rows).map { $0 % classCount }
        rng.shuffle(&labels)
        var values = [Float](repeating: 0, count: rows * d)
        for i in values.indices { values[i] = Float(abs(normal())) }
        for r in 0..<rows {
            for (j, column) in informative.enumerated() {
                values[r * d + column] += means[labels[r] * informative.count + j]
            }
        }
        self.features = try! FeatureMatrix(rowCount: rows, columnCount: d, values: values, taps: taps)
        self.labels = labels
        self.informative = informative.sorted()
    }
}
