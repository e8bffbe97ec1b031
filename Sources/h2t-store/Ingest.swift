import ArgumentParser
import Foundation
import H2TBackbone
import H2TCore
import H2TPipeline
import H2TStore

/// Tile layout and codec options shared by every ingest.
struct CodecOptions: ParsableArguments {
    @Option(name: .long, help: "Stored dtype: bfloat16 (default), float16 or float32 (lossless).")
    var dtype: StorageDType = .bfloat16
    @Option(name: .long, parsing: .unconditional, help: "zstd level for the byte planes, 0...19 (1-3 are the useful range; 0 stores planes raw).")
    var zstdLevel: Int = TileCodec.default.level
    @Option(name: .long, parsing: .unconditional, help: "Columns per independently decodable frame.")
    var frameWidth: Int = TileCodec.default.frameWidth
    @Option(name: .long, parsing: .unconditional, help: "Columns per tile.")
    var columnBlock: Int = 1024
    @Option(name: .long, parsing: .unconditional, help: "Examples per commit (bounds memory; a killed ingest loses at most one).")
    var segmentRows: Int = 512

    var codec: TileCodec {
        TileCodec(dtype: dtype, compressed: zstdLevel > 0, level: max(zstdLevel, 1), frameWidth: frameWidth)
    }

    func validate() throws {
        try checkRange("--zstd-level", zstdLevel, .within(0...19))
        try checkRange("--frame-width", frameWidth, .positiveCount)
        try checkRange("--column-block", columnBlock, .positiveCount)
        try checkRange("--segment-rows", segmentRows, .positiveCount)
    }
}

extension StorageDType: ExpressibleByArgument {}
extension BackboneArchitecture: ExpressibleByArgument {
    /// The built-in backbone names for help texts, e.g. `mobilenet_v2|efficientnet_lite0`.
    static func names(separator: String) -> String { allCases.map(\.rawValue).joined(separator: separator) }
}

/// Where the pinned artefacts (weights, datasets) live.
struct CacheOptions: ParsableArguments {
    @Option(name: .long, help: "Artefact cache (default: $H2T_CACHE or ~/.cache/h2t-store; fill it with tools/fetch-artifacts).")
    var cache: String?

    var artifactCache: ArtifactCache { ArtifactCache(explicitRoot: cache) }
}
extension ActivationLayout: ExpressibleByArgument {}

/// `h2t-store ingest`: computes or reads activations, pools them and stores one feature set per target size.
struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ingest activations into the store (resumable: examples already stored are skipped).",
        discussion: """
        Images through a built-in backbone: --backbone \(BackboneArchitecture.names(separator: "|")) with --fashion-mnist \
        train|test, --idx IMAGES [--labels LABELS], or --folder DIR (one subfolder per class of PNG/JPEG). \
        Every tap is pooled with Head2Toe's rule for each --target-size in the same pass.

        External activations (a backbone run elsewhere): safetensors files with one tensor per tap \
        (first axis = examples; __metadata__ may hold JSON arrays example_ids, labels, class_names), \
        or folders of <tap>.npy (optional taps.txt, example_ids.txt, labels.txt, class_names.txt).
        """)

    @Argument(help: "Safetensors files or .npy folders (with --external).")
    var inputs: [String] = []

    @Option(name: .long, help: "Built-in backbone to run over images: \(BackboneArchitecture.names(separator: " or ")).")
    var backbone: BackboneArchitecture?
    @Option(name: .long, help: "Fashion-MNIST split from the artefact cache: train or test.")
    var fashionMnist: String?
    @Option(name: .long, help: "IDX image file (.gz or raw).")
    var idx: String?
    @Option(name: .long, help: "IDX label file for --idx.")
    var labels: String?
    @Option(name: .long, help: "Image folder: one subfolder per class of PNG/JPEG files.")
    var folder: String?
    @Option(name: .long, parsing: .unconditional, help: "Square backbone input size, 32...1024 (default 64 for sources up to 64 px, else 224).")
    var inputSize: Int?
    @Option(name: .long, parsing: .unconditional, help: "Ingest only the first N images.")
    var limit: Int?
    @Option(name: .long, parsing: .unconditional, help: "Images per backbone batch (default: 32, or 16 per thread when that is more).")
    var batchSize: Int?
    @Flag(name: .long, help: "With --folder: fail, before storing anything, if a file would be skipped (not an image, unreadable or corrupt) instead of skipping it.")
    var strict = false
    @OptionGroup var cacheOptions: CacheOptions

    @Option(name: .long, help: "Name of the external backbone that produced the activations.")
    var external: String?
    @Option(name: .long, help: "SHA-256 of the external backbone's weights (part of its identity).")
    var weightsSha256: String?
    @Option(name: .long, help: "Layout of spatial taps in external files.")
    var layout: ActivationLayout = .nchw
    @Option(name: .long, help: "Dataset the examples join.")
    var dataset: String
    @Option(name: .long, help: "Split the examples join.")
    var split: String = "train"
    @Option(name: .customLong("target-size"), parsing: .unconditionalSingleValue, help: "Head2Toe pooling target size F_T (repeat for several feature sets in one pass).")
    var targetSizes: [Int] = [8192]
    @Option(name: .long, help: "Comma-separated class names (labels are indices into them).")
    var classNames: String?
    @Flag(name: .long, help: "Store NaN and Inf instead of rejecting the input.")
    var allowNonfinite = false
    @Option(name: .long, help: ArgumentHelp(
        "Ingest only shard K of N (K from 0) of the inputs into a shard store of its own, sealed when done; auto/N takes K from SLURM_ARRAY_TASK_ID.",
        discussion: "Shards are contiguous ranges of the input order. Combine them with `h2t-store merge --into STORE SHARD...`."))
    var shard: String?
    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
        "With --shard and --external: the run's input count; the files are the shard's own inputs (or a part of them), selected by the caller.",
        discussion: "For callers that stream a shard in parts (the Python capture); needs --shard-plan."))
    var shardTotal: Int?
    @Option(name: .long, help: "With --shard-total: what names the run, equal on every worker of it (part of the plan digest).")
    var shardPlan: String?
    @Flag(name: .long, help: "With --shard-total: leave the shard unsealed, more parts follow.")
    var shardOpen = false

    @OptionGroup var codecOptions: CodecOptions
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var progressOptions: ProgressOptions

    func validate() throws {
        try checkRange("--target-size", targetSizes, .positiveCount)
        do {
            _ = try shardSpec()
        } catch let error as StoreError {
            throw ValidationError(error.description)
        }
        if shardTotal != nil || shardPlan != nil || shardOpen {
            guard shard != nil, external != nil else { throw ValidationError("--shard-total, --shard-plan and --shard-open go with --shard and --external") }
            guard shardTotal != nil, let shardPlan, !shardPlan.isEmpty else { throw ValidationError("--shard-total and --shard-plan go together (a shard streamed in parts)") }
            try checkRange("--shard-total", shardTotal, .positiveCount)
        }
        // Image options are checked whatever the source: a bad value is an error even where unused.
        try checkRange("--input-size", inputSize, .within(32...1024))
        try checkRange("--limit", limit, .positiveCount)
        try checkRange("--batch-size", batchSize, .positiveCount)
        switch (backbone, external) {
        case (nil, nil): throw ValidationError("name the backbone: --backbone \(BackboneArchitecture.names(separator: "|")) for images, or --external NAME for activations computed elsewhere")
        case (.some, .some): throw ValidationError("--backbone and --external exclude each other")
        case (.some, nil):
            let sources = [fashionMnist != nil, idx != nil, folder != nil].filter { $0 }.count
            guard sources == 1 else { throw ValidationError("give exactly one image source: --fashion-mnist train|test, --idx FILE, or --folder DIR") }
            if let fashionMnist, !["train", "test"].contains(fashionMnist) { throw ValidationError("--fashion-mnist must be train or test, got '\(fashionMnist)'") }
            if labels != nil && idx == nil { throw ValidationError("--labels goes with --idx") }
            guard inputs.isEmpty else { throw ValidationError("with --backbone, images come from --fashion-mnist, --idx or --folder, not positional files") }
            if strict, folder == nil { throw ValidationError("--strict applies to --folder only (IDX files have no files to skip)") }
        case (nil, .some):
            guard !inputs.isEmpty else { throw ValidationError("give at least one safetensors file or .npy folder") }
            if strict { throw ValidationError("--strict applies to --folder only (external inputs are never skipped in part)") }
        }
    }

    /// The shard of `--shard`, if given.
    func shardSpec() throws -> ShardSpec? { try shard.map { try ShardSpec.parse($0) } }

    func run() throws {
        let parallelism = try threadOptions.parallelism
        // The inputs are found (and with --backbone the weights and a pinned dataset read and
        // checked; external inputs opened and checked) before the store is opened: a mistyped
        // path or a malformed file leaves no empty store behind.
        for path in [idx, labels].compactMap({ $0 }) { try InputFile.checkExists(path) }
        if let folder { try ImageFolder.checkExists(folder) }
        if let backbone { return try ingestImages(architecture: backbone, parallelism: parallelism) }
        var options = ExternalIngestOptions(backboneName: external!, dataset: dataset, split: split, targetSizes: targetSizes)
        options.weightsSHA256 = weightsSha256
        options.layout = layout
        options.codec = codecOptions.codec
        options.columnBlock = codecOptions.columnBlock
        options.segmentRows = codecOptions.segmentRows
        options.allowNonFinite = allowNonfinite
        options.shard = try shardSpec()
        options.shardPart = shardTotal.map { ShardPart(total: $0, plan: shardPlan!, open: shardOpen) }
        options.parallelism = parallelism
        options.classNames = classNames.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        // Every input is opened and checked (taps, shapes, ids, labels) before the store is.
        let prepared = try ExternalInputs(paths: inputs, options: options)
        let store = try storeOptions.open(create: true, parallelism: parallelism)
        let progress = ProgressReporter(label: "ingest", unit: "examples", enabled: progressOptions.reports(json: output.json))
        let summary = try ExternalIngest(store: store, options: options).run(prepared, progress: progress)
        try report(summary, json: output.json)
    }
}

extension Ingest {
    /// The images read and checked (`ImageInputs`: a pinned dataset's SHA-256, the IDX file read as
    /// far as `--limit`, a folder scanned, under `--strict` decoded) while the network's weights
    /// are read, checked and packed on another thread: a shorter serial start. Then the store is
    /// opened (created) and the images ingested. An input error is reported before a weights
    /// error, as when they ran one after the other.
    func ingestImages(architecture: BackboneArchitecture, parallelism: Parallelism) throws {
        var options = ImageIngestOptions(architecture: architecture, targetSizes: targetSizes, dataset: dataset, split: split)
        options.inputSize = inputSize
        options.limit = limit
        options.idxVerified = fashionMnist != nil  // the cache checks their SHA-256
        options.batchSize = batchSize
        options.strict = strict
        options.shard = try shardSpec()
        options.parallelism = parallelism
        options.codec = codecOptions.codec
        options.columnBlock = codecOptions.columnBlock
        options.segmentRows = codecOptions.segmentRows
        options.classNames = classNames.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        let cache = cacheOptions.artifactCache
        let progress = ProgressReporter(label: "ingest \(architecture.rawValue)", unit: "images", enabled: progressOptions.reports(json: output.json))
        let summary: IngestSummary
        do {
            let (inputs, network) = try Parallel.both(parallelism: parallelism, { () throws -> ImageInputs in
                try ImageInputs(try imageSource(cache), options: options)
            }, {
                try BackboneNetwork.load(architecture, from: cache)
            })
            let store = try storeOptions.open(create: true, parallelism: parallelism)
            summary = try ImageIngest(store: store, network: network, options: options).run(inputs, progress: progress)
        } catch let error as ImageIngestError {
            // The error names the first file; every file gets its line, as without --strict.
            if case let .skippedUnderStrict(skipped, _) = error { reportSkipped(skipped) }
            throw error
        }
        try report(summary, json: output.json)
    }

    /// Where the images come from; a pinned dataset's files are checked against their SHA-256.
    func imageSource(_ cache: ArtifactCache) throws -> ImageSource {
        if let fashionMnist {
            let train = fashionMnist == "train"
            return .idx(images: try cache.verifiedPath(of: train ? .fashionMNISTTrainImages : .fashionMNISTTestImages),
                        labels: try cache.verifiedPath(of: train ? .fashionMNISTTrainLabels : .fashionMNISTTestLabels))
        } else if let idx {
            return .idx(images: idx, labels: labels)
        }
        return .folder(folder!)
    }
}

/// Prints an ingest summary as a table or JSON on stdout. Skipped files are warnings on stderr
/// (not status lines: `--quiet` keeps them, as the table does not list them); with `--json` they
/// are in its `skipped` and stderr carries errors only.
func report(_ summary: IngestSummary, json: Bool) throws {
    if json { return try printJSON(summary) }
    reportSkipped(summary.skipped)
    if let shard = summary.shard {
        let what = "shard \(shard.shard)/\(shard.shards) (inputs \(shard.firstInput)..<\(shard.endInput) of \(shard.totalInputs), plan \(shard.plan.prefix(12)))"
        guard shard.state != "already_sealed" else {
            print("\(what) is already sealed: nothing to do")
            return
        }
        if !shard.sealed {
            print("\(what) part stored, left open (not sealed)")
        } else {
            print("\(what) sealed: \(shard.items) items, rows per feature set \(shard.rows.map(String.init).joined(separator: ", "))\(shard.state == "resumed" ? " (resumed)" : "")")
        }
    }
    print("ingested \(summary.examplesSeen) examples into \(summary.dataset)/\(summary.split): \(summary.examplesComputed) computed, \(summary.examplesReused) already stored, \(String(format: "%.1f", summary.seconds)) s (\(String(format: "%.0f", summary.examplesPerSecond)) examples/s)")
    print(table(["FEATURE SET", "F_T", "FEATURES"], summary.featureSets.map { [String($0.id.prefix(12)), "\($0.targetSize)", "\($0.width)"] }))
}

/// One stderr line per skipped file, then their count.
func reportSkipped(_ skipped: [IngestSummary.SkippedInput]) {
    guard !skipped.isEmpty else { return }
    let lines = skipped.map { "ingest: skipped \($0.path): \($0.reason)\n" }.joined()
    FileHandle.standardError.write(Data((lines + "ingest: \(skipped.count) file\(skipped.count == 1 ? "" : "s") skipped\n").utf8))
}
