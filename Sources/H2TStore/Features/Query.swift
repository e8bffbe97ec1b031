import H2TCore

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
    /// holding those columns are checksummed and decompressed. Decoding runs on the store's
    /// ``FeatureStore/parallelism``. The
    /// matrix carries the feature set's tap layout when `columns` is `nil` or ascending.
    public func read(featureSet: String, examples: [ExampleID], columns: [Int]? = nil) throws -> FeatureMatrix {
        let info = try self.featureSet(featureSet)
        return try read(info, examples: examples, columns: columns)
    }

    /// ``read(featureSet:examples:columns:)`` into `buffer` (at least `examples.count` rows of
    /// `columns?.count ?? width` floats, row-major; every one of them is written), for loops that
    /// read batch after batch into one buffer: a fresh matrix per batch faults in its pages anew
    /// (3.4 GB of them for the main job's all-features test pass).
    public func read(featureSet: String, examples: [ExampleID], columns: [Int]? = nil, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        let info = try self.featureSet(featureSet)
        let needed = examples.count * (columns?.count ?? info.manifest.width)
        guard buffer.count >= needed else {
            throw StoreError.invalidArgument("a buffer of \(buffer.count) floats for \(examples.count) rows that need \(needed)")
        }
        try read(info, examples: examples, columns: columns, into: buffer.baseAddress)
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
        let outColumns = columns?.count ?? manifest.width
        let taps = Self.tapLayout(manifest, columns: columns)
        // Every cell is written exactly once by the decoders (rows and columns are resolved
        // first, and any failure throws), so the output is not zero-filled first: that fill alone
        // cost a third of a whole-row read's CPU time (see docs/benchmarks.md).
        return try FeatureMatrix(rowCount: examples.count, columnCount: outColumns, taps: taps) { buffer in
            try read(info, examples: examples, columns: columns, into: buffer.baseAddress!)
        }
    }

    /// Decodes the rows of `examples` (all columns or `columns`) into `destination`, row-major
    /// with one row per example (`columns?.count ?? width` floats each): every cell is written.
    func read(_ info: FeatureSetInfo, examples: [ExampleID], columns: [Int]?, into destination: UnsafeMutablePointer<Float>?) throws {
        let manifest = info.manifest
        if let columns, let bad = columns.first(where: { $0 < 0 || $0 >= manifest.width }) {
            throw StoreError.invalidArgument("column \(bad) is outside feature set \(info.id.prefix(12)) (width \(manifest.width))")
        }
        let outColumns = columns?.count ?? manifest.width
        guard !examples.isEmpty, outColumns > 0, let destination else { return }
        let (segments, rowsBySegment) = try rowsBySegment(info, examples: examples)
        let blocks = Self.columnsByBlock(manifest, columns: columns)
        let work = Self.tileReads(segments: segments, rowsBySegment: rowsBySegment, blockCount: blocks.count)
        try decode(work, of: info, segments: segments, blocks: blocks, wholeTiles: columns == nil, into: destination, stride: outColumns)
    }

    /// Reads the rows of `examples` (all columns or `columns`, as ``read(featureSet:examples:columns:)``
    /// does) in blocks, each of rows from one segment (at most `maxRows` of them), on the store's
    /// threads, and hands each block to `body` on the worker that decoded it, with the block's
    /// positions in `examples`. Blocks arrive in no particular order, concurrently.
    ///
    /// Memory holds one block per worker instead of the whole read, and whatever `body` does
    /// with a block (a head's inputs, logits and probabilities in `predict`) runs on the workers
    /// too: a 10,000-row predict no longer faults in a 180 MB matrix, then multiplies it on one
    /// thread. The blocks depend only on where the examples are stored, never on the thread count.
    /// `body` may change the block's values in place (`predict` normalises them): each worker
    /// decodes its next block of the same shape into the same matrix, so its pages are faulted
    /// in once, not once per block.
    public func forEachRowBlock(featureSet: String, examples: [ExampleID], columns: [Int]? = nil, maxRows: Int = .max,
                                _ body: (_ positions: [Int], _ block: inout FeatureMatrix) throws -> Void) throws {
        precondition(maxRows > 0, "blocks need at least one row")
        let info = try self.featureSet(featureSet)
        let manifest = info.manifest
        if let columns, let bad = columns.first(where: { $0 < 0 || $0 >= manifest.width }) {
            throw StoreError.invalidArgument("column \(bad) is outside feature set \(info.id.prefix(12)) (width \(manifest.width))")
        }
        guard !examples.isEmpty else { return }
        let outColumns = columns?.count ?? manifest.width
        let taps = Self.tapLayout(manifest, columns: columns)
        let (segments, rowsBySegment) = try rowsBySegment(info, examples: examples)
        let blocks = Self.columnsByBlock(manifest, columns: columns)
        // Each segment's requested rows in stored order, cut into blocks of at most `maxRows`.
        var work: [(segment: Int, picks: ArraySlice<RowPick>)] = []
        for (segment, picks) in rowsBySegment.sorted(by: { $0.key < $1.key }) {
            let sorted = picks.sorted { $0.local < $1.local }
            for first in stride(from: 0, to: sorted.count, by: maxRows) {
                work.append((segment, sorted[first..<min(sorted.count, first + maxRows)]))
            }
        }
        let fs = FeatureSetPrefix(id: info.id)
        // Fewer blocks than threads (a predict of a few examples): each block's tiles are
        // decoded on all the threads instead.
        let tileParallelism = work.count < parallelism.threads ? parallelism : .serial
        // Tile `b` of work item `i` is tile `i * blocks.count + b` in decode order.
        let readAhead = TileReadAhead(tiles: work.flatMap { item in blocks.indices.map { (segments[item.segment].start, $0) } },
                                      blocks: blocks, wholeTiles: columns == nil, manifest: manifest, prefix: fs, table: tables.tiles,
                                      workers: parallelism.threads)
        try Parallel.forEachWorker(itemCount: work.count, parallelism: parallelism) { _, next in
            var previous: FeatureMatrix?
            while let index = next() {
                let (segment, picks) = work[index]
                let stored = segments[segment].count
                // Rows land in the block in stored order; exactly the segment's rows 0..<n (no
                // repeated example standing in for a missing one) take the contiguous path.
                let whole = picks.count == stored && picks.enumerated().allSatisfy { $0.element.local == $0.offset }
                let rows: [RowPick]? = whole ? nil : picks.enumerated().map { RowPick(local: $0.element.local, out: $0.offset) }
                func decode(into buffer: UnsafeMutableBufferPointer<Float>) throws {
                    try Parallel.forEachWorker(itemCount: blocks.count, parallelism: tileParallelism) { _, nextBlock in
                        let decoder = TileDecoder()
                        try environment.read { txn in
                            while let b = nextBlock() {
                                readAhead.decoding(index * blocks.count + b, txn)
                                try decodeTile(txn, decoder, featureSet: info.id, fs, segment: segments[segment], block: blocks[b], rows: rows,
                                               into: buffer.baseAddress!, stride: outColumns)
                            }
                        }
                    }
                }
                var matrix: FeatureMatrix
                if previous?.rowCount == picks.count, previous?.columnCount == outColumns, previous?.taps == taps,
                   previous?.values.count == picks.count * outColumns {  // (a caller may have replaced the values)
                    // Taken out, so its buffer is referenced once: decoded into, not copied.
                    matrix = previous.take()!
                    try matrix.values.withUnsafeMutableBufferPointer { try decode(into: $0) }
                } else {
                    previous = nil
                    matrix = try FeatureMatrix(rowCount: picks.count, columnCount: outColumns, taps: taps, initializingValuesWith: decode)
                }
                try body(picks.map(\.out), &matrix)
                previous = consume matrix
            }
        }
    }

    /// The tap layout of a read: the feature set's taps for every column, their subset for
    /// ascending columns, none for columns in another order (they follow no tap layout).
    static func tapLayout(_ manifest: FeatureSetManifest, columns: [Int]?) -> [TapColumns] {
        guard let columns else { return manifest.taps }
        guard zip(columns, columns.dropFirst()).allSatisfy({ $0 < $1 }) else { return [] }
        return manifest.taps.subset(columns)
    }

    /// The feature set's segments and, per segment (index), where each requested example sits in
    /// it and in the output.
    private func rowsBySegment(_ info: FeatureSetInfo, examples: [ExampleID]) throws -> ([Segment], [Int: [RowPick]]) {
        let fs = FeatureSetPrefix(id: info.id)
        let (segments, rowNumbers) = try environment.read { txn -> ([Segment], [Int]) in
            let segments = try segmentList(txn, info.id)
            let numbers = try examples.map { example -> Int in
                guard let row = try txn.get(tables.rows, (fs, example)) else {
                    throw StoreError.missingExample(example: example.hex, featureSet: info.id)
                }
                return row
            }
            return (segments, numbers)
        }
        let starts = segments.map(\.start)
        let storedRows = segments.last.map { $0.start + $0.count } ?? 0
        var picksBySegment: [Int: [RowPick]] = [:]
        for (out, row) in rowNumbers.enumerated() {
            guard row < storedRows else {
                throw StoreError.inconsistent("example \(examples[out].hex.prefix(12)) maps to row \(row) of feature set \(info.id.prefix(12)), which stores \(storedRows) rows")
            }
            // The last segment starting at or before `row`.
            var lo = 0, hi = starts.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if starts[mid] <= row { lo = mid } else { hi = mid - 1 }
            }
            picksBySegment[lo, default: []].append(RowPick(local: row - starts[lo], out: out))
        }
        return (segments, picksBySegment)
    }

    /// The requested columns grouped by column block (tile column), ascending inside each block.
    static func columnsByBlock(_ manifest: FeatureSetManifest, columns: [Int]?) -> [(block: Int, picks: [ColumnPick])] {
        let blockWidth = manifest.columnBlock
        guard let columns else {
            return (0..<manifest.columnBlocks).map { block in
                let first = block * blockWidth
                return (block, (0..<min(blockWidth, manifest.width - first)).map { ColumnPick(local: $0, out: first + $0) })
            }
        }
        var grouped: [Int: [ColumnPick]] = [:]
        for (out, c) in columns.enumerated() { grouped[c / blockWidth, default: []].append(ColumnPick(local: c % blockWidth, out: out)) }
        return grouped.keys.sorted().map { ($0, grouped[$0]!.sorted { $0.local < $1.local }) }
    }

    /// One tile to decode: a segment's rows (`nil`: all of them, in order, landing from output row
    /// `firstOut`) and one column block (an index into the block list).
    struct TileRead: Sendable {
        var segment: Int
        var rows: [RowPick]?
        var blockIndex: Int
        var firstOut: Int
    }

    /// Every (segment, column block) tile a read touches.
    static func tileReads(segments: [Segment], rowsBySegment: [Int: [RowPick]], blockCount: Int) -> [TileRead] {
        var work: [TileRead] = []
        for (segment, picks) in rowsBySegment.sorted(by: { $0.key < $1.key }) {
            let sorted = picks.sorted { $0.local < $1.local }
            // A whole segment read in order decodes with the contiguous fast path.
            let identity = sorted.count == segments[segment].count && sorted.enumerated().allSatisfy { $0.element.local == $0.offset }
                && zip(sorted, sorted.dropFirst()).allSatisfy { $0.out + 1 == $1.out }
            let firstOut = sorted.first?.out ?? 0
            for b in 0..<blockCount { work.append(TileRead(segment: segment, rows: identity ? nil : sorted, blockIndex: b, firstOut: firstOut)) }
        }
        return work
    }

    /// Decodes `work` into the output rows at `destination` (`stride` floats per row), on the
    /// store's threads, one read transaction and one decoder per worker.
    private func decode(_ work: [TileRead], of info: FeatureSetInfo, segments: [Segment], blocks: [(block: Int, picks: [ColumnPick])],
                        wholeTiles: Bool, into destination: UnsafeMutablePointer<Float>, stride: Int) throws {
        let featureSet = info.id
        let fs = FeatureSetPrefix(id: featureSet)
        let readAhead = TileReadAhead(tiles: work.map { (segments[$0.segment].start, $0.blockIndex) }, blocks: blocks,
                                      wholeTiles: wholeTiles, manifest: info.manifest, prefix: fs, table: tables.tiles,
                                      workers: parallelism.threads)
        try Parallel.forEachWorker(itemCount: work.count, parallelism: parallelism) { _, next in
            let decoder = TileDecoder()
            try environment.read { txn in
                while let index = next() {
                    readAhead.decoding(index, txn)
                    let item = work[index]
                    var base = destination
                    // Identity rows: the segment's first row lands at the first pick's output row.
                    if item.rows == nil { base += item.firstOut * stride }
                    try decodeTile(txn, decoder, featureSet: featureSet, fs, segment: segments[item.segment], block: blocks[item.blockIndex],
                                   rows: item.rows, into: base, stride: stride)
                }
            }
        }
    }

    /// Decodes one tile's picked columns of `rows` (all, in order, when `nil`) into `base`
    /// (`stride` floats per row), naming the tile in any error.
    private func decodeTile(_ txn: borrowing LMDBTransaction, _ decoder: TileDecoder, featureSet id: String, _ fs: FeatureSetPrefix, segment: Segment,
                            block: (block: Int, picks: [ColumnPick]), rows: [RowPick]?,
                            into base: UnsafeMutablePointer<Float>, stride: Int) throws {
        guard let tile = try txn.get(tables.tiles, (fs, segment.start, block.block)) else {
            throw StoreError.inconsistent("missing tile \(TileKey.describe(id, segment: segment.start, block: block.block))")
        }
        let binding = TileCodec.binding(key: TileKey.encode((fs, segment.start, block.block)), rows: segment.count)
        do {
            try decoder.decode(tile, binding: binding, columns: block.picks, rows: rows, into: base, destStride: stride)
        } catch let error as TileError {
            throw StoreError.corruptTile(key: TileKey.describe(id, segment: segment.start, block: block.block), reason: error.description)
        }
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
