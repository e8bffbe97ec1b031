import Foundation
import H2TCore
import H2TStore

/// An input file as an ingest plan names it: by name and size, never by path (workers on other
/// machines mount the same data at other paths) and not by content (hashing every input on every
/// worker would cost a pass over all the data per shard).
struct PlannedInput: Encodable {
    var name: String
    var bytes: Int?

    /// `path`'s last component and its size (nil when it is not a regular file, e.g. a folder).
    init(_ path: String) {
        name = (path as NSString).lastPathComponent
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        bytes = (attributes?[.type] as? FileAttributeType) == .typeRegular ? (attributes?[.size] as? NSNumber)?.intValue : nil
    }

    /// A file of an image folder, by its path inside the folder.
    init(name: String) {
        self.name = name
        bytes = nil
    }
}

/// What identifies an ingest run for sharding: equal on every worker of the run, different for
/// another run. Its canonical JSON's SHA-256 is the run's plan digest.
struct IngestPlan: Encodable {
    var kind: String
    var inputs: [PlannedInput]
    var inputCount: Int
    var options: [String: String]
    var dataset: String
    var split: String
    var classNames: [String]
    var featureSets: [String]
}

/// One shard of an ingest (`--shard K/N`): which inputs it takes, and its record in the shard
/// store, begun before the first commit and sealed after the last.
struct ShardRun {
    let spec: ShardSpec
    /// The shard's inputs, positions in the input order.
    let range: Range<Int>
    let state: ShardState
    let record: ShardRecord

    /// Begins (or resumes, or finds sealed) shard `spec` of `plan` in `store`.
    init(_ spec: ShardSpec, plan: IngestPlan, store: FeatureStore, writer: FeatureSetWriter) throws {
        self.spec = spec
        range = spec.range(of: plan.inputCount)
        record = ShardRecord(plan: try ShardRecord.planDigest(plan), shard: spec,
                             inputs: .init(first: range.lowerBound, end: range.upperBound, total: plan.inputCount),
                             backbone: writer.backboneID, featureSets: writer.featureSetIDs, dataset: plan.dataset, split: plan.split)
        state = try store.beginShard(record)
    }

    /// True when the shard was sealed by an earlier run: nothing is to be done.
    var isSealed: Bool { if case .sealed = state { true } else { false } }

    /// The summary's view of the shard, after `seal` or for a shard already sealed.
    func outcome(sealed: ShardRecord) -> IngestSummary.Shard {
        IngestSummary.Shard(shard: spec.index, shards: spec.count, plan: sealed.plan, firstInput: range.lowerBound, endInput: range.upperBound,
                            totalInputs: sealed.inputs.total, state: isSealed ? "already_sealed" : (state == .resumed ? "resumed" : "started"),
                            sealed: sealed.seal != nil, rows: sealed.seal?.rows ?? [], items: sealed.seal?.items ?? 0)
    }

    /// The summary's view of a shard left open (more parts follow, `--shard-open`).
    func unsealed() -> IngestSummary.Shard { outcome(sealed: record) }

    /// Seals the shard (after the writer has finished) and returns the summary's view of it.
    func seal(_ store: FeatureStore) throws -> IngestSummary.Shard {
        if case .sealed(let record) = state { return outcome(sealed: record) }
        return outcome(sealed: try store.sealShard())
    }
}
