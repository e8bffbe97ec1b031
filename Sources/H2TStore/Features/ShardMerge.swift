import Foundation
import H2TCore

/// What `merge` did (printed as a table, or as JSON: `schemas/merge-output.schema.json`).
public struct MergeSummary: Sendable, Codable {
    /// The target store.
    public var target: String
    /// The run's plan digest.
    public var plan: String
    /// One entry per shard, in shard order.
    public var shards: [ShardOutcome]
    /// Rows added over all feature sets.
    public var rowsAdded: Int
    /// Dataset items added.
    public var itemsAdded: Int
    /// Tiles copied without decoding (new row numbers only).
    public var tilesCopied: Int
    /// Tiles decoded and re-encoded because some of their rows were already in the target.
    public var tilesReencoded: Int
    /// Bytes of tiles written.
    public var tileBytes: Int
    /// Wall time, all of it (checks, seal verification, copy).
    public var seconds: Double
    /// Wall time of the copy alone.
    public var copySeconds: Double
    /// `tileBytes` per copy second, in MB (10^6 bytes).
    public var copyMegabytesPerSecond: Double

    /// One merged shard.
    public struct ShardOutcome: Sendable, Codable {
        public var path: String
        public var shard: Int
        /// True when the target already held the shard (nothing was written for it).
        public var alreadyMerged: Bool
        public var rowsAdded: Int
        public var itemsAdded: Int
        public var tilesCopied: Int
    }
}

extension FeatureStore {
    /// Merges the sealed shards at `shardPaths`, all N of one run, into this store: manifests,
    /// example records, rows and tiles (each tile copied as stored, bound to its new key), then the
    /// dataset items in shard order, which is the order a single-process ingest of all the inputs
    /// gives. Features, splits and labels then equal that ingest's, bit for bit.
    ///
    /// Everything is checked before the first write: unsealed, foreign, damaged or missing shards,
    /// and examples the target holds with other features or labels are refused with one line
    /// naming the shard. Each segment (and each run of dataset items) is one transaction, so a
    /// merge killed at any point leaves a valid store; the shard's record, written with its last
    /// items, makes a re-run skip it, and a re-run of an interrupted shard skips what is stored.
    public func merge(shardPaths: [String], progress: ProgressReporter? = nil) throws -> MergeSummary {
        let started = Date()
        if try shardRecord() != nil {
            throw StoreError.invalidArgument("\(path) is itself a shard store; merge into another store (e.g. a new directory)")
        }
        let shards = try openShards(shardPaths)
        let reference = shards[0].record
        var pending: [OpenShard] = []
        var outcomes: [Int: MergeSummary.ShardOutcome] = [:]
        for shard in shards {
            if try alreadyMerged(shard) {
                outcomes[shard.record.shard] = .init(path: shard.path, shard: shard.record.shard, alreadyMerged: true, rowsAdded: 0, itemsAdded: 0, tilesCopied: 0)
            } else {
                pending.append(shard)
            }
        }
        // Recomputing a seal hashes every tile of the shard: the shards are checked side by side.
        _ = try Parallel.map(pending, parallelism: parallelism) { try $0.checkSeal() }
        for shard in pending { try checkConflicts(shard) }

        let copyStarted = Date()
        progress?.setTotal(pending.reduce(0) { $0 + ($1.record.seal?.tiles ?? 0) })
        var totals = CopyCounts()
        for shard in pending {
            let counts = try copy(shard, progress: progress)
            totals.add(counts)
            outcomes[shard.record.shard] = .init(path: shard.path, shard: shard.record.shard, alreadyMerged: false,
                                                 rowsAdded: counts.rows, itemsAdded: counts.items, tilesCopied: counts.tilesCopied)
        }
        progress?.finish()
        let copySeconds = Date().timeIntervalSince(copyStarted)
        return MergeSummary(target: path, plan: reference.plan, shards: outcomes.keys.sorted().map { outcomes[$0]! },
                            rowsAdded: totals.rows, itemsAdded: totals.items, tilesCopied: totals.tilesCopied,
                            tilesReencoded: totals.tilesReencoded, tileBytes: totals.tileBytes,
                            seconds: Date().timeIntervalSince(started), copySeconds: copySeconds,
                            copyMegabytesPerSecond: Double(totals.tileBytes) / 1e6 / max(copySeconds, 1e-9))
    }

    // MARK: Checks before writing

    /// A shard store opened read-only, with its sealed record.
    struct OpenShard {
        let path: String
        let store: FeatureStore
        let record: ShardRecord

        /// Refuses a shard whose tiles, rows or items differ from its seal.
        func checkSeal() throws {
            guard try store.computeSeal(record) == record.seal else {
                throw StoreError.invalidArgument("\(path): \(record.label) does not match its seal (changed or damaged since it was sealed); re-run its ingest in a new directory")
            }
        }
    }

    /// Opens every shard and refuses unsealed, foreign, duplicated or missing ones; returns one
    /// shard per K, in shard order.
    func openShards(_ paths: [String]) throws -> [OpenShard] {
        guard !paths.isEmpty else { throw StoreError.invalidArgument("give the shard directories to merge") }
        let targetPath = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        var byIndex: [Int: OpenShard] = [:]
        var first: OpenShard?
        for shardPath in paths {
            if URL(fileURLWithPath: shardPath).standardizedFileURL.resolvingSymlinksInPath().path == targetPath {
                throw StoreError.invalidArgument("\(shardPath) is the target store itself, not a shard")
            }
            let shard = try Self.openShard(shardPath, parallelism: parallelism)
            if let first {
                let a = first.record, b = shard.record
                if a.plan != b.plan || a.backbone != b.backbone || a.featureSets != b.featureSets || a.shards != b.shards {
                    throw StoreError.invalidArgument("\(shardPath): \(b.label) is not of the same run as \(first.path) (\(Self.difference(b, a))); merge each run's shards separately")
                }
            } else {
                first = shard
            }
            if let twin = byIndex[shard.record.shard] {
                guard twin.record.seal == shard.record.seal else {
                    throw StoreError.invalidArgument("\(twin.path) and \(shardPath) are both shard \(shard.record.shard)/\(shard.record.shards) but hold different data; keep one")
                }
                continue
            }
            byIndex[shard.record.shard] = shard
        }
        let n = first!.record.shards
        let missing = (0..<n).filter { byIndex[$0] == nil }
        if let k = missing.first {
            throw StoreError.invalidArgument("shard \(k)/\(n) of plan \(first!.record.plan.prefix(12)) is missing (\(missing.count) of \(n) not given); merge needs every shard of the run")
        }
        return (0..<n).map { byIndex[$0]! }
    }

    static func openShard(_ path: String, parallelism: Parallelism) throws -> OpenShard {
        guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
            throw StoreError.invalidArgument("\(path) is not a shard store (no h2t-store there)")
        }
        let store: FeatureStore
        do {
            store = try FeatureStore(path: path, create: false, readOnly: true, parallelism: parallelism)
        } catch {
            throw StoreError.invalidArgument("\(path) is not a readable h2t-store: \(error)")
        }
        guard let record = try store.shardRecord() else {
            throw StoreError.invalidArgument("\(path) is not a shard (it was not written by `ingest --shard`)")
        }
        guard record.seal != nil else {
            throw StoreError.invalidArgument("\(path): \(record.label) is not sealed (its ingest did not finish); re-run that shard's ingest, which resumes it")
        }
        return OpenShard(path: path, store: store, record: record)
    }

    /// Whether this store already holds `shard` (its record was written by an earlier merge).
    func alreadyMerged(_ shard: OpenShard) throws -> Bool {
        let key = StoreTables.mergedShardKey(plan: shard.record.plan, shard: shard.record.shard)
        guard let merged = try environment.read({ txn in try txn.get(tables.shardRecords, key) }) else { return false }
        guard merged.seal == shard.record.seal else {
            throw StoreError.invalidArgument("\(path) already holds a different \(shard.record.label) than \(shard.path); merge into a new store")
        }
        return true
    }

    /// Refuses a shard whose examples this store holds with other features (any feature set of
    /// the shard), other labels or other class names.
    func checkConflicts(_ shard: OpenShard) throws {
        let record = shard.record
        if let stored = try? dataset(record.dataset), let shardDataset = try? shard.store.dataset(record.dataset) {
            let classes = shardDataset.classNames
            guard stored.classNames == classes else {
                throw StoreError.invalidArgument("\(shard.path): dataset '\(record.dataset)' has classes \(classes) there but \(stored.classNames) in \(path)")
            }
            if stored.splits[record.split] != nil {
                let ours = try split(dataset: record.dataset, split: record.split)
                let labelOf = Dictionary(zip(ours.examples, ours.labels), uniquingKeysWith: { a, _ in a })
                let theirs = try shard.store.split(dataset: record.dataset, split: record.split)
                for (example, label) in zip(theirs.examples, theirs.labels) {
                    if let other = labelOf[example], other != label {
                        throw StoreError.invalidArgument("\(shard.path): example \(example.hex.prefix(12)) has label '\(classes[label])' there but '\(classes[other])' in \(path)/\(record.dataset)/\(record.split)")
                    }
                }
            }
        }
        for id in record.featureSets where (try? featureSet(id)) != nil {
            let examples = try shard.store.rowExamples(of: id)
            let shared = zip(examples, try missing(examples, in: id)).filter { !$0.1 }.map(\.0)
            // In bounded batches: after an interrupted merge, most of a shard can be shared.
            for first in stride(from: 0, to: shared.count, by: Self.comparedRowsPerBatch) {
                let batch = Array(shared[first..<min(first + Self.comparedRowsPerBatch, shared.count)])
                let theirs = try shard.store.read(featureSet: id, examples: batch)
                let ours = try read(featureSet: id, examples: batch)
                for (r, example) in batch.enumerated() where !theirs.row(r).elementsEqual(ours.row(r), by: { $0.bitPattern == $1.bitPattern }) {
                    throw StoreError.invalidArgument("\(shard.path): example \(example.hex.prefix(12)) has other features in feature set \(id.prefix(12)) than \(path) holds for it; merge into a new store")
                }
            }
        }
    }

    /// Examples whose features are compared at once (bounds the memory of `checkConflicts`).
    static let comparedRowsPerBatch = 512

    /// Every example with a row in feature set `id`, in row order.
    func rowExamples(of id: String) throws -> [ExampleID] {
        try environment.read { txn in
            var out: [ExampleID] = []
            try txn.scan(tables.rowExamples, prefix: FeatureSetRowKey.prefix(FeatureSetPrefix(id: id))) { _, example in
                out.append(example)
                return true
            }
            return out
        }
    }

    // MARK: Copy

    struct CopyCounts {
        var rows = 0, items = 0, tilesCopied = 0, tilesReencoded = 0, tileBytes = 0

        mutating func add(_ other: CopyCounts) {
            rows += other.rows; items += other.items; tilesCopied += other.tilesCopied
            tilesReencoded += other.tilesReencoded; tileBytes += other.tileBytes
        }
    }

    /// Items per transaction when appending a shard's dataset items.
    static let itemsPerCommit = 65_536

    /// Copies one shard: manifests, then each feature set segment by segment, then the dataset
    /// items with the shard's merged record in the last transaction.
    func copy(_ shard: OpenShard, progress: ProgressReporter?) throws -> CopyCounts {
        let record = shard.record
        try register(backbone: try shard.store.backbone(record.backbone))
        var counts = CopyCounts()
        for id in record.featureSets {
            let manifest = try shard.store.featureSet(id).manifest
            try register(featureSet: manifest)
            let segments = try shard.store.environment.read { txn in try shard.store.segmentList(txn, id) }
            for segment in segments {
                counts.add(try copySegment(segment, featureSet: id, manifest: manifest, from: shard.store))
                progress?.advance(by: manifest.columnBlocks)
            }
        }
        // A shard with no inputs (more shards than inputs) has no dataset record.
        let dataset = try? shard.store.dataset(record.dataset)
        let items = dataset == nil ? SplitItems(examples: [], labels: []) : try shard.store.split(dataset: record.dataset, split: record.split)
        let classNames = dataset?.classNames ?? []
        var first = 0
        repeat {
            let end = min(first + Self.itemsPerCommit, items.examples.count)
            let last = end == items.examples.count
            counts.items += try environment.write { txn in
                try shard.store.environment.read { source in
                    let before = try txn.get(tables.datasets, record.dataset)?.splits[record.split] ?? 0
                    for example in items.examples[first..<end] { try copyExampleRecord(example, txn, from: shard.store, source) }
                    if first < end { try appendDataset(txn, DatasetAppend(dataset: record.dataset, classNames: classNames, split: record.split,
                                                         items: (first..<end).map { (items.examples[$0], items.labels[$0]) })) }
                    if last { try txn.put(tables.shardRecords, StoreTables.mergedShardKey(plan: record.plan, shard: record.shard), record) }
                    return (try txn.get(tables.datasets, record.dataset)?.splits[record.split] ?? 0) - before
                }
            }
            first = end
        } while first < items.examples.count
        return counts
    }

    /// Copies one segment of a shard in one transaction, with new row numbers after this store's
    /// last row. Tiles are copied as stored and re-bound to their new key; only rows this store
    /// already holds (an example shared with other data) force a decode and re-encode, which is
    /// exact because the values are already in the stored dtype.
    func copySegment(_ segment: Segment, featureSet id: String, manifest: FeatureSetManifest, from source: FeatureStore) throws -> CopyCounts {
        let fs = FeatureSetPrefix(id: id)
        return try environment.write { txn in
            try source.environment.read { stxn in
                var examples: [ExampleID] = []
                try stxn.scan(source.tables.rowExamples, prefix: FeatureSetRowKey.prefix(fs), from: FeatureSetRowKey.encode((fs, segment.start))) { key, example in
                    guard key.row < segment.start + segment.count else { return false }
                    examples.append(example)
                    return true
                }
                guard examples.count == segment.count else {
                    throw StoreError.inconsistent("shard \(source.path): segment \(id.prefix(12))/rows@\(segment.start) has \(examples.count) row records for \(segment.count) rows")
                }
                let keep = try examples.indices.filter { try !txn.contains(tables.rows, (fs, examples[$0])) }
                guard !keep.isEmpty else { return CopyCounts() }
                let start = try txn.lastKey(tables.segments, prefix: FeatureSetRowKey.prefix(fs)).map { key in
                    key.row + (try txn.get(tables.segments, key) ?? 0)
                } ?? 0
                var counts = CopyCounts(rows: keep.count)
                var tiles: [[UInt8]] = [], oldBindings: [[UInt8]] = []
                for block in 0..<manifest.columnBlocks {
                    guard let stored = try stxn.get(source.tables.tiles, (fs, segment.start, block)) else {
                        throw StoreError.inconsistent("shard \(source.path): tile \(TileKey.describe(id, segment: segment.start, block: block)) is missing")
                    }
                    tiles.append(Array(stored))
                    oldBindings.append(TileCodec.binding(key: TileKey.encode((fs, segment.start, block)), rows: segment.count))
                }
                do {
                    if keep.count < segment.count {
                        tiles = try Self.keepingRows(keep, of: tiles, manifest: manifest, bindings: oldBindings)
                        counts.tilesReencoded += tiles.count
                    }
                    for block in tiles.indices {
                        let newBinding = TileCodec.binding(key: TileKey.encode((fs, start, block)), rows: keep.count)
                        if keep.count < segment.count {
                            TileCodec.bind(&tiles[block], to: newBinding)
                        } else {
                            try TileCodec.rebind(&tiles[block], from: oldBindings[block], to: newBinding)
                            counts.tilesCopied += 1
                        }
                        counts.tileBytes += tiles[block].count
                        try txn.put(tables.tiles, (fs, start, block), tiles[block])
                    }
                } catch let error as TileError {
                    throw StoreError.corruptTile(key: "\(source.path): segment \(id.prefix(12))/rows@\(segment.start)", reason: error.description)
                }
                for (offset, k) in keep.enumerated() {
                    try copyExampleRecord(examples[k], txn, from: source, stxn)
                    try txn.put(tables.rows, (fs, examples[k]), start + offset)
                    try txn.put(tables.rowExamples, (fs, start + offset), examples[k])
                }
                try txn.put(tables.segments, (fs, start), keep.count)
                return counts
            }
        }
    }

    /// Copies an example's record (as stored) unless this store has one.
    private func copyExampleRecord(_ example: ExampleID, _ txn: borrowing LMDBTransaction, from source: FeatureStore,
                                   _ stxn: borrowing LMDBTransaction) throws {
        let raw = Table<ExampleIDCodec, RawBytes>(tables.examples.raw)
        guard try !txn.contains(raw, example) else { return }
        guard let bytes = try stxn.get(Table<ExampleIDCodec, RawBytes>(source.tables.examples.raw), example) else {
            throw StoreError.inconsistent("shard \(source.path): example \(example.hex.prefix(12)) has no record")
        }
        try txn.put(raw, example, Array(bytes))
    }
}
