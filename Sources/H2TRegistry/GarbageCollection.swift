import Foundation
import H2TCore
import H2TStore

/// What `gc` found (and, with `apply`, removed).
public struct GCReport: Sendable, Hashable, Codable {
    /// A feature set to collect.
    public struct FeatureSetItem: Sendable, Hashable, Codable {
        /// Feature set id (or the 32-hex-digit key prefix of an orphaned one).
        public var id: String
        /// Pooling target size (nil for orphaned data without a manifest).
        public var targetSize: Int?
        /// Rows stored.
        public var rows: Int
        /// Bytes of its tiles.
        public var tileBytes: Int
        /// Why it is garbage.
        public var reason: String
    }

    /// A cached matrix to collect.
    public struct MatrixItem: Sendable, Hashable, Codable {
        /// Key (hex).
        public var key: String
        /// Feature set, dataset and split it was made from.
        public var featureSet: String
        public var dataset: String
        public var split: String
        /// Stored bytes.
        public var bytes: Int
        /// Why it is garbage.
        public var reason: String
    }

    /// Whether the removals were carried out (`false`: dry run).
    public var applied: Bool
    /// Feature sets (with their tiles, rows and segments) to collect.
    public var featureSets: [FeatureSetItem]
    /// Cached matrices to collect.
    public var matrices: [MatrixItem]
    /// Backbones left without a feature set.
    public var backbones: [String]
    /// Feature sets and matrices that stay.
    public var keptFeatureSets: Int
    public var keptMatrices: Int
    /// Bytes of tiles and matrices collected (or to collect).
    public var bytes: Int
}

/// Which references keep a feature set alive.
public enum GCPolicy: String, Sendable, CaseIterable, Codable {
    /// A live head reads it, or a dataset's examples have rows in it (the default).
    case headsOrDatasets = "heads-or-datasets"
    /// Only a live head reading it keeps it (frees target sizes no head chose).
    case headsOnly = "heads-only"
}

extension Registry {

    /// Every live head's summary.
    func liveSummaries(_ txn: borrowing LMDBTransaction) throws -> [HeadSummary] {
        var out: [HeadSummary] = []
        let decoder = JSONDecoder()
        try txn.scan(heads, prefix: []) { key, value in
            guard key.count >= 6, key[key.count - 1] == RegistryKeys.summaryPart, key[key.count - 6] == 0, !Self.isTombstone(value) else { return true }
            out.append(try decoder.decode(HeadSummary.self, from: Data(value)))
            return true
        }
        return out
    }

    /// Finds (and with `apply` removes) feature sets, their tiles, rows and segments, and cached
    /// matrices that nothing references. A dry run changes nothing.
    ///
    /// Feature sets: kept when a live head reads one, or (policy `headsOrDatasets`) when any example
    /// of any dataset split has a row in it. Data under a key prefix with no manifest (an
    /// interrupted collection) is always collected. Matrices: kept only when a live head's
    /// selection of its training or test split, at the split's current digest, is that matrix.
    public func collectGarbage(policy: GCPolicy = .headsOrDatasets, apply: Bool = false) throws -> GCReport {
        let env = store.environment
        let tables = ["featuresets", "segments", "tiles", "rows", "rowexamples", "splititems", "matrices", "backbones"]
        let t = Dictionary(uniqueKeysWithValues: tables.map { ($0, env.table($0)) })
        let infos = try store.allFeatureSets()
        let summaries = try env.read { txn in try liveSummaries(txn) }
        let headFeatureSets = Set(summaries.map(\.lineage.featureSet))
        // Current digests of the splits heads were trained and tested on.
        var digests: [String: String] = [:]
        for s in summaries {
            for split in [s.lineage.train.split] + (s.lineage.test.map { [$0.split] } ?? []) where digests["\(s.lineage.dataset)/\(split)"] == nil {
                digests["\(s.lineage.dataset)/\(split)"] = (try? store.splitDigest(dataset: s.lineage.dataset, split: split)) ?? ""
            }
        }

        var report = GCReport(applied: apply, featureSets: [], matrices: [], backbones: [], keptFeatureSets: 0, keptMatrices: 0, bytes: 0)
        var doomed: [String: [UInt8]] = [:] // id → fs16 prefix
        try env.read { txn in
            var datasetExamples = Set<[UInt8]>()
            if policy == .headsOrDatasets {
                try txn.scan(t["splititems"]!, prefix: []) { _, value in
                    datasetExamples.insert(Array(value[0..<32]))
                    return true
                }
            }
            var known = Set<[UInt8]>()
            for info in infos {
                let fs = Self.fs16(info.id)
                known.insert(fs)
                if headFeatureSets.contains(info.id) { report.keptFeatureSets += 1; continue }
                var usedByDataset = false
                if policy == .headsOrDatasets {
                    try txn.scan(t["rowexamples"]!, prefix: fs) { _, value in
                        usedByDataset = datasetExamples.contains(Array(value))
                        return !usedByDataset
                    }
                }
                if usedByDataset { report.keptFeatureSets += 1; continue }
                let bytes = try tileBytes(txn, t["tiles"]!, fs)
                report.featureSets.append(.init(id: info.id, targetSize: info.manifest.targetSize, rows: info.rowCount, tileBytes: bytes,
                                                reason: policy == .headsOnly ? "no live head reads it" : "no live head reads it and no dataset has rows in it"))
                report.bytes += bytes
                doomed[info.id] = fs
            }
            // Data left under a prefix with no manifest.
            var orphans = Set<[UInt8]>()
            for name in ["segments", "tiles", "rows", "rowexamples"] {
                for prefix in try distinctPrefixes(txn, t[name]!, length: 16) where !known.contains(prefix) { orphans.insert(prefix) }
            }
            for prefix in orphans.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                let id = SHA256.hex(prefix)
                let bytes = try tileBytes(txn, t["tiles"]!, prefix)
                report.featureSets.append(.init(id: id, targetSize: nil, rows: 0, tileBytes: bytes, reason: "data without a feature set manifest (an interrupted collection)"))
                report.bytes += bytes
                doomed[id] = prefix
            }
        }
        let doomedIDs = Set(doomed.keys)
        // Matrices.
        var wanted = Set<String>()
        for s in summaries {
            guard let record = try? head(HeadReference(task: s.task, selector: .version(s.version))) else { continue }
            for split in [s.lineage.train.split] + (s.lineage.test.map { [$0.split] } ?? []) {
                if let digest = digests["\(s.lineage.dataset)/\(split)"], !digest.isEmpty {
                    wanted.insert(FeatureStore.matrixKeyHex(featureSet: s.lineage.featureSet, splitDigest: digest, columns: record.selectedIndices))
                }
            }
        }
        var splitDigestCache: [String: String?] = [:]
        var doomedMatrices: [[UInt8]] = []
        for matrix in try store.cachedMatrices() {
            let splitKey = "\(matrix.info.dataset)/\(matrix.info.split)"
            if splitDigestCache[splitKey] == nil {
                splitDigestCache[splitKey] = .some(try? store.splitDigest(dataset: matrix.info.dataset, split: matrix.info.split))
            }
            let current = splitDigestCache[splitKey]!
            var reason: String?
            if doomedIDs.contains(matrix.info.featureSet) || !infos.contains(where: { $0.id == matrix.info.featureSet }) {
                reason = "its feature set is collected or gone"
            } else if current == nil {
                reason = "its dataset split no longer exists"
            } else if current != matrix.info.splitDigest {
                reason = "its split changed since it was cached (stale)"
            } else if !wanted.contains(matrix.key) {
                reason = "no live head uses this selection"
            }
            guard let reason else { report.keptMatrices += 1; continue }
            report.matrices.append(.init(key: matrix.key, featureSet: matrix.info.featureSet, dataset: matrix.info.dataset,
                                         split: matrix.info.split, bytes: matrix.bytes, reason: reason))
            report.bytes += matrix.bytes
            doomedMatrices.append(Self.bytes(hex: matrix.key))
        }
        // Backbones whose every feature set goes.
        let survivors = infos.filter { !doomedIDs.contains($0.id) }
        report.backbones = try store.allBackbones().map(\.id).filter { id in !survivors.contains { $0.manifest.backbone == id } }.sorted()
        guard apply else { return report }

        for (id, prefix) in doomed.sorted(by: { $0.key < $1.key }) {
            // The manifest goes first, in a transaction that re-checks that no head was registered
            // on it meanwhile; the data follows in bounded transactions (a crash leaves orphaned
            // data that the next gc finds by its prefix).
            try env.write { txn in
                if try liveSummaries(txn).contains(where: { $0.lineage.featureSet == id }) {
                    throw RegistryError.invalidInput("a head was registered on feature set \(id.prefix(12)) during gc; run gc again")
                }
                try txn.delete(t["featuresets"]!, Array(id.utf8))
            }
            for name in ["tiles", "rowexamples", "rows", "segments"] { try deleteAll(t[name]!, prefix: prefix) }
        }
        if !doomedMatrices.isEmpty {
            try env.write { txn in for key in doomedMatrices { try txn.delete(t["matrices"]!, key) } }
        }
        if !report.backbones.isEmpty {
            try env.write { txn in
                for id in report.backbones {
                    var stillUsed = false
                    try txn.scan(t["featuresets"]!, prefix: []) { _, value in
                        stillUsed = (try? CanonicalJSON.decode(FeatureSetManifest.self, from: value))?.backbone == id
                        return !stillUsed
                    }
                    if !stillUsed { try txn.delete(t["backbones"]!, Array(id.utf8)) }
                }
            }
        }
        return report
    }

    private func deleteAll(_ table: LMDBTable, prefix: [UInt8]) throws {
        while true {
            let removed = try store.environment.write { txn -> Int in
                var keys: [[UInt8]] = []
                try txn.scan(table, prefix: prefix) { key, _ in
                    keys.append(Array(key))
                    return keys.count < 4096
                }
                for key in keys { try txn.delete(table, key) }
                return keys.count
            }
            if removed < 4096 { return }
        }
    }

    private func tileBytes(_ txn: borrowing LMDBTransaction, _ tiles: LMDBTable, _ prefix: [UInt8]) throws -> Int {
        var total = 0
        try txn.scan(tiles, prefix: prefix) { _, value in
            total += value.count
            return true
        }
        return total
    }

    /// The distinct `length`-byte key prefixes of a table, found by seeking past each one.
    private func distinctPrefixes(_ txn: borrowing LMDBTransaction, _ table: LMDBTable, length: Int) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        var start: [UInt8]? = nil
        while true {
            var found: [UInt8]?
            try txn.scan(table, prefix: [], from: start) { key, _ in
                if key.count >= length { found = Array(key[0..<length]) }
                return false
            }
            guard let prefix = found else { return out }
            out.append(prefix)
            // The smallest key after every key with this prefix: increment the prefix.
            var next = prefix
            var i = next.count - 1
            while i >= 0 {
                if next[i] == 0xFF { next[i] = 0; i -= 1 } else { next[i] += 1; break }
            }
            if i < 0 { return out }
            start = next
        }
    }

    static func fs16(_ id: String) -> [UInt8] { Array(bytes(hex: String(id.prefix(32)))) }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var high: UInt8?
        for c in hex.utf8 {
            let v: UInt8 = c <= 57 ? c - 48 : (c | 0x20) - 87
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return out
    }
}

extension Registry {
    /// The 16-byte key prefix of a feature set's rows, segments and tiles (`schemas/store-format.md` §3).
    public static func keyPrefix(featureSet id: String) -> [UInt8] { fs16(id) }
}
