import Foundation
import H2TBackbone
import H2TCore
import H2TStore

/// Runs a head on new images: the backbone runs only up to the deepest tap the head reads (early
/// exit), only the taps the head reads are delivered, and only the kept pooled features are
/// computed, each with exactly the arithmetic of `Head2ToePooling.pool` (same summation order),
/// so they equal what ingest would have stored.
public final class ImagePredictor: Sendable {
    /// The head.
    public let head: HeadRecord
    /// The network (its architecture must be the head's backbone architecture).
    public let network: BackboneNetwork
    /// Input size the head's feature set was computed at.
    public let inputHeight: Int, inputWidth: Int
    /// The deepest tap the head reads, and how many taps the full network has.
    public let deepestTap: String
    public let deepestTapOrder: Int
    public let tapCount: Int
    /// The preprocessing recorded with the backbone at ingest (resize, grayscale, normalisation),
    /// or `nil` when none was recorded (then images must already have the input size).
    public let preprocessing: Preprocessing?
    /// Accept images of any size (resized by `preprocessing`) even when the head records the size
    /// of its training images.
    public let allowAnySize: Bool
    let pooling: Head2ToePooling
    let taps: [BackboneTap]
    let store: FeatureStore

    /// Prepares `head` (with its feature set manifest and backbone manifest from `registry`'s store)
    /// on `network`. Fails when the head's backbone is not a built-in architecture, when `network`
    /// is another architecture, or when the manifest's taps do not match the network's at any
    /// input size.
    public init(head: HeadRecord, registry: Registry, network: BackboneNetwork, allowAnySize: Bool = false) throws {
        let info = try registry.featureSet(of: head)
        try registry.checkLayout(head, info)
        let backbone = try registry.store.backbone(info.manifest.backbone)
        guard let architecture = BackboneArchitecture(rawValue: backbone.architecture) else {
            throw RegistryError.invalidInput("head \(head.reference) reads features of backbone '\(backbone.architecture)', which h2t-store cannot run; compute its activations where the backbone lives, ingest them, and predict on stored examples (--dataset/--split or --examples)")
        }
        guard architecture == network.architecture else {
            throw RegistryError.invalidInput("head \(head.reference) needs backbone \(architecture.rawValue), not \(network.architecture.rawValue)")
        }
        // The input size is the recorded preprocessing's, or else the one at which the network's
        // taps reproduce the manifest's shapes.
        let recorded = try? CanonicalJSON.decode(Preprocessing.self, from: try CanonicalJSON.encode(backbone.preprocessing))
        guard let stem = backbone.taps.first, stem.shape.count == 3 else {
            throw RegistryError.invalidInput("backbone \(info.manifest.backbone.prefix(12)) has no spatial first tap to infer the input size from")
        }
        var found: (Int, Int)?
        let heights = recorded.map { [$0.height] } ?? [2 * stem.shape[1], 2 * stem.shape[1] - 1]
        let widths = recorded.map { [$0.width] } ?? [2 * stem.shape[2], 2 * stem.shape[2] - 1]
        search: for h in heights {
            for w in widths {
                let candidate = network.taps(height: h, width: w)
                if candidate.map(\.name) == backbone.taps.map(\.name), candidate.map(\.shape) == backbone.taps.map(\.shape) {
                    found = (h, w)
                    break search
                }
            }
        }
        guard let (height, width) = found else {
            throw RegistryError.invalidInput("the taps of backbone \(info.manifest.backbone.prefix(12)) do not match \(network.architecture.rawValue) at any input size")
        }
        self.head = head
        self.network = network
        store = registry.store
        preprocessing = recorded
        self.allowAnySize = allowAnySize
        inputHeight = height
        inputWidth = width
        taps = network.taps(height: height, width: width)
        tapCount = taps.count
        pooling = try info.manifest.pooling()
        let deepest = head.selection.max { $0.order < $1.order }!
        deepestTap = deepest.tap
        deepestTapOrder = deepest.order
    }

    /// Converts decoded images into a normalised `count × 3 × H × W` batch, exactly as ingest did:
    /// with the recorded preprocessing (resize, gray to RGB, normalisation) when there is one.
    ///
    /// Refused, naming the image: a channel count other than 1 or 3; a size other than the training
    /// images' when the head records it (unless `allowAnySize`: resizing other sizes gives features
    /// of another scale than the head was trained on); without recorded preprocessing, a size other
    /// than the network input (nothing says how to resize).
    public func batch(_ images: [DecodedImage], names: [String], parallelism: Parallelism = .default) throws -> [Float] {
        for (n, image) in images.enumerated() {
            let name = n < names.count ? names[n] : "image \(n)"
            guard image.channels == 1 || image.channels == 3 else {
                throw RegistryError.invalidInput("\(name): \(image.channels) channels; head \(head.reference) takes grayscale (1) or RGB (3) images")
            }
            if preprocessing == nil {
                guard image.height == inputHeight, image.width == inputWidth else {
                    throw RegistryError.invalidInput("\(name): image is \(image.width)×\(image.height); head \(head.reference) takes \(inputWidth)×\(inputHeight) images (the size its feature set was computed at)")
                }
            } else if let source = head.lineage.sourceImage, !allowAnySize, image.height != source.height || image.width != source.width {
                throw RegistryError.invalidInput("\(name): image is \(image.width)×\(image.height); head \(head.reference) was trained on \(source.width)×\(source.height) images (resized to \(inputWidth)×\(inputHeight)); resize them first, or accept any size (--any-size)")
            }
        }
        if let preprocessing { return preprocessing.tensor(images, parallelism: parallelism) }
        let norm = network.architecture.normalisation
        let plane = inputHeight * inputWidth
        var out = [Float](repeating: 0, count: images.count * 3 * plane)
        for (n, image) in images.enumerated() {
            for c in 0..<3 {
                let source = image.channels == 1 ? 0 : c
                let scale = 1 / (255 * norm.std[c]), shift = norm.mean[c] / norm.std[c]
                let base = (n * 3 + c) * plane
                for p in 0..<plane { out[base + p] = Float(image.pixels[p * image.channels + source]) * scale - shift }
            }
        }
        return out
    }

    /// The head's selected features (raw pooled values, selected-column order) of a preprocessed batch.
    public func selectedFeatures(_ batch: [Float], count: Int, parallelism: Parallelism = .default) throws -> [Float] {
        let d = head.inputCount
        var out = [Float](repeating: 0, count: count * d)
        // Where each selected tap's kept features start in a row, by tap order.
        var plan: [Int: (offset: Int, indices: [Int], width: Int)] = [:]
        var offset = 0
        for tap in head.selection {
            plan[tap.order] = (offset, tap.indices, tap.width)
            offset += tap.indices.count
        }
        let frozen = plan, rule = pooling
        try out.withUnsafeMutableBufferPointer { buffer in
            let target = UnsafeSendable(buffer.baseAddress!)
            try network.run(batch, count: count, height: inputHeight, width: inputWidth,
                            taps: .only(head.selection.map(\.tap)), parallelism: parallelism) { activations in
                guard let entry = frozen[activations.tap.order] else { return }
                let shape = activations.tap.shape, n = activations.count
                func keep(_ pooled: UnsafePointer<Float>) {
                    for i in 0..<n {
                        let row = target.value + (activations.firstExample + i) * d + entry.offset, values = pooled + i * entry.width
                        for (j, index) in entry.indices.enumerated() { row[j] = values[index] }
                    }
                }
                guard shape.count == 3 else { return keep(activations.values.baseAddress!) }
                // The slice's tap pooled where the network wrote it (channel-major, on the vector
                // kernels; the same values as pooling each example alone), then the kept columns.
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n * entry.width) { pooled in
                    rule.poolChannelMajor(activations.values.baseAddress!, shape: shape, examples: n, into: pooled.baseAddress!,
                                          rowStride: entry.width)
                    keep(pooled.baseAddress!)
                }
            }
        }
        return out
    }

    /// Predictions for decoded images, every one through the backbone.
    public func predict(_ images: [DecodedImage], names: [String], batchSize: Int = 256, parallelism: Parallelism = .default) throws -> Predictions {
        try predict(images, names: names, batchSize: batchSize, parallelism: parallelism, reuseStored: false).predictions
    }

    /// Predictions for decoded images. With `reuseStored`, an image whose pixels were ingested
    /// into the head's feature set (the same content id ingest gives it) skips the backbone: its
    /// selected columns are read from the store, so it gets exactly the prediction of
    /// `Registry.predict(_:examples:)` on that example, from the stored values the head was
    /// trained on (the codec's precision, e.g. bfloat16); the others run through the backbone.
    /// Returns how many came from the store.
    public func predict(_ images: [DecodedImage], names: [String], batchSize: Int = 256, parallelism: Parallelism = .default,
                        reuseStored: Bool) throws -> (predictions: Predictions, fromStore: Int) {
        guard names.count == images.count else {
            throw RegistryError.invalidInput("\(images.count) images but \(names.count) names")
        }
        guard batchSize > 0 else { throw RegistryError.invalidInput("batch size must be positive, got \(batchSize)") }
        let applier = try HeadApplier(head: head)
        let d = head.inputCount
        var out = Predictions(classNames: head.classNames, inputs: [], labels: [], probabilities: [])
        var fromStore = 0
        var first = 0
        // One batch at a time, so memory stays bounded by the batch whatever the number of images.
        while first < images.count {
            let range = first..<min(first + batchSize, images.count)
            var features = [Float](repeating: 0, count: range.count * d)
            var compute = Array(range)
            if reuseStored {
                let ids = range.map { i in
                    images[i].pixels.withUnsafeBufferPointer {
                        ExampleID(imagePixels: $0, width: images[i].width, height: images[i].height, channels: images[i].channels)
                    }
                }
                let missing = try store.missing(ids, in: head.lineage.featureSet)
                let stored = range.indices.filter { !missing[$0 - range.lowerBound] }
                if !stored.isEmpty {
                    let values = try store.read(featureSet: head.lineage.featureSet, examples: stored.map { ids[$0 - range.lowerBound] },
                                                columns: head.selectedIndices).values
                    for (row, i) in stored.enumerated() {
                        let at = (i - range.lowerBound) * d
                        features.replaceSubrange(at..<(at + d), with: values[(row * d)..<((row + 1) * d)])
                    }
                }
                compute = range.filter { missing[$0 - range.lowerBound] }
                fromStore += stored.count
            }
            if !compute.isEmpty {
                let input = try batch(compute.map { images[$0] }, names: compute.map { names[$0] }, parallelism: parallelism)
                let computed = try selectedFeatures(input, count: compute.count, parallelism: parallelism)
                for (row, i) in compute.enumerated() {
                    let at = (i - range.lowerBound) * d
                    features.replaceSubrange(at..<(at + d), with: computed[(row * d)..<((row + 1) * d)])
                }
            }
            let part = try parallelism.withBLAS { try applier.apply(features, rows: range.count, inputs: Array(names[range]), parallelism: parallelism) }
            out.append(part)
            first = range.upperBound
        }
        return (out, fromStore)
    }
}

