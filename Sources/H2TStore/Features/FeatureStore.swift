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
/// one LMDB environment (see `schemas/store-format.md`).
///
/// Thread-safe: reads run in parallel; writes are serialised by LMDB (across processes too).
public final class FeatureStore: Sendable {
    /// The store format version this build reads and writes.
    public static let formatVersion: UInt32 = 1

    static let tableNames = ["meta", "backbones", "featuresets", "segments", "tiles", "rows", "rowexamples",
                             "examples", "datasets", "splititems", "splitmembers", "matrices", "registry", "aliases", "tags"]

    /// The store directory.
    public let path: String
    /// The LMDB environment (exposed for the registry layer, which keeps its tables here too).
    public let environment: LMDBEnvironment

    let meta, backbones, featureSets, segments, tiles, rows, rowExamples, examples, datasets, splitItems, splitMembers, matrices: LMDBTable

    /// Opens the store at `path`, creating it unless `create` is false or `readOnly` is true.
    public init(path: String, create: Bool = true, readOnly: Bool = false, mapSize: Int = 64 << 30, noSync: Bool = false) throws {
        self.path = path
        if !create || readOnly {
            guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
                throw StoreError.invalidArgument("no store at \(path) (create one with `h2t-store ingest`)")
            }
        }
        environment = try LMDBEnvironment(path: path, options: .init(
            mapSize: mapSize, tables: Self.tableNames, readOnly: readOnly, noSync: noSync))
        let env = environment
        meta = env.table("meta"); backbones = env.table("backbones"); featureSets = env.table("featuresets")
        segments = env.table("segments"); tiles = env.table("tiles"); rows = env.table("rows")
        rowExamples = env.table("rowexamples"); examples = env.table("examples"); datasets = env.table("datasets")
        splitItems = env.table("splititems"); splitMembers = env.table("splitmembers"); matrices = env.table("matrices")
        try checkFormat(readOnly: readOnly)
    }

    private func checkFormat(readOnly: Bool) throws {
        let key = Array("format".utf8)
        let stored: UInt32? = try environment.read { txn in
            try txn.get(meta, key).map { Keys.readU32LE($0, 0) }.map(UInt32.init)
        }
        if let stored {
            guard stored == Self.formatVersion else { throw StoreError.unsupportedFormat(path: path, found: stored) }
            return
        }
        guard !readOnly else { throw StoreError.notAStore(path: path) }
        try environment.write { txn in
            if try txn.get(meta, key) == nil {
                try txn.put(meta, key, Keys.u32LE(Int(Self.formatVersion)))
            }
        }
    }

    // MARK: Manifests

    /// Stores a backbone manifest (idempotent) and returns its id.
    @discardableResult
    public func register(backbone: BackboneManifest) throws -> String {
        let id = try backbone.identity()
        let bytes = try CanonicalJSON.encode(backbone)
        try environment.write { txn in
            if try txn.get(backbones, Array(id.utf8)) == nil { try txn.put(backbones, Array(id.utf8), bytes) }
        }
        return id
    }

    /// Stores a feature-set manifest (idempotent; its backbone must be registered) and returns its id.
    @discardableResult
    public func register(featureSet: FeatureSetManifest) throws -> String {
        let id = try featureSet.identity()
        let bytes = try CanonicalJSON.encode(featureSet)
        try environment.write { txn in
            guard try txn.get(backbones, Array(featureSet.backbone.utf8)) != nil else {
                throw StoreError.inconsistent("feature set \(id.prefix(12)) names unknown backbone \(featureSet.backbone.prefix(12))")
            }
            if try txn.get(featureSets, Array(id.utf8)) == nil { try txn.put(featureSets, Array(id.utf8), bytes) }
        }
        return id
    }

    /// Every backbone manifest with its id.
    public func allBackbones() throws -> [(id: String, manifest: BackboneManifest)] {
        try environment.read { txn in
            var out: [(String, BackboneManifest)] = []
            try txn.scan(backbones, prefix: []) { key, value in
                out.append((String(decoding: key, as: UTF8.self), try CanonicalJSON.decode(BackboneManifest.self, from: value)))
                return true
            }
            return out
        }
    }

    /// The backbone with this id.
    public func backbone(_ id: String) throws -> BackboneManifest {
        try environment.read { txn in
            guard let value = try txn.get(backbones, Array(id.utf8)) else {
                throw StoreError.inconsistent("unknown backbone \(id.prefix(12))")
            }
            return try CanonicalJSON.decode(BackboneManifest.self, from: value)
        }
    }

    /// Every feature set with its row count.
    public func allFeatureSets() throws -> [FeatureSetInfo] {
        try environment.read { txn in
            var manifests: [(String, FeatureSetManifest)] = []
            try txn.scan(featureSets, prefix: []) { key, value in
                manifests.append((String(decoding: key, as: UTF8.self), try CanonicalJSON.decode(FeatureSetManifest.self, from: value)))
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
        let prefix = Keys.fsPrefix(fsID)
        try txn.scan(segments, prefix: prefix) { key, value in
            out.append(Segment(start: Keys.readU32BE(key, 16), count: Keys.readU32LE(value, 0)))
            return true
        }
        return out
    }

    // MARK: Examples and datasets

    /// Which of `ids` have no row yet in feature set `fsID`.
    public func missing(_ ids: [ExampleID], in fsID: String) throws -> [Bool] {
        let prefix = Keys.fsPrefix(fsID)
        return try environment.read { txn in
            // A prefix or a mistyped id would silently report every example as missing.
            guard try txn.get(featureSets, Array(fsID.utf8)) != nil else {
                throw StoreError.unknownFeatureSet(fsID, known: [])
            }
            return try ids.map { try txn.get(rows, prefix + $0.bytes) == nil }
        }
    }

    /// Which of `ids` are not yet in `dataset/split`.
    public func missing(_ ids: [ExampleID], dataset: String, split: String) throws -> [Bool] {
        let prefix = Keys.split(dataset, split)
        return try environment.read { txn in
            try ids.map { try txn.get(splitMembers, prefix + $0.bytes) == nil }
        }
    }

    /// The record of an example.
    public func example(_ id: ExampleID) throws -> ExampleRecord? {
        try environment.read { txn in
            try txn.get(examples, id.bytes).map { try CanonicalJSON.decode(ExampleRecord.self, from: $0) }
        }
    }

    /// Every dataset manifest.
    public func allDatasets() throws -> [DatasetManifest] {
        try environment.read { txn in
            var out: [DatasetManifest] = []
            try txn.scan(datasets, prefix: []) { _, value in
                out.append(try CanonicalJSON.decode(DatasetManifest.self, from: value))
                return true
            }
            return out
        }
    }

    /// The dataset named `name`.
    public func dataset(_ name: String) throws -> DatasetManifest {
        try environment.read { txn in
            guard let value = try txn.get(datasets, Array(name.utf8)) else {
                throw StoreError.unknownDataset(name, known: try allDatasetNames(txn))
            }
            return try CanonicalJSON.decode(DatasetManifest.self, from: value)
        }
    }

    private func allDatasetNames(_ txn: borrowing LMDBTransaction) throws -> [String] {
        var names: [String] = []
        try txn.scan(datasets, prefix: []) { key, _ in names.append(String(decoding: key, as: UTF8.self)); return true }
        return names
    }

    /// The ordered items of `dataset/split`. An item count that disagrees with the dataset's
    /// manifest is an error (a damaged store), not a shorter or longer split.
    public func split(dataset: String, split: String) throws -> SplitItems {
        try environment.read { txn in
            // Manifest and items from one transaction: a concurrent append changes both at once.
            guard let value = try txn.get(datasets, Array(dataset.utf8)) else {
                throw StoreError.unknownDataset(dataset, known: try allDatasetNames(txn))
            }
            let manifest = try CanonicalJSON.decode(DatasetManifest.self, from: value)
            guard let expected = manifest.splits[split] else {
                throw StoreError.unknownSplit(dataset: dataset, split: split, known: manifest.splits.keys.sorted())
            }
            var items = SplitItems(examples: [], labels: [])
            items.examples.reserveCapacity(expected)
            items.labels.reserveCapacity(expected)
            try txn.scan(splitItems, prefix: Keys.split(dataset, split)) { _, value in
                guard value.count == 36 else {
                    throw StoreError.inconsistent("an item of \(dataset)/\(split) has \(value.count) bytes, expected 36 (run `h2t-store verify`)")
                }
                items.examples.append(ExampleID(digest: Array(value[0..<32])))
                items.labels.append(Keys.readU32LE(value, 32))
                return true
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

    /// The split digest of already-read items.
    static func splitDigest(classNames: [String], items: SplitItems) -> String {
        var hasher = SHA256()
        hasher.update((try? CanonicalJSON.encode(classNames)) ?? [])
        for (e, l) in zip(items.examples, items.labels) {
            hasher.update(e.bytes)
            hasher.update(Keys.u32LE(l))
        }
        return hasher.hexFinalize()
    }

    /// Creates or extends a dataset from examples already in the store (a new labelling of known
    /// examples: no features are computed or copied).
    public func appendToDataset(_ append: DatasetAppend) throws {
        try environment.write { txn in
            for (example, _) in append.items where try txn.get(examples, example.bytes) == nil {
                throw StoreError.unknownExample(example.hex)
            }
            try appendDataset(txn, append)
        }
    }

    func appendDataset(_ txn: borrowing LMDBTransaction, _ append: DatasetAppend) throws {
        let nameKey = Array(append.dataset.utf8)
        guard !append.dataset.isEmpty, !append.dataset.utf8.contains(0), !append.split.isEmpty, !append.split.utf8.contains(0) else {
            throw StoreError.invalidArgument("dataset and split names must be non-empty and contain no NUL byte")
        }
        var manifest: DatasetManifest
        if let value = try txn.get(datasets, nameKey) {
            manifest = try CanonicalJSON.decode(DatasetManifest.self, from: value)
            guard manifest.classNames == append.classNames else {
                throw StoreError.classNamesConflict(dataset: append.dataset, stored: manifest.classNames, new: append.classNames)
            }
        } else {
            manifest = DatasetManifest(name: append.dataset, classNames: append.classNames)
        }
        let prefix = Keys.split(append.dataset, append.split)
        var count = manifest.splits[append.split] ?? 0
        for (example, label) in append.items {
            guard label >= 0, label < append.classNames.count else {
                throw StoreError.invalidArgument("label \(label) of example \(example.hex.prefix(12)) is outside the \(append.classNames.count) classes of dataset '\(append.dataset)'")
            }
            if let index = try txn.get(splitMembers, prefix + example.bytes) {
                let at = Keys.readU32BE(index, 0)
                let stored = try txn.get(splitItems, prefix + Keys.u32(at)).map { Keys.readU32LE($0, 32) } ?? -1
                if stored != label {
                    throw StoreError.labelConflict(example: example.hex.prefix(12).description, dataset: append.dataset, split: append.split,
                                                   stored: stored >= 0 ? append.classNames[stored] : "?", new: append.classNames[label])
                }
                continue
            }
            try txn.put(splitItems, prefix + Keys.u32(count), example.bytes + Keys.u32LE(label))
            try txn.put(splitMembers, prefix + example.bytes, Keys.u32(count))
            count += 1
        }
        manifest.splits[append.split] = count
        try txn.put(datasets, nameKey, try CanonicalJSON.encode(manifest))
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
        let encodedRecords = try records.map { ($0.0, try CanonicalJSON.encode($0.1)) }
        try environment.write { txn in
            for (id, bytes) in encodedRecords where try txn.get(examples, id.bytes) == nil {
                try txn.put(examples, id.bytes, bytes)
            }
            for payload in payloads where !payload.examples.isEmpty {
                guard let value = try txn.get(featureSets, Array(payload.featureSet.utf8)) else {
                    throw StoreError.unknownFeatureSet(payload.featureSet, known: [])
                }
                let manifest = try CanonicalJSON.decode(FeatureSetManifest.self, from: value)
                guard payload.tiles.count == manifest.columnBlocks else {
                    throw StoreError.inconsistent("segment for \(payload.featureSet.prefix(12)) has \(payload.tiles.count) tiles, expected \(manifest.columnBlocks)")
                }
                let fs = Keys.fsPrefix(payload.featureSet)
                var newRows = payload.examples, newTiles = payload.tiles
                let present = try payload.examples.map { try txn.get(rows, Keys.row(fs, example: $0)) != nil }
                if present.contains(true) {
                    let keep = present.indices.filter { !present[$0] }
                    guard !keep.isEmpty else { continue }
                    newRows = keep.map { payload.examples[$0] }
                    newTiles = try Self.keepingRows(keep, of: payload.tiles, manifest: manifest)
                }
                let start = try segmentList(txn, payload.featureSet).last.map { $0.start + $0.count } ?? 0
                for (offset, example) in newRows.enumerated() {
                    guard try txn.get(examples, example.bytes) != nil else { throw StoreError.unknownExample(example.hex) }
                    try txn.put(rows, Keys.row(fs, example: example), Keys.u32(start + offset))
                    try txn.put(rowExamples, Keys.rowExample(fs, row: start + offset), example.bytes)
                }
                for (block, var tile) in newTiles.enumerated() {
                    let key = Keys.tile(fs, segment: start, block: block)
                    TileCodec.bind(&tile, to: TileCodec.binding(key: key, rows: newRows.count))
                    try txn.put(tiles, key, tile)
                }
                try txn.put(segments, Keys.segment(fs, start: start), Keys.u32LE(newRows.count))
            }
            for append in appends { try appendDataset(txn, append) }
        }
    }

    /// The rows `keep` (ascending) of freshly encoded, not yet bound tiles, re-encoded.
    static func keepingRows(_ keep: [Int], of tiles: [[UInt8]], manifest: FeatureSetManifest) throws -> [[UInt8]] {
        let decoder = TileDecoder()
        let encoder = TileEncoder(codec: manifest.codec)
        let picks = keep.enumerated().map { RowPick(local: $0.element, out: $0.offset) }
        return try tiles.enumerated().map { block, tile in
            let cols = min(manifest.columnBlock, manifest.width - block * manifest.columnBlock)
            var values = [Float](repeating: 0, count: keep.count * cols)
            try tile.withUnsafeBytes { bytes in
                try values.withUnsafeMutableBufferPointer { out in
                    try decoder.decode(bytes, binding: [], columns: (0..<cols).map { ColumnPick(local: $0, out: $0) }, rows: picks,
                                       into: out.baseAddress!, destStride: cols)
                }
            }
            return values.withUnsafeBufferPointer { encoder.encode($0.baseAddress!, rowStride: cols, rows: keep.count, cols: cols) }
        }
    }
}
