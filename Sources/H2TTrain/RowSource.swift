import H2TCore

/// Training rows that the stochastic path reads a window at a time instead of holding them all:
/// the store's query layer in the pipeline, a matrix in memory in tests and for cached columns.
public protocol RowSource: Sendable {
    /// Rows `N`.
    var rowCount: Int { get }
    /// Columns `D`.
    var columnCount: Int { get }
    /// The column partition into taps.
    var taps: [TapColumns] { get }
    /// A locality group per row (the storage segment): rows of one group are cheap to read
    /// together, so windows are made of whole groups.
    var rowGroups: [Int] { get }
    /// The raw values of `rows` (in that order) at `columns` (ascending; `nil`: every column).
    func read(rows: [Int], columns: [Int]?) throws -> FeatureMatrix
}

extension FeatureMatrix: RowSource {
    /// Every row its own group: a matrix in memory reads any rows at the same cost.
    public var rowGroups: [Int] { Array(0..<rowCount) }

    /// The rows and columns asked for, copied.
    public func read(rows: [Int], columns: [Int]?) throws -> FeatureMatrix {
        gathered(rows: rows, columns: columns ?? Array(0..<columnCount), renormalize: false)
    }
}

/// Some columns of every row of a source, read once and held in memory (the selected columns of
/// a split, when they fit the budget); reads of those columns are then served from memory.
struct CachedColumns: RowSource {
    let matrix: FeatureMatrix
    /// The source's columns this cache holds, ascending.
    let sourceColumns: [Int]
    let rowGroups: [Int]
    var rowCount: Int { matrix.rowCount }
    var columnCount: Int { matrix.columnCount }
    var taps: [TapColumns] { matrix.taps }

    /// Reads `columns` of every row of `source` a window at a time.
    init(source: some RowSource, columns: [Int], windowRows: Int) throws {
        let n = source.rowCount, d = columns.count
        var values = [Float](repeating: 0, count: n * d)
        var first = 0
        while first < n {
            let rows = Array(first..<min(first + windowRows, n))
            let part = try source.read(rows: rows, columns: columns)
            values.withUnsafeMutableBufferPointer { out in
                part.values.withUnsafeBufferPointer { (out.baseAddress! + first * d).update(from: $0.baseAddress!, count: $0.count) }
            }
            first += rows.count
        }
        matrix = FeatureMatrix(rowCount: n, columnCount: d, wrapping: values, taps: source.taps.subset(columns))
        sourceColumns = columns
        rowGroups = source.rowGroups
    }

    /// `columns` are indices into `sourceColumns` here (the cache's own columns).
    func read(rows: [Int], columns: [Int]?) throws -> FeatureMatrix { try matrix.read(rows: rows, columns: columns) }
}

/// Seeded epoch order for a streamed source: the locality groups holding `rows` are shuffled,
/// packed into windows of about `windowRows` rows (a group larger than that is cut), and each
/// window's rows are shuffled. Mini-batches are consecutive slices of a window, so every read
/// decodes whole segments and every batch still mixes rows of a window's segments.
public enum EpochPlan {
    /// The windows of one epoch over `rows`, `groups` giving every source row's locality group.
    public static func windows(rows: [Int], groups: [Int], windowRows: Int, seed: UInt64) -> [[Int]] {
        var byGroup: [Int: [Int]] = [:]
        for row in rows { byGroup[groups[row], default: []].append(row) }
        var order = byGroup.keys.sorted()
        var rng = SplitMix64(seed: seed)
        rng.shuffle(&order)
        var windows: [[Int]] = []
        var current: [Int] = []
        for group in order {
            for row in byGroup[group]! {
                current.append(row)
                if current.count == windowRows {
                    windows.append(current)
                    current = []
                }
            }
        }
        if !current.isEmpty { windows.append(current) }
        for i in windows.indices { rng.shuffle(&windows[i]) }
        return windows
    }

    /// Windows in a fixed order without shuffling (evaluation passes).
    public static func sequential(rows: [Int], groups: [Int], windowRows: Int) -> [[Int]] {
        let sorted = rows.sorted { groups[$0] != groups[$1] ? groups[$0] < groups[$1] : $0 < $1 }
        return stride(from: 0, to: sorted.count, by: windowRows).map { Array(sorted[$0..<min($0 + windowRows, sorted.count)]) }
    }
}
