import Foundation
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

    @Test func batchesAreSeededShuffledAndCoverTheSplitOnce() throws {
        let dir = TemporaryDirectory()
        let (store, fs, ids, values, width) = try makeStore(dir)
        func collect(seed: UInt64) throws -> [ExampleID] {
            var batches = try store.batches(featureSet: fs, dataset: "toy", split: "train", batchSize: 8, seed: seed, columns: [1])
            var seen: [ExampleID] = []
            while let batch = try batches.nextBatch() {
                #expect(batch.features.rows <= 8)
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
        let tiles = store.environment.table("tiles")
        // Flip a byte in the middle of the first tile's data.
        try store.environment.write { txn in
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
}
