import Foundation
import H2TTrain
import Testing

@Suite("H2TTrain solver")
struct SolverTests {
    @Test("group soft-threshold is the closed-form prox of t·‖v‖₂")
    func groupSoftThreshold() {
        var w: [Float] = [3, 4, 0.3, 0.4, 0, 0]
        w.withUnsafeMutableBufferPointer { GroupSoftThreshold.apply($0.baseAddress!, rows: 3, columns: 2, threshold: 1) }
        // ‖(3,4)‖ = 5 → scaled by 1 − 1/5; ‖(0.3,0.4)‖ = 0.5 ≤ 1 → zero; zero stays zero.
        #expect(abs(w[0] - 2.4) < 1e-6 && abs(w[1] - 3.2) < 1e-6)
        #expect(w[2] == 0 && w[3] == 0 && w[4] == 0 && w[5] == 0)
    }

    /// Orthogonal design: column `j` is `±c_j` on its own group of examples (+ for class 0, − for
    /// class 1, balanced) and 0 elsewhere. Each example's loss is `log(1 + exp(−c_j δ_j))` with
    /// `δ_j = W_j0 − W_j1`; the bias stays at its symmetric optimum, the rows decouple, and the
    /// stationarity condition gives `W_j = (a_j, −a_j)` with
    /// `a_j = ln((1 − q_j)/q_j) / (2 c_j)`, `q_j = λ N / (√2 n_j c_j)`, and `W_j = 0` when `q_j ≥ 1/2`.
    @Test("orthogonal design: closed-form group-lasso solution", arguments: [0.25, 0.1, 0.4])
    func orthogonalDesign(lambda: Double) throws {
        let scales: [Float] = [1, 2, 0.5], sizes = [20, 20, 40]
        let n = sizes.reduce(0, +)
        var values = [Float](repeating: 0, count: n * 3), labels: [Int] = []
        var row = 0
        for (j, size) in sizes.enumerated() {
            for i in 0..<size {
                let label = i % 2
                values[row * 3 + j] = label == 0 ? scales[j] : -scales[j]
                labels.append(label)
                row += 1
            }
        }
        let x = try FeatureMatrix(rowCount: n, columnCount: 3, values: values, taps: Check.taps([3]))
        let solution = try #require(try GroupLasso.path(features: x, labels: labels, classCount: 2, lambdas: [lambda],
                                                        settings: Check.tight).first)
        for j in 0..<3 {
            let q = lambda * Double(n) / (2.0.squareRoot() * Double(sizes[j]) * Double(scales[j]))
            let expected = q >= 0.5 ? 0 : log((1 - q) / q) / (2 * Double(scales[j]))
            #expect(abs(Double(solution.weights[j * 2]) - expected) < 1e-3 * max(1, expected), "row \(j)")
            #expect(abs(Double(solution.weights[j * 2 + 1]) + expected) < 1e-3 * max(1, expected), "row \(j)")
            if expected == 0 { #expect(solution.weights[j * 2] == 0 && solution.weights[j * 2 + 1] == 0) }
        }
        #expect(solution.report.converged)
    }

    @Test("λ ≥ λ_max gives W = 0 and just below it a non-zero row")
    func lambdaMaxBoundary() throws {
        let data = SyntheticFeatures(rows: 60, tapWidths: [10, 10], classCount: 3, informativeCount: 4, signal: 1, seed: 3)
        var x = data.features
        x.normalizeTaps()
        let lmax = GroupLasso.lambdaMax(features: x, labels: data.labels, classCount: 3)
        let path = try GroupLasso.path(features: x, labels: data.labels, classCount: 3, lambdas: [lmax * 1.001, lmax * 0.9],
                                       settings: Check.tight)
        #expect(path[0].weights.allSatisfy { $0 == 0 })
        #expect(path[1].report.activeRows >= 1)
    }

    @Test("KKT conditions hold at the working-set solution")
    func kkt() throws {
        let data = SyntheticFeatures(rows: 80, tapWidths: [30, 20, 50], classCount: 4, informativeCount: 10, signal: 0.8, seed: 11)
        var x = data.features
        x.normalizeTaps()
        let lmax = GroupLasso.lambdaMax(features: x, labels: data.labels, classCount: 4)
        // Small growth so that several working-set rounds are needed.
        var settings = Check.tight
        settings.minWorkingSetGrowth = 4
        for solution in try GroupLasso.path(features: x, labels: data.labels, classCount: 4, lambdas: [0.6 * lmax, 0.3 * lmax],
                                            settings: settings) {
            let lambda = solution.lambda
            let grad = Check.gradient(x, labels: data.labels, k: 4, w: solution.weights, b: solution.bias)
            var active = 0
            for i in 0..<x.columnCount {
                let norm = Check.rowNorm(solution.weights, row: i, k: 4)
                if norm == 0 {
                    #expect(Check.rowNorm(grad, row: i, k: 4) <= lambda * (1 + 2e-3), "zero row \(i)")
                } else {
                    active += 1
                    var residual = 0.0
                    for c in 0..<4 {
                        let r = grad[i * 4 + c] + lambda * Double(solution.weights[i * 4 + c]) / norm
                        residual += r * r
                    }
                    #expect(residual.squareRoot() <= 2e-3 * lambda, "active row \(i)")
                }
            }
            // Bias is unpenalised: its gradient vanishes.
            #expect(active > 0 && active < x.columnCount)
            #expect(solution.report.converged)
        }
    }

    @Test("final head: kernel form and primal form reach the same head")
    func kernelMatchesPrimal() throws {
        let data = SyntheticFeatures(rows: 30, tapWidths: [40, 30], classCount: 3, informativeCount: 6, signal: 0.5, seed: 5)
        var x = data.features
        x.normalizeTaps()
        let settings = HeadSettings(solver: ProximalSettings(maxIterations: 20000, tolerance: 1e-7), l2: 1e-2)
        let kernel = try FinalHead.fit(features: x, labels: data.labels, classCount: 3, settings: settings, forceKernel: true)
        let primal = try FinalHead.fit(features: x, labels: data.labels, classCount: 3, settings: settings, forceKernel: false)
        let scale = Check.maxAbs(primal.head.weights)
        #expect(scale > 0)
        #expect(Check.maxAbsDifference(kernel.head.weights, primal.head.weights) <= 2e-3 * scale)
        #expect(Check.maxAbsDifference(kernel.head.bias, primal.head.bias) <= 2e-3 * max(1, Check.maxAbs(primal.head.bias)))
    }

    @Test("keep count is floor(D·fraction), robust to binary rounding, at least 1")
    func keepCount() {
        #expect(GroupLasso.keepCount(featureCount: 100, fraction: 0.29) == 29)
        #expect(GroupLasso.keepCount(featureCount: 50_000, fraction: 0.01) == 500)
        #expect(GroupLasso.keepCount(featureCount: 10, fraction: 0.01) == 1)
        #expect(GroupLasso.keepCount(featureCount: 7, fraction: 1) == 7)
    }
}
