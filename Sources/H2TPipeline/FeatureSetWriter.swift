import Foundation
import H2TCore
import H2TStore
import Synchronization

/// Writes pooled features for one backbone into one feature set per target size, chunk by chunk.
///
/// Shared by the external-activation ingest and the image ingest, so both pool with the same
/// `Head2ToePooling` and commit the same way: one transaction per chunk holding the tiles of
/// every feature set, the example records and the dataset items.
///
/// With `overlapCommits`, a chunk's transaction (LMDB write and fsync, about a third of an
/// ingest's time) runs on a background thread while the caller computes and encodes the next
/// chunk; at most one commit is in flight, commits stay in chunk order, and `finish()` waits for
/// the last one and reports any failure. A chunk never recomputes the examples of the commit in
/// flight. If a commit fails, the chunks before it are stored and the next call throws; a re-run
/// resumes from what is stored, as after any interruption.
public final class FeatureSetWriter {
    /// The store written to.
    public let store: FeatureStore
    /// The backbone's id.
    public let backboneID: String
    /// Feature set manifests, one per target size, in the order given.
    public let manifests: [FeatureSetManifest]
    /// Their ids.
    public let featureSetIDs: [String]
    private let encoders: [SegmentEncoder]
    /// The threads its tiles are encoded on.
    public let parallelism: Parallelism
    /// Each feature set's pooling rule, checked to be one this build implements.
    let poolings: [Head2ToePooling]
    private let committer: BackgroundCommitter?
    /// Per feature set, the row matrix memory of the last committed chunk, reused by the next
    /// chunk: a segment's matrix is hundreds of MB, and a fresh allocation pays its page faults again.
    private var spareMatrices: [ReusableFloats?]

    /// Registers the backbone and one feature set per target size; tiles are encoded on
    /// `parallelism`'s threads (default: the store's).
    public init(store: FeatureStore, backbone: BackboneManifest, targetSizes: [Int], codec: TileCodec = .default,
                columnBlock: Int = 1024, overlapCommits: Bool = false, parallelism: Parallelism? = nil) throws {
        guard !targetSizes.isEmpty else { throw StoreError.invalidArgument("give at least one --target-size") }
        if let bad = targetSizes.first(where: { $0 <= 0 }) { throw StoreError.invalidArgument("--target-size must be positive, got \(bad)") }
        guard columnBlock > 0 else { throw StoreError.invalidArgument("--column-block must be positive") }
        self.store = store
        backboneID = try store.register(backbone: backbone)
        var manifests: [FeatureSetManifest] = []
        for size in targetSizes where !manifests.contains(where: { $0.targetSize == size }) {
            manifests.append(FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: size, codec: codec, columnBlock: columnBlock))
        }
        self.manifests = manifests
        poolings = try manifests.map { try $0.pooling() }
        featureSetIDs = try manifests.map { try store.register(featureSet: $0) }
        let parallelism = parallelism ?? store.parallelism
        self.parallelism = parallelism
        encoders = manifests.map { SegmentEncoder(manifest: $0, parallelism: parallelism) }
        committer = overlapCommits ? BackgroundCommitter() : nil
        spareMatrices = Array(repeating: nil, count: manifests.count)
    }

    deinit {
        // No commit outlives its writer (an ingest that throws still lands what it handed over).
        committer?.drain()
    }

    /// Starts a chunk for `examples` (unique ids): finds which feature sets lack which examples.
    /// Examples of the commit in flight count as present.
    public func chunk(examples: [ExampleID]) throws -> FeatureChunk {
        try committer?.checkFailure()
        // The in-flight set is read before the store: if that commit lands in between, the
        // store has the examples; if it has not, the set does.
        let inFlight = committer?.inFlight() ?? [:]
        let missing = try featureSetIDs.map { id in
            let pending = inFlight[id] ?? []
            return try zip(examples, store.missing(examples, in: id)).map { $1 && !pending.contains($0) }
        }
        return FeatureChunk(writer: self, examples: examples, missing: missing)
    }

    /// Waits for the commit in flight (with `overlapCommits`) and throws its error, if any.
    /// Call it before reading what was written or reporting the ingest as done.
    public func finish() throws {
        try committer?.wait()
    }

    fileprivate func commit(_ payloads: [SegmentPayload], records: [(ExampleID, ExampleRecord)], datasets: [DatasetAppend]) throws {
        let store = self.store
        guard let committer else {
            try store.commit(segments: payloads, examples: records, datasets: datasets)
            return
        }
        var examples: [String: Set<ExampleID>] = [:]
        for payload in payloads { examples[payload.featureSet, default: []].formUnion(payload.examples) }
        try committer.submit(examples: examples) {
            try store.commit(segments: payloads, examples: records, datasets: datasets)
        }
    }

    /// The summary of an ingest through this writer that started at `started`.
    public func summary(dataset: String, split: String, seen: Int, computed: Int, reused: Int,
                        skipped: [IngestSummary.SkippedInput], started: Date) -> IngestSummary {
        let seconds = Date().timeIntervalSince(started)
        return IngestSummary(
            backbone: backboneID,
            featureSets: zip(featureSetIDs, manifests).map { .init(id: $0, targetSize: $1.targetSize, width: $1.width) },
            dataset: dataset, split: split, examplesSeen: seen, examplesComputed: computed, examplesReused: reused,
            skipped: skipped, seconds: seconds, examplesPerSecond: Double(seen) / max(seconds, 1e-9), threads: parallelism.threads)
    }

    /// Positions of the first occurrence of each example id; a repeated id with a different
    /// label is an error (`describe(i)` names the offending input).
    public static func firstOccurrences(_ ids: [ExampleID], labels: [Int], file: String,
                                        describe: (Int, Int) -> String) throws -> [Int] {
        var seen: [ExampleID: Int] = [:]
        var keep: [Int] = []
        for (i, id) in ids.enumerated() {
            if let previous = seen[id] {
                if labels[previous] != labels[i] { throw IngestError.duplicateExample(file: file, example: describe(i, previous)) }
                continue
            }
            seen[id] = i
            keep.append(i)
        }
        return keep
    }

    /// Memory for feature set `f`'s row matrix: the last committed chunk's when there is one.
    fileprivate func matrixMemory(featureSet f: Int) -> ReusableFloats {
        defer { spareMatrices[f] = nil }
        return spareMatrices[f] ?? ReusableFloats()
    }

    /// Takes back feature set `f`'s matrix memory once its chunk is encoded.
    fileprivate func recycle(_ memory: ReusableFloats, featureSet f: Int) {
        spareMatrices[f] = memory
    }

    fileprivate func encode(_ index: Int, _ matrix: UnsafePointer<Float>, rows: Int) -> [[UInt8]] {
        encoders[index].encode(matrix, rows: rows)
    }

    fileprivate func encode(_ index: Int, bits: UnsafePointer<UInt16>, rows: Int) -> [[UInt8]] {
        encoders[index].encode(bits: bits, rows: rows)
    }
}

/// One chunk of examples being pooled into every feature set that lacks them.
public final class FeatureChunk {
    private let writer: FeatureSetWriter
    /// The chunk's examples.
    public let examples: [ExampleID]
    /// `missing[f][e]`: feature set `f` lacks example `e`.
    public let missing: [[Bool]]
    private var rowOf: [[Int?]]
    /// Per feature set, the memory of its row-major matrix (one row per example it lacks),
    /// taken from the writer when the first row arrives.
    private var matrices: [ReusableFloats?]
    /// Per feature set and matrix row, whether the row has been written; rows never written are
    /// zeroed before encoding, so the matrix needs no zero-fill up front (at the size of a
    /// segment that is a serial pass over hundreds of MB of fresh pages).
    private var written: [[Bool]]
    /// Per feature set, rows handed over in the stored 16-bit type (`useStoredBits`), in place of
    /// the matrix.
    private var storedBits: [UnsafePointer<UInt16>?]
    /// Per feature set, whether its rows are kept as bfloat16 bits (``setBFloat16Rows(featureSet:examples:_:rowStride:parallelism:)``)
    /// in the matrix memory, in place of floats.
    private var keepsBits: [Bool]

    init(writer: FeatureSetWriter, examples: [ExampleID], missing: [[Bool]]) {
        self.writer = writer
        self.examples = examples
        self.missing = missing
        rowOf = missing.map { mask in
            var next = 0
            return mask.map { m in
                guard m else { return nil }
                defer { next += 1 }
                return next
            }
        }
        // Allocated when the first row arrives: rows handed over with `useStoredBits` need none.
        matrices = Array(repeating: nil, count: missing.count)
        written = missing.map { mask in Array(repeating: false, count: mask.lazy.filter { $0 }.count) }
        storedBits = Array(repeating: nil, count: missing.count)
        keepsBits = Array(repeating: false, count: missing.count)
    }

    /// Feature set `f`'s row matrix (rows not yet written hold whatever the memory held).
    private func matrix(_ f: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(!keepsBits[f], "float rows for a feature set whose rows are kept as bfloat16 bits")
        let memory = matrices[f] ?? writer.matrixMemory(featureSet: f)
        matrices[f] = memory
        return memory.prefix(written[f].count * writer.manifests[f].width)
    }

    /// Feature set `f`'s matrix of bfloat16 bits, in the same memory as the float matrix would be
    /// (half its size; a feature set keeps one kind for the whole ingest).
    private func bitMatrix(_ f: Int) -> UnsafeMutablePointer<UInt16> {
        keepsBits[f] = true
        let memory = matrices[f] ?? writer.matrixMemory(featureSet: f)
        matrices[f] = memory
        let count = written[f].count * writer.manifests[f].width
        return UnsafeMutableRawPointer(memory.prefix((count + 1) / 2).baseAddress!).bindMemory(to: UInt16.self, capacity: count)
    }

    /// Stores the rows of chunk examples `examples` (positions in the chunk; row `k` at
    /// `rows + k * rowStride`, a feature set's full width) for feature set `f` as the bfloat16
    /// bits its tiles store, when its codec stores bfloat16; examples it does not lack are left
    /// out. Returns false, storing nothing, for another codec (use ``setRow(featureSet:example:_:)``).
    /// A segment's matrix of bits is half the memory of its floats: at 64×64 with F_T 512 and
    /// 1024 that is 130 MB less of fresh pages, which cost more than their contents on a VM.
    /// The rows are converted on `parallelism`'s threads, a row per item.
    public func setBFloat16Rows(featureSet f: Int, examples: [Int], _ rows: UnsafePointer<Float>, rowStride: Int,
                                parallelism: Parallelism = .default) -> Bool {
        guard writer.manifests[f].codec.dtype == .bfloat16, matrices[f] == nil || keepsBits[f] else { return false }
        let width = writer.manifests[f].width
        precondition(rowStride >= width, "row stride below the feature set's width")
        let bits = UnsafeSendable(bitMatrix(f)), source = UnsafeSendable(rows)
        let targets = examples.enumerated().compactMap { k, e in rowOf[f][e].map { (k, $0) } }
        try! Parallel.forEachWorker(itemCount: targets.count, parallelism: parallelism) { _, next in
            while let i = next() {
                let (k, r) = targets[i]
                StorageDType.bfloat16Bits(source.value + k * rowStride, count: width, into: bits.value + r * width)
            }
        }
        for (_, r) in targets { written[f][r] = true }
        return true
    }

    /// Matrix row `row` of feature set `f`.
    private func row(_ row: Int, of f: Int) -> UnsafeMutableBufferPointer<Float> {
        let width = writer.manifests[f].width
        return UnsafeMutableBufferPointer(rebasing: matrix(f)[(row * width)..<((row + 1) * width)])
    }

    /// Whether example `e` needs computing for any feature set.
    public func needs(_ e: Int) -> Bool { missing.contains { $0[e] } }

    /// Whether any example of the chunk needs computing.
    public var needsAny: Bool { missing.contains { $0.contains(true) } }

    /// Pools tap `tap`'s activation for example `e` (shape as in the backbone manifest,
    /// channel-first) into every feature set that lacks the example.
    public func add(tap: Int, example e: Int, activation: UnsafeBufferPointer<Float>) {
        for f in 0..<writer.manifests.count {
            guard let r = rowOf[f][e] else { continue }
            let row = self.row(r, of: f)
            if !written[f][r] {
                row.update(repeating: 0)
                written[f][r] = true
            }
            let columns = writer.manifests[f].taps[tap]
            writer.poolings[f].pool(activation, shape: columns.sourceShape!,
                                    into: UnsafeMutableBufferPointer(rebasing: row[columns.offset..<(columns.offset + columns.width)]))
        }
    }

    /// Copies an already pooled row (a feature set's full width) for example `e` into feature
    /// set `f`, if that feature set lacks the example.
    public func setRow(featureSet f: Int, example e: Int, _ values: UnsafeBufferPointer<Float>) {
        guard let r = rowOf[f][e] else { return }
        let width = writer.manifests[f].width
        precondition(values.count == width, "row of \(values.count) features for a feature set of width \(width)")
        _ = row(r, of: f).initialize(from: values)
        written[f][r] = true
    }

    /// Feature set `f`'s rows for chunk examples `examples` (positions in the chunk), as one
    /// row-major block of their full width for the caller to fill in place, when feature set `f`
    /// lacks every one of them and they are consecutive rows of its matrix (as they are for
    /// consecutive examples); nil otherwise (use ``setRow(featureSet:example:_:)``). The caller
    /// writes every value of the block before ``commit(records:datasets:)``; the block is valid
    /// until then.
    public func rowBlock(featureSet f: Int, examples: [Int]) -> UnsafeMutableBufferPointer<Float>? {
        guard let first = examples.first.flatMap({ rowOf[f][$0] }),
              examples.enumerated().allSatisfy({ rowOf[f][$1] == first + $0 }) else { return nil }
        let width = writer.manifests[f].width
        for r in first..<(first + examples.count) { written[f][r] = true }
        return UnsafeMutableBufferPointer(rebasing: matrix(f)[(first * width)..<((first + examples.count) * width)])
    }

    /// Whether feature set `f` lacks every example of the chunk, so that its rows can be handed
    /// over whole with `useStoredBits`.
    public func lacksAll(featureSet f: Int) -> Bool { !missing[f].contains(false) }

    /// Hands over feature set `f`'s rows for every example of the chunk, in order, already in the
    /// codec's 16-bit storage type (bit patterns, row-major, the feature set's width per row):
    /// they are encoded from there at commit, with no float copy. The caller keeps them alive and
    /// unchanged until `commit` returns, and has checked them (finite, as `setRow` would get).
    public func useStoredBits(featureSet f: Int, rows: UnsafePointer<UInt16>) {
        precondition(lacksAll(featureSet: f), "stored rows for a feature set that has some of the chunk's examples")
        precondition(writer.manifests[f].codec.dtype.byteWidth == 2, "16-bit rows for a \(writer.manifests[f].codec.dtype) feature set")
        storedBits[f] = rows
    }

    /// Encodes and commits the chunk with its example records and dataset items (in the
    /// background when the writer overlaps commits); returns how many (example, feature set)
    /// rows it adds. A chunk is committed once: its matrices go back to the writer.
    @discardableResult
    public func commit(records: [ExampleRecord], datasets: [DatasetAppend]) throws -> Int {
        var payloads: [SegmentPayload] = []
        var added = 0
        for f in 0..<writer.manifests.count {
            let ids = zip(examples, missing[f]).filter { $0.1 }.map { $0.0 }
            guard !ids.isEmpty else { continue }
            let tiles: [[UInt8]]
            if let bits = storedBits[f] {
                tiles = writer.encode(f, bits: bits, rows: ids.count)
            } else if keepsBits[f] {
                let bits = bitMatrix(f), width = writer.manifests[f].width
                // Rows never written are zeros, as in a float matrix (+0 has all bits clear in both).
                for r in written[f].indices where !written[f][r] { (bits + r * width).update(repeating: 0, count: width) }
                tiles = writer.encode(f, bits: bits, rows: ids.count)
                writer.recycle(matrices[f]!, featureSet: f)
                matrices[f] = nil
            } else {
                let matrix = self.matrix(f)
                for r in written[f].indices where !written[f][r] { row(r, of: f).update(repeating: 0) }
                tiles = writer.encode(f, UnsafePointer(matrix.baseAddress!), rows: ids.count)
                writer.recycle(matrices[f]!, featureSet: f)
                matrices[f] = nil
            }
            payloads.append(SegmentPayload(featureSet: writer.featureSetIDs[f], examples: ids, tiles: tiles))
            added += ids.count
        }
        let newRecords = zip(examples, records).enumerated().filter { needs($0.offset) }.map { ($0.element.0, $0.element.1) }
        try writer.commit(payloads, records: newRecords, datasets: datasets)
        return added
    }
}

/// Runs one store commit at a time on a background thread (`FeatureSetWriter(overlapCommits:)`).
final class BackgroundCommitter: Sendable {
    private struct State {
        /// Feature set id → examples of the commit in flight.
        var inFlight: [String: Set<ExampleID>] = [:]
        /// The commit waiting for the background thread (taken by it, so that nothing it
        /// captures, such as the store, outlives the commit).
        var job: (@Sendable () throws -> Void)?
        var failure: (any Error)?
    }

    private let queue = DispatchQueue(label: "h2t-store.ingest.commit")
    private let group = DispatchGroup()
    private let state = Mutex(State())

    /// The examples of the commit in flight, per feature set.
    func inFlight() -> [String: Set<ExampleID>] { state.withLock { $0.inFlight } }

    /// Throws the failure of a finished commit, without waiting.
    func checkFailure() throws {
        if let failure = state.withLock({ $0.failure }) { throw failure }
    }

    /// Waits for the commit in flight; throws its failure.
    func wait() throws {
        group.wait()
        try checkFailure()
    }

    /// Waits for the commit in flight, ignoring its outcome.
    func drain() { group.wait() }

    /// Waits for the previous commit (throwing its failure), then starts `work` in the background.
    func submit(examples: [String: Set<ExampleID>], _ work: @escaping @Sendable () throws -> Void) throws {
        try wait()
        state.withLock {
            $0.inFlight = examples
            $0.job = work
        }
        group.enter()
        queue.async { [self] in
            runJob()
            group.leave()
        }
    }

    /// Runs the pending job; it is released when this returns, before waiters are woken.
    private func runJob() {
        guard let job = state.withLock({ state -> (@Sendable () throws -> Void)? in
            defer { state.job = nil }
            return state.job
        }) else { return }
        var failure: (any Error)?
        do { try job() } catch { failure = error }
        state.withLock {
            $0.inFlight = [:]
            if $0.failure == nil { $0.failure = failure }
        }
    }
}
