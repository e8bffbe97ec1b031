import Foundation
import Synchronization
import H2TCore
@_spi(Testing) import H2TStore
import H2TPipeline
import Testing

@Suite("Feature store and query layer")
struct FeatureStoreTests {
    /// A store with one feature set of `rows` examples committed in segments of `segment` rows.
    func makeStore(_ dir: TemporaryDirectory, rows: Int = 50, segment: Int = 16, codec: TileCodec = .lossless)
        throws -> (FeatureStore, String, [ExampleID], [Float], Int) {
        let store = try FeatureStore(path: dir.file("store"))
        let backbone = toyBackbone()
        let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: [16], codec: codec, columnBlock: 8)
        let width = writer.manifests[0].width
        var generator = ActivationGenerator(state: 11)
        let values = generator.matrix(rows: rows, cols: width)
        let ids = (0..<rows).map { ExampleID(name: "ex\($0)") }
        let encoder = SegmentEncoder(manifest: writer.manifests[0])
        var first = 0
        while first < rows {
            let n = min(segment, rows - first)
            let tiles = values.withUnsafeBufferPointer { encoder.encode($0.baseAddress! + first * width, rows: n) }
            let chunkIDs = Array(ids[first..<(first + n)])
            try store.commit(
                segments: [SegmentPayload(featureSet: writer.featureSetIDs[0], examples: chunkIDs, tiles: tiles)],
                examples: chunkIDs.enumerated().map { ($1, ExampleRecord(name: "ex\(first + $0)", source: "test")) },
                datasets: [DatasetAppend(dataset: "toy", classNames: ["a", "b"], split: "train", items: chunkIDs.enumerated().map { ($1, (first + $0) % 2) })])
            first += n
        }
        return (store, writer.featureSetIDs[0], ids, values, width)
    }

    @Test func wholeRowsComeBackExactlyInRequestedOrder() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, values, width) = try makeStore(dir)
        let order = [49, 0, 17, 16, 3]
        let matrix = try store.read(featureSet: fs, examples: order.map { ids[$0] })
        for (r, example) in order.enumerated() {
            #expect(Array(matrix.row(r)) == Array(values[(example * width)..<((example + 1) * width)]))
        }
        let all = try store.read(featureSet: fs, dataset: "toy", split: "train")
        #expect(all.features.values == values)
        #expect(all.labels == (0..<50).map { $0 % 2 })
    }

    /// `exportNPY` in chunks that do not divide the rows (7 per chunk over 50 rows in segments of
    /// 16): a valid .npy header, then the split's rows byte for byte; an unwritable path is an
    /// error naming it and leaves no file.
    @Test func exportWritesTheSplitInChunks() throws {
        let dir = TemporaryDirectory()
        let (store, fs, _, values, width) = try makeStore(dir)
        for (columns, chunk) in [(nil, 7), ([width - 1, 0, 9], 50), (nil, 64)] as [([Int]?, Int)] {
            let path = dir.file("x.npy")
            let summary = try store.exportNPY(featureSet: fs, dataset: "toy", split: "train", columns: columns, to: path, rowsPerChunk: chunk)
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let headerLength = Int(data[8]) | Int(data[9]) << 8
            #expect(Array(data.prefix(6)) == [0x93] + Array("NUMPY".utf8))
            #expect((10 + headerLength) % 64 == 0)
            let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
            let cols = columns?.count ?? width
            #expect(header.contains("'shape': (50, \(cols))"), "\(header)")
            #expect(summary.rows == 50 && summary.columns == cols)
            let floats = data.dropFirst(10 + headerLength).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let expected = (0..<50).flatMap { r in (columns ?? Array(0..<width)).map { values[r * width + $0] } }
            #expect(floats == expected)
        }
        let bad = dir.file("no-such-folder/x.npy")
        #expect(throws: NPYExportError.self) { _ = try store.exportNPY(featureSet: fs, dataset: "toy", split: "train", to: bad) }
        #expect(!FileManager.default.fileExists(atPath: bad))
    }

    @Test func selectedColumnsByIndexAndByTap() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, values, width) = try makeStore(dir)
        let columns = [width - 1, 0, 9, 9, 20]
        let matrix = try store.read(featureSet: fs, examples: ids, columns: columns)
        for r in 0..<ids.count {
            for (k, c) in columns.enumerated() { #expect(matrix[r, k] == values[r * width + c]) }
        }
        let ranges = try store.tapRanges(featureSet: fs)
        #expect(ranges.map(\.tap) == ["conv", "logits"])
        let logitsStart = ranges[1].columns.lowerBound
        let byTap = try store.read(featureSet: fs, examples: [ids[5]], tapColumns: [(tap: "logits", index: 2)])
        #expect(byTap[0, 0] == values[5 * width + logitsStart + 2])
        #expect(throws: StoreError.self) { _ = try store.read(featureSet: fs, examples: [ids[0]], tapColumns: [(tap: "nope", index: 0)]) }
        #expect(throws: StoreError.self) { _ = try store.read(featureSet: fs, examples: [ids[0]], columns: [width]) }
    }

    /// A read into the caller's buffer: what `read` returns, every value written; a buffer too
    /// small is an error naming the sizes.
    @Test func readIntoABuffer() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, _, width) = try makeStore(dir)
        let order = [49, 0, 17, 16, 3].map { ids[$0] }
        for columns in [nil, [width - 1, 0, 9]] as [[Int]?] {
            let expected = try store.read(featureSet: fs, examples: order, columns: columns)
            var buffer = [Float](repeating: .nan, count: expected.values.count)
            try buffer.withUnsafeMutableBufferPointer { try store.read(featureSet: fs, examples: order, columns: columns, into: $0) }
            #expect(buffer == expected.values)
            var small = [Float](repeating: 0, count: expected.values.count - 1)
            #expect(throws: StoreError.self) {
                try small.withUnsafeMutableBufferPointer { try store.read(featureSet: fs, examples: order, columns: columns, into: $0) }
            }
        }
    }

    /// Row blocks (what `predict` reads through): every requested position exactly once, each
    /// block from one segment and at most `maxRows` rows, in stored order inside the segment,
    /// with the values `read` gives; the same blocks at 1 and 3 threads.
    @Test(arguments: [Int.max, 16, 5])
    func rowBlocksCoverTheRequestOnceWithReadsValues(maxRows: Int) throws {
        let dir = TemporaryDirectory()
        // The writer's store object is closed before the reads reopen the path (one per process).
        let (path, fs, ids, values, width) = try { () throws -> (String, String, [ExampleID], [Float], Int) in
            let (store, fs, ids, values, width) = try makeStore(dir)
            return (store.path, fs, ids, values, width)
        }()
        // Segments of 16: all of segment 2 (rows 32..<48, the contiguous path), segment 1 but
        // row 17 twice and row 18 never (as many rows as the segment: must not take that path).
        let order = [49, 0, 17, 16, 3] + Array(19..<32) + [17, 5, 6] + Array(32..<48)
        let columns = [width - 1, 0, 9, 20]
        var seen: [[(positions: [Int], values: [Float])]] = []
        for threads in [1, 3] {
            let store = try FeatureStore(path: path, create: false, readOnly: true, parallelism: Parallelism(threads: threads))
            let blocks = Mutex<[(positions: [Int], values: [Float])]>([])
            try store.forEachRowBlock(featureSet: fs, examples: order.map { ids[$0] }, columns: columns, maxRows: maxRows) { positions, block in
                #expect(block.rowCount == positions.count && block.columnCount == columns.count)
                let values = block.values
                blocks.withLock { $0.append((positions, values)) }
                // The caller may overwrite a block (predict normalises it): the worker's next
                // block, decoded into the same matrix, must not show it.
                for i in block.values.indices { block.values[i] = .nan }
            }
            let sorted = blocks.withLock { $0 }.sorted { $0.positions[0] < $1.positions[0] }
            seen.append(sorted)
            #expect(sorted.flatMap(\.positions).sorted() == Array(order.indices))
            #expect(throws: StoreError.self) { try store.forEachRowBlock(featureSet: fs, examples: [ids[0]], columns: [width]) { _, _ in } }
            // One block, fewer than the threads: its tiles are decoded on all of them.
            let few = [3, 9, 3].map { ids[$0] }
            try store.forEachRowBlock(featureSet: fs, examples: few, maxRows: maxRows) { positions, block in
                let expected = try store.read(featureSet: fs, examples: positions.map { few[$0] })
                #expect(block.values == expected.values)
            }
            for block in sorted {
                let stored = block.positions.map { order[$0] }
                #expect(block.positions.count <= maxRows)
                #expect(Set(stored.map { $0 / 16 }).count == 1, "one segment per block")
                #expect(stored == stored.sorted(), "stored order inside a block")
                for (r, example) in stored.enumerated() {
                    #expect(Array(block.values[(r * columns.count)..<((r + 1) * columns.count)]) == columns.map { values[example * width + $0] })
                }
            }
        }
        #expect(seen[0].map(\.positions) == seen[1].map(\.positions))
        #expect(seen[0].map(\.values) == seen[1].map(\.values))
    }

    @Test func batchesAreSeededShuffledAndCoverTheSplitOnce() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, values, width) = try makeStore(dir)
        func collect(seed: UInt64) throws -> [ExampleID] {
            var batches = try store.batches(featureSet: fs, dataset: "toy", split: "train", batchSize: 8, seed: seed, columns: [1])
            var seen: [ExampleID] = []
            while let batch = try batches.nextBatch() {
                #expect(batch.features.rowCount <= 8)
                for (r, id) in batch.examples.enumerated() {
                    let index = ids.firstIndex(of: id)!
                    #expect(batch.features[r, 0] == values[index * width + 1])
                    #expect(batch.labels[r] == index % 2)
                }
                seen += batch.examples
            }
            return seen
        }
        let a = try collect(seed: 1), b = try collect(seed: 1), c = try collect(seed: 2)
        #expect(a == b)
        #expect(a != c)
        #expect(Set(a) == Set(ids))
        #expect(a.count == ids.count)
    }

    @Test func corruptedTileIsNamedByVerifyAndReads() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, _, _) = try makeStore(dir, codec: .default)
        let tiles = store.rawEnvironment.table("tiles")
        // Flip a byte in the middle of the first tile's data.
        try store.rawEnvironment.write { txn in
            var key: [UInt8] = []
            var value: [UInt8] = []
            try txn.scan(tiles, prefix: []) { k, v in key = Array(k); value = Array(v); return false }
            value[value.count / 2] ^= 0xFF
            try txn.put(tiles, key, value)
        }
        let report = try store.verify()
        #expect(!report.ok)
        #expect(report.problems.contains { $0.contains("tiles/\(fs.prefix(12))/rows@0/block0") })
        do {
            _ = try store.read(featureSet: fs, examples: [ids[0]])
            Issue.record("a corrupted tile was read without error")
        } catch let error as StoreError {
            #expect("\(error)".contains("corrupted tile tiles/\(fs.prefix(12))/rows@0/block0"))
        }
    }

    @Test func unknownStoreFormatVersionIsRefused() throws {
        let dir = TemporaryDirectory()
        do {
            let env = try LMDBEnvironment(path: dir.file("store"), options: .init(tables: ["meta"]))
            try env.write { txn in try txn.put(env.table("meta"), Array("format".utf8), [99, 0, 0, 0]) }
        }
        do {
            _ = try FeatureStore(path: dir.file("store"))
            Issue.record("a format-99 store was opened")
        } catch {
            #expect("\(error)".contains("format version 99"))
        }
    }

    @Test func relabellingKnownExamplesCostsNoFeatures() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, _, _) = try makeStore(dir)
        let before = try store.diskUsage().featureSets[0].bytes
        try store.appendToDataset(DatasetAppend(dataset: "parity3", classNames: ["x", "y", "z"], split: "train",
                                                items: ids.prefix(30).enumerated().map { ($1, $0 % 3) }))
        let relabelled = try store.read(featureSet: fs, dataset: "parity3", split: "train", columns: [0])
        #expect(relabelled.labels == (0..<30).map { $0 % 3 })
        #expect(try store.diskUsage().featureSets[0].bytes == before)
        #expect(throws: StoreError.self) {
            try store.appendToDataset(DatasetAppend(dataset: "parity3", classNames: ["x", "y", "z"], split: "train", items: [(ids[0], 2)]))
        }
        #expect(throws: StoreError.self) {
            try store.appendToDataset(DatasetAppend(dataset: "bad", classNames: ["x"], split: "train", items: [(ExampleID(name: "never"), 0)]))
        }
    }

    @Test func unknownNamesGetHelpfulErrors() throws {
        let dir = TemporaryDirectory()
        let (store, _, _, _, _) = try makeStore(dir)
        #expect(throws: StoreError.self) { _ = try store.featureSet("ffffffff") }
        do { _ = try store.split(dataset: "toy", split: "test"); Issue.record("unknown split accepted") } catch {
            #expect("\(error)".contains("splits: train"))
        }
        do { _ = try store.dataset("toyy"); Issue.record("unknown dataset accepted") } catch {
            #expect("\(error)".contains("known: toy"))
        }
    }

    @Test func selectedMatrixIsMaterialisedOnceAndExact() throws {
        let dir = TemporaryDirectory()
        let (store, fs, _, _, _) = try makeStore(dir, codec: .default)
        let columns = [3, 17, 0, 22]
        let direct = try store.read(featureSet: fs, dataset: "toy", split: "train", columns: columns)
        let first = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: columns)
        let second = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: columns)
        #expect(!first.cached)
        #expect(second.cached)
        #expect(first.matrix.features == direct.features)
        #expect(second.matrix.features == direct.features)
        #expect(second.matrix.labels == direct.labels)
        #expect(try store.cachedMatrices().count == 1)
        // A changed split is a different matrix.
        try store.appendToDataset(DatasetAppend(dataset: "toy", classNames: ["a", "b"], split: "train", items: []))
        let other = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: [1])
        #expect(!other.cached)
        #expect(try store.cachedMatrices().count == 2)
    }

    /// A selected matrix written behind the caller: the same matrix at once, the record committed
    /// by `wait()` (then a hit with the same values), several writes tracked together, and the
    /// same matrix asked for again while its write may still run is a hit, not a second write.
    @Test func selectedMatrixWrittenBehind() throws {
        let dir = TemporaryDirectory()
        let (store, fs, _, _, _) = try makeStore(dir, codec: .default)
        let writes = CacheWrites()
        let direct = try store.read(featureSet: fs, dataset: "toy", split: "train", columns: [3, 17])
        let first = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: [3, 17], writeBehind: writes)
        let other = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: [5], writeBehind: writes)
        #expect(!first.cached && !other.cached)
        #expect(first.matrix.features == direct.features)
        // Asked for again before anyone waited: its own write is waited for, then it is a hit.
        let repeated = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: [3, 17], writeBehind: writes)
        #expect(repeated.cached && repeated.matrix.features == direct.features)
        try writes.wait()
        #expect(try store.cachedMatrices().count == 2)
        let again = try store.selectedMatrix(featureSet: fs, dataset: "toy", split: "train", columns: [3, 17], writeBehind: writes)
        #expect(again.cached && again.matrix.features == direct.features)
        try writes.wait()
    }

    /// Two tiles of equal size swapped in the `tiles` table (a misdirected write): both blocks of
    /// segment 0, and block 0 of two segments of 16 rows. Each is caught by `verify` and by reads.
    @Test(arguments: [(0, 0, 0, 1), (0, 0, 16, 0)])
    func misplacedTilesAreCaught(swap: (Int, Int, Int, Int)) throws {
        let dir = TemporaryDirectory()
        // Uncompressed: tiles of equal shape have equal size, as a swap that LMDB cannot notice needs.
        let (store, fs, ids, _, _) = try makeStore(dir, rows: 48, segment: 16, codec: TileCodec(dtype: .float32, compressed: false))
        let tiles = store.rawEnvironment.table("tiles")
        let prefix = Hex.decode(fs.prefix(32))!
        func key(_ segment: Int, _ block: Int) -> [UInt8] { prefix + be32(segment) + be32(block) }
        try store.rawEnvironment.write { txn in
            let a = try #require(try txn.get(tiles, key(swap.0, swap.1)).map(Array.init))
            let b = try #require(try txn.get(tiles, key(swap.2, swap.3)).map(Array.init))
            #expect(a.count == b.count)
            try txn.put(tiles, key(swap.0, swap.1), b)
            try txn.put(tiles, key(swap.2, swap.3), a)
        }
        let report = try store.verify()
        #expect(report.problems.count == 2)
        #expect(report.problems.allSatisfy { $0.contains("header checksum") })
        #expect(throws: StoreError.self) { _ = try store.read(featureSet: fs, examples: [ids[0]]) }
        #expect(throws: StoreError.self) { _ = try store.read(featureSet: fs, examples: [ids[swap.2]], columns: [swap.3 * 8]) }
    }

    /// A segment record whose row count disagrees with its tiles, and a dataset record whose split
    /// count disagrees with its items, are errors for every read, not only for `verify`.
    @Test func countsThatDisagreeWithTheDataAreReadErrors() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, _, _) = try makeStore(dir, rows: 48, segment: 16)
        let prefix = Hex.decode(fs.prefix(32))!
        try store.rawEnvironment.write { txn in
            try txn.put(store.rawEnvironment.table("segments"), prefix + be32(16), [15, 0, 0, 0])
        }
        // Row 16 now falls in a segment that claims 15 rows: its tiles no longer match.
        #expect(throws: StoreError.self) { _ = try store.read(featureSet: fs, examples: [ids[16]]) }
        #expect(!(try store.verify().ok))

        let dir2 = TemporaryDirectory()
        let (store2, fs2, _, _, _) = try makeStore(dir2, rows: 20, segment: 16)
        try store2.rawEnvironment.write { txn in
            let datasets = store2.rawEnvironment.table("datasets")
            let value = try #require(try txn.get(datasets, Array("toy".utf8)).map { String(decoding: $0, as: UTF8.self) })
            try txn.put(datasets, Array("toy".utf8), Array(value.replacingOccurrences(of: "20", with: "21").utf8))
        }
        do {
            _ = try store2.read(featureSet: fs2, dataset: "toy", split: "train")
            Issue.record("a split whose count disagrees with its items was read")
        } catch {
            #expect("\(error)".contains("toy/train holds 20 items but its dataset record says 21"))
        }
    }

    /// Two writers that computed the same examples (two ingests into one store): the later commit
    /// keeps what the earlier stored and adds only the rest, re-encoded; neither fails.
    @Test func overlappingCommitsStoreEveryExampleOnce() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, values, width) = try makeStore(dir, rows: 10, segment: 10, codec: .default)
        let manifest = try store.featureSet(fs).manifest
        // A second writer's chunk: examples 5..<10 (stored) and 10..<14 (new), interleaved.
        var generator = ActivationGenerator(state: 99)
        let fresh = generator.matrix(rows: 4, cols: width)
        let order = [5, 10, 6, 11, 12, 7, 8, 13, 9]
        let chunkIDs = order.map { $0 < 10 ? ids[$0] : ExampleID(name: "ex\($0)") }
        func row(_ i: Int) -> [Float] {
            i < 10 ? Array(values[(i * width)..<((i + 1) * width)]) : Array(fresh[((i - 10) * width)..<((i - 9) * width)])
        }
        let chunk: [Float] = order.flatMap(row)
        let tiles = chunk.withUnsafeBufferPointer { SegmentEncoder(manifest: manifest).encode($0.baseAddress!, rows: order.count) }
        try store.commit(segments: [SegmentPayload(featureSet: fs, examples: chunkIDs, tiles: tiles)],
                         examples: chunkIDs.map { ($0, ExampleRecord(name: "x", source: "second writer")) },
                         datasets: [DatasetAppend(dataset: "toy", classNames: ["a", "b"], split: "train", items: zip(chunkIDs, order).map { ($0, $1 % 2) })])
        let info = try store.featureSet(fs)
        #expect(info.rowCount == 14)
        #expect(info.segmentCount == 2)
        #expect(try store.verify().ok)
        let expected = try store.read(featureSet: fs, examples: ids)
        let again = try store.read(featureSet: fs, examples: chunkIDs)
        for (r, i) in order.enumerated() {
            let want: [Float] = i < 10 ? Array(expected.row(i)) : row(i).map(bfloat16Rounded)
            #expect(Array(again.row(r)) == want)
        }
        // The same chunk once more: nothing to add, and no error.
        try store.commit(segments: [SegmentPayload(featureSet: fs, examples: chunkIDs, tiles: tiles)], examples: [], datasets: [])
        #expect(try store.featureSet(fs).rowCount == 14)
    }

    /// A chunk's matrix is not zero-filled up front and its memory is reused from chunk to chunk,
    /// yet what is stored is what a zero-filled matrix would hold: rows written in place
    /// (`rowBlock`), copied (`setRow`), pooled tap by tap (`add`, other columns zero) or never
    /// written (all zero), even over the previous chunk's values.
    @Test func chunkRowsWrittenInPlaceOrNotAtAllStoreAsZeroFilledRowsWould() throws {
        let dir = TemporaryDirectory()
        let store = try FeatureStore(path: dir.file("store"))
        let writer = try FeatureSetWriter(store: store, backbone: toyBackbone(), targetSizes: [16], codec: .lossless, columnBlock: 8)
        let width = writer.manifests[0].width
        let fs = writer.featureSetIDs[0]
        var generator = ActivationGenerator(state: 5)
        let values = generator.matrix(rows: 4, cols: width).map { $0 + 1 }  // no zeros
        let ids = (0..<7).map { ExampleID(name: "chunk-row-\($0)") }
        let append = { (range: Range<Int>) in
            [DatasetAppend(dataset: "toy", classNames: ["a"], split: "train", items: ids[range].map { ($0, 0) })]
        }
        // Chunk 1: rows 0-1 in place, row 2 copied, row 3 filled too (so the memory holds no zero).
        let first = try writer.chunk(examples: Array(ids[0..<4]))
        let block = try #require(first.rowBlock(featureSet: 0, examples: [0, 1]))
        #expect(block.count == 2 * width)
        _ = block.initialize(from: values[0..<(2 * width)])
        for r in 2..<4 {
            values.withUnsafeBufferPointer { first.setRow(featureSet: 0, example: r, UnsafeBufferPointer(rebasing: $0[(r * width)..<((r + 1) * width)])) }
        }
        try first.commit(records: (0..<4).map { ExampleRecord(name: "r\($0)", source: "test") }, datasets: append(0..<4))
        // Chunk 2 reuses that memory: example 3 is stored already, so no block spans it; of the
        // new ones, 4 is never written, 5 gets one tap by `add`, 6 is written in place.
        let second = try writer.chunk(examples: Array(ids[3..<7]))
        #expect(second.rowBlock(featureSet: 0, examples: [0, 1]) == nil)
        let tapValues = [Float](repeating: 2, count: 4 * 4 * 4)
        tapValues.withUnsafeBufferPointer { second.add(tap: 0, example: 2, activation: $0) }
        let last = try #require(second.rowBlock(featureSet: 0, examples: [3]))
        _ = last.initialize(from: values[(3 * width)..<(4 * width)])
        try second.commit(records: (3..<7).map { ExampleRecord(name: "r\($0)", source: "test") }, datasets: append(3..<7))

        let stored = try store.read(featureSet: fs, examples: ids)
        for r in 0..<4 { #expect(Array(stored.row(r)) == Array(values[(r * width)..<((r + 1) * width)])) }
        #expect(stored.row(4).allSatisfy { $0 == 0 })
        let tap = writer.manifests[0].taps[0]
        let pooled = Array(stored.row(5))
        #expect(pooled[tap.offset..<(tap.offset + tap.width)].allSatisfy { $0 == 2 })
        #expect(pooled.indices.filter { !(tap.offset..<(tap.offset + tap.width)).contains($0) }.allSatisfy { pooled[$0] == 0 })
        #expect(Array(stored.row(6)) == Array(values[(3 * width)..<(4 * width)]))
    }
}

private func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

/// What a bfloat16 tile gives back for `x` (round to nearest even).
private func bfloat16Rounded(_ x: Float) -> Float {
    let bits = x.bitPattern
    let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: rounded)
}
