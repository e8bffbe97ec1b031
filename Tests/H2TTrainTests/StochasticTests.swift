import Foundation
import Testing
import H2TTrain

/// The stochastic path checked against the exact solvers (themselves checked against closed forms
/// and the numpy reference in `tools/h2t_reference.py`), with the tolerances stated per test.
@Suite("H2TTrain stochastic solver")
struct StochasticTests {
    /// A per-tap normalised synthetic problem.
    static func problem(rows: Int, taps: [Int] = [12, 20, 8], classes: Int = 3, seed: UInt64 = 7) -> (x: FeatureMatrix, labels: [Int]) {
        let synthetic = SyntheticFeatures(rows: rows, tapWidths: taps, classCount: classes, informativeCount: 6, signal: 1.5, seed: seed)
        var x = synthetic.features
        x.normalizeTaps()
        return (x, synthetic.labels)
    }

    /// Long, patient settings so that the iterate settles: the comparisons are of optima.
    static let patient = StochasticSettings(batchSize: 32, windowRows: 128, maxEpochs: 400, tolerance: 1e-7, patience: 8)

    /// Mean cross-entropy of the head `(w, b)` on every row (Double loops, independent of the solvers).
    static func loss(_ x: FeatureMatrix, labels: [Int], classes k: Int, w: [Float], b: [Float]) -> Double {
        let z = LinearHead(inputCount: x.columnCount, classCount: k, weights: w, bias: b).logits(x)
        var total = 0.0
        for r in 0..<x.rowCount {
            let row = (0..<k).map { Double(z[r * k + $0]) }
            let m = row.max()!
            total += log(row.map { exp($0 - m) }.reduce(0, +)) + m - row[labels[r]]
        }
        return total / Double(x.rowCount)
    }

    static func squaredNorm(_ v: [Float]) -> Double { v.reduce(0) { $0 + Double($1) * Double($1) } }

    @Test("ridge head: SAGA reaches the FISTA optimum (objective within 1e-4 relative, weights within 2% of their size)")
    func ridgeMatchesExact() throws {
        let (x, labels) = Self.problem(rows: 300)
        let mu = 1e-2
        let exact = try FinalHead.fit(features: x, labels: labels, classCount: 3,
                                      settings: HeadSettings(solver: ProximalSettings(maxIterations: 20000, tolerance: 1e-9), l2: mu),
                                      forceKernel: false)
        let fit = try StochasticSolver.fit(source: x, labels: labels, classCount: 3, penalty: .ridge(mu), settings: Self.patient, seed: 3)
        let stochastic = Self.loss(x, labels: labels, classes: 3, w: fit.weights, b: fit.bias) + 0.5 * mu * Self.squaredNorm(fit.weights)
        let reference = Self.loss(x, labels: labels, classes: 3, w: exact.head.weights, b: exact.head.bias)
            + 0.5 * mu * Self.squaredNorm(exact.head.weights)
        #expect(abs(stochastic - reference) <= 1e-4 * reference)
        #expect(Check.maxAbsDifference(fit.weights, exact.head.weights) <= 0.02 * Check.maxAbs(exact.head.weights))
        #expect(fit.report.converged)
    }

    @Test("group lasso: SAGA finds the working-set solution's support and objective (1e-3 relative)")
    func groupLassoMatchesExact() throws {
        let (x, labels) = Self.problem(rows: 400)
        let lambda = 0.3 * GroupLasso.lambdaMax(features: x, labels: labels, classCount: 3)
        let exact = try GroupLasso.path(features: x, labels: labels, classCount: 3, lambdas: [lambda], settings: Check.tight)[0]
        let fit = try StochasticSolver.fit(source: x, labels: labels, classCount: 3, penalty: .groupLasso(lambda), settings: Self.patient, seed: 3)
        func support(_ w: [Float]) -> [Int] { (0..<x.columnCount).filter { Check.rowNorm(w, row: $0, k: 3) > 1e-3 } }
        #expect(support(fit.weights) == support(exact.weights))
        let penalty = { (w: [Float]) in lambda * GroupSoftThreshold.rowNorms(w, rows: x.columnCount, columns: 3).reduce(0, +) }
        let stochastic = Self.loss(x, labels: labels, classes: 3, w: fit.weights, b: fit.bias) + penalty(fit.weights)
        let reference = Self.loss(x, labels: labels, classes: 3, w: exact.weights, b: exact.bias) + penalty(exact.weights)
        #expect(abs(stochastic - reference) <= 1e-3 * reference)
    }

    @Test("λ_max from the statistics pass's class sums equals the exact one on the same rows (1e-5 relative)")
    func lambdaMaxFromSums() throws {
        let synthetic = SyntheticFeatures(rows: 500, tapWidths: [10, 30], classCount: 4, informativeCount: 5, signal: 1, seed: 11)
        var x = synthetic.features
        x.normalizeTaps()
        for rows in [Array(0..<500), Array(stride(from: 0, to: 500, by: 3))] {
            let exact = GroupLasso.lambdaMax(features: x, rows: rows, labels: synthetic.labels, classCount: 4)
            let streamed = try StreamingFit.lambdaMax(source: synthetic.features, labels: synthetic.labels, classCount: 4, rows: rows,
                                                      settings: StochasticSettings(batchSize: 64, windowRows: 64))
            #expect(abs(streamed - exact) <= 1e-5 * exact)
        }
    }

    @Test("epoch windows: every row once, whole groups together, the same order for the same seed")
    func epochWindows() {
        let groups = (0..<1000).map { $0 / 100 }
        let rows = Array(stride(from: 0, to: 1000, by: 2))
        let windows = EpochPlan.windows(rows: rows, groups: groups, windowRows: 100, seed: 5)
        #expect(windows.flatMap { $0 }.sorted() == rows)
        // 50 rows per group, 100 per window: each window holds exactly two whole groups.
        for window in windows { #expect(Set(window.map { groups[$0] }).count == 2) }
        #expect(windows == EpochPlan.windows(rows: rows, groups: groups, windowRows: 100, seed: 5))
        #expect(windows != EpochPlan.windows(rows: rows, groups: groups, windowRows: 100, seed: 6))
    }

    @Test("solver choice: auto picks exact for small N, stochastic above the limit or the budget; exact over budget is refused with its size")
    func solverChoice() throws {
        let budget = ScaleSettings(memoryBudget: 1 << 30)
        #expect(try budget.resolve(rowCount: 1000, widths: [45_400]) == .exact)
        #expect(try budget.resolve(rowCount: 3000, widths: [45_400]) == .stochastic)
        #expect(try ScaleSettings(memoryBudget: 100 << 20).resolve(rowCount: 1000, widths: [45_400]) == .stochastic)
        var exact = budget
        exact.solver = .exact
        let error = #expect(throws: TrainError.self) { try exact.resolve(rowCount: 60_000, widths: [45_400]) }
        let needs = ScaleSettings.describe(bytes: ScaleSettings.exactBytes(rowCount: 60_000, widths: [45_400]))
        #expect("\(error!)".contains("needs about \(needs)"))
        #expect(ScaleSettings().validation(rowCount: 10_000, folds: 5) == .kFold(folds: 5))
        #expect(ScaleSettings().validation(rowCount: 10_001, folds: 5) == .holdout(folds: 5))
    }

    @Test("a budget too small for one window is refused with the smallest that works, and that one is accepted")
    func budgetTooSmall() throws {
        let synthetic = SyntheticFeatures(rows: 200, tapWidths: [50, 50], classCount: 2, informativeCount: 4, signal: 2, seed: 1)
        var scale = ScaleSettings(solver: .stochastic, memoryBudget: 1 << 20)
        let settings = FitSettings(fractions: [0.1], lambdas: [0.1], folds: 2, ridges: [1e-3])
        let sets = [StreamingFeatureSet(name: "s", source: synthetic.features)]
        let error = #expect(throws: TrainError.self) {
            try StreamingFit.run(featureSets: sets, trainLabels: synthetic.labels, classCount: 2, settings: settings, scale: scale)
        }
        let needs = StreamingFit.minimumBytes(rowCount: 200, width: 100, classCount: 2, settings: settings, scale: scale)
        #expect("\(error!)".contains("the smallest that works is \(ScaleSettings.describe(bytes: needs))"))
        scale.memoryBudget = needs
        _ = try StreamingFit.run(featureSets: sets, trainLabels: synthetic.labels, classCount: 2, settings: settings, scale: scale)
    }

    @Test("streaming Head2Toe on a planted signal: finds the informative columns, CV within 3 points of the exact path, holdout above the fold limit")
    func streamingFitAgreesWithExact() throws {
        let synthetic = SyntheticFeatures(rows: 1200, tapWidths: [40, 60, 20], classCount: 3, informativeCount: 9, signal: 1.2, seed: 21)
        let settings = FitSettings(fractions: [0.1], lambdas: [0.1], folds: 3, ridges: [1e-3])
        let exact = try Head2ToeFit.run(featureSets: [FeatureSetInput(name: "s", train: synthetic.features)], trainLabels: synthetic.labels,
                                        classCount: 3, settings: settings)
        let scale = ScaleSettings(solver: .stochastic, foldRowLimit: 1000, stochastic: StochasticSettings(batchSize: 64, windowRows: 128))
        let report = try StreamingFit.run(featureSets: [StreamingFeatureSet(name: "s", source: synthetic.features)],
                                          trainLabels: synthetic.labels, classCount: 3, settings: settings, scale: scale)
        #expect(report.plan?.validation == "holdout 1/3")
        #expect(report.plan?.heldOutRows == 120)
        #expect(report.foldAssignment.filter { $0 == -1 }.count == 120)
        #expect(Set(report.head2toe.selectedIndices).intersection(synthetic.informative).count >= 8)
        #expect(abs(report.head2toe.cvAccuracy - exact.head2toe.cvAccuracy) <= 0.03)
        #expect(report.head2toe.head.inputCount == 12)
        let h2tRows = report.cvTable.filter { (row: CVRow) in row.method == .head2toe }
        #expect(h2tRows.allSatisfy { (row: CVRow) in row.foldAccuracies.count == 1 })
    }
}
