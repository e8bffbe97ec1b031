import H2TCore
import H2TTrain
import Testing

/// `KeptTapScaling.trainingConstant`: kept columns are raw pooled values over one per-tap constant
/// (the RMS over the statistics rows of the tap's full L2 norm), folded into the head so that the
/// stored head reads the raw selected columns (`HeadInputRule.raw`). Every expectation here is
/// computed independently from the raw (un-normalised) matrix, in Double.
@Suite("H2TTrain training-constant scaling")
struct TrainingConstantTests {
    /// A raw (un-normalised) matrix with taps of very different scales, so per-tap constants differ,
    /// and per-example norms that vary a lot, so per-example re-normalisation would be visible.
    static func raw(rows: Int, widths: [Int], seed: UInt64) throws -> FeatureMatrix {
        var rng = SplitMix64(seed: seed)
        let taps = Check.taps(widths)
        let d = widths.reduce(0, +)
        var values = [Float](repeating: 0, count: rows * d)
        for r in 0..<rows {
            for (t, tap) in taps.enumerated() {
                // Tap scale 1, 10, 0.1, ...; row scale in [0.2, 3).
                let scale = Float([1, 10, 0.1, 3][t % 4]) * (0.2 + Float(rng.below(1000)) / 1000 * 2.8)
                for j in tap.offset..<(tap.offset + tap.width) { values[r * d + j] = scale * (Float(rng.below(1000)) / 1000 - 0.3) }
            }
        }
        return try FeatureMatrix(rowCount: rows, columnCount: d, values: values, taps: taps)
    }

    /// RMS over `rows` of each tap's full L2 norm in the raw matrix, for the taps `tapIndices`.
    static func constants(_ raw: FeatureMatrix, rows: [Int], tapIndices: [Int]) -> [Double] {
        let d = raw.columnCount
        return tapIndices.map { t in
            let tap = raw.taps[t]
            var sum = 0.0
            for r in rows {
                for j in tap.offset..<(tap.offset + tap.width) { sum += Double(raw.values[r * d + j]) * Double(raw.values[r * d + j]) }
            }
            return (sum / Double(rows.count)).squareRoot()
        }
    }

    /// Index in `taps` of the tap holding each of `columns`.
    static func tapIndex(of column: Int, in taps: [TapColumns]) -> Int {
        taps.firstIndex { column >= $0.offset && column < $0.offset + $0.width }!
    }

    /// `raw[rows, columns] / c[tap(column)]` in Double, then Float.
    static func expectedInputs(_ raw: FeatureMatrix, rows: [Int], columns: [Int], constants: [Int: Double]) -> [Float] {
        let d = raw.columnCount
        return rows.flatMap { r in
            columns.map { c in Float(Double(raw.values[r * d + c]) / constants[tapIndex(of: c, in: raw.taps)]!) }
        }
    }

    static func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        return Check.maxAbsDifference(a, b) / max(Check.maxAbs(b), 1e-30)
    }

    @Test("the kept inputs are raw values over c_t = RMS of the tap's full norm on the statistics rows; fold = 1/c_t",
          arguments: [
              [0, 1, 2, 3, 6, 11, 12, 13],   // tap 0 whole, one column of tap 1, two of tap 2, one of tap 3
              [5, 7, 9, 12],                 // tap 0 and tap 3 dropped: subset taps are not feature-set taps
              [15, 16],                      // only the last tap
          ])
    func inputsAndFold(columns: [Int]) throws {
        let widths = [4, 6, 3, 5]
        let raw = try Self.raw(rows: 14, widths: widths, seed: 11)
        var x = raw
        let norms = x.normalizeTaps()
        let rows = [9, 0, 3, 13, 7, 2]             // any order; includes non-statistics rows 9 and 13
        let statisticsRows = [0, 2, 3, 5, 7, 8, 11]
        let used = Array(Set(columns.map { Self.tapIndex(of: $0, in: raw.taps) })).sorted()
        let c = Self.constants(raw, rows: statisticsRows, tapIndices: used)
        let constants = Dictionary(uniqueKeysWithValues: zip(used, c))

        let (inputs, fold) = x.keptInputs(norms: norms, rows: rows, columns: columns, scaling: .trainingConstant,
                                          statisticsRows: statisticsRows)
        #expect(inputs.rowCount == rows.count && inputs.columnCount == columns.count)
        #expect(inputs.taps == x.tapsOfSubset(columns))
        #expect(inputs.taps.count == used.count)
        let expected = Self.expectedInputs(raw, rows: rows, columns: columns, constants: constants)
        #expect(Self.maxRelativeDifference(inputs.values, expected) <= 1e-5)
        #expect(fold.count == used.count)
        for (f, ct) in zip(fold, c) { #expect(abs(Double(f) * ct - 1) <= 1e-5, "fold \(f) vs 1/\(ct)") }
        // The constants really differ per tap (the test would not see a mix-up otherwise).
        #expect(Set(c.map { Int(($0 * 1000).rounded()) }).count == c.count)

        // No per-example re-normalisation: a tap kept whole has the row's own norm over c_t, not 1.
        if columns.prefix(4) == [0, 1, 2, 3] {
            let rowNorms = (0..<rows.count).map { r in (0..<4).map { Double(inputs.values[r * columns.count + $0]) }.map { $0 * $0 }.reduce(0, +).squareRoot() }
            for (r, row) in rows.enumerated() {
                #expect(abs(rowNorms[r] - Double(norms[row * widths.count + 0]) / c[0]) <= 1e-5 * rowNorms[r])
            }
            #expect(rowNorms.max()! / rowNorms.min()! > 1.5)
        }
    }

    @Test("only the statistics rows set the constants")
    func statisticsRowsOnly() throws {
        let raw = try Self.raw(rows: 12, widths: [5, 4, 6], seed: 3)
        let columns = [1, 3, 5, 6, 8, 9, 14]
        let rows = Array(0..<12)
        let statisticsRows = [1, 2, 4, 6, 8, 10]
        func kept(_ m: FeatureMatrix, statistics: [Int] = statisticsRows) -> (inputs: FeatureMatrix, tapScales: [Float]) {
            var x = m
            let norms = x.normalizeTaps()
            return x.keptInputs(norms: norms, rows: rows, columns: columns, scaling: .trainingConstant, statisticsRows: statistics)
        }
        let base = kept(raw)
        // Scale row 7 (not a statistics row) of every tap by 25: only its own inputs change, by exactly 25.
        var changed = raw
        for j in 0..<changed.columnCount { changed.values[7 * changed.columnCount + j] *= 25 }
        let other = kept(changed)
        #expect(other.tapScales == base.tapScales)
        let k = columns.count
        for r in rows where r != 7 {
            #expect(Array(other.inputs.values[(r * k)..<((r + 1) * k)]) == Array(base.inputs.values[(r * k)..<((r + 1) * k)]), "row \(r)")
        }
        let row7 = Array(other.inputs.values[(7 * k)..<(8 * k)])
        #expect(Self.maxRelativeDifference(row7, Array(base.inputs.values[(7 * k)..<(8 * k)]).map { $0 * 25 }) <= 1e-5)
        // The same change on a statistics row moves every constant (sensitivity of the check above).
        var statistic = raw
        for j in 0..<statistic.columnCount { statistic.values[4 * statistic.columnCount + j] *= 25 }
        let moved = kept(statistic)
        for (a, b) in zip(moved.tapScales, base.tapScales) { #expect(a < b * 0.9, "a larger statistics row means a larger c_t") }
        // Another set of statistics rows gives other constants.
        #expect(kept(raw, statistics: [0, 3, 5, 7, 9, 11]).tapScales != base.tapScales)
    }

    @Test("zero slices: a zero row stays zero; a tap that is zero on every statistics row gets constant 1")
    func zeroSlices() throws {
        var raw = try Self.raw(rows: 6, widths: [3, 4], seed: 17)
        let d = raw.columnCount
        for j in 0..<3 { raw.values[2 * d + j] = 0 }                               // row 2, tap 0: zero
        for r in [0, 1, 2, 3] { for j in 3..<7 { raw.values[r * d + j] = 0 } }     // tap 1 zero on all statistics rows
        var x = raw
        let norms = x.normalizeTaps()
        let statisticsRows = [0, 1, 2, 3]
        let (inputs, fold) = x.keptInputs(norms: norms, rows: Array(0..<6), columns: [0, 2, 4, 5], scaling: .trainingConstant,
                                          statisticsRows: statisticsRows)
        let c0 = Self.constants(raw, rows: statisticsRows, tapIndices: [0])[0]
        #expect(abs(Double(fold[0]) * c0 - 1) <= 1e-5)
        #expect(fold[1] == 1)
        #expect(inputs.values.allSatisfy { $0.isFinite })
        #expect(inputs.values[2 * 4 + 0] == 0 && inputs.values[2 * 4 + 1] == 0)
        let expected = Self.expectedInputs(raw, rows: Array(0..<6), columns: [0, 2, 4, 5], constants: [0: c0, 1: 1])
        #expect(Self.maxRelativeDifference(inputs.values, expected) <= 1e-5)
    }

    @Test("headInputs(.raw) gives back the raw selected values; .perTapUnitL2 the re-normalised ones; applyInputRule agrees")
    func headInputs() throws {
        let raw = try Self.raw(rows: 10, widths: [4, 6, 3, 5], seed: 23)
        var x = raw
        let norms = x.normalizeTaps()
        let columns = [1, 2, 5, 7, 8, 13, 14, 17]
        let rows = [8, 1, 4, 0, 9]
        let rawSelected = raw.gathered(rows: rows, columns: columns, renormalize: false)
        let recovered = x.headInputs(norms: norms, rows: rows, columns: columns, rule: .raw)
        #expect(recovered.taps == rawSelected.taps)
        #expect(Self.maxRelativeDifference(recovered.values, rawSelected.values) <= 1e-6)
        let unit = x.headInputs(norms: norms, rows: rows, columns: columns, rule: .perTapUnitL2)
        var expectedUnit = rawSelected
        expectedUnit.normalizeTaps()
        #expect(Check.maxAbsDifference(unit.values, expectedUnit.values) <= 1e-6)

        // The predict paths form inputs from the raw selected columns with applyInputRule.
        var applied = rawSelected
        applied.applyInputRule(.raw)
        #expect(applied.values == rawSelected.values)
        applied.applyInputRule(.perTapUnitL2)
        #expect(applied.values == expectedUnit.values)

        #expect(KeptTapScaling.trainingConstant.inputRule == .raw)
        #expect(KeptTapScaling.unit.inputRule == .perTapUnitL2 && KeptTapScaling.trainingShare.inputRule == .perTapUnitL2)
        #expect(HeadInputRule.raw.rawValue == "raw_selected")
        #expect(HeadInputRule.perTapUnitL2.rawValue == "per_tap_unit_l2_over_kept")
    }

    @Test("a head fitted on the kept inputs and folded by 1/c_t gives the same logits on the raw selected columns")
    func foldedHeadReadsRawColumns() throws {
        let raw = try Self.raw(rows: 9, widths: [4, 6, 3], seed: 31)
        var x = raw
        let norms = x.normalizeTaps()
        let columns = [0, 2, 4, 6, 9, 12]
        let rows = Array(0..<9)
        let (inputs, fold) = x.keptInputs(norms: norms, rows: rows, columns: columns, scaling: .trainingConstant, statisticsRows: [0, 1, 2, 3, 4])
        var rng = SplitMix64(seed: 2)
        let w = (0..<(columns.count * 3)).map { _ in Float(rng.below(2000)) / 1000 - 1 }
        let head = LinearHead(inputCount: columns.count, classCount: 3, weights: w, bias: [0.2, -0.1, 0])
        let folded = head.foldingTapScales(fold, taps: inputs.taps)
        let onKept = head.logits(inputs)
        let onRaw = folded.logits(raw.gathered(rows: rows, columns: columns, renormalize: false))
        #expect(Check.maxAbsDifference(onKept, onRaw) <= 1e-5 * max(Check.maxAbs(onKept), 1))
        // The unfolded head on raw columns is something else (the fold is not a no-op).
        #expect(Check.maxAbsDifference(head.logits(raw.gathered(rows: rows, columns: columns, renormalize: false)), onKept) > 1e-2)
    }

    @Test("fit with trainingConstant: input rules, test accuracy from raw columns, head = independent fit on raw/c_t folded by 1/c_t")
    func fit() throws {
        let (sets, train, test, _) = try FitTests.problem()
        var settings = FitTests.settings
        settings.keptTapScaling = .trainingConstant
        let report = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        #expect(report.settings.keptTapScaling == .trainingConstant)
        let h2t = report.head2toe
        #expect(h2t.inputRule == .raw)
        #expect(report.linearProbe.inputRule == .perTapUnitL2)
        #expect(report.allFeatures.inputRule == .perTapUnitL2)

        let rawTrain = sets[0].train
        let rawTest = try #require(sets[0].test)
        let columns = h2t.selectedIndices
        #expect(columns.count < rawTrain.columnCount && columns.count == h2t.head.inputCount)
        let testRows = Array(0..<rawTest.rowCount)

        // The stored head applied to the raw selected test columns, no normalisation at all.
        let predictions = h2t.head.predict(rawTest.gathered(rows: testRows, columns: columns, renormalize: false))
        let metrics = ClassificationMetrics(predictions: predictions, labels: test, classCount: 3)
        #expect(h2t.testAccuracy == metrics.accuracy)
        #expect(h2t.test?.confusion == metrics.confusion)
        #expect(metrics.accuracy > report.linearProbe.testAccuracy! + 0.2, "the planted signal is found")

        // Independent final head: raw / c_t (c_t from all training rows), FinalHead.fit, fold 1/c_t by hand.
        let allRows = Array(0..<rawTrain.rowCount)
        let subsetTaps = rawTrain.tapsOfSubset(columns)
        let used = subsetTaps.map { s in rawTrain.taps.firstIndex { $0.name == s.name }! }
        let c = Self.constants(rawTrain, rows: allRows, tapIndices: used)
        let constants = Dictionary(uniqueKeysWithValues: zip(used, c))
        let scaled = try FeatureMatrix(rowCount: allRows.count, columnCount: columns.count,
                                       values: Self.expectedInputs(rawTrain, rows: allRows, columns: columns, constants: constants),
                                       taps: subsetTaps)
        let (fitted, _) = try FinalHead.fit(features: scaled, labels: train, classCount: 3,
                                            settings: HeadSettings(solver: settings.headSolver, l2: h2t.ridge))
        var expected = fitted.weights
        for (j, column) in columns.enumerated() {
            let ct = constants[Self.tapIndex(of: column, in: rawTrain.taps)]!
            for k in 0..<3 { expected[j * 3 + k] = Float(Double(expected[j * 3 + k]) / ct) }
        }
        #expect(Check.maxAbsDifference(h2t.head.weights, expected) <= 1e-4 * max(Check.maxAbs(expected), 1e-6))
        #expect(Check.maxAbsDifference(h2t.head.bias, fitted.bias) <= 1e-4 * max(Check.maxAbs(fitted.bias), 1))
        // The fold is not a no-op here: the constants are far from 1.
        #expect(c.allSatisfy { abs($0 - 1) > 0.1 })

        // The baselines keep per-tap normalisation: the probe's head on the re-normalised raw probe tap.
        let probeColumns = report.linearProbe.selectedIndices
        var probeInputs = rawTest.gathered(rows: testRows, columns: probeColumns, renormalize: false)
        probeInputs.applyInputRule(report.linearProbe.inputRule)
        #expect(report.linearProbe.testAccuracy ==
                ClassificationMetrics(predictions: report.linearProbe.head.predict(probeInputs), labels: test, classCount: 3).accuracy)
        var allInputs = rawTest
        allInputs.applyInputRule(report.allFeatures.inputRule)
        #expect(report.allFeatures.testAccuracy ==
                ClassificationMetrics(predictions: report.allFeatures.head.predict(allInputs), labels: test, classCount: 3).accuracy)
    }

    @Test("cross-validation with trainingConstant takes the constants from each fold's training rows")
    func crossValidation() throws {
        let (sets, train, _, _) = try FitTests.problem()
        var settings = FitTests.settings
        settings.keptTapScaling = .trainingConstant
        let trainOnly = [FeatureSetInput(name: "ft", train: sets[0].train)]
        let report = try Head2ToeFit.run(featureSets: trainOnly, trainLabels: train, classCount: 3, settings: settings)
        let raw = sets[0].train
        var x = raw
        x.normalizeTaps()
        let folds = report.foldAssignment
        // correct[λ][fraction][ridge], pooled over the folds.
        var correct = [[[Int]]](repeating: [[Int]](repeating: [Int](repeating: 0, count: settings.ridges.count),
                                                    count: settings.fractions.count), count: settings.lambdas.count)
        guard case let .proximal(gl) = settings.solvers[0] else { Issue.record("proximal solver expected"); return }
        for f in 0..<settings.folds {
            let fitRows = folds.indices.filter { folds[$0] != f }
            let validation = folds.indices.filter { folds[$0] == f }
            let lmax = GroupLasso.lambdaMax(features: x, rows: fitRows, labels: train, classCount: 3)
            let ordered = settings.lambdas.sorted(by: >)
            let path = try GroupLasso.path(features: x, rows: fitRows, labels: train, classCount: 3,
                                           lambdas: ordered.map { $0 * lmax }, settings: gl)
            for (ratio, solution) in zip(ordered, path) {
                let li = settings.lambdas.firstIndex(of: ratio)!
                for (fi, fraction) in settings.fractions.enumerated() {
                    let columns = solution.selection(fraction: fraction)
                    let subsetTaps = raw.tapsOfSubset(columns)
                    let used = subsetTaps.map { s in raw.taps.firstIndex { $0.name == s.name }! }
                    // Constants from the fold's training rows only.
                    let constants = Dictionary(uniqueKeysWithValues: zip(used, Self.constants(raw, rows: fitRows, tapIndices: used)))
                    let fitPart = try FeatureMatrix(rowCount: fitRows.count, columnCount: columns.count,
                                                    values: Self.expectedInputs(raw, rows: fitRows, columns: columns, constants: constants),
                                                    taps: subsetTaps)
                    let validationPart = try FeatureMatrix(rowCount: validation.count, columnCount: columns.count,
                                                           values: Self.expectedInputs(raw, rows: validation, columns: columns, constants: constants),
                                                           taps: subsetTaps)
                    let heads = try FinalHead.fit(features: fitPart, labels: fitRows.map { train[$0] }, classCount: 3,
                                                  solver: settings.headSolver, ridges: settings.ridges)
                    for (ri, head) in heads.enumerated() {
                        correct[li][fi][ri] += zip(head.head.predict(validationPart), validation).filter { $0 == train[$1] }.count
                    }
                }
            }
        }
        let rows = report.cvTable.filter { $0.method == .head2toe }
        #expect(rows.count == settings.lambdas.count * settings.fractions.count * settings.ridges.count)
        for row in rows {
            let li = settings.lambdas.firstIndex(of: row.lambda!)!, fi = settings.fractions.firstIndex(of: row.fraction!)!
            let ri = settings.ridges.firstIndex(of: row.ridge)!
            #expect(row.cvAccuracy == Double(correct[li][fi][ri]) / Double(train.count),
                    "λ \(row.lambda!) fraction \(row.fraction!) ridge \(row.ridge)")
        }
    }

    @Test("training constants, the folded final head and its raw-column test predictions match the float64 reference")
    func reference() throws {
        var x = try ReferenceTests.train()
        let norms = x.normalizeTaps()
        let k = ReferenceFixture.classCount
        let columns = ReferenceFixture.selected
        let allRows = Array(0..<x.rowCount)
        let (inputs, fold) = x.keptInputs(norms: norms, rows: allRows, columns: columns, scaling: .trainingConstant, statisticsRows: allRows)
        #expect(fold.count == ReferenceFixture.trainingConstants.count)
        for (f, c) in zip(fold, ReferenceFixture.trainingConstants) { #expect(abs(f * c - 1) <= 1e-5, "fold \(f) vs 1/\(c)") }
        // Same tolerances as ReferenceTests.selectionAndHead (see there).
        let settings = HeadSettings(solver: ProximalSettings(maxIterations: 20000, tolerance: 1e-7))
        let (fitted, report) = try FinalHead.fit(features: inputs, labels: ReferenceFixture.trainLabels, classCount: k, settings: settings)
        let head = fitted.foldingTapScales(fold, taps: inputs.taps)
        #expect(abs(report.objective - ReferenceFixture.constantHeadObjective) <= 1e-5 * ReferenceFixture.constantHeadObjective)
        let scale = Check.maxAbs(ReferenceFixture.constantHeadWeights)
        #expect(Check.maxAbsDifference(head.weights, ReferenceFixture.constantHeadWeights) <= 2e-2 * scale)
        #expect(Check.maxAbsDifference(head.bias, ReferenceFixture.constantHeadBias) <= 2e-2 * max(1, Check.maxAbs(ReferenceFixture.constantHeadBias)))
        let test = try FeatureMatrix(rowCount: ReferenceFixture.testRows, columnCount: ReferenceFixture.columns,
                                     values: ReferenceFixture.test, taps: Check.taps(ReferenceFixture.tapWidths))
        var rawTest = test.gathered(rows: Array(0..<test.rowCount), columns: columns, renormalize: false)
        rawTest.applyInputRule(.raw)
        #expect(head.predict(rawTest) == ReferenceFixture.constantTestPredictions)
        // The other rule's predictions differ on this fixture, so the check above sees the rule.
        #expect(ReferenceFixture.constantTestPredictions != ReferenceFixture.testPredictions)
    }
}
