import Foundation
import H2TBackbone
import H2TCore
import H2TStore
import Synchronization

/// Where images come from.
public enum ImageSource: Sendable {
    /// An IDX image file (MNIST, Fashion-MNIST; `.gz` or raw) with an optional IDX label file.
    case idx(images: String, labels: String?)
    /// A folder with one subfolder per class of PNG/JPEG files.
    case folder(String)
}

/// Options of an image ingest.
public struct ImageIngestOptions: Sendable, Equatable {
    /// The backbone.
    public var architecture: BackboneArchitecture
    /// Square input size; `nil` picks 64 for sources up to 64 pixels (e.g. 28×28), else 224.
    public var inputSize: Int?
    /// Head2Toe target sizes; one feature set each, all filled by the same backbone pass.
    public var targetSizes: [Int]
    /// Dataset and split the images join.
    public var dataset: String
    public var split: String
    /// Class names (override the source's).
    public var classNames: [String]?
    /// Ingest only the first `limit` images of the source.
    public var limit: Int?
    /// The IDX files' bytes were verified by the caller (the artefact cache's pinned SHA-256):
    /// with `limit`, a gzip'd images file is then inflated only as far as its first `limit`
    /// images (its trailing CRC, which covers the whole stream, is not reached). Other IDX files
    /// are always inflated and checked to the end.
    public var idxVerified = false
    /// Tile codec and layout.
    public var codec: TileCodec = .default
    public var columnBlock: Int = 1024
    /// Images per commit (bounds memory; a killed ingest redoes at most one).
    public var segmentRows: Int = 512
    /// Images per backbone batch; `nil` picks ``defaultBatchSize(for:)``.
    public var batchSize: Int?
    /// Threads for the backbone pass, the tile encoding and the commit's reads.
    public var parallelism: Parallelism = .default
    /// Fail instead of skipping: a file of an image folder that would be left out (not an image,
    /// unreadable, corrupt) is an error. Every file is decoded once before anything is written
    /// (an extra decode per image, small beside the backbone pass), so a bad file stops the
    /// ingest before its first commit.
    public var strict = false
    /// Ingest only this shard of the images (after `limit`, in the source's order), into a shard store.
    public var shard: ShardSpec?

    /// 32 images, or two of the backbone's largest slices per thread when that is more, so that
    /// every thread has work (a batch's slices are what its threads share).
    public static func defaultBatchSize(for parallelism: Parallelism) -> Int {
        max(32, 2 * NetworkInterpreter.sliceExamples * parallelism.threads)
    }

    /// The batch size in use.
    var effectiveBatchSize: Int { batchSize ?? Self.defaultBatchSize(for: parallelism) }

    /// Creates options.
    public init(architecture: BackboneArchitecture, targetSizes: [Int], dataset: String, split: String) {
        self.architecture = architecture
        self.targetSizes = targetSizes
        self.dataset = dataset
        self.split = split
    }
}

/// Why an image ingest stopped.
public enum ImageIngestError: Error, CustomStringConvertible, Sendable {
    /// Under `strict`, files that would have been skipped; `stored` examples were committed
    /// before they were found (0 when the check before writing found them).
    case skippedUnderStrict(skipped: [IngestSummary.SkippedInput], stored: Int)

    /// One line naming the first file.
    public var description: String {
        switch self {
        case let .skippedUnderStrict(skipped, stored):
            let first = skipped.first.map { "\($0.path): \($0.reason)" } ?? ""
            let more = skipped.count > 1 ? " and \(skipped.count - 1) more" : ""
            let outcome = stored == 0
                ? "no example was stored"
                : "the \(stored) examples before them are stored (a re-run resumes after them)"
            return "--strict: \(skipped.count) file\(skipped.count == 1 ? "" : "s") cannot be ingested (\(first)\(more)); \(outcome)"
        }
    }
}

/// The images of an ingest, found and checked before any store is touched: the IDX file read (as
/// far as `limit`; the rest checked in the background while the network runs) or the folder
/// scanned, under `strict` every file decoded once, the labels against the class names, and the
/// preprocessing. A caller that creates a store (the CLI) prepares these first, so that a
/// malformed input leaves no empty store behind.
public struct ImageInputs {
    let reader: ImageReader
    /// The files the folder scan skipped (reported once, by shard 0).
    let scanSkipped: [IngestSummary.SkippedInput]
    /// The images this run ingests (a shard's range, or all after `limit`).
    let wanted: Range<Int>
    let classNames: [String]
    let preprocessing: Preprocessing
    /// The options the inputs were checked for (the ingest's own).
    let options: ImageIngestOptions

    /// Finds and checks `source` for an ingest with `options`.
    public init(_ source: ImageSource, options: ImageIngestOptions) throws {
        guard options.segmentRows > 0, options.effectiveBatchSize > 0 else { throw StoreError.invalidArgument("--segment-rows and --batch-size must be positive") }
        if let limit = options.limit, limit <= 0 { throw StoreError.invalidArgument("--limit must be positive, got \(limit)") }
        let reader = try ImageReader(source, limit: options.limit, idxVerified: options.idxVerified,
                                     checkInBackground: options.parallelism.threads > 1)
        // A shard reports the files the folder scan skipped only once, in shard 0.
        let scanSkipped = (options.shard?.index ?? 0) == 0 ? reader.scanSkipped : []
        let wanted = options.shard?.range(of: reader.count) ?? 0..<reader.count
        if options.strict {
            let bad = scanSkipped + reader.undecodable(wanted, parallelism: options.parallelism)
            guard bad.isEmpty else { throw ImageIngestError.skippedUnderStrict(skipped: bad, stored: 0) }
        }
        var classNames = options.classNames ?? reader.classNames
        if classNames.count <= (reader.maxLabel ?? -1) {
            throw IngestError.badLabels(file: reader.path, reason: "label \(reader.maxLabel!) is outside the \(classNames.count) class names given")
        }
        if classNames.isEmpty { classNames = ["unlabelled"] }
        let size = options.inputSize ?? Preprocessing.defaultInputSize(sourceWidth: reader.sourceWidth, sourceHeight: reader.sourceHeight)
        var preprocessing = Preprocessing(architecture: options.architecture, size: size)
        preprocessing.alpha = .drop
        try preprocessing.validate()
        (self.reader, self.scanSkipped, self.wanted, self.classNames, self.preprocessing, self.options) =
            (reader, scanSkipped, wanted, classNames, preprocessing, options)
    }
}

/// Runs a pretrained backbone over images and stores every tap pooled with Head2Toe's rule.
///
/// Resumable and deduplicated: an image is identified by the SHA-256 of its decoded pixels (with
/// its shape), and images whose features every requested feature set already holds skip the
/// backbone entirely. One commit per segment holds the tiles of every feature set, the example
/// records and the dataset items.
public struct ImageIngest {
    /// The store written to.
    public let store: FeatureStore
    /// The backbone network (loaded once; reusable across ingests).
    public let network: BackboneNetwork
    /// Options.
    public let options: ImageIngestOptions

    /// Creates an ingest.
    public init(store: FeatureStore, network: BackboneNetwork, options: ImageIngestOptions) {
        self.store = store
        self.network = network
        self.options = options
    }

    /// The content identity of a decoded image (`ExampleID(imagePixels:...)`).
    public static func exampleID(pixels: UnsafeBufferPointer<UInt8>, width: Int, height: Int, channels: Int) -> ExampleID {
        ExampleID(imagePixels: pixels, width: width, height: height, channels: channels)
    }

    /// The backbone manifest for `preprocessing` (architecture, weights digest, preprocessing, taps).
    public func backboneManifest(_ preprocessing: Preprocessing) throws -> BackboneManifest {
        BackboneManifest(
            architecture: options.architecture.rawValue, weightsSHA256: options.architecture.weightsArtifact.pin.sha256,
            preprocessing: try JSONValue(encoding: preprocessing),
            taps: network.taps(height: preprocessing.height, width: preprocessing.width).map { TapDescriptor(name: $0.name, shape: $0.shape) })
    }

    /// Ingests `source`; returns what was computed, reused and skipped.
    public func run(_ source: ImageSource, progress: ProgressReporter? = nil) throws -> IngestSummary {
        try run(ImageInputs(source, options: options), progress: progress)
    }

    /// Ingests images already found and checked with these options; returns what was computed,
    /// reused and skipped.
    public func run(_ inputs: ImageInputs, progress: ProgressReporter? = nil) throws -> IngestSummary {
        precondition(inputs.options == options, "inputs checked with other options than the ingest's")
        let started = Date()
        let (reader, scanSkipped, wanted, classNames, preprocessing) = (inputs.reader, inputs.scanSkipped, inputs.wanted, inputs.classNames, inputs.preprocessing)
        let size = preprocessing.height
        let writer = try FeatureSetWriter(store: store, backbone: try backboneManifest(preprocessing), targetSizes: options.targetSizes,
                                          codec: options.codec, columnBlock: options.columnBlock, overlapCommits: true,
                                          parallelism: options.parallelism)
        // The network's pooled layout must be the feature sets' layout, column for column.
        for manifest in writer.manifests {
            let layout = try network.pooledLayout(height: size, width: size, targetSize: manifest.targetSize)
            guard layout.width == manifest.width, zip(layout.taps, manifest.taps).allSatisfy({ $0.offset == $1.offset && $0.width == $1.width && $0.name == $1.name }) else {
                throw StoreError.inconsistent("backbone layout for F_T \(manifest.targetSize) differs from feature set \(manifest.targetSize)")
            }
        }
        let shard = try options.shard.map { spec in
            try ShardRun(spec, plan: reader.plan(options: options, inputSize: size, classNames: classNames, writer: writer), store: store, writer: writer)
        }
        if let shard, shard.isSealed {
            var summary = writer.summary(dataset: options.dataset, split: options.split, seen: 0, computed: 0, reused: 0, skipped: [], started: started)
            summary.shard = try shard.seal(store)
            return summary
        }
        progress?.setTotal(wanted.count)
        var computed = 0, reused = 0, seen = 0
        var skipped: [IngestSummary.SkippedInput] = scanSkipped
        var first = wanted.lowerBound
        // A folder's segments are decoded and preprocessed into the same memory (hundreds of MB at
        // 224×224); an IDX stack's images are preprocessed a batch at a time into `batchMemory`.
        let tensorMemory = ReusableFloats(), batchMemory = ReusableFloats()
        // A batch's pooled rows per feature set, before they are stored as bfloat16 bits.
        let rowMemory = writer.manifests.map { _ in ReusableFloats() }
        while first < wanted.upperBound {
            let count = min(options.segmentRows, wanted.upperBound - first)
            let segment = reader.segment(first..<(first + count), preprocessing: preprocessing, parallelism: options.parallelism,
                                         into: tensorMemory)
            // Checked before writing, so only a file changed since can fail here.
            if options.strict, !segment.skipped.isEmpty {
                throw ImageIngestError.skippedUnderStrict(skipped: segment.skipped, stored: seen)
            }
            skipped += segment.skipped
            let result = try ingestSegment(segment, preprocessing: preprocessing, classNames: classNames, writer: writer,
                                           batchMemory: batchMemory, rowMemory: rowMemory, fileCheck: reader.fileCheck)
            computed += result.computed
            reused += result.reused
            seen += segment.ids.count
            progress?.advance(by: count)
            first += count
        }
        try reader.fileCheck?.wait()
        try writer.finish()
        progress?.finish()
        var summary = writer.summary(dataset: options.dataset, split: options.split, seen: seen, computed: computed, reused: reused,
                                     skipped: skipped, started: started)
        summary.shard = try shard?.seal(store)
        return summary
    }

    private func ingestSegment(_ segment: ImageSegment, preprocessing: Preprocessing, classNames: [String],
                               writer: FeatureSetWriter, batchMemory: ReusableFloats,
                               rowMemory: [ReusableFloats], fileCheck: BackgroundCheck?) throws -> (computed: Int, reused: Int) {
        // Duplicates inside the segment: keep the first; a different label is an error.
        let keep = try FeatureSetWriter.firstOccurrences(segment.ids, labels: segment.labels, file: segment.sources.first ?? "") { i, previous in
            "\(segment.names[i]) (same pixels as \(segment.names[previous]))"
        }
        let chunk = try writer.chunk(examples: keep.map { segment.ids[$0] })
        let needed = keep.indices.filter { chunk.needs($0) }
        let per = preprocessing.valuesPerImage
        let batchSize = options.effectiveBatchSize
        // A bfloat16 feature set's rows are pooled into `rowMemory` and stored as bits (half the
        // matrix); another codec's go straight into the chunk's float matrix where a batch's rows
        // are one block there (every example new: the usual case), else through `rowMemory` too.
        let bitRows = writer.manifests.map { $0.codec.dtype == .bfloat16 }
        var batchStart = 0
        while batchStart < needed.count {
            let batch = Array(needed[batchStart..<min(batchStart + batchSize, needed.count)])
            let rows = batch.map { keep[$0] }
            let consecutive = zip(rows, rows.dropFirst()).allSatisfy { $1 == $0 + 1 }
            let input: UnsafeBufferPointer<Float>
            switch segment.pixels {
            case .preprocessed(let tensor) where consecutive:
                // Images next to each other in the segment's tensor (every image new, the usual
                // case) are read where they lie.
                input = UnsafeBufferPointer(rebasing: tensor[(rows[0] * per)..<((rows[0] + rows.count) * per)])
            case .preprocessed(let tensor):
                let buffer = batchMemory.prefix(rows.count * per)
                for (b, row) in rows.enumerated() {
                    (buffer.baseAddress! + b * per).update(from: tensor.baseAddress! + row * per, count: per)
                }
                input = UnsafeBufferPointer(buffer)
            case .idx(let images, let first):
                // Preprocessed here, a batch at a time: the batch (MB) stays in cache and in memory
                // the process already has, where a 224×224 segment's tensor was 300 MB of fresh pages.
                let buffer = batchMemory.prefix(rows.count * per)
                if consecutive {
                    preprocessing.write(images, range: (first + rows[0])..<(first + rows[0] + rows.count), parallelism: options.parallelism,
                                        into: buffer)
                } else {
                    for (b, row) in rows.enumerated() {
                        preprocessing.write(images, range: (first + row)..<(first + row + 1), parallelism: options.parallelism,
                                            into: UnsafeMutableBufferPointer(rebasing: buffer[(b * per)..<((b + 1) * per)]))
                    }
                }
                input = UnsafeBufferPointer(buffer)
            }
            let blocks = writer.manifests.indices.map { bitRows[$0] ? nil : chunk.rowBlock(featureSet: $0, examples: batch) }
            let outputs = writer.manifests.indices.map { f in
                blocks[f] ?? rowMemory[f].prefix(batchSize * writer.manifests[f].width)
            }
            _ = try network.pooledFeatures(input, count: batch.count, height: preprocessing.height, width: preprocessing.width,
                                           targetSizes: writer.manifests.map(\.targetSize), parallelism: options.parallelism, into: outputs)
            for (f, manifest) in writer.manifests.enumerated() where blocks[f] == nil {
                if bitRows[f], chunk.setBFloat16Rows(featureSet: f, examples: batch, outputs[f].baseAddress!, rowStride: manifest.width,
                                                      parallelism: options.parallelism) {
                    continue
                }
                for (b, k) in batch.enumerated() {
                    chunk.setRow(featureSet: f, example: k, UnsafeBufferPointer(rebasing: outputs[f][(b * manifest.width)..<((b + 1) * manifest.width)]))
                }
            }
            batchStart += batch.count
        }
        let records = keep.map { ExampleRecord(name: segment.names[$0], source: segment.sources[$0]) }
        let append = DatasetAppend(dataset: options.dataset, classNames: classNames, split: options.split,
                                   items: keep.map { (segment.ids[$0], segment.labels[$0]) })
        // Nothing is stored from a file that turns out truncated or corrupt further on.
        try fileCheck?.wait()
        try chunk.commit(records: records, datasets: [append])
        return (needed.count, keep.count - needed.count)
    }
}

/// A segment of images with their ids, labels and names.
struct ImageSegment {
    /// Where the segment's network inputs come from.
    enum Pixels {
        /// Decoded and preprocessed, `[ids.count, 3, height, width]`, in the memory passed to
        /// ``ImageReader/segment(_:preprocessing:parallelism:into:)`` (an image folder's files).
        case preprocessed(UnsafeBufferPointer<Float>)
        /// Images `first ..< first + ids.count` of an IDX stack, preprocessed by the ingest a batch at a time.
        case idx(GrayscaleImages, first: Int)
    }

    var pixels: Pixels
    var ids: [ExampleID]
    var labels: [Int]
    var names: [String]
    var sources: [String]
    var skipped: [IngestSummary.SkippedInput]
}

/// Uniform access to IDX stacks and image folders, segment by segment.
struct ImageReader {
    let path: String
    let count: Int
    let classNames: [String]
    let maxLabel: Int?
    let sourceWidth: Int
    let sourceHeight: Int
    let scanSkipped: [IngestSummary.SkippedInput]
    private let idx: (images: GrayscaleImages, labels: [UInt8]?)?
    private let idxLabelsPath: String?
    private let folder: ImageFolder?
    /// The check of the rest of an IDX file read only as far as `limit` images, on a thread of its
    /// own (`checkInBackground`); the ingest waits for it before its first commit.
    let fileCheck: BackgroundCheck?

    /// - Parameters:
    ///   - idxVerified: an IDX file's bytes are known good (the artefact cache checked its
    ///     SHA-256): only the first `limit` images are read.
    ///   - checkInBackground: an IDX file is read as far as `limit` images and the whole file is
    ///     checked (``IDX/checkImages(path:)``) meanwhile; otherwise it is read and checked whole
    ///     first. A pipe is always read whole: it cannot be read twice.
    init(_ source: ImageSource, limit: Int?, idxVerified: Bool = false, checkInBackground: Bool = false) throws {
        switch source {
        case .idx(let imagesPath, let labelsPath):
            path = imagesPath
            let prefixOnly = limit != nil && (idxVerified || (checkInBackground && InputFile.isRegularFile(imagesPath)))
            let (images, fileCount) = try IDX.readImages(path: imagesPath, limit: prefixOnly ? limit : nil)
            fileCheck = prefixOnly && !idxVerified ? BackgroundCheck { try IDX.checkImages(path: imagesPath) } : nil
            // Every label is read (the class names follow the largest), and checked against the file's count.
            let labels = try labelsPath.map { try IDX.readLabels(path: $0) }
            if let labels, labels.count != fileCount {
                throw IngestError.badLabels(file: labelsPath!, reason: "\(labels.count) labels for the \(fileCount) images of \(imagesPath)")
            }
            idx = (images, labels)
            idxLabelsPath = labelsPath
            folder = nil
            count = min(images.count, limit ?? images.count)
            maxLabel = labels.flatMap { $0.max() }.map(Int.init)
            let isFashion = imagesPath.contains("fashion")
            classNames = labels == nil ? [] : (isFashion ? IDX.fashionMNISTClassNames : (0...(maxLabel ?? 0)).map(String.init))
            sourceWidth = images.width
            sourceHeight = images.height
            scanSkipped = []
        case .folder(let root):
            path = root
            fileCheck = nil
            let scanned = try ImageFolder.scan(root)
            folder = scanned
            idx = nil
            idxLabelsPath = nil
            count = min(scanned.items.count, limit ?? scanned.items.count)
            classNames = scanned.classNames
            maxLabel = scanned.items.map(\.label).max()
            scanSkipped = scanned.skipped.map { IngestSummary.SkippedInput(path: $0.path, reason: $0.reason.description) }
            // The input size follows the first image (the default is 224 unless images are tiny).
            if let first = scanned.items.first, let image = try? scanned.decode(first) {
                sourceWidth = image.width
                sourceHeight = image.height
            } else {
                sourceWidth = 224
                sourceHeight = 224
            }
        }
    }

    /// The plan of a sharded ingest of this source: its files (IDX files by name and size, an
    /// image folder by its files' paths inside it), the options that change what is stored, and
    /// the feature sets.
    func plan(options: ImageIngestOptions, inputSize: Int, classNames: [String], writer: FeatureSetWriter) -> IngestPlan {
        var inputs: [PlannedInput]
        if let folder {
            inputs = folder.items.prefix(count).map { PlannedInput(name: String($0.path.dropFirst(folder.root.count).drop { $0 == "/" })) }
        } else {
            inputs = [PlannedInput(path)] + (idxLabelsPath.map { [PlannedInput($0)] } ?? [])
        }
        return IngestPlan(kind: folder == nil ? "idx" : "folder", inputs: inputs, inputCount: count,
                          options: ["inputSize": "\(inputSize)"],
                          dataset: options.dataset, split: options.split, classNames: classNames, featureSets: writer.featureSetIDs)
    }

    /// The files of `range` that do not decode (none for IDX stacks), as `segment` would skip
    /// them; the files are decoded on `parallelism`'s threads.
    func undecodable(_ range: Range<Int>, parallelism: Parallelism) -> [IngestSummary.SkippedInput] {
        guard let folder else { return [] }
        let items = Array(folder.items[range])
        // `try?`: the body cannot throw, so neither can the map.
        let problems = (try? Parallel.map(items, parallelism: parallelism) { item -> IngestSummary.SkippedInput? in
            do {
                _ = try folder.decode(item)
                return nil
            } catch {
                return .init(path: item.path, reason: Self.skipReason(error))
            }
        }) ?? []
        return problems.compactMap { $0 }
    }

    /// Why a file that failed to decode is skipped, in the words of the scan's reasons.
    static func skipReason(_ error: any Error) -> String {
        (error as? ImageInputError).map { ImageFolder.skipReason($0).description } ?? "\(error)"
    }

    /// Images `range`, identified; a folder's files decoded and preprocessed on `parallelism`'s
    /// threads (each file by one worker, straight into its place in the segment's tensor in
    /// `memory`), and files that do not decode skipped and reported, in the source's order. An IDX
    /// stack's images are left for the ingest to preprocess batch by batch.
    func segment(_ range: Range<Int>, preprocessing: Preprocessing, parallelism: Parallelism, into memory: ReusableFloats) -> ImageSegment {
        let per = preprocessing.valuesPerImage
        if let (images, labels) = idx {
            let size = images.width * images.height
            let ids = images.pixels.withUnsafeBufferPointer { pixels in
                range.map { i in
                    ImageIngest.exampleID(pixels: UnsafeBufferPointer(rebasing: pixels[(i * size)..<((i + 1) * size)]),
                                          width: images.width, height: images.height, channels: 1)
                }
            }
            return ImageSegment(pixels: .idx(images, first: range.lowerBound), ids: ids,
                                labels: range.map { i in labels.map { Int($0[i]) } ?? 0 },
                                names: range.map { "\((path as NSString).lastPathComponent)#\($0)" },
                                sources: range.map { _ in path }, skipped: [])
        }
        let tensor = memory.prefix(range.count * per)
        let folder = self.folder!
        let items = Array(folder.items[range])
        let base = UnsafeSendable(tensor.baseAddress)
        // `try?`: the body cannot throw, so neither can the map.
        let outcomes = (try? Parallel.map(count: items.count, parallelism: parallelism) { k -> Result<ExampleID, SkippedFile> in
            do {
                let image = try folder.decode(items[k], alpha: preprocessing.alpha)
                preprocessing.write(image, to: UnsafeMutableBufferPointer(start: base.value! + k * per, count: per))
                return .success(image.pixels.withUnsafeBufferPointer {
                    ImageIngest.exampleID(pixels: $0, width: image.width, height: image.height, channels: image.channels)
                })
            } catch {
                return .failure(SkippedFile(input: .init(path: items[k].path, reason: Self.skipReason(error))))
            }
        }) ?? []
        // Close the gaps the skipped files left (blocks only move down, so never onto themselves).
        var kept = 0
        for (k, outcome) in outcomes.enumerated() {
            guard case .success = outcome else { continue }
            if kept != k { (base.value! + kept * per).update(from: base.value! + k * per, count: per) }
            kept += 1
        }
        var segment = ImageSegment(pixels: .preprocessed(UnsafeBufferPointer(rebasing: tensor[0..<(kept * per)])), ids: [], labels: [],
                                   names: [], sources: [], skipped: [])
        for (item, outcome) in zip(items, outcomes) {
            switch outcome {
            case .success(let id):
                segment.ids.append(id)
                segment.labels.append(item.label)
                segment.names.append(String(item.path.dropFirst(folder.root.count).drop { $0 == "/" }))
                segment.sources.append(item.path)
            case .failure(let skipped):
                segment.skipped.append(skipped.input)
            }
        }
        return segment
    }
}

/// A check that runs on a thread of its own from its creation; ``wait()`` waits for it and
/// rethrows its error (every call, once it is done).
final class BackgroundCheck: Sendable {
    private let group = DispatchGroup()
    private let failure = Mutex<(any Error)?>(nil)

    init(_ check: @escaping @Sendable () throws -> Void) {
        group.enter()
        DispatchQueue.global().async { [self] in
            do { try check() } catch { failure.withLock { $0 = error } }
            group.leave()
        }
    }

    func wait() throws {
        group.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

/// A file a segment leaves out, as the error side of a worker's result.
struct SkippedFile: Error {
    var input: IngestSummary.SkippedInput
}
