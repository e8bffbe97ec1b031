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
        try txn.scan(heads) { key, value in
            guard key.part == .summary, !Self.isTombstone(value) else { return true }
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
        let infos = try store.allFeatureSets()
        let summaries = try store.read { txn in try liveSummaries(txn) }
        var report = GCReport(applied: apply, featureSets: [], matrices: [], backbones: [], keptFeatureSets: 0, keptMatrices: 0, bytes: 0)
        let doomed = try unusedFeatureSets(infos, summaries: summaries, policy: policy, into: &report)
        // Data left under a prefix with no manifest.
        let orphans = try store.orphanedFeatureData()
        for orphan in orphans {
            report.featureSets.append(.init(id: orphan.keyPrefix, targetSize: nil, rows: 0, tileBytes: orphan.tileBytes,
                                            reason: "data without a feature set manifest (an interrupted collection)"))
            report.bytes += orphan.tileBytes
        }
        let doomedIDs = Set(doomed)
        let doomedMatrices = try unusedMatrices(infos, summaries: summaries, doomed: doomedIDs, into: &report)
        // Backbones whose every feature set goes.
        let survivors = infos.filter { !doomedIDs.contains($0.id) }
        report.backbones = try store.allBackbones().map(\.id).filter { id in !survivors.contains { $0.manifest.backbone == id } }.sorted()
        guard apply else { return report }

        for id in doomed.sorted() {
            // The store deletes the manifest in a transaction that first re-checks that no head
            // was registered on it meanwhile.
            try store.deleteFeatureSet(id) { txn in
                if try liveSummaries(txn).contains(where: { $0.lineage.featureSet == id }) {
                    throw RegistryError.invalidInput("a head was registered on feature set \(id.prefix(12)) during gc; run gc again")
                }
            }
        }
        for orphan in orphans { try store.deleteOrphanedFeatureData(keyPrefix: orphan.keyPrefix) }
        try store.deleteCachedMatrices(doomedMatrices)
        try store.deleteBackbonesWithoutFeatureSets(report.backbones)
        return report
    }

    /// The feature sets no live head reads (and, by policy, no dataset has rows in), added to the
    /// report.
    private func unusedFeatureSets(_ infos: [FeatureSetInfo], summaries: [HeadSummary], policy: GCPolicy,
                                   into report: inout GCReport) throws -> [String] {
        let headFeatureSets = Set(summaries.map(\.lineage.featureSet))
        let candidates = infos.filter { !headFeatureSets.contains($0.id) }
        let usedByDatasets = policy == .headsOrDatasets ? try store.featureSetsHoldingDatasetExamples(candidates.map(\.id)) : []
        report.keptFeatureSets = infos.count - candidates.count + usedByDatasets.count
        var doomed: [String] = []
        for info in candidates where !usedByDatasets.contains(info.id) {
            let bytes = try store.tileBytes(featureSet: info.id)
            report.featureSets.append(.init(id: info.id, targetSize: info.manifest.targetSize, rows: info.rowCount, tileBytes: bytes,
                                            reason: policy == .headsOnly ? "no live head reads it" : "no live head reads it and no dataset has rows in it"))
            report.bytes += bytes
            doomed.append(info.id)
        }
        return doomed
    }

    /// The cached matrices to drop (their feature set goes, their split is gone or changed, or no
    /// live head uses their selection), added to the report.
    private func unusedMatrices(_ infos: [FeatureSetInfo], summaries: [HeadSummary], doomed: Set<String>,
                                into report: inout GCReport) throws -> [String] {
        var digests: [String: String?] = [:]
        func digest(_ dataset: String, _ split: String) -> String? {
            let key = "\(dataset)/\(split)"
            if let known = digests[key] { return known }
            let current = try? store.splitDigest(dataset: dataset, split: split)
            digests[key] = .some(current)
            return current
        }
        var wanted = Set<String>()
        for s in summaries {
            guard let record = try? head(HeadReference(task: s.task, selector: .version(s.version))) else { continue }
            for split in [s.lineage.train.split] + (s.lineage.test.map { [$0.split] } ?? []) {
                if let current = digest(s.lineage.dataset, split) {
                    wanted.insert(FeatureStore.matrixKeyHex(featureSet: s.lineage.featureSet, splitDigest: current, columns: record.selectedIndices))
                }
            }
        }
        let known = Set(infos.map(\.id))
        var dropped: [String] = []
        for matrix in try store.cachedMatrices() {
            let current = digest(matrix.info.dataset, matrix.info.split)
            var reason: String?
            if doomed.contains(matrix.info.featureSet) || !known.contains(matrix.info.featureSet) {
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
            dropped.append(matrix.key)
        }
        return dropped
    }
}
