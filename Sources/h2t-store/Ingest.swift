import ArgumentParser
import Foundation
import H2TCore
import H2TPipeline
import H2TStore

/// Tile layout and codec options shared by every ingest.
struct CodecOptions: ParsableArguments {
    @Option(name: .long, help: "Stored dtype: bfloat16 (default), float16 or float32 (lossless).")
    var dtype: StorageDType = .bfloat16
    @Option(name: .long, help: "zstd level for the byte planes (1-3 are the useful range; 0 stores planes raw).")
    var zstdLevel: Int = TileCodec.default.level
    @Option(name: .long, help: "Columns per independently decodable frame.")
    var frameWidth: Int = TileCodec.default.frameWidth
    @Option(name: .long, help: "Columns per tile.")
    var columnBlock: Int = 1024
    @Option(name: .long, help: "Examples per commit (bounds memory; a killed ingest loses at most one).")
    var segmentRows: Int = 512

    var codec: TileCodec {
        TileCodec(dtype: dtype, compressed: zstdLevel > 0, level: max(zstdLevel, 1), frameWidth: frameWidth)
    }

    func validate() throws {
        guard (0...19).contains(zstdLevel) else { throw ValidationError("--zstd-level must be in 0...19, got \(zstdLevel)") }
        guard frameWidth > 0 else { throw ValidationError("--frame-width must be positive, got \(frameWidth)") }
        guard columnBlock > 0 else { throw ValidationError("--column-block must be positive, got \(columnBlock)") }
        guard segmentRows > 0 else { throw ValidationError("--segment-rows must be positive, got \(segmentRows)") }
    }
}

extension StorageDType: ExpressibleByArgument {}
extension ActivationLayout: ExpressibleByArgument {}

/// `h2t-store ingest`: computes or reads activations, pools them and stores one feature set per target size.
struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ingest activations into the store (resumable: examples already stored are skipped).",
        discussion: """
        External activations (a backbone run elsewhere): safetensors files with one tensor per tap \
        (first axis = examples; __metadata__ may hold JSON arrays example_ids, labels, class_names), \
        or folders of <tap>.npy (optional taps.txt, example_ids.txt, labels.txt, class_names.txt).
        """)

    @Argument(help: "Safetensors files or .npy folders.")
    var inputs: [String] = []

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
    @Option(name: .customLong("target-size"), help: "Head2Toe pooling target size F_T (repeat for several feature sets in one pass).")
    var targetSizes: [Int] = [8192]
    @Option(name: .long, help: "Comma-separated class names (labels are indices into them).")
    var classNames: String?
    @Flag(name: .long, help: "Store NaN and Inf instead of rejecting the input.")
    var allowNonfinite = false

    @OptionGroup var codecOptions: CodecOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let bad = targetSizes.first(where: { $0 <= 0 }) { throw ValidationError("--target-size must be positive, got \(bad)") }
        guard external != nil else { throw ValidationError("name the backbone: --external NAME for activations computed elsewhere") }
        guard !inputs.isEmpty else { throw ValidationError("give at least one safetensors file or .npy folder") }
    }

    func run() throws {
        let store = try storeOptions.open(create: true)
        var options = ExternalIngestOptions(backboneName: external!, dataset: dataset, split: split, targetSizes: targetSizes)
        options.weightsSHA256 = weightsSha256
        options.layout = layout
        options.codec = codecOptions.codec
        options.columnBlock = codecOptions.columnBlock
        options.segmentRows = codecOptions.segmentRows
        options.allowNonFinite = allowNonfinite
        options.classNames = classNames.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        let progress = ProgressReporter(label: "ingest", unit: "examples", enabled: !output.json)
        let summary = try ExternalIngest(store: store, options: options).run(paths: inputs, progress: progress)
        try report(summary, json: output.json)
    }
}

/// Prints an ingest summary as a table or JSON.
func report(_ summary: IngestSummary, json: Bool) throws {
    if json { return try printJSON(summary) }
    print("ingested \(summary.examplesSeen) examples into \(summary.dataset)/\(summary.split): \(summary.examplesComputed) computed, \(summary.examplesReused) already stored, \(String(format: "%.1f", summary.seconds)) s (\(String(format: "%.0f", summary.examplesPerSecond)) examples/s)")
    print(table(["FEATURE SET", "F_T", "FEATURES"], summary.featureSets.map { [String($0.id.prefix(12)), "\($0.targetSize)", "\($0.width)"] }))
    for skipped in summary.skipped { print("skipped \(skipped.path): \(skipped.reason)") }
}
