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

@Suite("External-activation ingest")
struct ExternalIngestTests {
    static let n = 40

    /// A safetensors file with a spatial tap [n, 4, 4, 4] and a vector tap [n, 8].
    func writeInput(_ path: String, n: Int = n, nanAt: Int? = nil, metadata: [String: String]? = nil) throws -> ([Float], [Float]) {
        var generator = ActivationGenerator(state: 3)
        var conv = generator.matrix(rows: n, cols: 64)
        let logits = generator.matrix(rows: n, cols: 8)
        if let nanAt { conv[nanAt * 64 + 5] = .nan }
        try writeSafetensors(path, tensors: [("conv", [n, 4, 4, 4], conv), ("logits", [n, 8], logits)],
                             metadata: metadata ?? ["example_ids": "[" + (0..<n).map { "\"img\($0)\"" }.joined(separator: ",") + "]",
                                                    "labels": "[" + (0..<n).map { "\"\($0 % 2 == 0 ? "cat" : "dog")\"" }.joined(separator: ",") + "]"])
        return (conv, logits)
    }

    func options(_ targets: [Int] = [16]) -> ExternalIngestOptions {
        var o = ExternalIngestOptions(backboneName: "toy", dataset: "pets", split: "train", targetSizes: targets)
        o.segmentRows = 8
        o.columnBlock = 8
        o.codec = .lossless
        return o
    }

    @Test func poolsWithHead2ToeRuleAndStoresLabels() throws {
        let dir = TemporaryDirectory()
        let (conv, logits) = try writeInput(dir.file("a.safetensors"))
        let store = try FeatureStore(path: dir.file("store"))
        let summary = try ExternalIngest(store: store, options: options([16, 2])).run(paths: [dir.file("a.safetensors")])
        #expect(summary.examplesComputed == Self.n)
        #expect(summary.featureSets.map(\.width) == [4 * 2 * 2 + 8, 4 + 8])
        let data = try store.read(featureSet: summary.featureSets[0].id, dataset: "pets", split: "train")
        #expect(data.labels == (0..<Self.n).map { $0 % 2 })
        // F_T = 16, C = 4: n = int(sqrt(16 / 4)) = 2, p = 4 / 2 = 2: 2×2 average pooling per channel.
        for e in [0, 13, 39] {
            for c in 0..<4 {
                for i in 0..<2 {
                    for j in 0..<2 {
                        var sum: Float = 0
                        for di in 0..<2 { for dj in 0..<2 { sum += conv[e * 64 + c * 16 + (2 * i + di) * 4 + 2 * j + dj] } }
                        #expect(abs(data.features[e, c * 4 + i * 2 + j] - sum / 4) < 1e-6)
                    }
                }
            }
            for k in 0..<8 { #expect(data.features[e, 16 + k] == logits[e * 8 + k]) }
        }
        // F_T = 2 < C: global average pooling.
        let global = try store.read(featureSet: summary.featureSets[1].id, dataset: "pets", split: "train")
        let mean0 = (0..<16).reduce(Float(0)) { $0 + conv[$1] } / 16
        #expect(abs(global.features[0, 0] - mean0) < 1e-6)
        #expect(try store.dataset("pets").classNames == ["cat", "dog"])
    }

    @Test func secondIngestOfSameExamplesStoresNothingNew() throws {
        let dir = TemporaryDirectory()
        _ = try writeInput(dir.file("a.safetensors"))
        let store = try FeatureStore(path: dir.file("store"))
        _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")])
        let bytes = try store.diskUsage().featureSets[0].bytes
        let again = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")])
        #expect(again.examplesComputed == 0)
        #expect(again.examplesReused == Self.n)
        #expect(try store.diskUsage().featureSets[0].bytes == bytes)
        #expect(try store.allFeatureSets()[0].rowCount == Self.n)
    }

    @Test("examples repeated across chunks are computed once, also while the previous chunk's commit is in flight")
    func repeatsAcrossChunksWithOverlappedCommits() throws {
        let dir = TemporaryDirectory()
        // 40 rows naming 10 examples: each chunk of 8 repeats examples of the chunk just handed to
        // the background commit. Same label and same activations for the same name.
        let names = (0..<Self.n).map { "\"img\($0 % 10)\"" }.joined(separator: ",")
        let labels = (0..<Self.n).map { "\"\($0 % 2 == 0 ? "cat" : "dog")\"" }.joined(separator: ",")
        var generator = ActivationGenerator(state: 3)
        let conv10 = generator.matrix(rows: 10, cols: 64), logits10 = generator.matrix(rows: 10, cols: 8)
        let conv = (0..<Self.n).flatMap { conv10[($0 % 10 * 64)..<($0 % 10 * 64 + 64)] }
        let logits = (0..<Self.n).flatMap { logits10[($0 % 10 * 8)..<($0 % 10 * 8 + 8)] }
        try writeSafetensors(dir.file("a.safetensors"), tensors: [("conv", [Self.n, 4, 4, 4], conv), ("logits", [Self.n, 8], logits)],
                             metadata: ["example_ids": "[\(names)]", "labels": "[\(labels)]"])
        var contents: [[Float]] = []
        for (run, overlap) in [true, false, true, true].enumerated() {
            let store = try FeatureStore(path: dir.file("store\(run)"))
            var o = options()
            o.overlapCommits = overlap
            let summary = try ExternalIngest(store: store, options: o).run(paths: [dir.file("a.safetensors")])
            #expect(summary.examplesComputed == 10, "overlap \(overlap)")
            #expect(summary.examplesReused == Self.n - 10)
            #expect(try store.allFeatureSets()[0].rowCount == 10)
            let data = try store.read(featureSet: summary.featureSets[0].id, dataset: "pets", split: "train")
            #expect(data.examples == (0..<10).map { ExampleID(name: "img\($0)") })
            // Row e of the input for img e.
            #expect(abs(data.features[3, 0] - (conv[3 * 64 + 0] + conv[3 * 64 + 1] + conv[3 * 64 + 4] + conv[3 * 64 + 5]) / 4) < 1e-6)
            #expect(try store.verify().ok)
            contents.append(data.features.values)
        }
        #expect(Set(contents).count == 1, "overlapped and sequential commits store the same features")
    }

    @Test func overlappedCommitFailureSurfacesAndKeepsEarlierChunks() throws {
        let dir = TemporaryDirectory()
        _ = try writeInput(dir.file("a.safetensors"))
        let storePath = dir.file("store")
        let store = try FeatureStore(path: storePath)
        // Commits: backbone, feature set, then one per chunk of 8: the last chunk's commit fails in
        // the background; `run` must still throw it (from `finish`), and the first four chunks stay.
        LMDBFaults.arm("mdb_txn_commit", path: storePath, code: EIO, skip: 6)
        defer { LMDBFaults.disarm(path: storePath) }
        #expect(throws: LMDBError.self) { _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")]) }
        #expect(try store.allFeatureSets()[0].rowCount == 32)
        #expect(try store.verify().ok)
    }

    @Test func interruptedIngestResumesWithoutDuplicatesOrGaps() throws {
        let dir = TemporaryDirectory()
        _ = try writeInput(dir.file("a.safetensors"))
        let storePath = dir.file("store")
        do {
            let store = try FeatureStore(path: storePath)
            // Commits: backbone, feature set, then one per chunk of 8; fail the third chunk's commit.
            LMDBFaults.arm("mdb_txn_commit", path: storePath, code: EIO, skip: 4)
            defer { LMDBFaults.disarm(path: storePath) }
            #expect(throws: LMDBError.self) { _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")]) }
            #expect(try store.allFeatureSets()[0].rowCount == 16)
            #expect(try store.dataset("pets").splits["train"] == 16)
        }
        let store = try FeatureStore(path: storePath)
        let resumed = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")])
        #expect(resumed.examplesReused == 16)
        #expect(resumed.examplesComputed == Self.n - 16)
        #expect(try store.allFeatureSets()[0].rowCount == Self.n)
        let items = try store.split(dataset: "pets", split: "train")
        #expect(items.examples == (0..<Self.n).map { ExampleID(name: "img\($0)") })
        #expect(try store.verify().ok)
    }

    @Test func nonFiniteIsRejectedUnlessAllowed() throws {
        let dir = TemporaryDirectory()
        _ = try writeInput(dir.file("a.safetensors"), nanAt: 21)
        let store = try FeatureStore(path: dir.file("store"))
        do {
            _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("a.safetensors")])
            Issue.record("NaN accepted")
        } catch {
            #expect("\(error)".contains("tap 'conv' has NaN or Inf in example 21"))
            #expect("\(error)".contains("a.safetensors"))
        }
        // Chunks before the bad example were committed and stay.
        #expect(try store.allFeatureSets()[0].rowCount == 16)
        var allowed = options()
        allowed.allowNonFinite = true
        let summary = try ExternalIngest(store: store, options: allowed).run(paths: [dir.file("a.safetensors")])
        #expect(summary.examplesComputed == Self.n - 16)
    }

    @Test func malformedInputsGetOneLineErrorsNamingTheFile() throws {
        let dir = TemporaryDirectory()
        let good = dir.file("good.safetensors")
        _ = try writeInput(good)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let store = try FeatureStore(path: dir.file("store"))
        func expectError(_ path: String, _ fragment: String) {
            do {
                _ = try ExternalIngest(store: store, options: options()).run(paths: [path])
                Issue.record("\(path) accepted")
            } catch {
                let text = "\(error)"
                #expect(text.contains(path), "\(text)")
                #expect(text.contains(fragment), "\(text)")
                #expect(!text.contains("\n"))
            }
        }
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: dir.file("truncated.safetensors")))
        expectError(dir.file("truncated.safetensors"), "truncated")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.file("tiny.safetensors")))
        expectError(dir.file("tiny.safetensors"), "shorter than")
        var garbage = bytes
        garbage.replaceSubrange(8..<12, with: [0x7B, 0x7B, 0x7B, 0x7B])
        try garbage.write(to: URL(fileURLWithPath: dir.file("garbage.safetensors")))
        expectError(dir.file("garbage.safetensors"), "not a JSON object")
        try writeSafetensors(dir.file("ints.safetensors"), tensors: [("conv", [4, 2], [Float](repeating: 0, count: 8))], dtypeOverride: "I32")
        expectError(dir.file("ints.safetensors"), "dtype I32")
        try writeSafetensors(dir.file("counts.safetensors"), tensors: [("a", [4, 2], [Float](repeating: 1, count: 8)), ("b", [3, 2], [Float](repeating: 1, count: 6))])
        expectError(dir.file("counts.safetensors"), "tap 'b' has 3 examples but 'a' has 4")
        try writeSafetensors(dir.file("rank.safetensors"), tensors: [("a", [4, 2, 2], [Float](repeating: 1, count: 16))])
        expectError(dir.file("rank.safetensors"), "per-example shape [2, 2]")
        expectError(dir.file("missing.safetensors"), "no such file")
        #expect(try store.verify().ok)
    }

    /// An id given twice with different activations would keep one and silently drop the other:
    /// refused before anything is written, naming both positions; in one file and across files.
    /// Pre-pooled rows (what `h2t_store.capture` sends) give the backbone and feature sets the raw
    /// activations give, with the same features; an inconsistent file is refused, naming it.
    @Test func prePooledFilesMatchRawActivations() throws {
        let dir = TemporaryDirectory()
        _ = try writeInput(dir.file("raw.safetensors"))
        let raw = try FeatureStore(path: dir.file("raw"))
        let summary = try ExternalIngest(store: raw, options: options([16, 2])).run(paths: [dir.file("raw.safetensors")])
        let rows = try summary.featureSets.map { try raw.read(featureSet: $0.id, dataset: "pets", split: "train").features }
        let ids = "[" + (0..<Self.n).map { "\"img\($0)\"" }.joined(separator: ",") + "]"
        let labels = "[" + (0..<Self.n).map { "\"\($0 % 2 == 0 ? "cat" : "dog")\"" }.joined(separator: ",") + "]"
        let declared = #"{"taps":[{"name":"conv","shape":[4,4,4]},{"name":"logits","shape":[8]}]}"#
        let metadata = ["example_ids": ids, "labels": labels, "h2t.pooled": declared]
        try writeSafetensors(dir.file("pooled.safetensors"),
                             tensors: [("h2t.pooled/16", [Self.n, rows[0].columnCount], rows[0].values),
                                       ("h2t.pooled/2", [Self.n, rows[1].columnCount], rows[1].values)], metadata: metadata)
        let pooled = try FeatureStore(path: dir.file("pooled"))
        let again = try ExternalIngest(store: pooled, options: options([16, 2])).run(paths: [dir.file("pooled.safetensors")])
        #expect(again.backbone == summary.backbone)
        #expect(again.featureSets.map(\.id) == summary.featureSets.map(\.id))
        for (f, fs) in again.featureSets.enumerated() {
            let read = try pooled.read(featureSet: fs.id, dataset: "pets", split: "train")
            #expect(read.features.values.map(\.bitPattern) == rows[f].values.map(\.bitPattern))
            #expect(read.labels == (0..<Self.n).map { $0 % 2 })
        }

        func expectRefused(_ targets: [Int], _ tensors: [(name: String, shape: [Int], values: [Float])],
                           _ metadata: [String: String], _ fragment: String, layout: ActivationLayout = .nchw) throws {
            let path = dir.file("bad.safetensors")
            try writeSafetensors(path, tensors: tensors, metadata: metadata)
            var o = options(targets)
            o.layout = layout
            let target = try FeatureStore(path: dir.file("refused"))
            #expect(throws: (any Error).self) { try ExternalIngest(store: target, options: o).run(paths: [path]) }
            do { _ = try ExternalIngest(store: target, options: o).run(paths: [path]) } catch {
                #expect("\(error)".contains(path) && "\(error)".contains(fragment), "\(error)")
            }
            #expect(try target.allFeatureSets().isEmpty)
        }
        let good: [(name: String, shape: [Int], values: [Float])] = [("h2t.pooled/16", [Self.n, 24], rows[0].values)]
        try expectRefused([16, 4], good, metadata, "no tensor h2t.pooled/4")
        try expectRefused([2], [("h2t.pooled/2", [Self.n, 24], rows[0].values)], metadata, "pool to 12 at target size 2")
        try expectRefused([16], good, metadata.filter { $0.key != "example_ids" }, "'example_ids' is required")
        try expectRefused([16], good, metadata.merging(["h2t.pooled": #"{"taps":[]}"#]) { $1 }, "at least one tap")
        try expectRefused([16], [("conv", [Self.n, 24], rows[0].values)], metadata, "tensor 'conv' is not named h2t.pooled/")
        try expectRefused([16], good, metadata, "drop --layout nhwc", layout: .nhwc)
    }

    /// Pre-pooled rows already in the stored 16-bit type go to the encoder as mapped: the tiles are
    /// byte for byte those of the float path (taken here with --allow-nonfinite), for a file cut
    /// into several segments, with a repeated example and with examples already stored; a
    /// non-finite value is refused naming its tap and example, with nothing of its chunk stored.
    @Test(arguments: [StorageDType.bfloat16, .float16])
    func sixteenBitPrePooledRowsGiveTheFloatPathsTiles(dtype: StorageDType) throws {
        let dir = TemporaryDirectory()
        let n = 21, width = 24  // conv [4, 4, 4] pools to 16 at target size 16; logits [8]
        var state = SplitMix64(seed: 11)
        var bits = (0..<(n * width)).map { _ -> UInt16 in
            let value = Float(Int(state.next() % 2001) - 1000) / 97
            return dtype == .bfloat16 ? UInt16(value.bitPattern >> 16) : Float16(value).bitPattern
        }
        func write(_ path: String, _ bits: [UInt16], ids: [Int]) throws {
            let declared = #"{"taps":[{"name":"conv","shape":[4,4,4]},{"name":"logits","shape":[8]}]}"#
            var writer = SafetensorsWriter(metadata: ["example_ids": "[" + ids.map { "\"img\($0)\"" }.joined(separator: ",") + "]",
                                                      "labels": "[" + ids.map { "\"\($0 % 3)\"" }.joined(separator: ",") + "]",
                                                      "h2t.pooled": declared])
            bits.withUnsafeBytes { writer.append("h2t.pooled/16", dtype: dtype == .bfloat16 ? "BF16" : "F16", shape: [ids.count, width], bytes: $0) }
            try writer.write(to: path)
        }
        var ids = Array(0..<n)
        bits[(10 * width)..<(11 * width)] = bits[(9 * width)..<(10 * width)]
        ids[10] = 9  // a repeat in the second segment (8 rows each): it goes through floats, as the first
                     // (partly stored already) does; the third goes to the encoder as mapped
        try write(dir.file("rows.safetensors"), bits, ids: ids)
        try write(dir.file("first.safetensors"), Array(bits[0..<(5 * width)]), ids: Array(ids[0..<5]))
        func ingest(_ name: String, allowNonFinite: Bool) throws -> [[UInt8]] {
            var o = options()
            o.codec = TileCodec(dtype: dtype)
            o.allowNonFinite = allowNonFinite
            let store = try FeatureStore(path: dir.file(name))
            _ = try ExternalIngest(store: store, options: o).run(paths: [dir.file("first.safetensors")])
            let summary = try ExternalIngest(store: store, options: o).run(paths: [dir.file("rows.safetensors")])
            var tiles: [[UInt8]] = []
            try store.scanTiles(featureSet: summary.featureSets[0].id) { _, _, tile in tiles.append(Array(tile)); return true }
            return tiles
        }
        let direct = try ingest("direct", allowNonFinite: false)
        let floats = try ingest("floats", allowNonFinite: true)
        #expect(!direct.isEmpty && direct == floats)

        var bad = bits
        bad[2 * width + 18] = dtype == .bfloat16 ? 0xFF80 : 0xFC00  // -inf in example 2's logits
        try write(dir.file("bad.safetensors"), bad, ids: Array(0..<n))
        let store = try FeatureStore(path: dir.file("refused"))
        var o = options()
        o.codec = TileCodec(dtype: dtype)
        #expect(throws: (any Error).self) { try ExternalIngest(store: store, options: o).run(paths: [dir.file("bad.safetensors")]) }
        do { _ = try ExternalIngest(store: store, options: o).run(paths: [dir.file("bad.safetensors")]) } catch {
            #expect("\(error)".contains("bad.safetensors") && "\(error)".contains("'logits'") && "\(error)".contains("example 2;"), "\(error)")
        }
        let fs = try store.allFeatureSets()
        #expect(try fs.allSatisfy { try store.tileBytes(featureSet: $0.id) == 0 })
    }

    @Test func repeatedIdsWithDifferentActivationsAreRefused() throws {
        let dir = TemporaryDirectory()
        let ids = ["a", "b", "c", "b"]
        let meta = ["example_ids": "[" + ids.map { "\"\($0)\"" }.joined(separator: ",") + "]"]
        var generator = ActivationGenerator(state: 5)
        var vector = generator.matrix(rows: 4, cols: 6)
        try writeSafetensors(dir.file("diff.safetensors"), tensors: [("v", [4, 6], vector)], metadata: meta)
        vector.replaceSubrange(18..<24, with: vector[6..<12])
        try writeSafetensors(dir.file("same.safetensors"), tensors: [("v", [4, 6], vector)], metadata: meta)
        try writeSafetensors(dir.file("other.safetensors"), tensors: [("v", [1, 6], Array(vector[0..<6].map { $0 + 1 }))],
                             metadata: ["example_ids": "[\"c\"]"])
        let store = try FeatureStore(path: dir.file("store"))
        func expectRefused(_ paths: [String], _ fragments: [String]) {
            do {
                _ = try ExternalIngest(store: store, options: options()).run(paths: paths)
                Issue.record("\(paths) accepted")
            } catch {
                for fragment in fragments { #expect("\(error)".contains(fragment), "\(error)") }
            }
        }
        expectRefused([dir.file("diff.safetensors")], ["'b'", "diff.safetensors example 1", "diff.safetensors example 3"])
        expectRefused([dir.file("same.safetensors"), dir.file("other.safetensors")],
                      ["'c'", "same.safetensors example 2", "other.safetensors example 0"])
        #expect(try store.allFeatureSets().allSatisfy { $0.rowCount == 0 }, "nothing written before the error")
        // Identical repeats are one example.
        let summary = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("same.safetensors")])
        #expect(try store.featureSet(summary.featureSets[0].id).rowCount == 3)
    }

    /// A tap with no values per example ([N, C, 0, 0], [N, 0]) would store NaN or a 0-wide feature set.
    @Test(arguments: [[3, 2, 0, 0], [3, 0], [3, 0, 4, 4]])
    func emptyTapsAreRefused(shape: [Int]) throws {
        let dir = TemporaryDirectory()
        try writeSafetensors(dir.file("empty.safetensors"), tensors: [("ok", [3, 2], [1, 2, 3, 4, 5, 6]), ("empty", shape, [])])
        let store = try FeatureStore(path: dir.file("store"))
        do {
            _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("empty.safetensors")])
            Issue.record("a tap of shape \(shape) was accepted")
        } catch {
            #expect("\(error)".contains("empty.safetensors: tap 'empty' has per-example shape \(Array(shape.dropFirst()))"), "\(error)")
        }
        #expect(try store.allFeatureSets().isEmpty)
    }

    /// The pooling window comes from a map's width; a map with fewer rows than the window is
    /// refused naming the tap (it used to stop the process on a precondition), while a wide map
    /// with enough rows is pooled.
    @Test func mapsShorterThanThePoolingWindowAreRefused() throws {
        let dir = TemporaryDirectory()
        // C = 2, F_T = 16: n = 2, window = W / 2 = 4.
        try writeSafetensors(dir.file("short.safetensors"), tensors: [("flat", [3, 2], [1, 2, 3, 4, 5, 6]),
                                                                       ("short", [3, 2, 1, 8], (0..<48).map(Float.init))])
        let store = try FeatureStore(path: dir.file("store"))
        do {
            _ = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("short.safetensors")])
            Issue.record("a 1×8 map with a window of 4 was accepted")
        } catch {
            #expect("\(error)".contains("short.safetensors: tap 'short' has a spatial map [2, 1, 8] with fewer rows than Head2Toe's pooling window (4"), "\(error)")
        }
        #expect(try store.allFeatureSets().isEmpty)
        try writeSafetensors(dir.file("wide.safetensors"), tensors: [("wide", [3, 2, 4, 8], (0..<192).map(Float.init))])
        let summary = try ExternalIngest(store: store, options: options()).run(paths: [dir.file("wide.safetensors")])
        #expect(summary.featureSets[0].width == 2 * 1 * 2)
    }

    @Test func npyFolderWithTapOrderAndLabels() throws {
        let dir = TemporaryDirectory()
        let folder = dir.file("acts")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try writeNpy(folder + "/zlast.npy", shape: [3, 2], values: [1, 2, 3, 4, 5, 6])
        try writeNpy(folder + "/afirst.npy", shape: [3, 1, 2, 2], values: (0..<12).map(Float.init))
        try "zlast\nafirst\n".write(toFile: folder + "/taps.txt", atomically: true, encoding: .utf8)
        try "0\n1\n1\n".write(toFile: folder + "/labels.txt", atomically: true, encoding: .utf8)
        let store = try FeatureStore(path: dir.file("store"))
        let summary = try ExternalIngest(store: store, options: options([4])).run(paths: [folder])
        let data = try store.read(featureSet: summary.featureSets[0].id, dataset: "pets", split: "train")
        #expect(try store.tapRanges(featureSet: summary.featureSets[0].id).map(\.tap) == ["zlast", "afirst"])
        #expect(Array(data.features.row(1)) == [3, 4, 4, 5, 6, 7])
        #expect(data.labels == [0, 1, 1])
        // Without example ids, identical activations are one example.
        try writeNpy(folder + "/zlast.npy", shape: [3, 2], values: [1, 2, 3, 4, 5, 6])
        let again = try ExternalIngest(store: store, options: options([4])).run(paths: [folder])
        #expect(again.examplesComputed == 0)
    }
}
