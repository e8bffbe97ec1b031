/// Where one tap's columns sit in a feature row: the tap's name, its first column and its width,
/// and (when the row came from a backbone's tap list) the tap's raw per-example shape.
///
/// One type for every layer: the feature-set manifest records its taps with it (the JSON keys
/// `name`, `sourceShape`, `offset`, `width` are part of a feature set's identity), the query layer
/// labels the matrices it reads with it, and the trainer normalises per tap along it.
public struct TapColumns: Sendable, Hashable, Codable {
    /// The tap's name as the feature set records it.
    public var name: String
    /// Raw per-example shape of the tap (`[C, H, W]` channel-first, or `[C]`) before pooling;
    /// `nil` for a layout built without a backbone's tap list (synthetic or hand-made matrices).
    public var sourceShape: [Int]?
    /// First column of the tap in the row.
    public var offset: Int
    /// Number of columns.
    public var width: Int

    /// Creates a tap layout entry.
    public init(name: String, sourceShape: [Int]? = nil, offset: Int, width: Int) {
        self.name = name
        self.sourceShape = sourceShape
        self.offset = offset
        self.width = width
    }

    /// The tap's columns as a range.
    public var columns: Range<Int> { offset..<(offset + width) }
}

extension Array where Element == TapColumns {
    /// The layout of the column subset `columns` (global indices into the row these taps
    /// partition, strictly ascending), with offsets in the subset; taps that keep no column are
    /// dropped. Each kept tap keeps its name and source shape.
    public func subset(_ columns: [Int]) -> [TapColumns] {
        var result: [TapColumns] = []
        var position = 0
        for tap in self {
            let start = position
            while position < columns.count, columns[position] < tap.offset + tap.width { position += 1 }
            if position > start {
                result.append(TapColumns(name: tap.name, sourceShape: tap.sourceShape, offset: start, width: position - start))
            }
        }
        return result
    }
}

/// A dense row-major `rowCount × columnCount` Float matrix of examples (rows) by features
/// (columns), with the columns partitioned into taps when the layout is known.
///
/// The one matrix type of the project: the query layer reads it from the store and the trainer
/// fits on it, so features go from store to solver without a copy or a conversion.
public struct FeatureMatrix: Sendable, Hashable {
    /// Number of examples.
    public let rowCount: Int
    /// Number of features `D`.
    public let columnCount: Int
    /// Row-major values, `rowCount * columnCount` of them.
    public var values: [Float]
    /// The column partition, ordered by offset; empty when the columns follow no tap layout (a
    /// read of columns in an order other than ascending). The trainer checks that the taps cover
    /// `0..<columnCount` in order without gaps or overlaps, because per-tap normalisation needs
    /// the tap of every column.
    public let taps: [TapColumns]

    /// A zero matrix.
    public init(rowCount: Int, columnCount: Int, taps: [TapColumns] = []) {
        precondition(rowCount >= 0 && columnCount >= 0, "negative matrix shape \(rowCount)×\(columnCount)")
        self.rowCount = rowCount
        self.columnCount = columnCount
        self.taps = taps
        values = [Float](repeating: 0, count: rowCount * columnCount)
    }

    /// A matrix whose values `initialize` writes into uninitialised memory: it must write every
    /// one of the `rowCount * columnCount` values (a reader that fills each cell once need not
    /// pay for zero-filling first).
    public init(rowCount: Int, columnCount: Int, taps: [TapColumns] = [],
                initializingValuesWith initialize: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        precondition(rowCount >= 0 && columnCount >= 0, "negative matrix shape \(rowCount)×\(columnCount)")
        let count = rowCount * columnCount
        self.rowCount = rowCount
        self.columnCount = columnCount
        self.taps = taps
        values = try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try initialize(UnsafeMutableBufferPointer(rebasing: buffer[0..<count]))
            initialized = count
        }
    }

    /// Wraps `values`, which must hold `rowCount * columnCount` values (a precondition; the
    /// training module's `init(rowCount:columnCount:values:taps:)` checks and throws instead).
    public init(rowCount: Int, columnCount: Int, wrapping values: [Float], taps: [TapColumns] = []) {
        precondition(values.count == rowCount * columnCount, "\(values.count) values for a \(rowCount)×\(columnCount) matrix")
        self.rowCount = rowCount
        self.columnCount = columnCount
        self.values = values
        self.taps = taps
    }

    /// Row `r`.
    public func row(_ r: Int) -> ArraySlice<Float> { values[(r * columnCount)..<((r + 1) * columnCount)] }

    /// Value at row `r`, column `c`.
    public subscript(r: Int, c: Int) -> Float { values[r * columnCount + c] }

    /// The columns of the tap named `name`, or `nil` if no tap has that name.
    public func columns(ofTap name: String) -> Range<Int>? {
        taps.first { $0.name == name }?.columns
    }

    /// The taps of the column subset `columns` (sorted ascending), with offsets in the subset;
    /// taps that keep no column are dropped.
    public func tapsOfSubset(_ columns: [Int]) -> [TapColumns] { taps.subset(columns) }
}
