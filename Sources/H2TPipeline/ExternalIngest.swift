import Foundation
import H2TCore
import H2TStore

/// Errors of the ingest pipelines, each naming the file, tap or example at fault.
public enum IngestError: Error, CustomStringConvertible, Sendable {
    case noInput
    case inconsistentTaps(file: String, reason: String)
    case exampleCountMismatch(file: String, tap: String, count: Int, expected: Int, expectedFrom: String)
    case unsupportedTap(file: String, tap: String, shape: [Int])
    case nonFinite(file: String, tap: String, example: Int)
    case badLabels(file: String, reason: String)
    case duplicateExample(file: String, example: String)
    case conflictingDuplicate(example: String, first: String, second: String)
    case emptyTap(file: String, tap: String, shape: [Int])
    case badPooled(file: String, reason: String)
    case windowTallerThanMap(file: String, tap: String, shape: [Int], window: Int, targetSize: Int)

    public var description: String {
        switch self {
        case .noInput: return "no input files given"
        case .inconsistentTaps(let file, let reason): return "\(file): \(reason)"
        case .exampleCountMismatch(let file, let tap, let count, let expected, let from):
            return "\(file): tap '\(tap)' has \(count) examples but '\(from)' has \(expected); every tap needs the same first axis"
        case .unsupportedTap(let file, let tap, let shape):
            return "\(file): tap '\(tap)' has per-example shape \(shape); expected [C] or a spatial map [C,H,W] (or [H,W,C] with --layout nhwc)"
        case .nonFinite(let file, let tap, let example):
            return "\(file): tap '\(tap)' has NaN or Inf in example \(example); fix the input or pass --allow-nonfinite to store it anyway"
        case .badLabels(let file, let reason): return "\(file): \(reason)"
        case .duplicateExample(let file, let example): return "\(file): example '\(example)' appears twice with different labels"
        case .conflictingDuplicate(let example, let first, let second):
            return "example id '\(example)' is given twice with different activations (\(first) and \(second)); give each example its own id"
        case .emptyTap(let file, let tap, let shape):
            return "\(file): tap '\(tap)' has per-example shape \(shape), which holds no values; drop the tap or fix its shape"
        case .badPooled(let file, let reason): return "\(file): pre-pooled activations: \(reason)"
        case .windowTallerThanMap(let file, let tap, let shape, let window, let targetSize):
            return "\(file): tap '\(tap)' has a spatial map \(shape) with fewer rows than Head2Toe's pooling window (\(window), chosen from its width for --target-size \(targetSize)); "
                + "pass it with rows and columns the right way round (--layout), or pool it to a square map first"
        }
    }
}

/// Memory layout of spatial activations in the input files.
public enum ActivationLayout: String, Sendable, Codable, CaseIterable {
    /// `[N, C, H, W]` (PyTorch).
    case nchw
    /// `[N, H, W, C]` (JAX, TensorFlow).
    case nhwc
}

/// Options of an external-activation ingest.
public struct ExternalIngestOptions: Sendable, Equatable {
    /// Name of the backbone that produced the activations (recorded as `external:<name>`).
    public var backboneName: String
    /// SHA-256 of its weights, if known (part of the backbone's identity).
    public var weightsSHA256: String?
    /// Dataset and split the examples join.
    public var dataset: String
    /// Split name.
    public var split: String
    /// Head2Toe target sizes; one feature set each.
    public var targetSizes: [Int]
    /// Tile codec.
    public var codec: TileCodec = .default
    /// Columns per tile.
    public var columnBlock: Int = 1024
    /// Examples per commit (one segment per feature set); bounds ingest memory.
    public var segmentRows: Int = 512
    /// Layout of spatial taps.
    public var layout: ActivationLayout = .nchw
    /// Store NaN/Inf instead of rejecting them.
    public var allowNonFinite = false
    /// Commit each chunk on a background thread while the next one is pooled and encoded
    /// (`FeatureSetWriter(overlapCommits:)`); off only to measure the difference.
    public var overlapCommits = true
    /// Class names given on the command line (override the files').
    public var classNames: [String]?
    /// Ingest only this shard of the examples (all files' examples in order), into a shard store.
    public var shard: ShardSpec?
    /// With `shard`: the files are (a part of) the shard's own inputs, selected by the caller.
    public var shardPart: ShardPart?
    /// Threads for the tile encoding.
    public var parallelism: Parallelism = .default

    /// Creates options.
    public init(backboneName: String, dataset: String, split: String, targetSizes: [Int]) {
        self.backboneName = backboneName
        self.dataset = dataset
        self.split = split
        self.targetSizes = targetSizes
    }
}

/// A shard whose inputs a caller selects and streams in parts (the Python `capture` runs a model
/// over its shard of a data loader and hands over chunks of pooled rows): the files are not cut to
/// the shard's range, they are the shard's own inputs, and the run is named by the caller, since
/// the chunk files of N workers have nothing in common to derive one plan from.
public struct ShardPart: Sendable, Equatable {
    /// The run's input count (the range of shard K is computed from it, as for any shard).
    public var total: Int
    /// What names the run (with `total`, the dataset, split, class names and feature sets, it
    /// makes the plan digest): equal on every worker of one run.
    public var plan: String
    /// Leave the shard unsealed: more parts follow.
    public var open: Bool

    public init(total: Int, plan: String, open: Bool) {
        self.total = total
        self.plan = plan
        self.open = open
    }
}

/// What an ingest did (printed as a table, or as JSON with `--json`: `schemas/ingest-output.schema.json`).
public struct IngestSummary: Sendable, Codable {
    /// Backbone id.
    public var backbone: String
    /// Feature set ids with their target sizes and widths.
    public var featureSets: [FeatureSetSummary]
    /// Dataset and split.
    public var dataset: String
    public var split: String
    /// Examples read from the input.
    public var examplesSeen: Int
    /// Examples whose features were computed and stored (in at least one feature set).
    public var examplesComputed: Int
    /// Examples already stored (resumed or shared with another dataset).
    public var examplesReused: Int
    /// Inputs skipped, with reasons (image folders).
    public var skipped: [SkippedInput]
    /// Wall time.
    public var seconds: Double
    /// Examples per second.
    public var examplesPerSecond: Double
    /// Threads it computed with (`--threads`, `H2T_THREADS` or the cores the process may use).
    public var threads: Int
    /// The shard, for a sharded ingest (`--shard K/N`).
    public var shard: Shard?

    /// A shard ingest's shard: which inputs it took and what its seal records.
    public struct Shard: Sendable, Codable {
        public var shard: Int
        public var shards: Int
        /// The run's plan digest (equal for every shard of the run).
        public var plan: String
        /// The shard's inputs: positions `firstInput ..< endInput` of `totalInputs`.
        public var firstInput: Int
        public var endInput: Int
        public var totalInputs: Int
        /// `started`, `resumed` (an unsealed shard store was completed) or `already_sealed`
        /// (nothing was done).
        public var state: String
        /// False after a part given with `--shard-open` (more parts follow; `rows`, `items` are 0).
        public var sealed: Bool
        /// Rows per feature set and dataset items in the sealed shard.
        public var rows: [Int]
        public var items: Int
    }

    /// One feature set in the summary.
    public struct FeatureSetSummary: Sendable, Codable {
        public var id: String
        public var targetSize: Int
        public var width: Int
    }

    /// An input that was not ingested and why.
    public struct SkippedInput: Sendable, Codable {
        public var path: String
        public var reason: String
        public init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }
    }
}

/// One input file of activations: its taps (in order), example names and labels.
struct ActivationSource {
    var path: String
    var taps: [FileTensor]
    var count: Int
    var names: [String]?
    var labels: [String]?
    var classNames: [String]?
    /// Set for a file of activations already pooled (`h2t.pooled`): its taps' source shapes.
    var pooled: PooledLayout?
}

/// The layout of a safetensors file of pre-pooled activations (docs/external-activations.md):
/// `__metadata__["h2t.pooled"]` is `{"taps":[{"name","shape"}, ...]}` (each tap's per-example
/// shape before pooling, channel-first), and tensor `h2t.pooled/F` holds, for target size `F`,
/// each example's full pooled row (taps concatenated in order, Head2Toe's rule). The writer pooled
/// where the activations were (e.g. on a GPU), so only the pooled rows travel; the backbone and
/// feature-set manifests are those the raw activations would have given.
struct PooledLayout {
    static let metadataKey = "h2t.pooled"
    static let tensorPrefix = "h2t.pooled/"
    /// Taps with their source shapes, in column order.
    var taps: [TapDescriptor]
    /// Target size → index of its tensor among the source's tensors.
    var tensorForSize: [Int: Int]

    init(path: String, metadata: String, tensors: [FileTensor]) throws {
        struct Declared: Decodable {
            struct Tap: Decodable { var name: String; var shape: [Int] }
            var taps: [Tap]
        }
        guard let declared = try? JSONDecoder().decode(Declared.self, from: Data(metadata.utf8)), !declared.taps.isEmpty else {
            throw IngestError.badPooled(file: path, reason: "metadata '\(Self.metadataKey)' is not {\"taps\":[{\"name\":...,\"shape\":[...]},...]} with at least one tap")
        }
        taps = try declared.taps.map { tap in
            guard tap.shape.count == 1 || tap.shape.count == 3 else { throw IngestError.unsupportedTap(file: path, tap: tap.name, shape: tap.shape) }
            guard tap.shape.allSatisfy({ $0 > 0 }) else { throw IngestError.emptyTap(file: path, tap: tap.name, shape: tap.shape) }
            return TapDescriptor(name: tap.name, shape: tap.shape)
        }
        var sizes: [Int: Int] = [:]
        for (i, tensor) in tensors.enumerated() {
            let name = tensor.entry.name
            guard name.hasPrefix(Self.tensorPrefix), let size = Int(name.dropFirst(Self.tensorPrefix.count)), size > 0 else {
                throw IngestError.badPooled(file: path, reason: "tensor '\(name)' is not named \(Self.tensorPrefix)<target size>")
            }
            guard tensor.entry.shape.count == 2 else {
                throw IngestError.badPooled(file: path, reason: "tensor '\(name)' has shape \(tensor.entry.shape); expected [examples, features]")
            }
            sizes[size] = i
        }
        tensorForSize = sizes
    }

    /// The tensor of target size `size`, checked to have the width Head2Toe's rule gives.
    func tensor(forTargetSize size: Int, in source: ActivationSource) throws -> FileTensor {
        guard let i = tensorForSize[size] else {
            throw IngestError.badPooled(file: source.path, reason: "no tensor \(Self.tensorPrefix)\(size) for --target-size \(size) (has \(tensorForSize.keys.sorted().map(String.init).joined(separator: ", ")))")
        }
        let pooling = Head2ToePooling(targetSize: size)
        let width = taps.reduce(0) { $0 + pooling.outputWidth(shape: $1.shape) }
        let tensor = source.taps[i]
        guard tensor.entry.rowElements == width else {
            throw IngestError.badPooled(file: source.path, reason: "tensor \(tensor.entry.name) has \(tensor.entry.rowElements) features per example; the declared taps pool to \(width) at target size \(size)")
        }
        return tensor
    }
}

/// The inputs of an external ingest, opened and checked before any store is touched: every
/// file's taps and their shapes (the same in every file, poolable at the target sizes), example
/// ids given twice with different activations, pre-pooled layouts, and the class names. A caller
/// that creates a store (the CLI) prepares these first, so that a malformed input leaves no
/// empty store behind.
public struct ExternalInputs {
    let paths: [String]
    let sources: [ActivationSource]
    let tapShapes: [TapDescriptor]
    let classNames: [String]
    /// The options the inputs were checked for (the ingest's own).
    let options: ExternalIngestOptions

    /// Opens and checks `paths` for an ingest with `options`.
    public init(paths: [String], options: ExternalIngestOptions) throws {
        guard !paths.isEmpty else { throw IngestError.noInput }
        guard options.segmentRows > 0 else { throw StoreError.invalidArgument("--segment-rows must be positive") }
        let sources = try paths.map(ExternalIngest.open)
        let tapShapes = try ExternalIngest.tapShapes(sources[0], layout: options.layout)
        for source in sources.dropFirst() {
            let shapes = try ExternalIngest.tapShapes(source, layout: options.layout)
            guard shapes == tapShapes else {
                throw IngestError.inconsistentTaps(file: source.path, reason: "its taps \(shapes.map(\.name)) or shapes differ from \(sources[0].path)'s")
            }
        }
        try ExternalIngest.checkPoolable(tapShapes, targetSizes: options.targetSizes, file: sources[0].path)
        try ExternalIngest.checkRepeatedIDs(sources)
        for source in sources {
            guard let pooled = source.pooled else { continue }
            for size in options.targetSizes where size > 0 { _ = try pooled.tensor(forTargetSize: size, in: source) }
        }
        self.paths = paths
        self.sources = sources
        self.tapShapes = tapShapes
        self.classNames = ExternalIngest.resolveClassNames(sources, given: options.classNames)
        self.options = options
    }
}

/// Ingests activations computed elsewhere (PyTorch, JAX): safetensors files or folders of `.npy`.
///
/// Input conventions (docs/external-activations.md):
/// - safetensors: one tensor per tap, first axis = examples, taps in the file's data order;
///   `__metadata__` may hold `example_ids`, `labels` and `class_names` as JSON arrays (labels are
///   class names, or integer indices into `class_names`).
/// - a folder: one `<tap>.npy` per tap, in the order of `taps.txt` if present, else by file name;
///   optional `example_ids.txt`, `labels.txt`, `class_names.txt` (one entry per line).
/// Without example ids, an example's id is the SHA-256 of its activations (all taps, in order).
public struct ExternalIngest {
    /// The store written to.
    public let store: FeatureStore
    /// Options.
    public let options: ExternalIngestOptions

    /// Creates an ingest.
    public init(store: FeatureStore, options: ExternalIngestOptions) {
        self.store = store
        self.options = options
    }

    /// Runs the ingest over `paths`; resumable: examples already stored are not recomputed.
    public func run(paths: [String], progress: ProgressReporter? = nil) throws -> IngestSummary {
        try run(ExternalInputs(paths: paths, options: options), progress: progress)
    }

    /// Runs the ingest over inputs already opened and checked with these options; resumable.
    public func run(_ inputs: ExternalInputs, progress: ProgressReporter? = nil) throws -> IngestSummary {
        precondition(inputs.options == options, "inputs checked with other options than the ingest's")
        let started = Date()
        let (paths, sources, tapShapes, classNames) = (inputs.paths, inputs.sources, inputs.tapShapes, inputs.classNames)
        let backbone = BackboneManifest(architecture: "external:\(options.backboneName)", weightsSHA256: options.weightsSHA256,
                                        preprocessing: .object(["layout": .string(options.layout.rawValue)]), taps: tapShapes)
        let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: options.targetSizes,
                                          codec: options.codec, columnBlock: options.columnBlock, overlapCommits: options.overlapCommits,
                                          parallelism: options.parallelism)
        let total = sources.reduce(0) { $0 + $1.count }
        let shard = try options.shard.map { spec in
            try ShardRun(spec, plan: plan(paths: paths, total: options.shardPart?.total ?? total, classNames: classNames, writer: writer),
                         store: store, writer: writer)
        }
        if let shard, shard.isSealed {
            var summary = writer.summary(dataset: options.dataset, split: options.split, seen: 0, computed: 0, reused: 0, skipped: [], started: started)
            summary.shard = try shard.seal(store)
            return summary
        }
        if let shard, options.shardPart != nil, total > shard.range.count {
            throw StoreError.invalidArgument("the files hold \(total) examples, more than shard \(shard.spec)'s \(shard.range.count) inputs of \(options.shardPart!.total)")
        }
        let wanted = options.shardPart != nil ? 0..<total : shard?.range ?? 0..<total
        progress?.setTotal(wanted.count)
        var computed = 0, reused = 0, offset = 0
        for source in sources {
            // This file's examples inside the wanted range of all files' examples.
            var first = max(wanted.lowerBound - offset, 0)
            let end = min(wanted.upperBound - offset, source.count)
            offset += source.count
            while first < end {
                let count = min(options.segmentRows, end - first)
                let result = try ingestChunk(source, first: first, count: count, tapShapes: tapShapes, classNames: classNames, writer: writer)
                computed += result.computed
                reused += result.reused
                progress?.advance(by: count)
                first += count
            }
        }
        try writer.finish()
        progress?.finish()
        var summary = writer.summary(dataset: options.dataset, split: options.split, seen: wanted.count, computed: computed, reused: reused,
                                     skipped: [], started: started)
        summary.shard = try options.shardPart?.open == true ? shard?.unsealed() : shard?.seal(store)
        return summary
    }

    /// The plan of a sharded ingest of `paths`: the files by name and size (or the caller's name
    /// of the run, for a shard streamed in parts), the options that change what is stored, and
    /// the feature sets.
    private func plan(paths: [String], total: Int, classNames: [String], writer: FeatureSetWriter) -> IngestPlan {
        let part = options.shardPart
        return IngestPlan(kind: part == nil ? "external" : "external-parts", inputs: part.map { [PlannedInput(name: $0.plan)] } ?? paths.map { PlannedInput($0) },
                   inputCount: total,
                   options: ["layout": options.layout.rawValue, "allowNonFinite": "\(options.allowNonFinite)"],
                   dataset: options.dataset, split: options.split, classNames: classNames, featureSets: writer.featureSetIDs)
    }

    private func ingestChunk(_ source: ActivationSource, first: Int, count: Int, tapShapes: [TapDescriptor],
                             classNames: [String], writer: FeatureSetWriter) throws -> (computed: Int, reused: Int) {
        // Identify the examples: by name when given, else by the content of their activations.
        var ids: [ExampleID]
        var names: [String]
        if let given = source.names {
            names = Array(given[first..<(first + count)])
            ids = names.map { ExampleID(name: $0) }
        } else {
            var hashers = [SHA256](repeating: SHA256(), count: count)
            var buffer: [Float] = []
            for tap in source.taps {
                let n = tap.entry.rowElements
                if buffer.count < n { buffer = [Float](repeating: 0, count: n) }
                for e in 0..<count {
                    try buffer.withUnsafeMutableBufferPointer { try tap.readRows(first + e, count: 1, into: $0.baseAddress!) }
                    buffer.withUnsafeBytes { hashers[e].update(UnsafeRawBufferPointer(rebasing: $0[0..<(n * 4)])) }
                }
            }
            ids = hashers.map { ExampleID(digest: $0.finalize()) }
            names = ids.map { "sha256:\($0.hex)" }
        }
        let labels: [Int] = try (first..<(first + count)).map { try label(source, index: $0, classNames: classNames) }

        // Duplicates inside the chunk: keep the first occurrence; a different label is an error.
        let keep = try FeatureSetWriter.firstOccurrences(ids, labels: labels, file: source.path) { e, _ in names[e] }
        let chunk = try writer.chunk(examples: keep.map { ids[$0] })
        // Rows handed to the chunk as stored bits, read until the chunk is committed.
        var handedOver: [UnsafeMutablePointer<UInt16>] = []
        defer { for rows in handedOver { rows.deallocate() } }
        var buffer: [Float] = []
        var transposed: [Float] = []
        if chunk.needsAny, let pooled = source.pooled {
            for (f, manifest) in writer.manifests.enumerated() {
                let tensor = try pooled.tensor(forTargetSize: manifest.targetSize, in: source)
                if let rows = try handOverStoredBits(tensor, of: source, featureSet: f, first: first, keep: keep, chunk: chunk, writer: writer) {
                    handedOver.append(rows)
                    continue
                }
                buffer = [Float](repeating: 0, count: manifest.width)
                for (k, e) in keep.enumerated() where chunk.missing[f][k] {
                    try buffer.withUnsafeMutableBufferPointer { row in
                        try tensor.readRows(first + e, count: 1, into: row.baseAddress!)
                        if !options.allowNonFinite, let bad = row.firstIndex(where: { !$0.isFinite }) {
                            throw IngestError.nonFinite(file: source.path, tap: Self.tapName(pooled.taps, column: bad, pooling: writer.poolings[f]), example: first + e)
                        }
                        chunk.setRow(featureSet: f, example: k, UnsafeBufferPointer(row))
                    }
                }
            }
        } else if chunk.needsAny {
            for (t, tap) in source.taps.enumerated() {
                let n = tap.entry.rowElements
                if buffer.count < n { buffer = [Float](repeating: 0, count: n); transposed = buffer }
                for (k, e) in keep.enumerated() where chunk.needs(k) {
                    try buffer.withUnsafeMutableBufferPointer { raw in
                        try tap.readRows(first + e, count: 1, into: raw.baseAddress!)
                        if !options.allowNonFinite {
                            for i in 0..<n where !raw[i].isFinite {
                                throw IngestError.nonFinite(file: source.path, tap: tap.entry.name, example: first + e)
                            }
                        }
                        let shape = tapShapes[t].shape
                        if options.layout == .nhwc, shape.count == 3 {
                            let (c, h, w) = (shape[0], shape[1], shape[2])
                            transposed.withUnsafeMutableBufferPointer { out in
                                for y in 0..<h { for x in 0..<w { for ch in 0..<c { out[(ch * h + y) * w + x] = raw[(y * w + x) * c + ch] } } }
                                chunk.add(tap: t, example: k, activation: UnsafeBufferPointer(rebasing: out[0..<n]))
                            }
                        } else {
                            chunk.add(tap: t, example: k, activation: UnsafeBufferPointer(rebasing: raw[0..<n]))
                        }
                    }
                }
            }
        }
        let records = keep.map { ExampleRecord(name: names[$0], source: source.path) }
        let append = DatasetAppend(dataset: options.dataset, classNames: classNames, split: options.split,
                                   items: keep.map { (ids[$0], labels[$0]) })
        try chunk.commit(records: records, datasets: [append])
        let computed = keep.indices.filter { chunk.needs($0) }.count
        return (computed, keep.count - computed)
    }

    /// Hands a pre-pooled tensor's rows to the chunk as they are stored, when they are already in
    /// the stored 16-bit type (what capture sends) and the chunk takes all of them: read into
    /// memory as bits, no float copy, the same tiles. Returns the rows, which the caller frees
    /// once the chunk is committed, or nil when the rows must go through floats instead.
    private func handOverStoredBits(_ tensor: FileTensor, of source: ActivationSource, featureSet f: Int, first: Int, keep: [Int],
                                    chunk: FeatureChunk, writer: FeatureSetWriter) throws -> UnsafeMutablePointer<UInt16>? {
        let dtype = writer.manifests[f].codec.dtype
        let exponent: UInt16
        switch (tensor.entry.dtype, dtype) {
        case (.bfloat16, .bfloat16): exponent = 0x7F80
        case (.float16, .float16): exponent = 0x7C00
        default: return nil
        }
        // Non-finite values allowed are stored as floats would store them (NaNs made quiet).
        guard !options.allowNonFinite, keep.count == keep.last.map({ $0 + 1 }), chunk.lacksAll(featureSet: f) else { return nil }
        let width = writer.manifests[f].width
        let rows = UnsafeMutablePointer<UInt16>.allocate(capacity: max(keep.count * width, 1))
        do {
            try tensor.readBits(first, count: keep.count, into: rows)
            for r in 0..<keep.count {
                let row = UnsafeBufferPointer(start: rows + r * width, count: width)
                // Branch-free over the row (vectorised); the culprit is looked for only when there is one.
                var infOrNaN: UInt16 = 0
                for bits in row { infOrNaN |= (bits & exponent) == exponent ? 1 : 0 }
                if infOrNaN != 0, let bad = row.firstIndex(where: { $0 & exponent == exponent }) {
                    throw IngestError.nonFinite(file: source.path, tap: Self.tapName(source.pooled!.taps, column: bad, pooling: writer.poolings[f]), example: first + r)
                }
            }
        } catch {
            rows.deallocate()
            throw error
        }
        chunk.useStoredBits(featureSet: f, rows: rows)
        return rows
    }

    /// The tap holding pooled column `column`.
    static func tapName(_ taps: [TapDescriptor], column: Int, pooling: Head2ToePooling) -> String {
        var offset = 0
        for tap in taps {
            offset += pooling.outputWidth(shape: tap.shape)
            if column < offset { return tap.name }
        }
        return taps.last?.name ?? "?"
    }

    private func label(_ source: ActivationSource, index: Int, classNames: [String]) throws -> Int {
        guard let labels = source.labels else { return 0 }
        let text = labels[index]
        if let i = classNames.firstIndex(of: text) { return i }
        if let i = Int(text), source.classNames != nil || options.classNames != nil, i >= 0, i < classNames.count { return i }
        throw IngestError.badLabels(file: source.path, reason: "label '\(text)' of example \(index) is not one of the classes \(classNames)")
    }

    static func resolveClassNames(_ sources: [ActivationSource], given: [String]?) -> [String] {
        if let given { return given }
        if let fromFile = sources.first(where: { $0.classNames != nil })?.classNames { return fromFile }
        // No class list: the distinct labels, sorted (numerically when all are integers).
        let all = Set(sources.flatMap { $0.labels ?? [] })
        if all.isEmpty { return ["unlabelled"] }
        if all.allSatisfy({ Int($0) != nil }) { return all.sorted { Int($0)! < Int($1)! } }
        return all.sorted()
    }

    /// Refuses, before anything is written, an example id given twice (in one file or across
    /// files) with different activations: keeping either would silently drop the other. Repeats
    /// with bit-identical activations are one example, stored once.
    static func checkRepeatedIDs(_ sources: [ActivationSource]) throws {
        var first: [String: (source: Int, index: Int)] = [:]
        for (s, source) in sources.enumerated() {
            guard let names = source.names else { continue }
            for (index, name) in names.enumerated() {
                guard let earlier = first[name] else {
                    first[name] = (s, index)
                    continue
                }
                if try !sameActivations(sources[earlier.source], earlier.index, source, index) {
                    throw IngestError.conflictingDuplicate(example: name, first: "\(sources[earlier.source].path) example \(earlier.index)",
                                                           second: "\(source.path) example \(index)")
                }
            }
        }
    }

    /// Whether example `i` of `a` and example `j` of `b` have bit-identical values in every tap.
    static func sameActivations(_ a: ActivationSource, _ i: Int, _ b: ActivationSource, _ j: Int) throws -> Bool {
        try zip(a.taps, b.taps).allSatisfy { tapA, tapB in
            let n = tapA.entry.rowElements
            guard n == tapB.entry.rowElements else { return false }
            var x = [Float](repeating: 0, count: n), y = x
            try x.withUnsafeMutableBufferPointer { try tapA.readRows(i, count: 1, into: $0.baseAddress!) }
            try y.withUnsafeMutableBufferPointer { try tapB.readRows(j, count: 1, into: $0.baseAddress!) }
            return zip(x, y).allSatisfy { $0.bitPattern == $1.bitPattern }
        }
    }

    /// Head2Toe's rule picks the pooling window from a map's width (maps are square in the
    /// networks it was written for); a map with fewer rows than that window cannot be pooled.
    static func checkPoolable(_ taps: [TapDescriptor], targetSizes: [Int], file: String) throws {
        for tap in taps where tap.shape.count == 3 {
            for size in targetSizes where size > 0 {
                if let window = Head2ToePooling(targetSize: size).window(channels: tap.shape[0], width: tap.shape[2]), window > tap.shape[1] {
                    throw IngestError.windowTallerThanMap(file: file, tap: tap.name, shape: tap.shape, window: window, targetSize: size)
                }
            }
        }
    }

    static func tapShapes(_ source: ActivationSource, layout: ActivationLayout) throws -> [TapDescriptor] {
        if let pooled = source.pooled {
            guard layout == .nchw else { throw IngestError.badPooled(file: source.path, reason: "declared shapes are channel-first; drop --layout nhwc") }
            return pooled.taps
        }
        return try source.taps.map { tap in
            let rest = Array(tap.entry.shape.dropFirst())
            // A tap with no values per example would pool to 0/0 (NaN) or a 0-wide feature set.
            if !rest.isEmpty, rest.contains(0) {
                throw IngestError.emptyTap(file: source.path, tap: tap.entry.name, shape: rest)
            }
            switch rest.count {
            case 1: return TapDescriptor(name: tap.entry.name, shape: rest)
            case 3: return TapDescriptor(name: tap.entry.name, shape: layout == .nchw ? rest : [rest[2], rest[0], rest[1]])
            default: throw IngestError.unsupportedTap(file: source.path, tap: tap.entry.name, shape: rest)
            }
        }
    }

    /// Checks that the input `path` (a safetensors file or a `.npy` folder) exists, without
    /// reading it; returns whether it is a folder.
    @discardableResult
    static func checkExists(_ path: String) throws -> Bool {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorFileError.unreadable(path: path, reason: "no such file or directory")
        }
        return isDirectory.boolValue
    }

    static func open(_ path: String) throws -> ActivationSource {
        let isFolder = try checkExists(path)
        let taps: [FileTensor]
        var names: [String]?, labels: [String]?, classNames: [String]?
        var pooled: PooledLayout?
        if isFolder {
            func lines(_ file: String) throws -> [String]? {
                let full = (path as NSString).appendingPathComponent(file)
                guard FileManager.default.fileExists(atPath: full) else { return nil }
                guard let text = try? String(contentsOfFile: full, encoding: .utf8) else {
                    throw TensorFileError.unreadable(path: full, reason: "not UTF-8 text")
                }
                return text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                    .reversed().drop(while: { $0.isEmpty }).reversed()
            }
            let entries = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".npy") }
            let order = try lines("taps.txt").map { $0.map { $0 + ".npy" } } ?? entries.sorted()
            if let missing = order.first(where: { !entries.contains($0) }) {
                throw IngestError.inconsistentTaps(file: path, reason: "taps.txt names \(missing), which is not in the folder")
            }
            guard !order.isEmpty else { throw IngestError.inconsistentTaps(file: path, reason: "folder has no .npy files") }
            taps = try order.map { try NpyFile(path: (path as NSString).appendingPathComponent($0)).tensor }
            names = try lines("example_ids.txt")
            labels = try lines("labels.txt")
            classNames = try lines("class_names.txt")
        } else {
            let file = try SafetensorsFile(path: path)
            taps = file.tensors
            func jsonList(_ key: String) throws -> [String]? {
                guard let text = file.metadata[key] else { return nil }
                guard let list = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [Any] else {
                    throw IngestError.badLabels(file: path, reason: "metadata '\(key)' is not a JSON array")
                }
                return list.map { "\($0)" }
            }
            names = try jsonList("example_ids")
            labels = try jsonList("labels")
            classNames = try jsonList("class_names")
            if let declared = file.metadata[PooledLayout.metadataKey] {
                pooled = try PooledLayout(path: path, metadata: declared, tensors: taps)
                // Pooled rows cannot be hashed the way raw activations are: ids are required.
                guard names != nil else { throw IngestError.badPooled(file: path, reason: "metadata 'example_ids' is required") }
            }
        }
        guard let firstTap = taps.first else { throw IngestError.inconsistentTaps(file: path, reason: "no tensors") }
        for tap in taps {
            guard tap.entry.dtype.isFloat else {
                throw TensorFileError.unsupportedDType(path: path, tensor: tap.entry.name, dtype: tap.entry.dtype.rawValue)
            }
            guard !tap.entry.shape.isEmpty else {
                throw IngestError.inconsistentTaps(file: path, reason: "tap '\(tap.entry.name)' is a scalar (shape []); every tap needs a first axis of examples")
            }
            guard let n = tap.entry.shape.first, n == firstTap.entry.shape.first else {
                throw IngestError.exampleCountMismatch(file: path, tap: tap.entry.name, count: tap.entry.shape.first ?? 0,
                                                       expected: firstTap.entry.shape.first ?? 0, expectedFrom: firstTap.entry.name)
            }
        }
        let count = firstTap.entry.shape.first ?? 0
        if let names, names.count != count {
            throw IngestError.badLabels(file: path, reason: "\(names.count) example ids for \(count) examples")
        }
        if let labels, labels.count != count {
            throw IngestError.badLabels(file: path, reason: "\(labels.count) labels for \(count) examples")
        }
        return ActivationSource(path: path, taps: taps, count: count, names: names, labels: labels, classNames: classNames, pooled: pooled)
    }
}
