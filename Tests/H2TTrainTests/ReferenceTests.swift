import Foundation
import H2TTrain
import Testing

/// Agreement with the float64 numpy reference (`tools/h2t_reference.py fixtures`).
///
/// Tolerance: the reference solves to a relative step of 1e-9 in float64, Swift to 1e-7 in
/// float32 (sgemm); both converge to the same unique optimum, so weights agree to 2e-3 of their
/// largest magnitude (float32 rounding of the logits limits how far FISTA's stopping rule can go).
/// The final head's ridge is only μ = 1e-4, so an objective gap δ leaves the weights free within
/// about √(2δ/μ): float32 reaches δ ≈ 1e-6, hence its check is on the objective (1e-5 relative),
/// the predictions (exact) and the weights to 2% of their largest magnitude.
@Suite("H2TTrain reference")
struct ReferenceTests {
    static func train() throws -> FeatureMatrix {
        try FeatureMatrix(rowCount: ReferenceFixture.rows, columnCount: ReferenceFixture.columns,
                          values: ReferenceFixture.train, taps: Check.taps(ReferenceFixture.tapWidths))
    }

    @Test("per-tap normalisation matches the reference; a zero slice stays zero")
    func normalisation() throws {
        var x = try Self.train()
        x.normalizeTaps()
        #expect(Check.maxAbsDifference(x.values, ReferenceFixture.normalizedTrain) < 1e-6)
        var zero = try FeatureMatrix(rowCount: 1, columnCount: 4, values: [0, 0, 3, 4], taps: Check.taps([2, 2]))
        zero.normalizeTaps()
        #expect(zero.values == [0, 0, 0.6, 0.8])
    }

    @Test("λ_max and the group-lasso path match the reference")
    func path() throws {
        var x = try Self.train()
        x.normalizeTaps()
        let k = ReferenceFixture.classCount
        let lmax = GroupLasso.lambdaMax(features: x, labels: ReferenceFixture.trainLabels, classCount: k)
        #expect(abs(lmax - ReferenceFixture.lambdaMax) < 1e-5 * ReferenceFixture.lambdaMax)
        let path = try GroupLasso.path(features: x, labels: ReferenceFixture.trainLabels, classCount: k,
                                       lambdas: ReferenceFixture.lambdaRatios.map { $0 * lmax }, settings: Check.tight)
        let expected = [(ReferenceFixture.pathWeights0, ReferenceFixture.pathBias0),
                        (ReferenceFixture.pathWeights1, ReferenceFixture.pathBias1)]
        for (solution, (w, b)) in zip(path, expected) {
            let scale = Check.maxAbs(w)
            #expect(scale > 0)
            #expect(Check.maxAbsDifference(solution.weights, w) <= 2e-3 * scale)
            #expect(Check.maxAbsDifference(solution.bias, b) <= 2e-3 * max(1, Check.maxAbs(b)))
            // Same support: exact zeros where the reference has them.
            for i in 0..<x.columnCount {
                #expect((Check.rowNorm(solution.weights, row: i, k: k) == 0) == (Check.rowNorm(w, row: i, k: k) == 0), "row \(i)")
            }
        }
    }

    @Test("selection, tap shares, re-normalised final head and test predictions match the reference")
    func selectionAndHead() throws {
        var x = try Self.train()
        x.normalizeTaps()
        let k = ReferenceFixture.classCount
        let lmax = GroupLasso.lambdaMax(features: x, labels: ReferenceFixture.trainLabels, classCount: k)
        let solution = try #require(try GroupLasso.path(features: x, labels: ReferenceFixture.trainLabels, classCount: k,
                                                        lambdas: [ReferenceFixture.lambdaRatios.last! * lmax],
                                                        settings: Check.tight).first)
        let columns = solution.selection(fraction: ReferenceFixture.fraction)
        #expect(columns == ReferenceFixture.selected)
        let allRows = Array(0..<x.rowCount)
        var kept = x.gathered(rows: allRows, columns: columns, renormalize: true)
        let shares = x.keptTapShares(rows: allRows, columns: columns)
        #expect(Check.maxAbsDifference(shares, ReferenceFixture.keptTapShares) <= 1e-5)
        kept.scaleTaps(by: shares)
        let settings = HeadSettings(solver: ProximalSettings(maxIterations: 20000, tolerance: 1e-7))
        let (fitted, report) = try FinalHead.fit(features: kept, labels: ReferenceFixture.trainLabels, classCount: k, settings: settings)
        let head = fitted.foldingTapScales(shares, taps: kept.taps)
        #expect(abs(report.objective - ReferenceFixture.headObjective) <= 1e-5 * ReferenceFixture.headObjective)
        #expect(Check.maxAbsDifference(head.weights, ReferenceFixture.headWeights) <= 2e-2 * Check.maxAbs(ReferenceFixture.headWeights))
        var test = try FeatureMatrix(rowCount: ReferenceFixture.testRows, columnCount: ReferenceFixture.columns,
                                     values: ReferenceFixture.test, taps: Check.taps(ReferenceFixture.tapWidths))
        test.normalizeTaps()
        let predictions = head.predict(test.gathered(rows: Array(0..<test.rowCount), columns: columns, renormalize: true))
        #expect(predictions == ReferenceFixture.testPredictions)
    }
}
