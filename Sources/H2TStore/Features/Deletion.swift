import H2TCore

/// What garbage collection asks of the store: which feature sets datasets still use, what their
/// data weighs, what is left without a manifest, and deleting it. The store alone knows where a
/// feature set's data lives (`StoreTables.featureSetData`).
extension FeatureStore {
    /// Data found under a feature-set key prefix that no manifest has (a deletion interrupted
    /// between its manifest and its data).
    public struct OrphanedFeatureData: Sendable, Hashable {
        /// The 16-byte key prefix, as 32 hex digits (the first half of the lost feature set's id).
        public var keyPrefix: String
        /// Bytes of its tiles.
        public var tileBytes: Int
    }

    /// The feature sets among `ids` in which an example of some dataset split has a row.
    public func featureSetsHoldingDatasetExamples(_ ids: [String]) throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try environment.read { txn in
            var datasetExamples = Set<ExampleID>()
            try txn.scan(tables.splitItems) { _, item in
                datasetExamples.insert(item.example)
                return true
            }
            var used = Set<String>()
            for id in ids {
                let fs = try FeatureSetPrefix.checked(id)
                try txn.scan(tables.rowExamples, prefix: FeatureSetRowKey.prefix(fs)) { _, example in
                    if datasetExamples.contains(example) { used.insert(id) }
                    return !used.contains(id)
                }
            }
            return used
        }
    }

    /// Bytes of the tiles of a feature set, given by its id or by the 32-hex-digit key prefix
    /// of `OrphanedFeatureData`.
    public func tileBytes(featureSet idOrKeyPrefix: String) throws -> Int {
        let fs = try FeatureSetPrefix.checked(idOrKeyPrefix)
        return try environment.read { txn in try txn.scanSizes(tables.tiles, prefix: TileKey.prefix(fs)).bytes }
    }

    /// Data under key prefixes that no feature-set manifest has, in key order.
    public func orphanedFeatureData() throws -> [OrphanedFeatureData] {
        try environment.read { txn in
            var known = Set<FeatureSetPrefix>()
            try txn.scanKeys(tables.featureSets) { id in
                if let prefix = try? FeatureSetPrefix.checked(id) { known.insert(prefix) }
                return true
            }
            var orphans = Set<FeatureSetPrefix>()
            for table in tables.featureSetData {
                for prefix in try distinctPrefixes(txn, table) where !known.contains(prefix) { orphans.insert(prefix) }
            }
            return try orphans.sorted { $0.bytes.lexicographicallyPrecedes($1.bytes) }.map { prefix in
                OrphanedFeatureData(keyPrefix: prefix.hex, tileBytes: try txn.scanSizes(tables.tiles, prefix: TileKey.prefix(prefix)).bytes)
            }
        }
    }

    /// Deletes feature set `id` with its tiles, rows and segments. The manifest goes first, in a
    /// transaction that first runs `check` (the caller's re-check that nothing started using the
    /// feature set meanwhile; it throws to keep it); the data follows in bounded transactions, so
    /// a crash in between leaves data that `orphanedFeatureData` finds.
    public func deleteFeatureSet(_ id: String, check: (borrowing LMDBTransaction) throws -> Void) throws {
        let fs = try FeatureSetPrefix.checked(id)
        guard id.utf8.count == 64 else { throw StoreError.invalidArgument("'\(id)' is not a feature-set id (64 hex digits)") }
        try environment.write { txn in
            try check(txn)
            try txn.delete(tables.featureSets, id)
        }
        try deleteFeatureSetData(fs)
    }

    /// Deletes the data under a key prefix of `orphanedFeatureData` (32 hex digits).
    public func deleteOrphanedFeatureData(keyPrefix: String) throws {
        guard keyPrefix.utf8.count == 2 * FeatureSetPrefix.byteCount else {
            throw StoreError.invalidArgument("'\(keyPrefix)' is not a 32-hex-digit feature-set key prefix")
        }
        try deleteFeatureSetData(try FeatureSetPrefix.checked(keyPrefix))
    }

    /// Deletes the backbones among `ids` that no feature set names (checked again in the
    /// deleting transaction).
    public func deleteBackbonesWithoutFeatureSets(_ ids: [String]) throws {
        guard !ids.isEmpty else { return }
        try environment.write { txn in
            var named = Set<String>()
            try txn.scan(tables.featureSets) { _, manifest in named.insert(manifest.backbone); return true }
            for id in ids where !named.contains(id) { try txn.delete(tables.backbones, id) }
        }
    }

    private func deleteFeatureSetData(_ fs: FeatureSetPrefix) throws {
        for table in tables.featureSetData {
            while try environment.write({ txn in try txn.deleteAll(table, prefix: fs.bytes, limit: 4096) }) == 4096 {}
        }
    }

    /// The distinct feature-set prefixes of a table's keys, found by seeking past each one.
    private func distinctPrefixes(_ txn: borrowing LMDBTransaction, _ table: Table<FeatureSetKeyed, RawBytes>) throws -> [FeatureSetPrefix] {
        var out: [FeatureSetPrefix] = []
        var start: [UInt8]? = nil
        while true {
            var found: FeatureSetPrefix?
            try txn.scanKeys(table, from: start) { prefix in found = prefix; return false }
            guard let prefix = found else { return out }
            out.append(prefix)
            // The smallest key after every key with this prefix: increment the prefix.
            var next = prefix.bytes
            var i = next.count - 1
            while i >= 0 {
                if next[i] == 0xFF { next[i] = 0; i -= 1 } else { next[i] += 1; break }
            }
            if i < 0 { return out }
            start = next
        }
    }
}

extension FeatureStore {
    /// Visits the stored tiles of feature set `id` in key order (segment, then column block),
    /// undecoded: for benchmarks that account for the bytes a read touches.
    @_spi(Testing) public func scanTiles(featureSet id: String,
                                         _ body: (_ segment: Int, _ block: Int, _ tile: UnsafeRawBufferPointer) throws -> Bool) throws {
        let fs = try FeatureSetPrefix.checked(id)
        try environment.read { txn in
            try txn.scan(tables.tiles, prefix: TileKey.prefix(fs)) { key, tile in
                try body(key.segment, key.block, tile)
            }
        }
    }
}
