@_exported import struct H2TCore.FeatureMatrix
@_exported import struct H2TCore.TapColumns
import H2TCore

// The matrix type lives in H2TCore, shared with the store's query layer; the trainer adds the
// operations of Head2Toe's input pipeline (checks, per-tap normalisation, gathering, scaling).
// Re-exported because it is the trainer's input type: users of H2TTrain need not import H2TCore.
extension FeatureMatrix {
    /// Wraps `values`; checks only the buffer size (call `validate` for the tap layout and finiteness).
    public init(rowCount: Int, columnCount: Int, values: [Float], taps: [TapColumns]) throws {
        guard rowCount >= 0, columnCount >= 0 else {
            throw TrainError.invalidSetting("negative matrix shape \(rowCount)×\(columnCount)")
        }
        guard values.count == rowCount * columnCount else {
            throw TrainError.shapeMismatch(what: "feature matrix \(rowCount)×\(columnCount)",
                                           expected: rowCount * columnCount, actual: values.count)
        }
        self.init(rowCount: rowCount, columnCount: columnCount, wrapping: values, taps: taps)
    }

    /// Checks that the taps partition the columns in order and that every value is finite.
    public func validate(featureSet: String, split: String) throws {
        try Self.validateTapLayout(taps, columnCount: columnCount, featureSet: featureSet)
        try values.withUnsafeBufferPointer { buffer in
            // A single pass that only looks for the first bad value; the common case is fast.
            for (index, value) in buffer.enumerated() where !value.isFinite {
                throw TrainError.nonFiniteFeature(featureSet: featureSet, split: split,
                                                  row: index / max(columnCount, 1),
                                                  column: index % max(columnCount, 1))
            }
        }
    }

    /// Checks that `taps` partition `0..<columnCount` in order, with unique names and positive widths.
    public static func validateTapLayout(_ taps: [TapColumns], columnCount: Int, featureSet: String) throws {
        guard !taps.isEmpty else {
            throw TrainError.invalidTapLayout(featureSet: featureSet, reason: "no taps")
        }
        var next = 0
        var names = Set<String>()
        for tap in taps {
            guard tap.width > 0 else {
                throw TrainError.invalidTapLayout(featureSet: featureSet, reason: "tap '\(tap.name)' has width \(tap.width)")
            }
            guard tap.offset == next else {
                throw TrainError.invalidTapLayout(featureSet: featureSet,
                                                  reason: "tap '\(tap.name)' starts at \(tap.offset), expected \(next)")
            }
            guard names.insert(tap.name).inserted else {
                throw TrainError.invalidTapLayout(featureSet: featureSet, reason: "duplicate tap '\(tap.name)'")
            }
            next += tap.width
        }
        guard next == columnCount else {
            throw TrainError.invalidTapLayout(featureSet: featureSet,
                                              reason: "taps cover \(next) columns, matrix has \(columnCount)")
        }
    }

    /// Scales each tap's slice of every row to unit L2 norm (docs/architecture.md §1 step 3); a zero slice
    /// stays zero. Returns the norms it divided by, `rowCount × taps.count` row-major (0 for a
    /// zero slice), so that `value × norm` gives back the raw value.
    ///
    /// The norm is accumulated in Double so that wide taps with large activations do not lose
    /// precision; it is per example, so it can be applied to all rows before splitting into folds
    /// without leaking anything between them. Rows are independent, so they are split over
    /// `parallelism`'s threads in blocks; the values are the same whatever the thread count.
    @discardableResult
    public mutating func normalizeTaps(parallelism: Parallelism = .serial) -> [Float] {
        let d = columnCount, rows = rowCount
        let taps = self.taps
        var norms = [Float](repeating: 0, count: rows * taps.count)
        let blockRows = 64
        values.withUnsafeMutableBufferPointer { buffer in
            norms.withUnsafeMutableBufferPointer { normBuffer in
                guard let base = buffer.baseAddress, let normBase = normBuffer.baseAddress else { return }
                // Cannot fail: the body throws nothing.
                try! Parallel.forEachWorker(itemCount: (rows + blockRows - 1) / blockRows, parallelism: parallelism) { _, next in
                    while let block = next() {
                        for row in (block * blockRows)..<min(rows, (block + 1) * blockRows) {
                            Self.normalizeRow(base + row * d, taps: taps, norms: normBase + row * taps.count)
                        }
                    }
                }
            }
        }
        return norms
    }

    /// Scales each tap's slice of one row to unit L2 norm and writes the norms (0 for a zero slice).
    private static func normalizeRow(_ row: UnsafeMutablePointer<Float>, taps: [TapColumns], norms: UnsafeMutablePointer<Float>) {
        for (t, tap) in taps.enumerated() {
            let slice = row + tap.offset
            var sum = 0.0
            for j in 0..<tap.width { sum += Double(slice[j]) * Double(slice[j]) }
            guard sum > 0 else { continue }
            let norm = sum.squareRoot()
            norms[t] = Float(norm)
            let scale = Float(1 / norm)
            for j in 0..<tap.width { slice[j] *= scale }
        }
    }

    /// The rows `rows` (in that order) and columns `columns` (sorted ascending), with each tap's
    /// kept subset re-normalised to unit L2 (docs/architecture.md §1 step 6) when `renormalize` is set.
    /// With `storage`, the values are written into its memory when it has the capacity (it is
    /// left empty); the result is the same either way.
    public func gathered(rows: [Int], columns: [Int], renormalize: Bool, storage: consuming [Float] = []) -> FeatureMatrix {
        let d = columnCount
        let k = columns.count
        var out = consume storage
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(0, count: rows.count * k))
        values.withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                for (r, row) in rows.enumerated() {
                    let s = source.baseAddress! + row * d
                    let t = target.baseAddress! + r * k
                    for (j, column) in columns.enumerated() { t[j] = s[column] }
                }
            }
        }
        // Shape and layout are correct by construction.
        var matrix = try! FeatureMatrix(rowCount: rows.count, columnCount: k, values: consume out, taps: tapsOfSubset(columns))
        if renormalize { matrix.normalizeTaps() }
        return matrix
    }

    /// For the kept `columns` (ascending) of this per-tap normalised matrix: the root mean square,
    /// over `rows`, of each kept subset's L2 norm, one value per tap of `tapsOfSubset(columns)`.
    ///
    /// This is the share of its tap's unit norm that a kept subset carries on those rows: 1 for a
    /// tap kept whole, small for a tap of which selection kept a few weak columns. It is computed
    /// from training rows only and depends on no test row.
    public func keptTapShares(rows: [Int], columns: [Int]) -> [Float] {
        let d = columnCount
        let subset = tapsOfSubset(columns)
        var sums = [Double](repeating: 0, count: subset.count)
        values.withUnsafeBufferPointer { source in
            for row in rows {
                let s = source.baseAddress! + row * d
                for (t, tap) in subset.enumerated() {
                    var sum = 0.0
                    for j in tap.offset..<(tap.offset + tap.width) {
                        let v = Double(s[columns[j]])
                        sum += v * v
                    }
                    sums[t] += sum
                }
            }
        }
        return sums.map { Float(($0 / Double(max(rows.count, 1))).squareRoot()) }
    }

    /// Index, in `taps`, of each tap of `tapsOfSubset(columns)`.
    public func tapIndicesOfSubset(_ columns: [Int]) -> [Int] {
        let position = Dictionary(uniqueKeysWithValues: taps.enumerated().map { ($0.element.name, $0.offset) })
        return tapsOfSubset(columns).map { position[$0.name]! }
    }

    /// Multiplies row `r`'s columns of tap `t` by `factors[r * taps.count + t]` (one factor per
    /// row and tap, row-major).
    public mutating func scaleRowTaps(by factors: [Float]) {
        precondition(factors.count == rowCount * taps.count, "one factor per row and tap")
        let count = taps.count
        scaleSlices { row, t in factors[row * count + t] }
    }

    /// Multiplies every column of tap `t` by `scales[t]` (one scale per tap, in tap order).
    public mutating func scaleTaps(by scales: [Float]) {
        precondition(scales.count == taps.count, "one scale per tap")
        scaleSlices { _, t in scales[t] }
    }

    /// Multiplies each row's slice of tap `t` by `factor(row, t)`.
    private mutating func scaleSlices(_ factor: (Int, Int) -> Float) {
        let d = columnCount
        let taps = self.taps
        values.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            for row in 0..<rowCount {
                let rowBase = base + row * d
                for (t, tap) in taps.enumerated() {
                    let scale = factor(row, t)
                    for j in tap.offset..<(tap.offset + tap.width) { rowBase[j] *= scale }
                }
            }
        }
    }
}
