import Dispatch
import H2TCore
import Synchronization

/// A pretrained backbone ready to run on batches: batch norm folded into the convolutions at
/// load time, 1×1 and stem convolutions on OpenBLAS (`BLAS.sgemm`), depthwise convolutions on a
/// direct SIMD kernel, every tap handed to the caller as it is produced.
///
/// Input: a preprocessed batch, `count × 3 × height × width` floats (RGB, channel-first, already
/// normalised with `architecture.normalisation`). Any size ≥ 32 works; padding follows the
/// architecture's rule at every size.
///
/// Threads: a run splits its batch into `threads` contiguous parts that go through the whole
/// network concurrently, each with single-threaded GEMMs (measured faster here than one pass
/// with two OpenBLAS threads: no per-layer synchronisation and the depthwise/pooling work is
/// parallel too; see `tools/bench-backbone.sh`). OpenBLAS's thread count is process-wide, so
/// during such a run it is set to 1 and restored afterwards.
public final class BackboneNetwork: @unchecked Sendable {
    // @unchecked: weights are immutable after init; the only mutable state, the workspace pool,
    // is behind a Mutex, and a workspace is used by one worker at a time.

    /// Which backbone this is.
    public let architecture: BackboneArchitecture
    let spec: NetworkSpec
    let stem: FoldedConv
    let blocks: [FoldedBlock]
    let head: FoldedConv
    let classifierWeight: [Float]
    let classifierBias: [Float]
    private let pool = Mutex<[Workspace]>([])

    /// Builds the network from a checkpoint's state dict, folding each batch norm into its
    /// convolution: `w' = w · γ/√(σ²+ε)`, `b' = β − μ · γ/√(σ²+ε)` (computed in double precision).
    ///
    /// - Throws: `StateDictMismatch` (missing, unexpected or mis-shaped keys, naming the file).
    public init(architecture: BackboneArchitecture, weights: StateDict) throws {
        let spec = architecture.spec
        try weights.validate(expected: spec.expectedTensors, ignoring: { $0.hasSuffix(".num_batches_tracked") })
        let eps = Double(architecture.batchNormEpsilon)
        func fold(_ unit: ConvUnit) throws -> FoldedConv {
            let w = try weights.floats("\(unit.convKey).weight", shape: unit.weightShape)
            let c = [unit.outputChannels]
            let gamma = try weights.floats("\(unit.bnKey).weight", shape: c)
            let beta = try weights.floats("\(unit.bnKey).bias", shape: c)
            let mean = try weights.floats("\(unit.bnKey).running_mean", shape: c)
            let variance = try weights.floats("\(unit.bnKey).running_var", shape: c)
            let perOutput = unit.weightCount / unit.outputChannels
            var folded = [Float](repeating: 0, count: w.count)
            var bias = [Float](repeating: 0, count: unit.outputChannels)
            for o in 0..<unit.outputChannels {
                let scale = Double(gamma[o]) / (Double(variance[o]) + eps).squareRoot()
                for i in 0..<perOutput { folded[o * perOutput + i] = Float(Double(w[o * perOutput + i]) * scale) }
                bias[o] = Float(Double(beta[o]) - Double(mean[o]) * scale)
            }
            return FoldedConv(unit: unit, weights: folded, bias: bias,
                              weightsWithBias: unit.depthwise ? [] : NetworkKernels.appendingBiasColumn(weights: folded, bias: bias))
        }
        self.architecture = architecture
        self.spec = spec
        stem = try fold(spec.stem)
        blocks = try spec.blocks.map { block in
            FoldedBlock(spec: block, expand: try block.expand.map(fold), depthwise: try fold(block.depthwise),
                        project: try fold(block.project))
        }
        head = try fold(spec.head)
        classifierWeight = try weights.floats(spec.classifierWeight, shape: [spec.classes, spec.head.outputChannels])
        classifierBias = try weights.floats(spec.classifierBias, shape: [spec.classes])
    }

    /// The ordered taps for a `height × width` input (names, shapes, kinds; see ``BackboneTap``).
    public func taps(height: Int, width: Int) -> [BackboneTap] { spec.taps(height: height, width: width) }

    /// Runs a batch and hands every selected tap to `body` as soon as it is computed.
    ///
    /// `body` is called once per tap and worker, for that worker's contiguous slice of the batch
    /// (`TapActivations.firstExample ..< firstExample + count`), in tap order within a worker;
    /// with `threads > 1` calls for different slices run concurrently, so `body` must be safe to
    /// call from several threads at once (writing to disjoint example rows is). The activations
    /// are valid only during the call: pool or copy them there. Only one tap per worker is kept
    /// beyond what the next layers need, so memory does not grow with the number of taps.
    ///
    /// - Parameters:
    ///   - batch: `count × 3 × height × width` preprocessed floats.
    ///   - taps: which taps to deliver; computation stops after the deepest one (early exit).
    ///   - threads: workers splitting the batch (capped by `count`).
    public func run(
        _ batch: [Float], count: Int, height: Int, width: Int,
        taps selection: TapSelection = .all, threads: Int = 2,
        body: @Sendable (TapActivations) -> Void
    ) throws {
        try validate(batch, count: count, height: height, width: width)
        let taps = spec.taps(height: height, width: width)
        let (selected, last) = try selection.resolve(taps)
        let workers = max(1, min(threads, count))
        let plan = Plan(taps: taps, selected: selected, last: last)
        let perWorker = (count + workers - 1) / workers
        let workspaces = takeWorkspaces(workers, capacity: perWorker, height: height, width: width, taps: taps)
        defer { returnWorkspaces(workspaces) }
        batch.withUnsafeBufferPointer { input in
            let base = input.baseAddress!
            if workers == 1 {
                forward(base, first: 0, count: count, height: height, width: width, plan: plan,
                        workspace: workspaces[0], body: body)
                return
            }
            let previous = BLAS.threadCount
            BLAS.setThreadCount(1)
            defer { BLAS.setThreadCount(previous) }
            let shared = UnsafeSendable(base), sharedWorkspaces = UnsafeSendable(workspaces)
            DispatchQueue.concurrentPerform(iterations: workers) { w in
                let first = w * count / workers, end = (w + 1) * count / workers
                guard end > first else { return }
                self.forward(shared.value + first * 3 * height * width, first: first, count: end - first,
                             height: height, width: width, plan: plan, workspace: sharedWorkspaces.value[w], body: body)
            }
        }
    }

    /// The row layout of pooled features: which columns each selected tap fills for a target size.
    public func pooledLayout(height: Int, width: Int, targetSize: Int, taps selection: TapSelection = .all) throws -> PooledLayout {
        guard targetSize > 0 else { throw NetworkError.invalidInput("target size must be positive") }
        let taps = spec.taps(height: height, width: width)
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
        taps selection: TapSelection = .all, threads: Int = 2,
        into outputs: [UnsafeMutableBufferPointer<Float>]
    ) throws -> [PooledLayout] {
        guard !targetSizes.isEmpty else { throw NetworkError.invalidInput("no target size") }
        try validate(batch, count: count, height: height, width: width)
        let layouts = try targetSizes.map { try pooledLayout(height: height, width: width, targetSize: $0, taps: selection) }
        guard outputs.count == layouts.count,
              zip(outputs, layouts).allSatisfy({ $0.count >= count * $1.width && $0.baseAddress != nil }) else {
            throw NetworkError.invalidInput("need one output buffer of count × width floats per target size")
        }
        // Per rule: (column offset, width) of each tap order, -1 when not selected.
        let tapCount = spec.taps(height: height, width: width).count
        var placement = [[(offset: Int, width: Int)]](repeating: Array(repeating: (-1, 0), count: tapCount), count: layouts.count)
        for (r, layout) in layouts.enumerated() { for c in layout.taps { placement[r][c.order] = (c.offset, c.width) } }
        let frozen = placement
        let rules = layouts.map(\.pooling), rowWidths = layouts.map(\.width)
        let bases = UnsafeSendable(outputs.map { $0.baseAddress! })
        try run(batch, count: count, height: height, width: width, taps: selection, threads: threads) { activations in
            let tap = activations.tap
            for i in 0..<activations.count {
                activations.withExample(i) { values in
                    for r in rules.indices {
                        let (offset, width) = frozen[r][tap.order]
                        let row = bases.value[r] + (activations.firstExample + i) * rowWidths[r]
                        rules[r].pool(values, shape: tap.shape, into: UnsafeMutableBufferPointer(start: row + offset, count: width))
                    }
                }
            }
        }
        return layouts
    }

    /// Pools every selected tap of a batch for each target size in one pass and returns the
    /// features (one ``PooledFeatures`` per target size, in the order given).
    public func pooledFeatures(
        _ batch: [Float], count: Int, height: Int, width: Int, targetSizes: [Int],
        taps selection: TapSelection = .all, threads: Int = 2
    ) throws -> [PooledFeatures] {
        let layouts = try targetSizes.map { try pooledLayout(height: height, width: width, targetSize: $0, taps: selection) }
        let buffers = layouts.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, $0.width * count)) }
        defer { buffers.forEach { $0.deallocate() } }
        try pooledFeatures(batch, count: count, height: height, width: width, targetSizes: targetSizes,
                           taps: selection, threads: threads, into: buffers)
        return zip(layouts, buffers).map { layout, buffer in
            PooledFeatures(pooling: layout.pooling, taps: layout.taps, count: count, width: layout.width,
                           values: Array(buffer.prefix(layout.width * count)))
        }
    }

    /// ImageNet top-`k` classes for one preprocessed image (`3 × height × width`), best first.
    public func classify(_ image: [Float], height: Int, width: Int, top k: Int = 5) throws -> [ImageNetPrediction] {
        let logits = LogitsBox()
        try run(image, count: 1, height: height, width: width, taps: .only(["logits"]), threads: 1) { activations in
            activations.withExample(0) { buffer in logits.values.withLock { $0 = Array(buffer) } }
        }
        let values = logits.values.withLock { $0 }
        let probabilities = Softmax.probabilities(values)
        return values.indices.sorted { values[$0] > values[$1] }.prefix(max(0, k)).map {
            ImageNetPrediction(classIndex: $0, logit: values[$0], probability: probabilities[$0])
        }
    }

    private func validate(_ batch: [Float], count: Int, height: Int, width: Int) throws {
        guard count > 0 else { throw NetworkError.invalidInput("empty batch") }
        guard height >= architecture.minimumInputSize, width >= architecture.minimumInputSize else {
            throw NetworkError.invalidInput("input \(height)×\(width) is smaller than \(architecture.minimumInputSize)×\(architecture.minimumInputSize)")
        }
        guard batch.count == count * 3 * height * width else {
            throw NetworkError.invalidInput("batch holds \(batch.count) floats, expected \(count)×3×\(height)×\(width)")
        }
    }

    // MARK: - Forward pass

    struct Plan {
        let taps: [BackboneTap]
        let selected: [Bool]
        let last: Int
    }

    /// One worker's pass over `count` examples. Activations rotate through three buffers:
    /// `x` (block input, kept for the skip connection), `e` (expansion, then projection) and `d`
    /// (depthwise); ReLU6 runs in place after the pre-activation tap has been delivered.
    private func forward(
        _ input: UnsafePointer<Float>, first: Int, count n: Int, height: Int, width: Int,
        plan: Plan, workspace ws: Workspace, body: (TapActivations) -> Void
    ) {
        var order = 0
        // Delivers the tap at `order` if selected; returns true when the run must stop.
        func emit(_ values: UnsafePointer<Float>, channelMajor: Bool = true) -> Bool {
            if plan.selected[order] {
                body(TapActivations(tap: plan.taps[order], firstExample: first, count: n, base: values,
                                    channelMajor: channelMajor, scratch: ws.gather))
            }
            order += 1
            return order > plan.last
        }
        var (x, e, d) = (ws.a, ws.b, ws.c)
        var (h, w) = (height, width)
        let stemPadding = spec.padding(stem.unit, height: h, width: w)
        NetworkKernels.convolution(
            input: input, output: x, batch: n, inputChannels: 3, height: h, width: w,
            outputChannels: stem.unit.outputChannels, kernel: stem.unit.kernel, stride: stem.unit.stride,
            padding: stemPadding, weightsWithBias: stem.weightsWithBias, columns: ws.columns)
        (h, w) = stemPadding.outputSize(height: h, width: w, kernel: stem.unit.kernel, stride: stem.unit.stride)
        var channels = stem.unit.outputChannels
        if emit(x) { return }
        NetworkKernels.relu6(x, count: channels * n * h * w)
        if emit(x) { return }
        for block in blocks {
            var dwInput = x
            if let expand = block.expand {
                NetworkKernels.pointwise(input: x, output: e, inputChannels: channels, outputChannels: expand.unit.outputChannels,
                                         count: n * h * w, weightsWithBias: expand.weightsWithBias)
                channels = expand.unit.outputChannels
                if emit(e) { return }
                NetworkKernels.relu6(e, count: channels * n * h * w)
                if emit(e) { return }
                dwInput = e
            }
            let dw = block.depthwise
            let padding = spec.padding(dw.unit, height: h, width: w)
            NetworkKernels.depthwise(input: dwInput, output: d, channels: channels, batch: n, height: h, width: w,
                                     kernel: dw.unit.kernel, stride: dw.unit.stride, padding: padding,
                                     weights: dw.weights, bias: dw.bias, scratch: ws.depthwiseScratch)
            (h, w) = padding.outputSize(height: h, width: w, kernel: dw.unit.kernel, stride: dw.unit.stride)
            if emit(d) { return }
            NetworkKernels.relu6(d, count: channels * n * h * w)
            if emit(d) { return }
            let project = block.project
            NetworkKernels.pointwise(input: d, output: e, inputChannels: channels, outputChannels: project.unit.outputChannels,
                                     count: n * h * w, weightsWithBias: project.weightsWithBias)
            channels = project.unit.outputChannels
            if emit(e) { return }
            if block.spec.residual {
                NetworkKernels.add(e, x, count: channels * n * h * w)
                if emit(e) { return }
            }
            swap(&x, &e)
        }
        NetworkKernels.pointwise(input: x, output: e, inputChannels: channels, outputChannels: head.unit.outputChannels,
                                 count: n * h * w, weightsWithBias: head.weightsWithBias)
        channels = head.unit.outputChannels
        if emit(e) { return }
        NetworkKernels.relu6(e, count: channels * n * h * w)
        if emit(e) { return }
        NetworkKernels.globalAverage(input: e, output: ws.pooled, channels: channels, batch: n, planeSize: h * w)
        if emit(ws.pooled, channelMajor: false) { return }
        for i in 0..<n { (ws.logits + i * spec.classes).update(from: classifierBias, count: spec.classes) }
        classifierWeight.withUnsafeBufferPointer { fc in
            BLAS.sgemm(transB: true, m: n, n: spec.classes, k: channels, a: ws.pooled, lda: channels,
                       b: fc.baseAddress!, ldb: channels, beta: 1, c: ws.logits, ldc: spec.classes)
        }
        _ = emit(ws.logits, channelMajor: false)
    }

    // MARK: - Workspaces

    private func takeWorkspaces(_ count: Int, capacity: Int, height: Int, width: Int, taps: [BackboneTap]) -> [Workspace] {
        let need = Workspace.Sizes(spec: spec, capacity: capacity, height: height, width: width, taps: taps)
        var taken: [Workspace] = pool.withLock { pool in
            var out: [Workspace] = []
            while out.count < count, let ws = pool.popLast() { out.append(ws) }
            return out
        }
        for i in taken.indices where !taken[i].sizes.covers(need) { taken[i] = Workspace(need.union(taken[i].sizes)) }
        while taken.count < count { taken.append(Workspace(need)) }
        return taken
    }

    private func returnWorkspaces(_ workspaces: [Workspace]) {
        pool.withLock { pool in
            pool.append(contentsOf: workspaces)
            // Keep at most two per worker slot: enough for back-to-back runs, bounded memory.
            if pool.count > 4 { pool.removeFirst(pool.count - 4) }
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

struct FoldedConv: Sendable {
    let unit: ConvUnit
    let weights: [Float]
    let bias: [Float]
    /// `Cout × (Cin·k·k + 1)` for the GEMM convolutions (bias as the last column); empty for depthwise.
    let weightsWithBias: [Float]
}

struct FoldedBlock: Sendable {
    let spec: BlockSpec
    let expand: FoldedConv?
    let depthwise: FoldedConv
    let project: FoldedConv
}

/// Buffers of one worker; reused across runs.
final class Workspace: @unchecked Sendable {
    // @unchecked: a workspace is owned by exactly one worker between take and return; the pool
    // that hands it over is behind a Mutex.
    struct Sizes: Equatable {
        var activation = 0, columns = 0, depthwise = 0, gather = 0, pooled = 0, logits = 0

        init(activation: Int, columns: Int, depthwise: Int, gather: Int, pooled: Int, logits: Int) {
            (self.activation, self.columns, self.depthwise) = (activation, columns, depthwise)
            (self.gather, self.pooled, self.logits) = (gather, pooled, logits)
        }

        init(spec: NetworkSpec, capacity: Int, height: Int, width: Int, taps: [BackboneTap]) {
            let spatial = taps.filter { $0.shape.count == 3 }
            let largest = spatial.map(\.elementCount).max() ?? 0
            // One more channel than any map: the row of ones a 1×1 convolution appends to its input.
            activation = (spatial.map { ($0.shape[0] + 1) * $0.shape[1] * $0.shape[2] }.max() ?? 0) * capacity
            gather = largest
            let stemPadding = spec.padding(spec.stem, height: height, width: width)
            let (sh, sw) = stemPadding.outputSize(height: height, width: width, kernel: spec.stem.kernel, stride: spec.stem.stride)
            columns = (3 * spec.stem.kernel * spec.stem.kernel + 1) * capacity * sh * sw
            var (h, w) = (sh, sw)
            for block in spec.blocks {
                let p = spec.padding(block.depthwise, height: h, width: w)
                depthwise = max(depthwise, NetworkKernels.depthwiseScratchCount(height: h, width: w, padding: p))
                (h, w) = p.outputSize(height: h, width: w, kernel: block.depthwise.kernel, stride: block.depthwise.stride)
            }
            pooled = spec.head.outputChannels * capacity
            logits = spec.classes * capacity
        }

        func covers(_ other: Sizes) -> Bool {
            activation >= other.activation && columns >= other.columns && depthwise >= other.depthwise
                && gather >= other.gather && pooled >= other.pooled && logits >= other.logits
        }

        func union(_ other: Sizes) -> Sizes {
            Sizes(activation: max(activation, other.activation), columns: max(columns, other.columns),
                  depthwise: max(depthwise, other.depthwise), gather: max(gather, other.gather),
                  pooled: max(pooled, other.pooled), logits: max(logits, other.logits))
        }
    }

    let sizes: Sizes
    let a, b, c, columns, depthwiseScratch, gather, pooled, logits: UnsafeMutablePointer<Float>

    init(_ sizes: Sizes) {
        self.sizes = sizes
        func make(_ n: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(n, 1)) }
        a = make(sizes.activation); b = make(sizes.activation); c = make(sizes.activation)
        columns = make(sizes.columns); depthwiseScratch = make(sizes.depthwise); gather = make(sizes.gather)
        pooled = make(sizes.pooled); logits = make(sizes.logits)
    }

    deinit {
        for p in [a, b, c, columns, depthwiseScratch, gather, pooled, logits] { p.deallocate() }
    }
}

final class LogitsBox: Sendable {
    let values = Mutex<[Float]>([])
}


#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
