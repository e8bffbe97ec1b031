import Foundation
import H2TCore

/// Shard `index` of `count`: which contiguous part of an ingest's inputs one worker processes
/// (`ingest --shard K/N`). The rule depends only on the number of inputs, so workers that never
/// talk to each other agree on it (docs/scaling-out.md).
public struct ShardSpec: Sendable, Hashable, CustomStringConvertible {
    /// K, from 0.
    public let index: Int
    /// N, at least 1.
    public let count: Int

    /// Shard `index` of `count`; refuses `count < 1` and `index` outside `0..<count`.
    public init(index: Int, count: Int) throws {
        guard count >= 1 else { throw StoreError.invalidArgument("--shard K/N needs N ≥ 1, got N = \(count)") }
        guard (0..<count).contains(index) else {
            throw StoreError.invalidArgument("--shard \(index)/\(count): K must be in 0...\(count - 1) (shards are numbered from 0)")
        }
        self.index = index
        self.count = count
    }

    /// Parses `K/N`, or `auto/N` with K from `SLURM_ARRAY_TASK_ID` (less `SLURM_ARRAY_TASK_MIN`
    /// when set, so that an array `--array=1-4` also gives shards 0 to 3).
    public static func parse(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ShardSpec {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let n = Int(parts[1]) else {
            throw StoreError.invalidArgument("--shard '\(text)' is not K/N or auto/N (e.g. 0/4)")
        }
        guard parts[0] == "auto" else {
            guard let k = Int(parts[0]) else { throw StoreError.invalidArgument("--shard '\(text)': K must be a number or 'auto'") }
            return try ShardSpec(index: k, count: n)
        }
        guard let task = environment["SLURM_ARRAY_TASK_ID"], let id = Int(task) else {
            throw StoreError.invalidArgument("--shard auto/\(n) takes K from SLURM_ARRAY_TASK_ID, which is not set to a number (run it inside an sbatch --array job, or give K)")
        }
        let first = environment["SLURM_ARRAY_TASK_MIN"].flatMap { Int($0) } ?? 0
        return try ShardSpec(index: id - first, count: n)
    }

    /// The inputs of this shard among `total` inputs in input order: contiguous, and the shards
    /// of one `count` partition `0..<total` exactly.
    public func range(of total: Int) -> Range<Int> {
        (total * index / count)..<(total * (index + 1) / count)
    }

    public var description: String { "\(index)/\(count)" }
}

/// A shard store's record of what it is (`meta["shard"]`, `schemas/store-format.md` §7): written
/// when a shard ingest starts, sealed when it finishes, so that an unfinished or foreign shard is
/// told apart from a complete one.
public struct ShardRecord: Codable, Sendable, Equatable {
    /// `h2t.shard/1`.
    public var schema = ShardRecord.schemaTag
    /// SHA-256 (hex) of the canonical JSON of the ingest's plan: the inputs (by name and size),
    /// the dataset, split and class names, and the feature sets. Equal for every shard of one run.
    public var plan: String
    /// K.
    public var shard: Int
    /// N.
    public var shards: Int
    /// The inputs of the shard: `first ..< end` of `total`, in input order.
    public var inputs: InputRange
    /// The backbone id.
    public var backbone: String
    /// The feature-set ids, in the ingest's order.
    public var featureSets: [String]
    /// The dataset and split the inputs join.
    public var dataset: String
    public var split: String
    /// Absent while the shard is being written.
    public var seal: Seal?

    public static let schemaTag = "h2t.shard/1"

    /// A range of input positions.
    public struct InputRange: Codable, Sendable, Equatable {
        public var first: Int
        public var end: Int
        public var total: Int

        /// Positions `first ..< end` of `total`.
        public init(first: Int, end: Int, total: Int) {
            self.first = first
            self.end = end
            self.total = total
        }
    }

    /// What a finished shard holds; `merge` recomputes it and refuses a shard that differs.
    public struct Seal: Codable, Sendable, Equatable {
        /// Rows per feature set, aligned with `featureSets`.
        public var rows: [Int]
        /// Items of `dataset/split`.
        public var items: Int
        /// Tiles of all the feature sets.
        public var tiles: Int
        /// Their stored bytes.
        public var tileBytes: Int
        /// SHA-256 (hex) over every tile's key and bytes, feature sets in `featureSets` order,
        /// tiles in key order.
        public var tilesSHA256: String
    }

    /// A record of a shard being written.
    public init(plan: String, shard: ShardSpec, inputs: InputRange, backbone: String, featureSets: [String], dataset: String, split: String) {
        self.plan = plan
        self.shard = shard.index
        self.shards = shard.count
        self.inputs = inputs
        self.backbone = backbone
        self.featureSets = featureSets
        self.dataset = dataset
        self.split = split
    }

    /// The plan digest of `description` (any value with a canonical JSON form).
    public static func planDigest(_ description: some Encodable) throws -> String {
        SHA256.hexDigest(try CanonicalJSON.encode(description))
    }

    /// `K/N of plan <12 digits>`, for messages.
    public var label: String { "shard \(shard)/\(shards) of plan \(plan.prefix(12))" }

    /// Whether `other` is the same shard of the same run (sealed or not).
    func sameShard(_ other: ShardRecord) -> Bool {
        plan == other.plan && shard == other.shard && shards == other.shards && featureSets == other.featureSets
            && backbone == other.backbone && dataset == other.dataset && split == other.split && inputs == other.inputs
    }
}

/// What `beginShard` found.
public enum ShardState: Sendable, Equatable {
    /// A new shard (the store was empty).
    case started
    /// An unsealed shard of the same run: the ingest resumes it.
    case resumed
    /// The shard is complete; nothing is to be done.
    case sealed(ShardRecord)
}

extension FeatureStore {
    /// The store's shard record, if it is a shard.
    public func shardRecord() throws -> ShardRecord? {
        try environment.read { txn in try txn.get(tables.shardRecords, StoreTables.shardKey) }
    }

    /// Marks the store as shard `record` before a shard ingest writes anything. A store that is
    /// the same shard resumes (or is complete); another shard, another run's, or a store that
    /// already holds rows or datasets without a shard record is refused.
    public func beginShard(_ record: ShardRecord) throws -> ShardState {
        try environment.write { txn in
            if let stored = try txn.get(tables.shardRecords, StoreTables.shardKey) {
                guard stored.sameShard(record) else {
                    throw StoreError.invalidArgument("\(path) is \(stored.label), not \(record.label) (\(Self.difference(stored, record))); give each shard its own store directory")
                }
                return stored.seal == nil ? .resumed : .sealed(stored)
            }
            var holdsData = false
            try txn.scanKeys(tables.segments) { _ in holdsData = true; return false }
            try txn.scanKeys(tables.datasets) { _ in holdsData = true; return false }
            guard !holdsData else {
                throw StoreError.invalidArgument("\(path) already holds features or datasets and is not a shard; a shard ingest (--shard) needs a store of its own")
            }
            try txn.put(tables.shardRecords, StoreTables.shardKey, record)
            return .started
        }
    }

    /// Seals the shard: records its row and item counts and a checksum over its tiles. Call it
    /// when the shard ingest has committed everything.
    @discardableResult
    public func sealShard() throws -> ShardRecord {
        guard var record = try shardRecord() else { throw StoreError.invalidArgument("\(path) is not a shard (it has no shard record)") }
        if record.seal != nil { return record }
        record.seal = try computeSeal(record)
        try environment.write { txn in
            guard let stored = try txn.get(tables.shardRecords, StoreTables.shardKey), stored.sameShard(record) else {
                throw StoreError.inconsistent("the shard record of \(path) changed while it was being sealed")
            }
            try txn.put(tables.shardRecords, StoreTables.shardKey, record)
        }
        return record
    }

    /// The seal of what the store holds for `record` now.
    func computeSeal(_ record: ShardRecord) throws -> ShardRecord.Seal {
        try environment.read { txn in
            var hasher = SHA256()
            var rows: [Int] = [], tiles = 0, bytes = 0
            for id in record.featureSets {
                rows.append(try segmentList(txn, id).last.map { $0.start + $0.count } ?? 0)
                try txn.scan(tables.tiles.raw, prefix: FeatureSetPrefix(id: id).bytes) { key, value in
                    hasher.update(key)
                    hasher.update(value)
                    tiles += 1
                    bytes += value.count
                    return true
                }
            }
            let items = try txn.get(tables.datasets, record.dataset)?.splits[record.split] ?? 0
            return ShardRecord.Seal(rows: rows, items: items, tiles: tiles, tileBytes: bytes, tilesSHA256: hasher.hexFinalize())
        }
    }

    /// The first field in which two shard records differ, for refusals.
    static func difference(_ a: ShardRecord, _ b: ShardRecord) -> String {
        if a.backbone != b.backbone { return "another backbone: \(a.backbone.prefix(12)) vs \(b.backbone.prefix(12))" }
        if a.featureSets != b.featureSets { return "other feature sets (target size or codec): \(a.featureSets.map { $0.prefix(12) }) vs \(b.featureSets.map { $0.prefix(12) })" }
        if a.shards != b.shards { return "another shard count: \(a.shards) vs \(b.shards)" }
        if a.plan != b.plan { return "another input plan (inputs, dataset, split or class names)" }
        if a.shard != b.shard { return "another shard number" }
        return "another input range"
    }
}
