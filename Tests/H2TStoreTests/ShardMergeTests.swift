import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import H2TCore
@_spi(Testing) import H2TStore
import H2TPipeline
import Testing

/// Sharded ingest, seals and `merge`: the merged store must equal a single-process ingest of the
/// same inputs bit for bit, and every bad shard must be refused before anything is written.
@Suite("Sharded ingest and merge")
struct ShardMergeTests {
    /// Two activation files (37 and 29 examples; a spatial and a vector tap), so that shards
    /// straddle the file boundary.
    let dir = TemporaryDirectory()
    var inputs: [String] { [dir.file("a.safetensors"), dir.file("b.safetensors")] }

    init() throws {
        for (file, n, seed) in [("a", 37, UInt64(5)), ("b", 29, 6)] {
            try Self.writeInput(dir.file("\(file).safetensors"), prefix: file, n: n, seed: seed)
        }
    }

    /// Examples `prefix0 ..< prefix(n-1)` with labels cycling over three classes; the first
    /// `count` of them (default: all) are written.
    static func writeInput(_ path: String, prefix: String, n: Int, seed: UInt64, count: Int? = nil) throws {
        var generator = SplitMix64(seed: seed)
        let conv = (0..<(n * 64)).map { _ in generator.uniform() - 0.5 }
        let logits = (0..<(n * 8)).map { _ in generator.uniform() }
        let m = count ?? n
        try writeSafetensors(path, tensors: [("conv", [m, 4, 4, 4], Array(conv[0..<(m * 64)])), ("logits", [m, 8], Array(logits[0..<(m * 8)]))],
                             metadata: ["example_ids": "[" + (0..<m).map { "\"\(prefix)\($0)\"" }.joined(separator: ",") + "]",
                                        "labels": "[" + (0..<m).map { "\"\(["cat", "dog", "fox"][$0 % 3])\"" }.joined(separator: ",") + "]"])
    }

    func options(shard: ShardSpec? = nil, targets: [Int] = [16, 4]) -> ExternalIngestOptions {
        var o = ExternalIngestOptions(backboneName: "toy", dataset: "pets", split: "train", targetSizes: targets)
        o.segmentRows = 8
        o.columnBlock = 8
        o.shard = shard
        return o
    }

    /// Ingests shard `k` of `n` into its own store; returns the store's path.
    @discardableResult
    func ingestShard(_ k: Int, of n: Int, name: String = "shard", targets: [Int] = [16, 4]) throws -> String {
        let path = dir.file("\(name)-\(k)")
        let store = try FeatureStore(path: path)
        _ = try ExternalIngest(store: store, options: options(shard: try ShardSpec(index: k, count: n), targets: targets)).run(paths: inputs)
        return path
    }

    /// Every feature set's split matrix (bit patterns), labels and example ids.
    func contents(_ store: FeatureStore) throws -> [String: ([UInt32], [Int], [ExampleID])] {
        var out: [String: ([UInt32], [Int], [ExampleID])] = [:]
        for info in try store.allFeatureSets() {
            let m = try store.read(featureSet: info.id, dataset: "pets", split: "train")
            out[info.id] = (m.features.values.map(\.bitPattern), m.labels, m.examples)
        }
        return out
    }

    func expectEqual(_ a: [String: ([UInt32], [Int], [ExampleID])], _ b: [String: ([UInt32], [Int], [ExampleID])],
                     sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.keys.sorted() == b.keys.sorted(), sourceLocation: sourceLocation)
        for (id, x) in a {
            guard let y = b[id] else { continue }
            #expect(x.0 == y.0, "features of \(id.prefix(12))", sourceLocation: sourceLocation)
            #expect(x.1 == y.1, "labels", sourceLocation: sourceLocation)
            #expect(x.2 == y.2, "example order", sourceLocation: sourceLocation)
        }
    }

    func singleProcess() throws -> FeatureStore {
        let store = try FeatureStore(path: dir.file("single"))
        _ = try ExternalIngest(store: store, options: options()).run(paths: inputs)
        return store
    }

    @Test func shardSpecsPartitionTheInputsAndBadSpecsAreRefused() throws {
        for total in [0, 1, 7, 66, 1000] {
            for n in [1, 2, 3, 4, 7] {
                let ranges = try (0..<n).map { try ShardSpec(index: $0, count: n).range(of: total) }
                #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == total)
                for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
                #expect(ranges.map(\.count).max()! - ranges.map(\.count).min()! <= 1)
            }
        }
        for bad in ["3/2", "2/2", "0/0", "-1/4", "x/4", "1", "1/2/3"] {
            #expect(throws: StoreError.self, "\(bad)") { try ShardSpec.parse(bad, environment: [:]) }
        }
        #expect(try ShardSpec.parse("auto/4", environment: ["SLURM_ARRAY_TASK_ID": "3"]) == ShardSpec(index: 3, count: 4))
        #expect(try ShardSpec.parse("auto/4", environment: ["SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1"]) == ShardSpec(index: 3, count: 4))
        #expect(throws: StoreError.self) { try ShardSpec.parse("auto/4", environment: [:]) }
        #expect(throws: StoreError.self) { try ShardSpec.parse("auto/4", environment: ["SLURM_ARRAY_TASK_ID": "4"]) }
    }

    @Test func mergedShardsEqualASingleProcessIngestAndMergeIsIdempotent() throws {
        let reference = try contents(try singleProcess())
        let shards = try (0..<3).map { try ingestShard($0, of: 3) }
        let target = try FeatureStore(path: dir.file("merged"))
        // Given in any order: the merge orders shards by K.
        let summary = try target.merge(shardPaths: shards.reversed())
        expectEqual(try contents(target), reference)
        #expect(summary.tilesReencoded == 0)
        let seals = try shards.map { try #require(try FeatureStore(path: $0, create: false, readOnly: true).shardRecord()?.seal) }
        #expect(summary.tilesCopied == seals.reduce(0) { $0 + $1.tiles })
        #expect(summary.rowsAdded == 2 * 66 && summary.itemsAdded == 66)
        #expect(try target.verify().problems == [])
        #expect(try target.dataset("pets").classNames == ["cat", "dog", "fox"])
        #expect(try target.example(ExampleID(name: "b3"))?.source == inputs[1])

        // Twice: nothing is added, and the store is byte for byte what it was.
        let before = try target.usedBytes()
        let again = try target.merge(shardPaths: shards)
        #expect(again.shards.allSatisfy(\.alreadyMerged) && again.rowsAdded == 0 && again.itemsAdded == 0)
        #expect(try target.usedBytes() == before)
        expectEqual(try contents(target), reference)
    }

    @Test func sealedShardIsNotRedoneAndAnUnsealedOneResumes() throws {
        let path = try ingestShard(1, of: 2)
        let store = try FeatureStore(path: path, create: false)
        let sealed = try #require(try store.shardRecord())
        #expect(sealed.seal?.items == 33 && sealed.inputs == .init(first: 33, end: 66, total: 66))
        let rerun = try ExternalIngest(store: store, options: options(shard: try ShardSpec(index: 1, count: 2))).run(paths: inputs)
        #expect(rerun.shard?.state == "already_sealed" && rerun.examplesSeen == 0)
        #expect(try store.shardRecord() == sealed)

        // A shard killed before its seal: its commits are there, its record has no seal.
        // Commits: backbone, two feature sets, the shard record, then one per chunk.
        let killed = dir.file("killed")
        do {
            let partial = try FeatureStore(path: killed)
            LMDBFaults.arm("mdb_txn_commit", path: killed, code: EIO, skip: 5)
            defer { LMDBFaults.disarm(path: killed) }
            #expect(throws: (any Error).self) {
                _ = try ExternalIngest(store: partial, options: options(shard: try ShardSpec(index: 1, count: 2))).run(paths: inputs)
            }
            #expect(try partial.shardRecord() != nil && partial.shardRecord()?.seal == nil)
        }
        let first = try ingestShard(0, of: 2)
        #expect {
            _ = try FeatureStore(path: dir.file("t")).merge(shardPaths: [first, killed])
        } throws: { "\($0)".contains("\(killed): shard 1/2 of plan ") && "\($0)".contains("is not sealed") }
        let partial = try FeatureStore(path: killed, create: false)
        let resumed = try ExternalIngest(store: partial, options: options(shard: try ShardSpec(index: 1, count: 2))).run(paths: inputs)
        #expect(resumed.shard?.state == "resumed" && resumed.examplesReused > 0)
        #expect(try partial.shardRecord()?.seal == sealed.seal)
    }

    @Test func badShardsAreRefusedBeforeAnythingIsWritten() throws {
        let shards = try (0..<3).map { try ingestShard($0, of: 3) }
        let target = try FeatureStore(path: dir.file("target"))
        func refusal(_ paths: [String]) -> String {
            do {
                _ = try target.merge(shardPaths: paths)
                return "merged"
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal([shards[0], shards[2]]).hasPrefix("shard 1/3 of plan "), "\(refusal([shards[0], shards[2]]))")
        #expect(refusal([dir.path]).contains("is not a shard store"))
        #expect(refusal([dir.file("single-missing")]).contains("no h2t-store there"))
        _ = try singleProcess()
        #expect(refusal([dir.file("single")] + shards).contains("is not a shard (it was not written by `ingest --shard`)"))
        #expect(refusal(shards + [dir.file("target")]).contains("is the target store itself"))

        // Another target size is another feature set: another run.
        let foreign = try ingestShard(1, of: 3, name: "other-ft", targets: [16])
        let message = refusal([shards[0], foreign, shards[2]])
        #expect(message.hasPrefix("\(foreign): shard 1/3 of plan ") && message.contains("is not of the same run") && message.contains("feature sets"), "\(message)")
        let otherCount = try ingestShard(1, of: 2, name: "other-n")
        #expect(refusal(shards + [otherCount]).contains("another shard count"))

        // An unsealed shard: its record without the seal.
        let unsealed = dir.file("unsealed")
        _ = try FeatureStore(path: unsealed).beginShard(try #require(try FeatureStore(path: shards[1], create: false, readOnly: true).shardRecord()).withoutSeal)
        #expect(refusal([shards[0], unsealed, shards[2]]).contains("is not sealed"))

        // A tile changed after sealing.
        do {
            let damaged = try FeatureStore(path: shards[2], create: false)
            try damaged.rawEnvironment.write { txn in
                let tiles = damaged.rawEnvironment.table("tiles")
                var key: [UInt8] = [], value: [UInt8] = []
                try txn.scan(tiles, prefix: []) { k, v in key = Array(k); value = Array(v); return false }
                value[value.count - 1] ^= 1
                try txn.put(tiles, key, value)
            }
        }
        #expect(refusal(shards).contains("does not match its seal"))
        #expect(try target.allFeatureSets().isEmpty && target.allDatasets().isEmpty)
    }

    @Test func targetWithOtherFeaturesOrLabelsForTheSameExamplesIsRefused() throws {
        let shards = try (0..<2).map { try ingestShard($0, of: 2) }
        // Same example ids ("a0"...), other activations.
        let other = dir.file("other.safetensors")
        var generator = SplitMix64(seed: 99)
        try writeSafetensors(other, tensors: [("conv", [4, 4, 4, 4], (0..<256).map { _ in generator.uniform() }), ("logits", [4, 8], (0..<32).map { _ in generator.uniform() })],
                             metadata: ["example_ids": "[\"a0\",\"a1\",\"a2\",\"a3\"]", "labels": "[\"cat\",\"dog\",\"fox\",\"cat\"]"])
        let target = try FeatureStore(path: dir.file("target"))
        var o = options()
        o.dataset = "elsewhere"
        _ = try ExternalIngest(store: target, options: o).run(paths: [other])
        let before = try target.usedBytes()
        #expect {
            _ = try target.merge(shardPaths: shards)
        } throws: { "\($0)".contains("example \(ExampleID(name: "a0").hex.prefix(12)) has other features in feature set") }
        #expect(try target.usedBytes() == before)
    }

    @Test func examplesTheTargetAlreadyHoldsAreKeptOnceAndTheRestEqualsASingleIngest() throws {
        let reference = try contents(try singleProcess())
        let shards = try (0..<2).map { try ingestShard($0, of: 2) }
        // The target already holds b0 ... b9 with the same values: those rows are not copied
        // again; the shard segment b8 ... b15 is re-encoded without b8 and b9.
        let first10 = dir.file("b-first10.safetensors")
        try Self.writeInput(first10, prefix: "b", n: 29, seed: 6, count: 10)
        let target = try FeatureStore(path: dir.file("target"))
        var o = options()
        o.dataset = "b-only"
        _ = try ExternalIngest(store: target, options: o).run(paths: [first10])
        let summary = try target.merge(shardPaths: shards)
        #expect(summary.rowsAdded == 2 * (66 - 10) && summary.tilesReencoded > 0)
        expectEqual(try contents(target), reference)
        #expect(try target.verify().problems == [])
    }

    @Test func moreShardsThanInputsLeavesSomeEmptyAndStillMerges() throws {
        let small = dir.file("small.safetensors")
        try Self.writeInput(small, prefix: "s", n: 3, seed: 8)
        var paths: [String] = []
        for k in 0..<5 {
            paths.append(dir.file("small-\(k)"))
            let store = try FeatureStore(path: paths[k])
            _ = try ExternalIngest(store: store, options: options(shard: try ShardSpec(index: k, count: 5))).run(paths: [small])
        }
        let single = try FeatureStore(path: dir.file("small-single"))
        _ = try ExternalIngest(store: single, options: options()).run(paths: [small])
        let target = try FeatureStore(path: dir.file("small-merged"))
        #expect(try target.merge(shardPaths: paths).itemsAdded == 3)
        expectEqual(try contents(target), try contents(single))
    }

    @Test("a merge interrupted at any commit leaves a valid store that a re-run completes (disk full: one clear error)")
    func interruptedMergeResumes() throws {
        let reference = try contents(try singleProcess())
        let shards = try (0..<2).map { try ingestShard($0, of: 2) }
        var commits = 0
        do {
            let probe = try FeatureStore(path: dir.file("probe"))
            _ = try probe.merge(shardPaths: shards)
            commits = try probe.allFeatureSets().reduce(0) { $0 + $1.segmentCount } + 2
        }
        for skip in stride(from: 0, to: commits + 2, by: 3) {
            let path = dir.file("target-\(skip)")
            let target = try FeatureStore(path: path)
            LMDBFaults.arm("mdb_txn_commit", path: path, code: ENOSPC, skip: skip)
            var message = ""
            do { _ = try target.merge(shardPaths: shards) } catch { message = "\(error)" }
            LMDBFaults.disarm(path: path)
            if !message.isEmpty { #expect(message.contains("disk holding the store is full") || message.contains("the disk is full"), "\(message)") }
            #expect(try target.verify().problems == [], "after a failed commit \(skip)")
            _ = try target.merge(shardPaths: shards)
            expectEqual(try contents(target), reference)
        }
    }
}

extension ShardRecord {
    /// The record as it is before its shard is sealed.
    var withoutSeal: ShardRecord {
        var copy = self
        copy.seal = nil
        return copy
    }
}
