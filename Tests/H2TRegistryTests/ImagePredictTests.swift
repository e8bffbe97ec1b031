import Foundation
import H2TBackbone
import H2TCore
import H2TPipeline
import H2TRegistry
import H2TStore
import Testing

/// Needs the pinned MobileNetV2 weights (tools/fetch-artifacts); skipped without them.
@Suite("Predict on new images", .enabled(if: ArtifactCache().isPresent(.mobilenetV2), "MobileNetV2 weights not in the artefact cache"))
struct ImagePredictTests {
    /// A store with MobileNetV2 features of a few 32×32 images, ingested through FeatureSetWriter
    /// exactly as an image ingest does, and a head reading three taps up to the middle of the network.
    struct Setup {
        let directory = TemporaryDirectory(prefix: "h2t-reg")
        let store: FeatureStore
        let registry: Registry
        let network: BackboneNetwork
        let head: HeadRecord
        let images: [DecodedImage]
        let ids: [ExampleID]

        /// `contentIDs`: store the images under their content ids (as image ingest does) instead of names.
        init(contentIDs: Bool = false) throws {
            network = try BackboneNetwork.load(.mobileNetV2, from: ArtifactCache())
            store = try FeatureStore(path: directory.file("store"))
            registry = try Registry(store: store)
            let taps = network.taps(height: 32, width: 32)
            let backbone = BackboneManifest(architecture: "mobilenet_v2", weightsSHA256: Artifact.mobilenetV2.pin.sha256,
                                            taps: taps.map { TapDescriptor(name: $0.name, shape: $0.shape) })
            let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: [64], codec: .lossless, columnBlock: 512)
            var random = SplitMix64(seed: 9)
            var images: [DecodedImage] = []
            for i in 0..<5 {
                let channels = i == 4 ? 1 : 3
                images.append(DecodedImage(width: 32, height: 32, channels: channels,
                                           pixels: (0..<(32 * 32 * channels)).map { _ in UInt8(random.next() % 256) }))
            }
            self.images = images
            ids = contentIDs
                ? images.map { image in image.pixels.withUnsafeBufferPointer { ExampleID(imagePixels: $0, width: 32, height: 32, channels: image.channels) } }
                : (0..<images.count).map { ExampleID(name: "image-\($0)") }
            let manifest = writer.manifests[0]
            // A synthetic head on three taps; the deepest (order 30) is mid-network.
            var selection: [TapIndices] = []
            for order in [1, 12, 30] {
                let tap = manifest.taps[order]
                selection.append(TapIndices(tap: tap.name, order: order, offset: tap.offset, width: tap.width,
                                            indices: Array(stride(from: order % 3, to: tap.width, by: max(1, tap.width / 7)))))
            }
            let d = selection.reduce(0) { $0 + $1.indices.count }
            let draft = HeadDraft(
                task: "shapes", classNames: ["a", "b", "c"], selection: selection,
                weights: (0..<(d * 3)).map { _ in random.uniform() - 0.5 }, bias: [0.1, -0.2, 0.05],
                hyperParameters: HyperParameters(method: .head2toe, targetSize: 64),
                metrics: HeadMetrics(head: MethodScore(method: .head2toe, featureSet: writer.featureSetIDs[0], keptFeatures: d, cvAccuracy: 0.5, testAccuracy: nil),
                                     linearProbe: nil, allFeatures: nil),
                lineage: HeadLineage(featureSet: writer.featureSetIDs[0], backbone: writer.backboneID, architecture: "mobilenet_v2", dataset: "imgs",
                                     train: SplitLineage(split: "all", digest: "", count: 5), test: nil, seed: 0))
            head = try registry.register(draft)
            // Ingest: the same preprocessing, every tap pooled by the shared rule.
            let predictor = try ImagePredictor(head: head, registry: registry, network: network)
            let batch = try predictor.batch(images, names: [])
            let chunk = try writer.chunk(examples: ids)
            let order = Dictionary(uniqueKeysWithValues: taps.map { ($0.name, $0.order) })
            let box = ChunkBox(chunk)
            try network.run(batch, count: images.count, height: 32, width: 32, parallelism: .serial) { activations in
                for i in 0..<activations.count {
                    activations.withExample(i) { box.chunk.add(tap: order[activations.tap.name]!, example: activations.firstExample + i, activation: $0) }
                }
            }
            try chunk.commit(records: ids.indices.map { ExampleRecord(name: "image-\($0)", source: "test") },
                             datasets: [DatasetAppend(dataset: "imgs", classNames: ["a", "b", "c"], split: "all", items: ids.map { ($0, 0) })])
        }
    }

    @Test func selectedFeaturesEqualTheIngestedOnesAndPredictionsAgree() throws {
        let s = try Setup()
        let predictor = try ImagePredictor(head: s.head, registry: s.registry, network: s.network)
        #expect(predictor.inputHeight == 32 && predictor.inputWidth == 32)
        #expect(predictor.deepestTapOrder == 30 && predictor.tapCount == 99, "early exit at order 30 of 99 taps")
        // Same batch and thread split as the ingest: the network's arithmetic is identical, so the
        // per-cell pooling must reproduce Head2ToePooling.pool bit for bit.
        let computed = try predictor.selectedFeatures(try predictor.batch(s.images, names: []), count: s.images.count, parallelism: .serial)
        let stored = try s.store.read(featureSet: s.head.lineage.featureSet, examples: s.ids, columns: s.head.selectedIndices)
        #expect(computed == stored.values, "the tap pooled in place reproduces Head2ToePooling.pool bit for bit")
        // Other batchings change the network's rounding in the last bits only.
        let fromImages = try predictor.predict(s.images, names: s.ids.map(\.hex), batchSize: 2)
        let fromStore = try s.registry.predict(s.head, examples: s.ids)
        #expect(fromImages.labels == fromStore.labels)
        #expect(zip(fromImages.probabilities, fromStore.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test("images already ingested into the head's feature set are read from the store, the rest computed")
    func storedImagesAreReadNotRecomputed() throws {
        let s = try Setup(contentIDs: true)
        let predictor = try ImagePredictor(head: s.head, registry: s.registry, network: s.network)
        var random = SplitMix64(seed: 77)
        let unseen = DecodedImage(width: 32, height: 32, channels: 3, pixels: (0..<(32 * 32 * 3)).map { _ in UInt8(random.next() % 256) })
        let images = [s.images[3], unseen, s.images[0], s.images[4]]
        let names = ["three", "unseen", "zero", "four"]
        let (reused, fromStore) = try predictor.predict(images, names: names, batchSize: 2, reuseStored: true)
        #expect(fromStore == 3)
        #expect(reused.inputs == names)
        // The stored ones get exactly the prediction of predict on the stored examples.
        let stored = try s.registry.predict(s.head, examples: [s.ids[3], s.ids[0], s.ids[4]])
        #expect([reused.labels[0], reused.labels[2], reused.labels[3]] == stored.labels)
        let k = s.head.classNames.count
        let picked = [0, 2, 3].flatMap { Array(reused.probabilities[($0 * k)..<(($0 + 1) * k)]) }
        #expect(zip(picked, stored.probabilities).allSatisfy { abs($0 - $1) <= 1e-6 })
        // The unseen one, and everything with reuse off, run through the backbone.
        let (recomputed, none) = try predictor.predict(images, names: names, batchSize: 2, reuseStored: false)
        #expect(none == 0)
        #expect(recomputed.labels == reused.labels)
        #expect(zip(recomputed.probabilities, reused.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
        let alone = try predictor.predict([unseen], names: ["unseen"])
        #expect(zip(alone.probabilities, reused.probabilities[k..<(2 * k)]).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func imagesOfTheWrongSizeOrChannelsAreRefused() throws {
        let s = try Setup()
        let predictor = try ImagePredictor(head: s.head, registry: s.registry, network: s.network)
        let small = DecodedImage(width: 28, height: 28, channels: 1, pixels: [UInt8](repeating: 7, count: 28 * 28))
        #expect(throws: RegistryError.invalidInput("small.png: image is 28×28; head shapes@v1 takes 32×32 images (the size its feature set was computed at)")) {
            try predictor.predict([s.images[0], small], names: ["ok.png", "small.png"])
        }
        let rgba = DecodedImage(width: 32, height: 32, channels: 4, pixels: [UInt8](repeating: 7, count: 32 * 32 * 4))
        #expect(throws: RegistryError.invalidInput("rgba.png: 4 channels; head shapes@v1 takes grayscale (1) or RGB (3) images")) {
            try predictor.predict([rgba], names: ["rgba.png"])
        }
        // A head on an external backbone cannot run on images at all.
        let fixture = try RegistryFixture()
        let external = try fixture.register("toys")
        #expect(throws: RegistryError.self) { try ImagePredictor(head: external, registry: fixture.registry, network: s.network) }
    }
}

extension ImagePredictTests {
    /// Writes an IDX images file (unsigned bytes, count × rows × columns).
    static func writeIDX(_ path: String, count: Int, size: Int, pixels: [UInt8]) throws {
        var bytes: [UInt8] = [0, 0, 8, 3]
        for dim in [count, size, size] { bytes += [UInt8(dim >> 24), UInt8((dim >> 16) & 0xFF), UInt8((dim >> 8) & 0xFF), UInt8(dim & 0xFF)] }
        try Data(bytes + pixels).write(to: URL(fileURLWithPath: path))
    }

    @Test func cliPredictsAnIDXFileAndRefusesTheWrongSize() throws {
        try #require(FileManager.default.isExecutableFile(atPath: CLI.binary), "build h2t-store first")
        let s = try Setup()
        let gray = s.images[4]
        let idx = s.directory.file("images.idx")
        try Self.writeIDX(idx, count: 2, size: 32, pixels: gray.pixels + gray.pixels)
        let result = try CLI.run(["predict", "shapes", "--images", idx, "--store", s.store.path, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try CLI.validate(result.stdout, schema: "predict-output", in: s.directory).status == 0)
        let expected = try s.registry.predict(s.head, examples: [s.ids[4]])
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let rows = json?["predictions"] as? [[String: Any]] ?? []
        #expect(rows.count == 2)
        #expect(rows.first?["label_index"] as? Int == expected.labels[0])
        #expect(json?["from_store"] as? Int == 0, "stored under names, not content ids: computed")
        let csv = try CLI.run(["predict", "shapes", "--images", idx, "--store", s.store.path])
        #expect(csv.stdout.hasPrefix("input,label,p_a,p_b,p_c\nimages.idx#0,"))
        let small = s.directory.file("small.idx")
        try Self.writeIDX(small, count: 1, size: 28, pixels: [UInt8](repeating: 3, count: 28 * 28))
        let refused = try CLI.run(["predict", "shapes", "--images", small, "--store", s.store.path])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("small.idx#0: image is 28×28; head shapes@v1 takes 32×32 images"))
    }
}

extension ImagePredictTests {
    /// A folder of more images than `predict --images` decodes at once (256): every file gets the
    /// prediction of its image, in name order, and an undecodable file in the second batch fails
    /// the command naming it, before anything is printed.
    @Test func cliPredictsAFolderBatchByBatch() throws {
        try #require(FileManager.default.isExecutableFile(atPath: CLI.binary), "build h2t-store first")
        let s = try Setup()
        let folder = s.directory.file("photos")
        let count = 300
        let raw = s.directory.file("pixels.bin")
        try Data(s.images.flatMap(\.pixels)).write(to: URL(fileURLWithPath: raw))
        let channels = s.images.map { String($0.channels) }.joined(separator: ",")
        let script = """
            import os, struct, zlib
            raw = open('\(raw)', 'rb').read(); channels = [\(channels)]
            offsets = [0]
            for c in channels: offsets.append(offsets[-1] + 32 * 32 * c)
            def png(pixels, c):
                rows = b''.join(b'\\x00' + pixels[y * 32 * c:(y + 1) * 32 * c] for y in range(32))
                chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
                return (b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 32, 32, 8, 0 if c == 1 else 2, 0, 0, 0))
                        + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
            os.makedirs('\(folder)', exist_ok=True)
            for i in range(\(count)):
                k = i % len(channels)
                open(f'\(folder)/{i:04d}.png', 'wb').write(png(raw[offsets[k]:offsets[k + 1]], channels[k]))
            """
        let made = try CLI.python(["-c", script])
        #expect(made.status == 0, "\(made.stderr)")
        let predictor = try ImagePredictor(head: s.head, registry: s.registry, network: s.network)
        let expected = try predictor.predict(s.images, names: s.images.indices.map { "\($0)" }).labels
        let result = try CLI.run(["predict", "shapes", "--images", folder, "--store", s.store.path, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let rows = json?["predictions"] as? [[String: Any]] ?? []
        #expect(rows.map { $0["input"] as? String ?? "" } == (0..<count).map { String(format: "%04d.png", $0) })
        #expect(rows.map { $0["label_index"] as? Int ?? -1 } == (0..<count).map { expected[$0 % expected.count] })
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0]).write(to: URL(fileURLWithPath: folder + "/0290-broken.png"))
        let broken = try CLI.run(["predict", "shapes", "--images", folder, "--store", s.store.path, "--json"])
        #expect(broken.status != 0 && broken.stdout.isEmpty, "\(broken.stdout.prefix(200))")
        #expect(broken.stderr.contains(folder + "/0290-broken.png: "), "\(broken.stderr)")
    }
}

/// Lets the single-threaded run callback reach the chunk.
final class ChunkBox: @unchecked Sendable {
    // @unchecked Sendable: used with threads: 1, so only one thread touches the chunk.
    let chunk: FeatureChunk
    init(_ chunk: FeatureChunk) { self.chunk = chunk }
}

/// With the preprocessing an image ingest records (resize, gray to RGB, normalisation), new images
/// are preprocessed exactly as ingest did, and the size of the training images is enforced.
@Suite("Predict on new images with recorded preprocessing", .enabled(if: ArtifactCache().isPresent(.mobilenetV2), "MobileNetV2 weights not in the artefact cache"))
struct RecordedPreprocessingTests {
    @Test func resizesLikeIngestAndChecksTheTrainingImageSize() throws {
        let directory = TemporaryDirectory(prefix: "h2t-reg")
        let network = try BackboneNetwork.load(.mobileNetV2, from: ArtifactCache())
        let store = try FeatureStore(path: directory.file("store"))
        let registry = try Registry(store: store)
        let preprocessing = Preprocessing(architecture: .mobileNetV2, size: 32)
        let backbone = BackboneManifest(architecture: "mobilenet_v2", weightsSHA256: Artifact.mobilenetV2.pin.sha256,
                                        preprocessing: try JSONValue(encoding: preprocessing),
                                        taps: network.taps(height: 32, width: 32).map { TapDescriptor(name: $0.name, shape: $0.shape) })
        let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: [64], codec: .lossless, columnBlock: 512)
        var random = SplitMix64(seed: 21)
        // 28×28 grayscale sources, as Fashion-MNIST, resized to 32×32 by the recorded rule.
        let images = (0..<3).map { _ in DecodedImage(width: 28, height: 28, channels: 1, pixels: (0..<784).map { _ in UInt8(random.next() % 256) }) }
        let ids = (0..<3).map { ExampleID(name: "gray-\($0)") }
        let manifest = writer.manifests[0]
        let selection = [5, 20].map { order in
            TapIndices(tap: manifest.taps[order].name, order: order, offset: manifest.taps[order].offset, width: manifest.taps[order].width,
                       // Tap 5 is kept whole (pooled by the shared rule, then gathered); tap 20 sparsely (per cell).
                       indices: order == 5 ? Array(0..<manifest.taps[order].width) : Array(stride(from: 1, to: manifest.taps[order].width, by: 5)))
        }
        let d = selection.reduce(0) { $0 + $1.indices.count }
        let head = try registry.register(HeadDraft(
            task: "gray", classNames: ["x", "y"], selection: selection, weights: (0..<(2 * d)).map { _ in random.uniform() - 0.5 }, bias: [0, 0],
            hyperParameters: HyperParameters(method: .head2toe, targetSize: 64),
            metrics: HeadMetrics(head: MethodScore(method: .head2toe, featureSet: writer.featureSetIDs[0], keptFeatures: d, cvAccuracy: 0.5, testAccuracy: nil), linearProbe: nil, allFeatures: nil),
            lineage: HeadLineage(featureSet: writer.featureSetIDs[0], backbone: writer.backboneID, architecture: "mobilenet_v2", dataset: "gray",
                                 train: SplitLineage(split: "all", digest: "", count: 3), test: nil, seed: 0,
                                 sourceImage: SourceImageSize(height: 28, width: 28, channels: 1))))
        // Ingest as ImageIngest does: the recorded preprocessing, every tap pooled by the shared rule.
        let chunk = try writer.chunk(examples: ids)
        let box = ChunkBox(chunk)
        let order = Dictionary(uniqueKeysWithValues: network.taps(height: 32, width: 32).map { ($0.name, $0.order) })
        try network.run(preprocessing.tensor(images), count: 3, height: 32, width: 32, parallelism: .serial) { activations in
            for i in 0..<activations.count {
                activations.withExample(i) { box.chunk.add(tap: order[activations.tap.name]!, example: activations.firstExample + i, activation: $0) }
            }
        }
        try chunk.commit(records: ids.map { ExampleRecord(name: $0.hex, source: "test") },
                         datasets: [DatasetAppend(dataset: "gray", classNames: ["x", "y"], split: "all", items: ids.map { ($0, 0) })])

        let predictor = try ImagePredictor(head: head, registry: registry, network: network)
        #expect(predictor.preprocessing == preprocessing)
        let computed = try predictor.selectedFeatures(try predictor.batch(images, names: []), count: 3, parallelism: .serial)
        #expect(computed == (try store.read(featureSet: writer.featureSetIDs[0], examples: ids, columns: head.selectedIndices)).values)
        let fromImages = try predictor.predict(images, names: ["a", "b", "c"]).probabilities
        #expect(zip(fromImages, try registry.predict(head, examples: ids).probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
        // Another size than the training images' is refused unless asked for.
        let large = DecodedImage(width: 40, height: 40, channels: 3, pixels: [UInt8](repeating: 90, count: 40 * 40 * 3))
        #expect(throws: RegistryError.self) { try predictor.predict([large], names: ["large.png"]) }
        let lenient = try ImagePredictor(head: head, registry: registry, network: network, allowAnySize: true)
        #expect(try lenient.predict([large], names: ["large.png"]).labels.count == 1)
    }
}
