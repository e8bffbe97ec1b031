import Dispatch
import H2TCore
import Synchronization

/// What a cached selected matrix holds (the JSON part of a `matrices` record).
public struct CachedMatrixInfo: Sendable, Hashable, Codable {
    /// Schema tag.
    public var schema = "h2t.matrix/1"
    /// Feature set the columns come from.
    public var featureSet: String
    /// Dataset and split the rows come from.
    public var dataset: String
    public var split: String
    /// Content hash of the split when the matrix was made (a changed split is a new key).
    public var splitDigest: String
    /// Rows × columns.
    public var rows: Int
    public var columns: Int
}

extension FeatureStore {
    /// The cache key (hex) of the selected matrix of `columns` of a split with content hash
    /// `splitDigest` in `featureSet` (an id): what garbage collection checks against.
    public static func matrixKeyHex(featureSet: String, splitDigest: String, columns: [Int]) -> String {
        Hex.encode(MatrixKey.make(featureSet: featureSet, splitDigest: splitDigest, columns: columns))
    }

    /// The selected columns of a split as a dense matrix, materialised once and cached in the
    /// store (`matrices` table), so refits and sweeps over the same selection read one small
    /// record instead of decoding the feature tiles again. `cached` says whether it was a hit.
    ///
    /// The matrix is stored with the feature set's dtype, which is exact: its values were decoded
    /// from that dtype.
    ///
    /// With `writeBehind`, a matrix that was not cached is returned as soon as it is read and
    /// encoded, and the record is committed on a thread of its own, which `writeBehind` tracks:
    /// the caller computes on while LMDB copies the record (hundreds of MB for a wide selection)
    /// and the disk takes it, then waits for it (``CacheWrites/wait()``) before it relies on the
    /// cache or ends.
    public func selectedMatrix(featureSet: String, dataset: String, split: String, columns: [Int],
                               writeBehind: CacheWrites? = nil) throws -> (matrix: LabelledMatrix, cached: Bool) {
        let info = try self.featureSet(featureSet)
        let items = try self.split(dataset: dataset, split: split)
        let digest = Self.splitDigest(classNames: try self.dataset(dataset).classNames, items: items)
        let key = MatrixKey.make(featureSet: info.id, splitDigest: digest, columns: columns)
        // The same matrix asked for again while its record is still being written: wait for it.
        if let writeBehind, writeBehind.started(key) { try writeBehind.wait() }
        let hit: FeatureMatrix? = try environment.read { txn in
            guard let record = try txn.get(tables.matrices, key) else { return nil }
            var out = FeatureMatrix(rowCount: record.info.rows, columnCount: record.info.columns, taps: Self.tapLayout(info.manifest, columns: columns))
            do {
                try out.values.withUnsafeMutableBufferPointer {
                    try TileDecoder.decodeAll(record.tile, binding: TileCodec.binding(key: key, rows: record.info.rows),
                                              into: $0.baseAddress!, destStride: record.info.columns, parallelism: parallelism)
                }
            } catch let error as TileError {
                throw StoreError.corruptTile(key: "matrices/\(Hex.encode(key).prefix(12))", reason: error.description)
            }
            return out
        }
        if let hit, hit.rowCount == items.examples.count {
            return (LabelledMatrix(features: hit, labels: items.labels, examples: items.examples), true)
        }
        let matrix = try read(info, examples: items.examples, columns: columns)
        var codec = info.manifest.codec
        codec.frameWidth = max(codec.frameWidth, 1)
        var tile = matrix.values.withUnsafeBufferPointer {
            TileEncoder.encode($0.baseAddress!, rowStride: max(columns.count, 1), rows: matrix.rowCount, cols: columns.count,
                               codec: codec, parallelism: parallelism)
        }
        TileCodec.bind(&tile, to: TileCodec.binding(key: key, rows: matrix.rowCount))
        let record = (info: CachedMatrixInfo(featureSet: info.id, dataset: dataset, split: split, splitDigest: digest,
                                             rows: matrix.rowCount, columns: columns.count), tile: tile)
        if !isReadOnly {
            let write: @Sendable () throws -> Void = { [environment, tables] in
                try environment.write { txn in try txn.put(tables.matrices, key, record) }
            }
            if let writeBehind { writeBehind.start(key: key, write) } else { try write() }
        }
        return (LabelledMatrix(features: matrix, labels: items.labels, examples: items.examples), false)
    }

    /// Every cached matrix: its key (hex) and description.
    public func cachedMatrices() throws -> [(key: String, info: CachedMatrixInfo, bytes: Int)] {
        try environment.read { txn in
            var out: [(String, CachedMatrixInfo, Int)] = []
            try txn.scan(tables.matrices) { key, record in
                out.append((Hex.encode(key), record.info, record.bytes))
                return true
            }
            return out
        }
    }

    /// Deletes the cached matrices whose keys (hex, as `cachedMatrices` gives them) are listed.
    public func deleteCachedMatrices(_ keys: [String]) throws {
        guard !keys.isEmpty else { return }
        try environment.write { txn in
            for key in keys { if let bytes = Hex.decode(key) { try txn.delete(tables.matrices, bytes) } }
        }
    }
}

/// Cache records being committed behind the caller's back (``FeatureStore/selectedMatrix(featureSet:dataset:split:columns:writeBehind:)``).
/// Every write started must be waited for: ``wait()`` returns when all have committed and
/// rethrows the first error.
public final class CacheWrites: Sendable {
    private let group = DispatchGroup()
    private let firstError = Mutex<(any Error)?>(nil)
    private let keys = Mutex<Set<[UInt8]>>([])

    /// An empty set of writes.
    public init() {}

    /// Whether a write of the record under `key` was started here.
    func started(_ key: [UInt8]) -> Bool { keys.withLock { $0.contains(key) } }

    func start(key: [UInt8], _ write: @escaping @Sendable () throws -> Void) {
        keys.withLock { _ = $0.insert(key) }
        group.enter()
        DispatchQueue.global().async { [self] in
            do { try write() } catch { firstError.withLock { if $0 == nil { $0 = error } } }
            group.leave()
        }
    }

    /// Waits until every write started so far has committed or failed; rethrows the first failure.
    public func wait() throws {
        group.wait()
        if let error = firstError.withLock({ $0 }) { throw error }
    }
}
