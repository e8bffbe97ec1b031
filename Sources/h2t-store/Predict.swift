import ArgumentParser
import H2TCore
import Foundation
import H2TBackbone
import H2TRegistry
import H2TStore

/// `h2t-store predict REF`: labels and probabilities for stored examples or new images.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict with a head: stored examples (--dataset/--split or --examples; only the selected columns are read) or new images (--images: an IDX file or a folder of PNG/JPEG; the backbone runs only up to the deepest tap the head uses).")

    @Argument(help: "NAME, NAME@vN or NAME@alias.") var reference: String
    @Option(name: .long, help: "Dataset of stored examples.") var dataset: String?
    @Option(name: .long, help: "Split of --dataset.") var split: String?
    @Option(name: .long, help: "Comma-separated example ids (64 hex digits) of stored examples.") var examples: String?
    @Option(name: .long, help: "IDX images file or folder of PNG/JPEG images.") var images: String?
    @Option(name: .long, help: "Output format: csv or json (--json implies json).") var format: String = "csv"
    @Option(name: .long, help: "Write predictions here instead of stdout.") var out: String?
    @Option(name: .long, help: "Artefact cache with the backbone weights (default $H2T_CACHE or ~/.cache/h2t-store).") var cache: String?
    @Flag(name: .long, help: "With --images: resize images of any size, even if the head records the size of its training images.") var anySize = false
    @Flag(name: .long, help: "With --images: run the backbone even for images whose pixels are already in the head's feature set (by default their stored features are read, as predict on stored examples would).")
    var recompute = false

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.predict-output/1"
        var head: String
        var source: String
        var classNames: [String]
        var count: Int
        /// With --images: how many images were found in the store (their features read, not computed).
        var fromStore: Int?
        var predictions: [Row]
        struct Row: Encodable {
            var input: String
            var label: String
            var labelIndex: Int
            var probabilities: [Float]
        }
    }

    func validate() throws {
        let sources = [dataset != nil || split != nil, examples != nil, images != nil].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one input: --dataset with --split, --examples, or --images") }
        if (dataset == nil) != (split == nil) { throw ValidationError("--dataset and --split go together") }
        if images == nil, recompute || anySize { throw ValidationError("--\(recompute ? "recompute" : "any-size") applies to --images only") }
        guard format == "csv" || format == "json" else { throw ValidationError("--format must be csv or json") }
    }

    func run() throws {
        let parallelism = try threadOptions.parallelism
        let registry = try openRegistry(storeOptions, parallelism: parallelism)
        let head = try registry.head(try parseReference(reference))
        let predictions: Predictions
        let source: String
        var fromStore: Int?
        if let dataset, let split {
            predictions = try registry.predict(head, dataset: dataset, split: split).predictions
            source = "\(dataset)/\(split)"
        } else if let examples {
            let ids = try examples.split(separator: ",").map { text -> ExampleID in
                guard let id = ExampleID(hex: text.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("'\(text)' is not a 64-hex-digit example id") }
                return id
            }
            predictions = try registry.predict(head, examples: ids)
            source = "\(ids.count) stored examples"
        } else {
            let path = images!
            let input = try ImageInput(path)
            let info = try registry.featureSet(of: head)
            let backbone = try registry.store.backbone(info.manifest.backbone)
            guard let architecture = BackboneArchitecture(rawValue: backbone.architecture) else {
                throw ValidationError("head \(head.reference) reads features of backbone '\(backbone.architecture)', which h2t-store cannot run; ingest activations computed elsewhere and predict with --dataset/--split")
            }
            let network = try BackboneNetwork.load(architecture, from: ArtifactCache(explicitRoot: cache))
            let predictor = try ImagePredictor(head: head, registry: registry, network: network, allowAnySize: anySize)
            // One batch of files decoded at a time: memory stays bounded whatever the folder's size.
            var all = Predictions(classNames: head.classNames, inputs: [], labels: [], probabilities: [])
            var stored = 0
            for first in stride(from: 0, to: input.count, by: Self.imageBatch) {
                let range = first..<min(first + Self.imageBatch, input.count)
                let (part, reused) = try predictor.predict(try input.decode(range, parallelism: parallelism), names: Array(input.names[range]),
                                                           batchSize: Self.imageBatch, parallelism: parallelism, reuseStored: !recompute)
                all.append(part)
                stored += reused
            }
            (predictions, fromStore) = (all, stored)
            source = path
            if !output.json, stored > 0 {
                FileHandle.standardError.write(Data("predict: \(stored) of \(input.count) images are stored examples of the head's feature set: their stored features were read (--recompute runs the backbone on them)\n".utf8))
            }
        }
        let text: String
        if output.json || format == "json" {
            let rows = predictions.inputs.indices.map { i in
                Output.Row(input: predictions.inputs[i], label: head.classNames[predictions.labels[i]], labelIndex: predictions.labels[i],
                           probabilities: Array(predictions.probabilities(of: i)))
            }
            if out == nil { return try printJSON(Output(head: head.reference, source: source, classNames: head.classNames, count: rows.count, fromStore: fromStore, predictions: rows)) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            text = String(decoding: try encoder.encode(Output(head: head.reference, source: source, classNames: head.classNames, count: rows.count, fromStore: fromStore, predictions: rows)), as: UTF8.self) + "\n"
        } else {
            text = try predictions.csv(parallelism: parallelism)
        }
        if let out {
            do { try text.write(toFile: out, atomically: true, encoding: .utf8) } catch { throw ValidationError("cannot write \(out): \(error.localizedDescription)") }
            FileHandle.standardError.write(Data("wrote \(predictions.inputs.count) predictions of \(head.reference) to \(out)\n".utf8))
        } else {
            print(text, terminator: "")
        }
    }

    /// Images decoded per batch of `predict --images`.
    static let imageBatch = 256

    /// The images of `--images`: an IDX images file (read whole: a byte per pixel), or the PNG/JPEG
    /// files of a folder in name order, decoded a range at a time.
    struct ImageInput {
        let names: [String]
        private let files: [String]
        private let stack: GrayscaleImages?

        init(_ path: String) throws {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ValidationError("\(path): no such file or folder") }
            if isDirectory.boolValue {
                names = try FileManager.default.contentsOfDirectory(atPath: path).sorted().filter {
                    ["png", "jpg", "jpeg"].contains(($0 as NSString).pathExtension.lowercased())
                }
                guard !names.isEmpty else { throw ValidationError("\(path): no .png or .jpg files") }
                files = names.map { path + "/" + $0 }
                stack = nil
            } else {
                let images = try IDX.readImages(path: path)
                let name = (path as NSString).lastPathComponent
                names = (0..<images.count).map { "\(name)#\($0)" }
                files = []
                stack = images
            }
        }

        var count: Int { names.count }

        /// Images `range`, files decoded on `parallelism`'s threads.
        func decode(_ range: Range<Int>, parallelism: Parallelism) throws -> [DecodedImage] {
            if let stack { return range.map(stack.image) }
            return try ImageDecoder.decode(files: Array(files[range]), parallelism: parallelism)
        }
    }
}
