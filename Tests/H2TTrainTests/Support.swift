import H2TTrain

/// Independent (loop-based, Double) evaluation of the group-lasso pieces, for checking the solver.
enum Check {
    /// Gradient of the mean cross-entropy with respect to the weight rows (`d × K`) at `(w, b)`.
    static func gradient(_ x: FeatureMatrix, labels: [Int], k: Int, w: [Float], b: [Float]) -> [Double] {
        let n = x.rowCount, d = x.columnCount
        var grad = [Double](repeating: 0, count: d * k)
        for r in 0..<n {
            var z = [Double](repeating: 0, count: k)
            for c in 0..<k {
                var s = Double(b[c])
                for j in 0..<d { s += Double(x.values[r * d + j]) * Double(w[j * k + c]) }
                z[c] = s
            }
            let m = z.max()!
            let e = z.map { exp($0 - m) }
            let sum = e.reduce(0, +)
            for c in 0..<k {
                let g = (e[c] / sum - (labels[r] == c ? 1 : 0)) / Double(n)
                for j in 0..<d { grad[j * k + c] += Double(x.values[r * d + j]) * g }
            }
        }
        return grad
    }

    static func rowNorm(_ v: [Double], row: Int, k: Int) -> Double {
        (0..<k).map { v[row * k + $0] * v[row * k + $0] }.reduce(0, +).squareRoot()
    }

    static func rowNorm(_ v: [Float], row: Int, k: Int) -> Double {
        (0..<k).map { Double(v[row * k + $0]) * Double(v[row * k + $0]) }.reduce(0, +).squareRoot()
    }

    static func maxAbs(_ v: [Float]) -> Double { v.map { abs(Double($0)) }.max() ?? 0 }

    static func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Double {
        zip(a, b).map { abs(Double($0) - Double($1)) }.max() ?? 0
    }

    static func taps(_ widths: [Int]) -> [TapColumns] {
        var offset = 0
        return widths.enumerated().map { i, w in
            defer { offset += w }
            return TapColumns(name: "tap\(i)", offset: offset, width: w)
        }
    }

    /// Tight settings for comparisons with closed forms and the float64 reference.
    static let tight = GroupLassoSettings(inner: ProximalSettings(maxIterations: 20000, tolerance: 1e-7),
                                          kktTolerance: 0, maxOuterIterations: 50, minWorkingSetGrowth: 64)
}

import Foundation
