import H2TCore
import Synchronization

/// A pretrained backbone ready to run on batches: its ``NetworkDescription`` executed by a
/// ``NetworkInterpreter`` (batch norm folded into the convolutions at load time, 1×1 and stem
/// convolutions on OpenBLAS, depthwise convolutions on a direct SIMD kernel), every tap handed
/// to the caller as it is produced.
///
/// Input: a preprocessed batch, `count × 3 × height × width` floats (RGB, channel-first, already
/// normalised with `architecture.normalisation`). Any size ≥ 32 works; padding follows the
/// architecture's rule at every size.
///
/// Threads: a run cuts its batch into slices of a few examples (as many as keep the largest
/// activation in cache: 8 at 64×64, 1 at 224×224; ``NetworkInterpreter/sliceExamples(taps:)``)
/// that go through the whole network on a ``Parallelism``'s threads, each with single-threaded
/// GEMMs (faster here than one pass with several OpenBLAS threads: no per-layer
/// synchronisation and the depthwise/pooling work is parallel too; see `tools/bench-backbone.sh`).
/// The slices do not depend on the thread count, so neither do the results; a batch's short last
/// slice is padded to the full slice, so an image's results do not depend on the batch either.
public final class BackboneNetwork: Sendable {
    /// Which backbone this is.
    public let architecture: BackboneArchitecture
    let interpreter: NetworkInterpreter

    /// Builds the network from a checkpoint's state dict, folding each batch norm into its
    /// convolution: `w' = w · γ/√(σ²+ε)`, `b' = β − μ · γ/√(σ²+ε)` (computed in double precision).
    ///
    /// - Throws: `StateDictMismatch` (missing, unexpected or mis-shaped keys, naming the file).
    public init(architecture: BackboneArchitecture, weights: StateDict) throws {
        self.architecture = architecture
        interpreter = try NetworkInterpreter(architecture.networkDescription, weights: weights)
    }

    /// The ordered taps for a `height × width` input (names, shapes, kinds; see ``BackboneTap``).
    public func taps(height: Int, width: Int) -> [BackboneTap] { interpreter.taps(height: height, width: width) }

    /// Runs a batch and hands every selected tap to `body` as soon as it is computed.
    ///
    /// `body` is called once per tap and slice of the batch
    /// (`TapActivations.firstExample ..< firstExample + count`), in tap order within a slice;
    /// with several threads calls for different slices run concurrently, so `body` must be safe to
    /// call from several threads at once (writing to disjoint example rows is). The activations
    /// are valid only during the call: pool or copy them there. Only one tap per worker is kept
    /// beyond what the next layers need, so memory does not grow with the number of taps.
    ///
    /// - Parameters:
    ///   - batch: `count × 3 × height × width` preprocessed floats.
    ///   - taps: which taps to deliver; computation stops after the deepest one (early exit).
    ///   - parallelism: threads sharing the batch's slices.
    public func run(
        _ batch: [Float], count: Int, height: Int, width: Int,
        taps selection: TapSelection = .all, parallelism: Parallelism = .default,
        body: @Sendable (TapActivations) -> Void
    ) throws {
        try interpreter.run(batch, count: count, height: height, width: width, taps: selection, parallelism: parallelism, body: body)
    }

    /// The row layout of pooled features: which columns each selected tap fills for a target size.
    public func pooledLayout(height: Int, width: Int, targetSize: Int, taps selection: TapSelection = .all) throws -> PooledLayout {
        guard targetSize > 0 else { throw NetworkError.invalidInput("target size must be positive") }
        let taps = self.taps(height: height, width: width)
        let (selected, _) = try selection.resolve(taps)
        let rule = Head2ToePooling(targetSize: targetSize)
        var offset = 0
        var columns: [PooledTapColumns] = []
        for tap in taps where selected[tap.order] {
            let w = rule.outputWidth(shape: tap.shape)
            columns.append(PooledTapColumns(name: tap.name, order: tap.order, shape: tap.shape, offset: offset, width: w))
            offset += w
        }
        return PooledLayout(pooling: rule, taps: columns, width: offset)
    }

    /// Pools every selected tap of a batch with Head2Toe's rule for each target size in one pass,
    /// writing into caller-owned buffers (no allocation per batch: the ingest path).
    ///
    /// `outputs[r]` receives `count` rows of `layouts[r].width` floats (row-major), each the
    /// concatenation of the taps' pooled vectors in tap order (not unit-normalised: that is a
    /// training-time step). Returns the layouts.
    @discardableResult
    public func pooledFeatures(
        _ batch: [Float], count: Int, height: Int, width: Int, targetSizes: [Int],
        taps selection: TapSelection = .all, parallelism: Parallelism = .default,
        into outputs: [UnsafeMutableBufferPointer<Float>]
    ) throws -> [PooledLayout] {
        try batch.withUnsafeBufferPointer { batch in
            try pooledFeatures(batch, count: count, height: height, width: width, targetSizes: targetSizes,
                               taps: selection, parallelism: parallelism, into: outputs)
        }
    }

    /// ``pooledFeatures(_:count:height:width:targetSizes:taps:parallelism:into:)`` on a batch the
    /// caller holds in memory of its own (a slice of a larger tensor: no copy).
    @discardableResult
    public func pooledFeatures(
        _ batch: UnsafeBufferPointer<Float>, count: Int, height: Int, width: Int, targetSizes: [Int],
        taps selection: TapSelection = .all, parallelism: Parallelism = .default,
        into outputs: [UnsafeMutableBufferPointer<Float>]
    ) throws -> [PooledLayout] {
        guard !targetSizes.isEmpty else { throw NetworkError.invalidInput("no target size") }
        try interpreter.validate(batch.count, count: count, height: height, width: width)
        let layouts = try targetSizes.map { try pooledLayout(height: height, width: width, targetSize: $0, taps: selection) }
        guard outputs.count == layouts.count,
              zip(outputs, layouts).allSatisfy({ $0.count >= count * $1.width && $0.baseAddress != nil }) else {
            throw NetworkError.invalidInput("need one output buffer of count × width floats per target size")
        }
        // Per rule: (column offset, width) of each tap order, -1 when not selected.
        let tapCount = taps(height: height, width: width).count
        var placement = [[(offset: Int, width: Int)]](repeating: Array(repeating: (-1, 0), count: tapCount), count: layouts.count)
        for (r, layout) in layouts.enumerated() { for c in layout.taps { placement[r][c.order] = (c.offset, c.width) } }
        let frozen = placement
        let rules = layouts.map(\.pooling), rowWidths = layouts.map(\.width)
        let bases = UnsafeSendable(outputs.map { $0.baseAddress! })
        // Each tap is pooled by the worker that computed it, right after its layer, while the slice's
        // activations are still in cache.
        try interpreter.run(batch, count: count, height: height, width: width, taps: selection, parallelism: parallelism) { activations in
            let targets = rules.indices.map { r in
                let (offset, width) = frozen[r][activations.tap.order]
                return (rule: rules[r], rows: bases.value[r] + activations.firstExample * rowWidths[r] + offset,
                        width: width, rowStride: rowWidths[r])
            }
            activations.pool(targets)
        }
        return layouts
    }

    /// Pools every selected tap of a batch for each target size in one pass and returns the
    /// features (one ``PooledFeatures`` per target size, in the order given).
    public func pooledFeatures(
        _ batch: [Float], count: Int, height: Int, width: Int, targetSizes: [Int],
        taps selection: TapSelection = .all, parallelism: Parallelism = .default
    ) throws -> [PooledFeatures] {
        let layouts = try targetSizes.map { try pooledLayout(height: height, width: width, targetSize: $0, taps: selection) }
        let buffers = layouts.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, $0.width * count)) }
        defer { buffers.forEach { $0.deallocate() } }
        try pooledFeatures(batch, count: count, height: height, width: width, targetSizes: targetSizes,
                           taps: selection, parallelism: parallelism, into: buffers)
        return zip(layouts, buffers).map { layout, buffer in
            PooledFeatures(pooling: layout.pooling, taps: layout.taps, count: count, width: layout.width,
                           values: Array(buffer.prefix(layout.width * count)))
        }
    }

    /// ImageNet top-`k` classes for one preprocessed image (`3 × height × width`), best first.
    public func classify(_ image: [Float], height: Int, width: Int, top k: Int = 5, parallelism: Parallelism = .default) throws -> [ImageNetPrediction] {
        try classify(image, count: 1, height: height, width: width, top: k, parallelism: parallelism)[0]
    }

    /// ImageNet top-`k` classes, best first, for each image of a preprocessed batch
    /// (`count × 3 × height × width`), the batch's slices on `parallelism`'s threads.
    public func classify(_ batch: [Float], count: Int, height: Int, width: Int, top k: Int = 5,
                         parallelism: Parallelism = .default) throws -> [[ImageNetPrediction]] {
        let logits = LogitsBox()
        // The last operation is the classifier (a description has at least one operation).
        let classifier = interpreter.network.ops[interpreter.network.ops.count - 1].name
        try run(batch, count: count, height: height, width: width, taps: .only([classifier]), parallelism: parallelism) { activations in
            for i in 0..<activations.count {
                activations.withExample(i) { buffer in logits.values.withLock { $0[activations.firstExample + i] = Array(buffer) } }
            }
        }
        let all = logits.values.withLock { $0 }
        return (0..<count).map { n in
            let values = all[n] ?? []
            let probabilities = Softmax.probabilities(values)
            return values.indices.sorted { values[$0] > values[$1] }.prefix(max(0, k)).map {
                ImageNetPrediction(classIndex: $0, logit: values[$0], probability: probabilities[$0])
            }
        }
    }
}

/// One tap's activations for a contiguous slice of the batch, valid only during the callback.
public struct TapActivations {
    /// The tap.
    public let tap: BackboneTap
    /// Index in the caller's batch of this slice's first example.
    public let firstExample: Int
    /// Examples in this slice.
    public let count: Int
    let base: UnsafePointer<Float>
    let channelMajor: Bool
    let scratch: UnsafeMutablePointer<Float>

    /// The slice's values where the network wrote them, without a copy: `C × count × H × W`
    /// (channel-major) for a spatial tap, `count × C` for a vector; ``withExample(_:_:)`` gives
    /// one example's values channel-first.
    public var values: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: base, count: count * tap.elementCount) }

    /// Calls `body` with example `index` (0-based within the slice) as one contiguous
    /// channel-first tensor of `tap.shape` (what `Head2ToePooling.pool` expects).
    ///
    /// Spatial taps are stored channel-major for the whole slice (`C × count × H × W`), so this
    /// gathers the example's planes into a per-worker buffer that the next call overwrites.
    public func withExample<R>(_ index: Int, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(index >= 0 && index < count, "example \(index) outside the slice of \(count)")
        let size = tap.elementCount
        guard channelMajor else { return try body(UnsafeBufferPointer(start: base + index * size, count: size)) }
        let channels = tap.shape[0], plane = size / channels
        if plane >= 16 {
            for c in 0..<channels {
                (scratch + c * plane).update(from: base + (c * count + index) * plane, count: plane)
            }
        } else {
            // Tiny planes (deep layers at small inputs): a call to memmove per plane costs more
            // than the copy.
            for c in 0..<channels {
                let from = base + (c * count + index) * plane, to = scratch + c * plane
                for i in 0..<plane { to[i] = from[i] }
            }
        }
        return try body(UnsafeBufferPointer(start: scratch, count: size))
    }

    /// Pools every example of the slice with each target's rule into its rows, `rowStride`
    /// floats apart, `width` features each; spatial taps are read in place (no per-example
    /// gather), all the rules on a channel before the next one.
    func pool(_ targets: [(rule: Head2ToePooling, rows: UnsafeMutablePointer<Float>, width: Int, rowStride: Int)]) {
        guard channelMajor else {
            for target in targets {
                for i in 0..<count {
                    withExample(i) {
                        target.rule.pool($0, shape: tap.shape, into: UnsafeMutableBufferPointer(start: target.rows + i * target.rowStride, count: target.width))
                    }
                }
            }
            return
        }
        Head2ToePooling.poolChannelMajor(targets.map { ($0.rule, $0.rows, $0.rowStride) }, base, shape: tap.shape, examples: count)
    }

    /// Copies example `index` (channel-first, `tap.elementCount` floats) into `destination`.
    public func copyExample(_ index: Int, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count >= tap.elementCount, "destination too small for tap \(tap.name)")
        withExample(index) { values in _ = destination.update(fromContentsOf: values) }
    }
}

/// Where one tap's pooled features sit in a row of ``PooledFeatures``.
///
/// `TapColumns` (H2TCore) plus the tap's network order, by which the pooling pass places each
/// computed tap; kept apart because only the forward pass has that order (a feature set's
/// manifest numbers its taps by list position).
public struct PooledTapColumns: Sendable, Hashable, Codable {
    /// Tap name.
    public let name: String
    /// Tap order in the network.
    public let order: Int
    /// The tap's raw per-example shape.
    public let shape: [Int]
    /// First column.
    public let offset: Int
    /// Number of pooled features.
    public let width: Int
}

/// The columns of a pooled-feature row for one target size.
public struct PooledLayout: Sendable, Hashable, Codable {
    /// The pooling rule (target size `F_T`).
    public let pooling: Head2ToePooling
    /// Column range per selected tap, in tap order.
    public let taps: [PooledTapColumns]
    /// Features per example.
    public let width: Int
}

/// Pooled features of a batch for one target size.
public struct PooledFeatures: Sendable {
    /// The pooling rule (target size `F_T`).
    public let pooling: Head2ToePooling
    /// Column layout per tap, in tap order.
    public let taps: [PooledTapColumns]
    /// Number of examples (rows).
    public let count: Int
    /// Features per example (columns).
    public let width: Int
    /// `count × width`, row-major.
    public let values: [Float]
}

/// One ImageNet class with its score.
public struct ImageNetPrediction: Sendable, Hashable, Codable {
    /// ImageNet-1k class index (0...999), e.g. 285 "Egyptian cat", 967 "espresso".
    public let classIndex: Int
    /// Raw classifier output.
    public let logit: Float
    /// Softmax probability over the 1000 classes.
    public let probability: Float
}

final class LogitsBox: Sendable {
    let values = Mutex<[Int: [Float]]>([:])
}


#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
