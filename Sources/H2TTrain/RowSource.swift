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
    /// Whether every value is a bfloat16 (the store's dtype), so that a copy in memory may keep
    /// only the upper 16 bits of each float without loss.
    var valuesAreBFloat16: Bool { get }
}

extension RowSource {
    /// Not known: copies keep float32.
    public var valuesAreBFloat16: Bool { false }
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
/// a split, when they fit the budget); reads of those columns are then served from memory. A
/// source of bfloat16 values is held as bfloat16 (half the memory, no loss).
struct CachedColumns: RowSource {
    let rowCount: Int
    let columnCount: Int
    let taps: [TapColumns]
    let rowGroups: [Int]
    /// Row-major values: float32 bits, or only their upper halves for a bfloat16 source.
    let wide: [Float]
    let narrow: [UInt16]

    /// Bytes per value a cache of `source` holds.
    static func bytesPerValue(_ source: some RowSource) -> Int { source.valuesAreBFloat16 ? 2 : 4 }

    /// Reads `columns` of every row of `source` a window at a time.
    init(source: some RowSource, columns: [Int], windowRows: Int) throws {
        let n = source.rowCount, d = columns.count
        let half = source.valuesAreBFloat16
        var wide = [Float](repeating: 0, count: half ? 0 : n * d)
        var narrow = [UInt16](repeating: 0, count: half ? n * d : 0)
        var first = 0
        while first < n {
            let rows = Array(first..<min(first + windowRows, n))
            let part = try source.read(rows: rows, columns: columns)
            part.values.withUnsafeBufferPointer { values in
                if half {
                    narrow.withUnsafeMutableBufferPointer { out in
                        for i in 0..<values.count { out[first * d + i] = UInt16(truncatingIfNeeded: values[i].bitPattern >> 16) }
                    }
                } else {
                    wide.withUnsafeMutableBufferPointer { (($0.baseAddress! + first * d)).update(from: values.baseAddress!, count: values.count) }
                }
            }
            first += rows.count
        }
        (rowCount, columnCount, taps, rowGroups) = (n, d, source.taps.subset(columns), source.rowGroups)
        (self.wide, self.narrow) = (wide, narrow)
    }

    /// `columns` are indices into the cache's own columns.
    func read(rows: [Int], columns: [Int]?) throws -> FeatureMatrix {
        let picked = columns ?? Array(0..<columnCount)
        let d = columnCount
        return FeatureMatrix(rowCount: rows.count, columnCount: picked.count, taps: taps.subset(picked)) { out in
            for (r, row) in rows.enumerated() {
                let target = out.baseAddress! + r * picked.count
                if narrow.isEmpty {
                    for (j, c) in picked.enumerated() { target[j] = wide[row * d + c] }
                } else {
                    for (j, c) in picked.enumerated() { target[j] = Float(bitPattern: UInt32(narrow[row * d + c]) << 16) }
                }
            }
        }
    }
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
