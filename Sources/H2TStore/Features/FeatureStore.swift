import Foundation
import H2TCore

/// A feature set as stored: its id, manifest and how many rows (examples) it holds.
public struct FeatureSetInfo: Sendable, Hashable {
    /// SHA-256 id of the manifest.
    public var id: String
    /// The manifest.
    public var manifest: FeatureSetManifest
    /// Examples stored.
    public var rowCount: Int
    /// Segments (ingest commits) stored.
    public var segmentCount: Int
}

/// A dataset split's ordered items.
public struct SplitItems: Sendable, Hashable {
    /// Example ids in split order.
    public var examples: [ExampleID]
    /// Labels (indices into the dataset's class names), aligned with `examples`.
    public var labels: [Int]
}

/// Rows to add to one feature set in one commit: the examples and their encoded tiles (one per
/// column block, all over the same rows in the same order).
public struct SegmentPayload: Sendable {
    /// Feature set id.
    public var featureSet: String
    /// Examples, in row order.
    public var examples: [ExampleID]
    /// Encoded tiles, one per column block.
    public var tiles: [[UInt8]]

    /// Creates a payload.
    public init(featureSet: String, examples: [ExampleID], tiles: [[UInt8]]) {
        self.featureSet = featureSet
        self.examples = examples
        self.tiles = tiles
    }
}

/// Dataset items to add in one commit.
public struct DatasetAppend: Sendable {
    /// Dataset name.
    public var dataset: String
    /// Class names (must equal the stored ones if the dataset exists).
    public var classNames: [String]
    /// Split name.
    public var split: String
    /// Examples and labels, in order; examples already in the split are skipped if their label agrees.
    public var items: [(ExampleID, Int)]

    /// Creates an append.
    public init(dataset: String, classNames: [String], split: String, items: [(ExampleID, Int)]) {
        self.dataset = dataset
        self.classNames = classNames
        self.split = split
        self.items = items
    }
}

/// The on-disk feature store: backbones, feature sets, examples, datasets and feature tiles in
/// one LMDB environment (see `schemas/store-format.md`). Its tables, keys and values are declared
/// in `StoreTables` and written only here.
///
/// Thread-safe: reads run in parallel; writes are serialised by LMDB (across processes too).
public final class FeatureStore: Sendable {
    /// The store format version this build writes into new stores.
    public static let formatVersion: UInt32 = 2
    /// The store format versions this build reads (and writes into: see `schemas/store-format.md` §2).
    public static let readableFormatVersions: ClosedRange<UInt32> = 1...2

    /// Names of the store's own tables (`schemas/store-format.md` §1).
    public static var tableNames: [String] { StoreTables.names }

    /// Tables the environment has room for (LMDB's `max_dbs`): the store's 12 and up to 8 of
    /// layers that keep their records beside the features (the registry's 3).
    public static let maxTables = 20

    /// The store directory.
    public let path: String
    /// Threads the store's reads, decoding and checks run on.
    public let parallelism: Parallelism
    /// The LMDB environment; the store's tables are reached through `tables` only.
    let environment: LMDBEnvironment
    let tables: StoreTables

    /// Opens the store at `path`, creating it unless `create` is false or `readOnly` is true;
    /// its reads decode on `parallelism`'s threads.
    public init(path: String, create: Bool = true, readOnly: Bool = false, mapSize: Int = 64 << 30, noSync: Bool = false,
                parallelism: Parallelism = .default) throws {
        self.path = path
        self.parallelism = parallelism
        if !create || readOnly {
            guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
                throw StoreError.invalidArgument("no store at \(path) (create one with `h2t-store ingest`)")
            }
        }
        environment = try LMDBEnvironment(path: path, options: .init(
            mapSize: mapSize, tables: StoreTables.names, readOnly: readOnly, noSync: noSync, maxTables: Self.maxTables))
        tables = StoreTables(environment)
        try checkFormat(readOnly: readOnly)
    }

    private func checkFormat(readOnly: Bool) throws {
        let stored = try environment.read { txn in try txn.get(tables.meta, StoreTables.formatKey) }
        if let stored {
            guard Self.readableFormatVersions.contains(UInt32(stored)) else {
                throw StoreError.unsupportedFormat(path: path, found: UInt32(stored))
            }
            return
        }
        guard !readOnly else { throw StoreError.notAStore(path: path) }
        try environment.write { txn in
            if try txn.get(tables.meta, StoreTables.formatKey) == nil {
                try txn.put(tables.meta, StoreTables.formatKey, Int(Self.formatVersion))
            }
        }
    }

    /// The format version recorded in the store (1 or 2).
    public func storedFormatVersion() throws -> UInt32 {
        try environment.read { txn in UInt32(try txn.get(tables.meta, StoreTables.formatKey) ?? 0) }
    }

    /// Whether writes are refused.
    public var isReadOnly: Bool { environment.readOnly }

    /// Bytes used by the data file.
    public func usedBytes() throws -> Int { try environment.usedBytes() }

    /// How many times the map grew, and its size in bytes.
    public var mapStatistics: (growths: Int, mapSize: Int) { environment.mapStatistics }

    /// Flushes the data file to disk (for stores opened with `noSync`).
    public func sync() throws { try environment.sync() }

    /// Lets the kernel drop the store's pages this process has mapped (they stay in the page
    /// cache): a reader streaming more data than memory calls it after each window, so its
    /// resident set holds one window's pages, not every page it has read.
    public func releaseMappedPages() throws { try environment.releaseMappedPages() }

    /// The environment, for tests and benchmarks that damage or inspect the store on purpose.
    @_spi(Testing) public var rawEnvironment: LMDBEnvironment { environment }

    // MARK: Tables of other layers

    /// Opens (creating them when the store is writable) the tables of a layer that keeps its own
    /// records in this store's environment, as the registry does; that layer owns their names and
    /// layout. Names of the store's own tables are refused.
    public func companionTables(_ names: [String]) throws -> [LMDBTable] {
        if let taken = names.first(where: StoreTables.names.contains) {
            throw StoreError.invalidArgument("table '\(taken)' belongs to the feature store")
        }
        do {
            return try environment.openTables(names)
        } catch let error as LMDBError where error.code == LMDBError.notFound {
            throw StoreError.invalidArgument("store \(path) has no table \(names.joined(separator: ", ")) yet; open it writable once to create them")
        }
    }

    /// Runs `body` in a read transaction (for the tables of `companionTables`).
    public func read<R>(_ body: (borrowing LMDBTransaction) throws -> R) throws -> R { try environment.read(body) }

    /// Runs `body` in the write transaction (for the tables of `companionTables`): commits when it
    /// returns, aborts when it throws, and may run it again after growing the map.
    public func write<R>(_ body: (borrowing LMDBTransaction) throws -> R) throws -> R { try environment.write(body) }

    // MARK: Manifests

    /// Stores a backbone manifest (idempotent) and returns its id.
    @discardableResult
    public func register(backbone: BackboneManifest) throws -> String {
        let id = try backbone.identity()
        try environment.write { txn in
            if try !txn.contains(tables.backbones, id) { try txn.put(tables.backbones, id, backbone) }
        }
        return id
    }

    /// Stores a feature-set manifest (idempotent; its backbone must be registered) and returns its id.
    ///
    /// A manifest with a pooling rule other than the version-1 default needs store format 2: a
    /// version-1 store is upgraded in the same transaction (`schemas/store-format.md` §2).
    @discardableResult
    public func register(featureSet: FeatureSetManifest) throws -> String {
        let id = try featureSet.identity()
        try environment.write { txn in
            guard try txn.contains(tables.backbones, featureSet.backbone) else {
                throw StoreError.inconsistent("feature set \(id.prefix(12)) names unknown backbone \(featureSet.backbone.prefix(12))")
            }
            if try !txn.contains(tables.featureSets, id) {
                if featureSet.needsFormat2, try txn.get(tables.meta, StoreTables.formatKey) ?? 0 < 2 {
                    try txn.put(tables.meta, StoreTables.formatKey, 2)
                }
                try txn.put(tables.featureSets, id, featureSet)
            }
        }
        return id
    }

    /// Every backbone manifest with its id.
    public func allBackbones() throws -> [(id: String, manifest: BackboneManifest)] {
        try environment.read { txn in
            var out: [(String, BackboneManifest)] = []
            try txn.scan(tables.backbones) { id, manifest in
                out.append((id, manifest))
                return true
            }
            return out
        }
    }

    /// The backbone with this id.
    public func backbone(_ id: String) throws -> BackboneManifest {
        try environment.read { txn in
            guard let manifest = try txn.get(tables.backbones, id) else {
                throw StoreError.inconsistent("unknown backbone \(id.prefix(12))")
            }
            return manifest
        }
    }

    /// Every feature set with its row count.
    public func allFeatureSets() throws -> [FeatureSetInfo] {
        try environment.read { txn in
            var manifests: [(String, FeatureSetManifest)] = []
            try txn.scan(tables.featureSets) { id, manifest in
                manifests.append((id, manifest))
                return true
            }
            return try manifests.map { id, manifest in
                let segs = try segmentList(txn, id)
                return FeatureSetInfo(id: id, manifest: manifest, rowCount: segs.last.map { $0.start + $0.count } ?? 0, segmentCount: segs.count)
            }
        }
    }

    /// The feature set whose id is or starts with `idOrPrefix` (at least 4 hex digits).
    public func featureSet(_ idOrPrefix: String) throws -> FeatureSetInfo {
        let all = try allFeatureSets()
        let matches = all.filter { $0.id == idOrPrefix || (idOrPrefix.count >= 4 && $0.id.hasPrefix(idOrPrefix)) }
        if matches.count > 1 { throw StoreError.ambiguousFeatureSet(idOrPrefix) }
        guard let found = matches.first else {
            throw StoreError.unknownFeatureSet(idOrPrefix, known: all.map { String($0.id.prefix(12)) })
        }
        return found
    }

    // MARK: Segments

    struct Segment: Sendable {
        var start: Int
        var count: Int
    }

    func segmentList(_ txn: borrowing LMDBTransaction, _ fsID: String) throws -> [Segment] {
        var out: [Segment] = []
        let fs = FeatureSetPrefix(id: fsID)
        try txn.scan(tables.segments, prefix: FeatureSetRowKey.prefix(fs)) { key, count in
            out.append(Segment(start: key.row, count: count))
            return true
        }
        return out
    }

    // MARK: Examples and datasets

    /// Which of `ids` have no row yet in feature set `fsID`.
    public func missing(_ ids: [ExampleID], in fsID: String) throws -> [Bool] {
        try environment.read { txn in
            // A prefix or a mistyped id would silently report every example as missing.
            guard try txn.contains(tables.featureSets, fsID) else {
                throw StoreError.unknownFeatureSet(fsID, known: [])
            }
            let fs = FeatureSetPrefix(id: fsID)
            return try ids.map { try !txn.contains(tables.rows, (fs, $0)) }
        }
    }

    /// Which of `ids` are not yet in `dataset/split`.
    public func missing(_ ids: [ExampleID], dataset: String, split: String) throws -> [Bool] {
        let prefix = SplitPrefix(dataset: dataset, split: split)
        return try environment.read { txn in
            try ids.map { try !txn.contains(tables.splitMembers, (prefix, $0)) }
        }
    }

    /// The record of an example.
    public func example(_ id: ExampleID) throws -> ExampleRecord? {
        try environment.read { txn in try txn.get(tables.examples, id) }
    }

    /// Every dataset manifest.
    public func allDatasets() throws -> [DatasetManifest] {
        try environment.read { txn in
            var out: [DatasetManifest] = []
            try txn.scan(tables.datasets) { _, manifest in
                out.append(manifest)
                return true
            }
            return out
        }
    }

    /// The dataset named `name`.
    public func dataset(_ name: String) throws -> DatasetManifest {
        try environment.read { txn in
            guard let manifest = try txn.get(tables.datasets, name) else {
                throw StoreError.unknownDataset(name, known: try allDatasetNames(txn))
            }
            return manifest
        }
    }

    private func allDatasetNames(_ txn: borrowing LMDBTransaction) throws -> [String] {
        var names: [String] = []
        try txn.scanKeys(tables.datasets) { name in names.append(name); return true }
        return names
    }

    /// The ordered items of `dataset/split`. An item count that disagrees with the dataset's
    /// manifest is an error (a damaged store), not a shorter or longer split.
    public func split(dataset: String, split: String) throws -> SplitItems {
        try environment.read { txn in
            // Manifest and items from one transaction: a concurrent append changes both at once.
            guard let manifest = try txn.get(tables.datasets, dataset) else {
                throw StoreError.unknownDataset(dataset, known: try allDatasetNames(txn))
            }
            guard let expected = manifest.splits[split] else {
                throw StoreError.unknownSplit(dataset: dataset, split: split, known: manifest.splits.keys.sorted())
            }
            var items = SplitItems(examples: [], labels: [])
            items.examples.reserveCapacity(expected)
            items.labels.reserveCapacity(expected)
            do {
                try txn.scan(tables.splitItems, prefix: SplitPrefix(dataset: dataset, split: split).bytes) { _, item in
                    items.examples.append(item.example)
                    items.labels.append(item.label)
                    return true
                }
            } catch let error as ByteLayoutError {
                throw StoreError.inconsistent("an item of \(dataset)/\(split) is damaged: \(error.reason) (run `h2t-store verify`)")
            }
            guard items.examples.count == expected else {
                throw StoreError.inconsistent("\(dataset)/\(split) holds \(items.examples.count) items but its dataset record says \(expected) (run `h2t-store verify`)")
            }
            return items
        }
    }

    /// A content hash of a split (its examples and labels in order, and the class names), for lineage.
    public func splitDigest(dataset: String, split: String) throws -> String {
        Self.splitDigest(classNames: try self.dataset(dataset).classNames, items: try self.split(dataset: dataset, split: split))
    }

    /// The split digest of already-read items: SHA-256 of the class names as canonical JSON, then
    /// each item's `example32 | label u32 LE`.
    static func splitDigest(classNames: [String], items: SplitItems) -> String {
        var hasher = SHA256()
        hasher.update((try? CanonicalJSON.encode(classNames)) ?? [])
        for (e, l) in zip(items.examples, items.labels) {
            hasher.update(SplitItemValue.encode((e, l)))
        }
        return hasher.hexFinalize()
    }

    /// Creates or extends a dataset from examples already in the store (a new labelling of known
    /// examples: no features are computed or copied).
    public func appendToDataset(_ append: DatasetAppend) throws {
        try environment.write { txn in
            for (example, _) in append.items where try !txn.contains(tables.examples, example) {
                throw StoreError.unknownExample(example.hex)
            }
            try appendDataset(txn, append)
        }
    }

    func appendDataset(_ txn: borrowing LMDBTransaction, _ append: DatasetAppend) throws {
        guard !append.dataset.isEmpty, !append.dataset.utf8.contains(0), !append.split.isEmpty, !append.split.utf8.contains(0) else {
            throw StoreError.invalidArgument("dataset and split names must be non-empty and contain no NUL byte")
        }
        var manifest: DatasetManifest
        if let stored = try txn.get(tables.datasets, append.dataset) {
            manifest = stored
            guard manifest.classNames == append.classNames else {
                throw StoreError.classNamesConflict(dataset: append.dataset, stored: manifest.classNames, new: append.classNames)
            }
        } else {
            manifest = DatasetManifest(name: append.dataset, classNames: append.classNames)
        }
        let prefix = SplitPrefix(dataset: append.dataset, split: append.split)
        var count = manifest.splits[append.split] ?? 0
        for (example, label) in append.items {
            guard label >= 0, label < append.classNames.count else {
                throw StoreError.invalidArgument("label \(label) of example \(example.hex.prefix(12)) is outside the \(append.classNames.count) classes of dataset '\(append.dataset)'")
            }
            if let at = try txn.get(tables.splitMembers, (prefix, example)) {
                let stored = try txn.get(tables.splitItems, (prefix, at))?.label ?? -1
                if stored != label {
                    throw StoreError.labelConflict(example: example.hex.prefix(12).description, dataset: append.dataset, split: append.split,
                                                   stored: stored >= 0 ? append.classNames[stored] : "?", new: append.classNames[label])
                }
                continue
            }
            try txn.put(tables.splitItems, (prefix, count), (example, label))
            try txn.put(tables.splitMembers, (prefix, example), count)
            count += 1
        }
        manifest.splits[append.split] = count
        try txn.put(tables.datasets, append.dataset, manifest)
    }

    // MARK: Commit

    /// Commits, in one transaction, new rows for one or several feature sets, the example
    /// records, and dataset items. Either all of it lands or none of it.
    ///
    /// Two writers may compute the same examples at once (two ingests into one store): LMDB runs
    /// their commits one after the other, and a commit keeps what the other already stored. Rows
    /// of a payload that are present by then are dropped from its tiles (decoded and re-encoded
    /// without them, which is exact: the values are already in the stored dtype), so every
    /// example is stored once and neither writer fails.
    public func commit(segments payloads: [SegmentPayload], examples records: [(ExampleID, ExampleRecord)],
                       datasets appends: [DatasetAppend]) throws {
        // Encoded outside the transaction, which may run more than once (map growth).
        let encodedRecords = try records.map { ($0.0, try CanonicalJSON.encode($0.1)) }
        let examplesRaw = Table<ExampleIDCodec, RawBytes>(tables.examples.raw)
        try environment.write { txn in
            for (id, bytes) in encodedRecords where try !txn.contains(examplesRaw, id) {
                try txn.put(examplesRaw, id, bytes)
            }
            for payload in payloads where !payload.examples.isEmpty {
                guard let manifest = try txn.get(tables.featureSets, payload.featureSet) else {
                    throw StoreError.unknownFeatureSet(payload.featureSet, known: [])
                }
                guard payload.tiles.count == manifest.columnBlocks else {
                    throw StoreError.inconsistent("segment for \(payload.featureSet.prefix(12)) has \(payload.tiles.count) tiles, expected \(manifest.columnBlocks)")
                }
                let fs = FeatureSetPrefix(id: payload.featureSet)
                var newRows = payload.examples, newTiles = payload.tiles
                let present = try payload.examples.map { try txn.contains(tables.rows, (fs, $0)) }
                if present.contains(true) {
                    let keep = present.indices.filter { !present[$0] }
                    guard !keep.isEmpty else { continue }
                    newRows = keep.map { payload.examples[$0] }
                    newTiles = try Self.keepingRows(keep, of: payload.tiles, manifest: manifest)
                }
                let start = try segmentList(txn, payload.featureSet).last.map { $0.start + $0.count } ?? 0
                for (offset, example) in newRows.enumerated() {
                    guard try txn.contains(examplesRaw, example) else { throw StoreError.unknownExample(example.hex) }
                    try txn.put(tables.rows, (fs, example), start + offset)
                    try txn.put(tables.rowExamples, (fs, start + offset), example)
                }
                for (block, tile) in newTiles.enumerated() {
                    // Bound as it is copied into LMDB's page: binding the array in place would copy
                    // it first (the payload still holds it), a whole segment's tiles per commit.
                    let key = TileKey.encode((fs, start, block))
                    let binding = TileCodec.binding(key: key, rows: newRows.count)
                    try txn.put(tables.tiles.raw, key, reserving: tile.count) { TileCodec.copy(tile, boundTo: binding, into: $0) }
                }
                try txn.put(tables.segments, (fs, start), newRows.count)
            }
            for append in appends { try appendDataset(txn, append) }
        }
    }

    /// The rows `keep` (ascending) of tiles, re-encoded and not yet bound. The tiles are freshly
    /// encoded and unbound, or stored ones checked against their `bindings` (one per tile).
    static func keepingRows(_ keep: [Int], of tiles: [[UInt8]], manifest: FeatureSetManifest, bindings: [[UInt8]]? = nil) throws -> [[UInt8]] {
        let decoder = TileDecoder()
        let encoder = TileEncoder(codec: manifest.codec)
        let picks = keep.enumerated().map { RowPick(local: $0.element, out: $0.offset) }
        return try tiles.enumerated().map { block, tile in
            let cols = min(manifest.columnBlock, manifest.width - block * manifest.columnBlock)
            var values = [Float](repeating: 0, count: keep.count * cols)
            try tile.withUnsafeBytes { bytes in
                try values.withUnsafeMutableBufferPointer { out in
                    try decoder.decode(bytes, binding: bindings?[block] ?? [], columns: (0..<cols).map { ColumnPick(local: $0, out: $0) }, rows: picks,
                                       into: out.baseAddress!, destStride: cols)
                }
            }
            return values.withUnsafeBufferPointer { encoder.encode($0.baseAddress!, rowStride: cols, rows: keep.count, cols: cols) }
        }
    }
}
