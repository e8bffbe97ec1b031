import Synchronization
import Dispatch
import H2TCore

/// A dense row-major float matrix.
public struct FeatureMatrix: Sendable, Hashable {
    /// Number of rows (examples).
    public var rows: Int
    /// Number of columns (features).
    public var cols: Int
    /// `rows × cols` values, row-major.
    public var values: [Float]

    /// A zero matrix.
    public init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        values = [Float](repeating: 0, count: rows * cols)
    }

    /// Wraps existing values.
    public init(rows: Int, cols: Int, values: [Float]) {
        precondition(values.count == rows * cols, "values do not match \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.values = values
    }

    /// Row `r` as an array.
    public func row(_ r: Int) -> ArraySlice<Float> { values[(r * cols)..<((r + 1) * cols)] }

    /// Value at `(r, c)`.
    public subscript(r: Int, c: Int) -> Float { values[r * cols + c] }
}

/// A labelled matrix read from a dataset split.
public struct LabelledMatrix: Sendable {
    /// Features, one row per example in split order (or batch order).
    public var features: FeatureMatrix
    /// Labels aligned with the rows.
    public var labels: [Int]
    /// Example ids aligned with the rows.
    public var examples: [ExampleID]
}

extension FeatureStore {
    /// Reads the rows of `examples` from feature set `featureSet` (id or prefix), all columns or
    /// only `columns` (global indices, in the order given; the output has `columns.count` columns).
    ///
    /// Only the tiles holding the requested columns are touched, and inside them only the frames
    /// holding those columns are checksummed and decompressed. Decoding runs on both cores.
    public func read(featureSet: String, examples: [ExampleID], columns: [Int]? = nil) throws -> FeatureMatrix {
        let info = try self.featureSet(featureSet)
        return try read(info, examples: examples, columns: columns)
    }

    /// Reads `columns` given as `(tap, index within tap)` pairs.
    public func read(featureSet: String, examples: [ExampleID], tapColumns: [(tap: String, index: Int)]) throws -> FeatureMatrix {
        let info = try self.featureSet(featureSet)
        let columns = try tapColumns.map { pair -> Int in
            guard let c = info.manifest.column(tap: pair.tap, index: pair.index) else {
                throw StoreError.invalidArgument("feature set \(info.id.prefix(12)) has no column \(pair.index) in tap '\(pair.tap)'")
            }
            return c
        }
        return try read(info, examples: examples, columns: columns)
    }

    /// Reads a whole dataset split (all or selected columns), in split order.
    public func read(featureSet: String, dataset: String, split: String, columns: [Int]? = nil) throws -> LabelledMatrix {
        let items = try self.split(dataset: dataset, split: split)
        let matrix = try read(featureSet: featureSet, examples: items.examples, columns: columns)
        return LabelledMatrix(features: matrix, labels: items.labels, examples: items.examples)
    }

    /// Per-tap column ranges of a feature set, in tap order.
    public func tapRanges(featureSet: String) throws -> [(tap: String, columns: Range<Int>)] {
        try self.featureSet(featureSet).manifest.taps.map { ($0.name, $0.columns) }
    }

    func read(_ info: FeatureSetInfo, examples: [ExampleID], columns: [Int]?) throws -> FeatureMatrix {
        let manifest = info.manifest
        if let columns, let bad = columns.first(where: { $0 < 0 || $0 >= manifest.width }) {
            throw StoreError.invalidArgument("column \(bad) is outside feature set \(info.id.prefix(12)) (width \(manifest.width))")
        }
        let outCols = columns?.count ?? manifest.width
        guard !examples.isEmpty, outCols > 0 else { return FeatureMatrix(rows: examples.count, cols: outCols) }

        // Resolve rows and group them by segment.
        let fs = FeatureSetPrefix(id: info.id)
        let (segs, rowNumbers) = try environment.read { txn -> ([Segment], [Int]) in
            let segs = try segmentList(txn, info.id)
            let numbers = try examples.map { example -> Int in
                guard let row = try txn.get(tables.rows, (fs, example)) else {
                    throw StoreError.missingExample(example: example.hex, featureSet: info.id)
                }
                return row
            }
            return (segs, numbers)
        }
        let starts = segs.map(\.start)
        let storedRows = segs.last.map { $0.start + $0.count } ?? 0
        var picksBySegment: [Int: [RowPick]] = [:]
        for (out, row) in rowNumbers.enumerated() {
            guard row < storedRows else {
                throw StoreError.inconsistent("example \(examples[out].hex.prefix(12)) maps to row \(row) of feature set \(info.id.prefix(12)), which stores \(storedRows) rows")
            }
            var lo = 0, hi = starts.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if starts[mid] <= row { lo = mid } else { hi = mid - 1 }
            }
            picksBySegment[lo, default: []].append(RowPick(local: row - starts[lo], out: out))
        }

        // Group requested columns by column block.
        let blockWidth = manifest.columnBlock
        var picksByBlock: [(block: Int, picks: [ColumnPick])] = []
        if let columns {
            var grouped: [Int: [ColumnPick]] = [:]
            for (out, c) in columns.enumerated() { grouped[c / blockWidth, default: []].append(ColumnPick(local: c % blockWidth, out: out)) }
            picksByBlock = grouped.keys.sorted().map { ($0, grouped[$0]!.sorted { $0.local < $1.local }) }
        } else {
            for block in 0..<manifest.columnBlocks {
                let first = block * blockWidth
                let n = min(blockWidth, manifest.width - first)
                picksByBlock.append((block, (0..<n).map { ColumnPick(local: $0, out: first + $0) }))
            }
        }

        struct Work { var segment: Int; var rows: [RowPick]?; var blockIndex: Int; var firstOut: Int }
        var work: [Work] = []
        for (segment, picks) in picksBySegment.sorted(by: { $0.key < $1.key }) {
            let sorted = picks.sorted { $0.local < $1.local }
            // A whole segment read in order decodes with the contiguous fast path.
            let identity = sorted.count == segs[segment].count && sorted.enumerated().allSatisfy { $0.element.local == $0.offset }
                && zip(sorted, sorted.dropFirst()).allSatisfy { $0.out + 1 == $1.out }
            let firstOut = sorted.first?.out ?? 0
            for b in picksByBlock.indices { work.append(Work(segment: segment, rows: identity ? nil : sorted, blockIndex: b, firstOut: firstOut)) }
        }
        let workList = work
        let blocks = picksByBlock
        let fsID = info.id
        let failure = FirstError()
        // Every cell is written exactly once by the decoders (rows and columns were resolved above,
        // and any failure throws), so the output is not zero-filled first: that fill alone cost a
        // third of a whole-row read's CPU time (tools/bench-store.sh).
        let values = try [Float](unsafeUninitializedCapacity: examples.count * outCols) { buffer, initialized in
            let dest = UnsafeSendable(buffer.baseAddress!)
            let workers = min(2, workList.count)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let decoder = TileDecoder()
                do {
                    try environment.read { txn in
                        var i = worker
                        while i < workList.count, !failure.isSet {
                            let item = workList[i]
                            let start = segs[item.segment].start
                            let block = blocks[item.blockIndex]
                            let key = TileKey.encode((fs, start, block.block))
                            guard let tile = try txn.get(tables.tiles, (fs, start, block.block)) else {
                                throw StoreError.inconsistent("missing tile \(TileKey.describe(fsID, segment: start, block: block.block))")
                            }
                            var base = dest.value
                            // Identity rows: the segment's first row lands at the first pick's output row.
                            if item.rows == nil { base += item.firstOut * outCols }
                            let binding = TileCodec.binding(key: key, rows: segs[item.segment].count)
                            do {
                                try decoder.decode(tile, binding: binding, columns: block.picks, rows: item.rows, into: base, destStride: outCols)
                            } catch let error as TileError {
                                throw StoreError.corruptTile(key: TileKey.describe(fsID, segment: start, block: block.block), reason: error.description)
                            }
                            i += workers
                        }
                    }
                } catch {
                    failure.set(error)
                }
            }
            if let error = failure.error { throw error }
            initialized = examples.count * outCols
        }
        return FeatureMatrix(rows: examples.count, cols: outCols, values: values)
    }

    /// Seeded, shuffled mini-batches of a split, streamed one batch at a time, so splits larger
    /// than memory can be used. (Each batch decodes the frames of every segment it touches.)
    public func batches(featureSet: String, dataset: String, split: String, batchSize: Int, seed: UInt64,
                        columns: [Int]? = nil) throws -> SplitBatches {
        guard batchSize > 0 else { throw StoreError.invalidArgument("batch size must be positive, got \(batchSize)") }
        let info = try self.featureSet(featureSet)
        let items = try self.split(dataset: dataset, split: split)
        return SplitBatches(store: self, info: info, items: items, batchSize: batchSize, seed: seed, columns: columns)
    }
}

/// The first error thrown by any worker.
final class FirstError: Sendable {
    private let stored = Mutex<(any Error)?>(nil)

    var isSet: Bool { stored.withLock { $0 != nil } }
    var error: (any Error)? { stored.withLock { $0 } }
    func set(_ error: any Error) { stored.withLock { if $0 == nil { $0 = error } } }
}

/// Shuffled mini-batches over a split. The order is a seeded shuffle of example positions
/// (SplitMix64 + Fisher–Yates), so the same seed gives the same batches; each `next()` reads one
/// batch through the query layer, so memory holds one batch at a time.
public struct SplitBatches: Sequence, IteratorProtocol {
    let store: FeatureStore
    let info: FeatureSetInfo
    let items: SplitItems
    let batchSize: Int
    let columns: [Int]?
    let order: [Int]
    var position = 0

    init(store: FeatureStore, info: FeatureSetInfo, items: SplitItems, batchSize: Int, seed: UInt64, columns: [Int]?) {
        self.store = store
        self.info = info
        self.items = items
        self.batchSize = batchSize
        self.columns = columns
        var order = Array(items.examples.indices)
        var state = seed
        func nextRandom() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        if order.count > 1 {
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                let j = Int(nextRandom() % UInt64(i + 1))
                order.swapAt(i, j)
            }
        }
        self.order = order
    }

    /// Number of batches.
    public var count: Int { (order.count + batchSize - 1) / batchSize }

    /// The next batch, or `nil` at the end. Read errors stop the sequence; use `nextBatch()` to see them.
    public mutating func next() -> LabelledMatrix? { try? nextBatch() }

    /// The next batch, or `nil` at the end; throws read errors.
    public mutating func nextBatch() throws -> LabelledMatrix? {
        guard position < order.count else { return nil }
        let chosen = order[position..<Swift.min(position + batchSize, order.count)]
        position += chosen.count
        let examples = chosen.map { items.examples[$0] }
        let features = try store.read(info, examples: examples, columns: columns)
        return LabelledMatrix(features: features, labels: chosen.map { items.labels[$0] }, examples: examples)
    }
}
