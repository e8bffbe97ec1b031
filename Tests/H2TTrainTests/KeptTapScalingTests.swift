import H2TCore
import H2TTrain
import Testing

/// `KeptTapScaling.trainingShare`: the shares, the fold of the scales into the head, and its use in a fit.
@Suite("H2TTrain kept tap scaling")
struct KeptTapScalingTests {
    static func matrix(rows: Int, widths: [Int], seed: UInt64) throws -> FeatureMatrix {
        var rng = SplitMix64(seed: seed)
        let d = widths.reduce(0, +)
        let values = (0..<(rows * d)).map { _ in Float(rng.below(1000)) / 1000 - 0.3 }
        var x = try FeatureMatrix(rowCount: rows, columnCount: d, values: values, taps: Check.taps(widths))
        x.normalizeTaps()
        return x
    }

    @Test("shares: 1 for a tap kept whole, the column's RMS for a single kept column, training rows only")
    func shares() throws {
        let x = try Self.matrix(rows: 12, widths: [4, 6, 3], seed: 5)
        // Tap 0 whole, tap 1 one column (6), tap 2 two columns (11, 12).
        let columns = [0, 1, 2, 3, 6, 11, 12]
        let rows = [0, 2, 3, 7, 9]
        let shares = x.keptTapShares(rows: rows, columns: columns)
        #expect(shares.count == 3)
        #expect(abs(shares[0] - 1) <= 1e-6)
        let rms = { (cols: [Int]) -> Double in
            (rows.map { r in cols.map { Double(x.values[r * 13 + $0]) * Double(x.values[r * 13 + $0]) }.reduce(0, +) }
                .reduce(0, +) / Double(rows.count)).squareRoot()
        }
        #expect(abs(Double(shares[1]) - rms([6])) <= 1e-6)
        #expect(abs(Double(shares[2]) - rms([11, 12])) <= 1e-6)
        #expect(shares[1] < 1 && shares[2] < 1)
        // Another set of rows gives other shares: nothing but `rows` is read.
        #expect(x.keptTapShares(rows: [1, 4, 5], columns: columns)[1] != shares[1])
    }

    @Test("folding the tap scales into the head gives the scaled input's logits")
    func folding() throws {
        var x = try Self.matrix(rows: 7, widths: [3, 2, 4], seed: 8)
        var rng = SplitMix64(seed: 3)
        let w = (0..<(9 * 4)).map { _ in Float(rng.below(2000)) / 1000 - 1 }
        let head = LinearHead(inputCount: 9, classCount: 4, weights: w, bias: [0.1, -0.2, 0.3, 0])
        let scales: [Float] = [0.5, 2, 0.25]
        let folded = head.foldingTapScales(scales, taps: x.taps)
        let plain = folded.logits(x)
        x.scaleTaps(by: scales)
        let scaled = head.logits(x)
        #expect(Check.maxAbsDifference(plain, scaled) <= 1e-5)
        #expect(folded.weights != head.weights)
    }

    @Test("a fit with trainingShare stores the folded head of the share-weighted subset; unit does not weight")
    func fitUsesShares() throws {
        let (sets, train, test, _) = try FitTests.problem()
        var settings = FitTests.settings
        let report = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)
        settings.keptTapScaling = .unit
        let unit = try Head2ToeFit.run(featureSets: sets, trainLabels: train, testLabels: test, classCount: 3, settings: settings)

        var x = sets[0].train
        x.normalizeTaps()
        let allRows = Array(0..<x.rowCount)
        for (result, scaled) in [(report.head2toe, true), (unit.head2toe, false)] {
            let columns = result.selectedIndices
            #expect(columns.count < x.columnCount)
            var kept = x.gathered(rows: allRows, columns: columns, renormalize: true)
            let shares = x.keptTapShares(rows: allRows, columns: columns)
            #expect(shares.contains { $0 < 0.99 }, "selection keeps part of some tap")
            if scaled { kept.scaleTaps(by: shares) }
            let (fitted, _) = try FinalHead.fit(features: kept, labels: train, classCount: 3,
                                                settings: HeadSettings(solver: settings.headSolver, l2: result.ridge))
            let expected = scaled ? fitted.foldingTapScales(shares, taps: kept.taps) : fitted
            #expect(Check.maxAbsDifference(result.head.weights, expected.weights) <= 1e-4 * max(Check.maxAbs(expected.weights), 1e-6))
            // Test metrics come from the stored head on the plain re-normalised subset (the pipeline's rule).
            var t = try #require(sets[0].test)
            t.normalizeTaps()
            let predictions = result.head.predict(t.gathered(rows: Array(0..<t.rowCount), columns: columns, renormalize: true))
            #expect(result.test?.accuracy == ClassificationMetrics(predictions: predictions, labels: test, classCount: 3).accuracy)
        }
        #expect(report.settings.keptTapScaling == .trainingShare && unit.settings.keptTapScaling == .unit)
    }
}

/// Inputs built in a buffer handed back by an earlier task (`FloatBufferPool`): the same values,
/// in the buffer's own memory when it is large enough (no fresh pages to fault in).
@Suite("H2TTrain inputs in reused buffers")
struct ReusedInputBufferTests {
    @Test func keptInputsInAReusedBufferAreTheSameAndStayInItsMemory() throws {
        let x = try KeptTapScalingTests.matrix(rows: 30, widths: [8, 5, 11], seed: 21)
        let norms = [Float](repeating: 1, count: 30 * 3)
        let rows = [3, 0, 17, 29, 8, 11], columns = [0, 2, 3, 7, 9, 13, 14, 20, 23]
        let pool = FloatBufferPool()
        for scaling in [KeptTapScaling.unit, .trainingShare, .trainingConstant] {
            let fresh = x.keptInputs(norms: norms, rows: rows, columns: columns, scaling: scaling, statisticsRows: [3, 0, 17])
            // A larger buffer from an earlier, wider matrix.
            pool.give([Float](repeating: .nan, count: 4 * rows.count * columns.count))
            let storage = pool.take()
            #expect(storage.isEmpty && storage.capacity >= rows.count * columns.count)
            let address = storage.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
            let reused = x.keptInputs(norms: norms, rows: rows, columns: columns, scaling: scaling, statisticsRows: [3, 0, 17],
                                      storage: consume storage)
            #expect(reused.inputs == fresh.inputs && reused.tapScales == fresh.tapScales, "\(scaling)")
            #expect(reused.inputs.values.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } == address,
                    "\(scaling): the inputs were copied out of the buffer")
            pool.give(reused.inputs.values)
            _ = pool.take()
        }
        // A buffer too small is simply replaced.
        let small = x.gathered(rows: rows, columns: columns, renormalize: true, storage: [1, 2])
        #expect(small == x.gathered(rows: rows, columns: columns, renormalize: true))
    }
}
