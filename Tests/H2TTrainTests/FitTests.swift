import Foundation
import H2TCore
import H2TTrain
import Testing

@Suite("H2TTrain fit")
struct FitTests {
    /// Small planted problem: 2 taps of 60 + 1 "pre-logits" tap of 20 columns that carries no signal.
    static func problem(seed: UInt64 = 1) throws -> (sets: [FeatureSetInput], train: [Int], test: [Int], informative: [Int]) {
        let data = SyntheticFeatures(rows: 150, tapWidths: [60, 60, 20], classCount: 3, informativeCount: 12,
                                     signal: 0.7, seed: seed)
        let d = data.features.columnCount
        // Keep the last tap free of signal so the probe baseline is weak.
        let informative = data.informative.filter { $0 < 120 }
        let train = try FeatureMatrix(rowCount: 100, columnCount: d, values: Array(data.features.values[0..<(100 * d)]),
                                      taps: data.features.taps)
        let test = try FeatureMatrix(rowCount: 50, columnCount: d, values: Array(data.features.values[(100 * d)...]),
                                     taps: data.features.taps)
        return ([FeatureSetInput(name: "ft", train: train, test: test)], Array(data.labels[0..<100]),
                Array(data.labels[100...]), informative)
    }

    static let settings = FitSettings(fractions: [0.05, 0.2], lambdas: [0.5, 0.2], folds: 3, probeTap: "tap2", seed: 9)

    @Test("planted informative features are recovered by selection")
    func recovery() throws {
        let data = SyntheticFeatures(rows: 200, tapWidths: [500, 500, 1000], classCount: 5, informativeCount: 20,
                                     signal: 0.8, seed: 21)
        var x = data.features
        x.normalizeTaps()
        let lmax = GroupLasso.lambdaMax(features: x, labels: data.labels, classCount: 5)
        let solution = try #require(try GroupLasso.path(features: x, labels: data.labels, classCount: 5, lambdas: [0.3 * lmax]).first)
        let kept = solution.selection(fraction: 0.01)
        #expect(kept.count == 20)
        // Some planted columns get a mean of ~0 for every class and carry no signal; most do not.
        #expect(Set(kept).intersection(data.informative).count >= 15)
    }

    @Test("per-tap normalisation gives the same bits on 1 to 4 threads, zero slices kept at zero")
    func normalisationIsThreadInvariant() throws {
        // 301 rows: several 64-row blocks and a short last one; a zeroed slice in row 70.
        var data = SyntheticFeatures(rows: 301, tapWidths: [37, 5, 90], classCount: 3, informativeCount: 6, signal: 0.5, seed: 4).features
        for j in 37..<42 { data.values[70 * data.columnCount + j] = 0 }
        var serial = data
        let norms = serial.normalizeTaps()
        #expect(norms[70 * 3 + 1] == 0 && norms[71 * 3 + 1] > 0)
        for threads in 2...4 {
            var parallel = data
            let parallelNorms = parallel.normalizeTaps(parallelism: Parallelism(threads: threads))
            #expect(parallelNorms == norms && parallel.values == serial.values, "\(threads) threads")
        }
        // Row 5's first tap has unit norm afterwards.
        let first = serial.values[(5 * serial.columnCount)..<(5 * serial.columnCount + 37)].reduce(0.0) { $0 + Double($1) * Double($1) }
        #expect(abs(first - 1) < 1e-5)
    }

    @Test("end to end: Head2Toe beats the probe; report is complete and encodes snake_case")
    func endToEnd() throws {
        let (sets, train, test, _) = try Self.problem()
        let report = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3,
                                         settings: Self.settings)
        let h2t = report.head2toe
        let ridges = Self.settings.ridges
        #expect(report.cvTable.filter { $0.method == .head2toe }.count == 4 * ridges.count)
        // The ridge is a CV axis of every method: each method's final ridge is its best CV row's.
        for m in [h2t, report.linearProbe, report.allFeatures] {
            let rows = report.cvTable.filter { $0.method == m.method }
            #expect(Set(rows.map(\.ridge)) == Set(ridges), "\(m.method)")
            #expect(m.cvAccuracy == rows.map(\.cvAccuracy).max(), "\(m.method)")
            #expect(rows.contains { $0.ridge == m.ridge && $0.cvAccuracy == m.cvAccuracy }, "\(m.method)")
        }
        #expect(h2t.testAccuracy! > report.linearProbe.testAccuracy! + 0.2)
        #expect(h2t.cvAccuracy >= report.linearProbe.cvAccuracy)
        #expect(h2t.selectedIndices.count == h2t.head.inputCount)
        #expect(h2t.selectedPerTap.map(\.indices.count).reduce(0, +) == h2t.selectedIndices.count)
        #expect(report.linearProbe.selectedIndices == Array(120..<140))
        #expect(report.allFeatures.selectedIndices.count == 140)
        let metrics = try #require(h2t.test)
        #expect(metrics.confusion.flatMap { $0 }.reduce(0, +) == 50)
        #expect(metrics.perClassAccuracy.count == 3)
        #expect(Set(report.foldAssignment) == [0, 1, 2])
        let json = try FitReport.jsonEncoder().encode(report)
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        for method in ["head2toe", "linear_probe", "all_features"] {
            let entry = try #require(object[method] as? [String: Any])
            #expect(entry["test_accuracy"] is Double && entry["cv_accuracy"] is Double, "\(method)")
        }
        let decoded = try FitReport.jsonDecoder().decode(FitReport.self, from: json)
        #expect(decoded.head2toe.head == h2t.head)
    }

    @Test("one-standard-error rule: the smallest fraction within one SE over folds of the best point")
    func oneStandardErrorRule() throws {
        func row(_ fraction: Double, _ lambda: Double, _ accuracy: Double, folds: [Double]? = nil) -> CVRow {
            CVRow(method: .head2toe, featureSet: "ft", solver: 0, lambda: lambda, fraction: fraction, ridge: 1e-4,
                  keptFeatures: Int(fraction * 1000), cvAccuracy: accuracy, foldAccuracies: folds ?? [accuracy])
        }
        // Best: fraction 0.5 at 0.90, folds with sample SD √0.001, so SE = √0.001 / √5 ≈ 0.014142 and
        // the floor is ≈ 0.885858: 0.05 misses it (0.8858), 0.1 is the smallest fraction within it.
        let table = [
            row(0.01, 0.1, 0.85), row(0.05, 0.1, 0.8858), row(0.05, 0.03, 0.87), row(0.1, 0.1, 0.889), row(0.1, 0.03, 0.892),
            row(0.2, 0.1, 0.895), row(0.5, 0.1, 0.90, folds: [0.88, 0.92, 0.90, 0.86, 0.94]), row(0.5, 0.03, 0.899),
            CVRow(method: .allFeatures, featureSet: "ft", solver: nil, lambda: nil, fraction: nil, ridge: 1e-4,
                  keptFeatures: 1000, cvAccuracy: 0.95, foldAccuracies: [0.95]),
        ]
        let best = Head2ToeFit.chosenRow(table, rule: .best, featureSets: ["ft"])
        #expect(best.row.fraction == 0.5 && best.row.lambda == 0.1 && best.floor == nil)
        let oneSE = Head2ToeFit.chosenRow(table, rule: .oneStandardError, featureSets: ["ft"])
        #expect(abs(Head2ToeFit.standardError([0.88, 0.92, 0.90, 0.86, 0.94]) - 0.001.squareRoot() / 5.0.squareRoot()) < 1e-12)
        #expect(abs(try #require(oneSE.floor) - (0.90 - 0.001.squareRoot() / 5.0.squareRoot())) < 1e-12)
        // At that fraction, the best of its rows.
        #expect(oneSE.row.fraction == 0.1 && oneSE.row.lambda == 0.03 && oneSE.row.cvAccuracy == 0.892)
    }

    @Test("one-SE fit and fraction curve: a head per fraction, each tested; the rule's head meets its floor")
    func oneStandardErrorFitAndCurve() throws {
        let (sets, train, test, _) = try Self.problem()
        var settings = Self.settings
        settings.selectionRule = .oneStandardError
        settings.fractionCurve = true
        let report = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        let floor = try #require(report.selectionFloor)
        let best = report.cvTable.filter { $0.method == .head2toe }.map(\.cvAccuracy).max()!
        #expect(report.head2toe.cvAccuracy >= floor - 1e-12 && floor <= best)
        #expect(report.fractionCurve.map(\.fraction) == [0.05, 0.2])
        for point in report.fractionCurve {
            let rows = report.cvTable.filter { $0.method == .head2toe && $0.fraction == point.fraction }
            #expect(point.cvAccuracy == rows.map(\.cvAccuracy).max(), "\(point.fraction!)")
            #expect(point.testAccuracy != nil && point.selectedIndices.count == point.head.inputCount)
        }
        // The rule's head is the curve's point at its fraction.
        let same = try #require(report.fractionCurve.first { $0.fraction == report.head2toe.fraction })
        #expect(same.selectedIndices == report.head2toe.selectedIndices && same.testAccuracy == report.head2toe.testAccuracy)
    }

    @Test("a grid point's CV score does not depend on the other ridges in the grid")
    func ridgePointsAreIndependent() throws {
        let (sets, train, test, _) = try Self.problem()
        var settings = Self.settings
        settings.ridges = [1e-5, 1e-4, 1e-3]
        let grid = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        settings.ridges = [1e-5]
        let alone = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        func key(_ r: CVRow) -> String { "\(r.method) \(r.featureSet) \(r.lambda ?? -1) \(r.fraction ?? -1)" }
        let expected = Dictionary(uniqueKeysWithValues: alone.cvTable.map { (key($0), $0.foldAccuracies) })
        let rows = grid.cvTable.filter { $0.ridge == 1e-5 }
        #expect(rows.count == alone.cvTable.count)
        for row in rows { #expect(row.foldAccuracies == expected[key(row)], "\(key(row))") }
    }

    @Test("deterministic given a seed (proximal and Adam)")
    func determinism() throws {
        let (sets, train, test, _) = try Self.problem()
        var settings = Self.settings
        settings.solvers = [.proximal(GroupLassoSettings()), .adam(AdamSettings(steps: 30, learningRate: 0.05, batchSize: 32))]
        let a = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        let b = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        #expect(a.cvTable == b.cvTable)
        #expect(a.head2toe.head == b.head2toe.head)
        #expect(a.head2toe.selectedIndices == b.head2toe.selectedIndices)
        var x = sets[0].train
        x.normalizeTaps()
        let adam = { (seed: UInt64) in
            try GroupLasso.adam(features: x, labels: train, classCount: 3, lambda: 1e-3,
                                settings: AdamSettings(steps: 20, batchSize: 16), seed: seed)
        }
        #expect(try adam(4).weights == adam(4).weights)
        #expect(try adam(4).weights != adam(5).weights)
    }

    @Test("stratified folds: every class spread evenly over the folds")
    func folds() {
        let labels = (0..<103).map { $0 % 4 == 3 ? 1 : 0 }
        let folds = Head2ToeFit.foldAssignment(labels: labels, classCount: 2, folds: 5, stratified: true, seed: 1)
        for c in 0..<2 {
            let counts = (0..<5).map { f in zip(labels, folds).filter { $0 == c && $1 == f }.count }
            #expect(counts.max()! - counts.min()! <= 1)
        }
        let sizes = (0..<5).map { f in folds.filter { $0 == f }.count }
        #expect(sizes.max()! - sizes.min()! <= 1)
        #expect(folds != Head2ToeFit.foldAssignment(labels: labels, classCount: 2, folds: 5, stratified: true, seed: 2))
    }

    @Test("bad input is a clear one-line error before any work")
    func badInput() throws {
        let (sets, train, test, _) = try Self.problem()
        func fit(_ sets: [FeatureSetInput] = sets, train: [Int] = train, test: [Int] = test, classCount: Int = 3,
                 _ change: (inout FitSettings) -> Void = { _ in }) throws {
            var settings = Self.settings
            change(&settings)
            _ = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: classCount,
                                    settings: settings)
        }
        #expect(throws: TrainError.emptyGridAxis("fractions")) { try fit { $0.fractions = [] } }
        #expect(throws: TrainError.emptyGridAxis("lambdas")) { try fit { $0.lambdas = [] } }
        #expect(throws: TrainError.emptyGridAxis("ridges")) { try fit { $0.ridges = [] } }
        #expect(throws: TrainError.invalidSetting("final head ridge must be finite and >= 0, got -0.1")) { try fit { $0.ridges = [1e-4, -0.1] } }
        #expect(throws: TrainError.invalidFraction(0)) { try fit { $0.fractions = [0.1, 0] } }
        #expect(throws: TrainError.invalidFraction(1.5)) { try fit { $0.fractions = [1.5] } }
        #expect(throws: TrainError.invalidLambda(-1)) { try fit { $0.lambdas = [-1] } }
        #expect(throws: TrainError.singleClass(split: "train", label: 2)) {
            try fit(train: [Int](repeating: 2, count: train.count))
        }
        var outOfRange = train
        outOfRange[7] = 3
        #expect(throws: TrainError.labelOutOfRange(split: "train", row: 7, label: 3, classCount: 3)) { try fit(train: outOfRange) }
        var broken = sets
        broken[0].train.values[5 * 140 + 9] = .nan
        #expect(throws: TrainError.nonFiniteFeature(featureSet: "ft", split: "train", row: 5, column: 9)) { try fit(broken) }
        broken = sets
        broken[0].test!.values[3] = .infinity
        #expect(throws: TrainError.nonFiniteFeature(featureSet: "ft", split: "test", row: 0, column: 3)) { try fit(broken) }
        #expect(throws: TrainError.unknownTap(featureSet: "ft", tap: "nope")) { try fit { $0.probeTap = "nope" } }
        #expect(throws: TrainError.invalidSetting("folds must be >= 2, got 1")) { try fit { $0.folds = 1 } }
        let badTaps = try FeatureMatrix(rowCount: 100, columnCount: 140, values: sets[0].train.values,
                                        taps: [TapColumns(name: "a", offset: 0, width: 100)])
        #expect(throws: TrainError.invalidTapLayout(featureSet: "ft", reason: "taps cover 100 columns, matrix has 140")) {
            try fit([FeatureSetInput(name: "ft", train: badTaps, test: nil)], test: [])
        }
        #expect(throws: TrainError.shapeMismatch(what: "feature matrix 2×2", expected: 4, actual: 3)) {
            _ = try FeatureMatrix(rowCount: 2, columnCount: 2, values: [1, 2, 3], taps: [])
        }
        // Messages are one line and name the culprit.
        let message = TrainError.nonFiniteFeature(featureSet: "ft", split: "train", row: 5, column: 9).description
        #expect(!message.contains("\n") && message.contains("row 5") && message.contains("column 9"))
    }
}
