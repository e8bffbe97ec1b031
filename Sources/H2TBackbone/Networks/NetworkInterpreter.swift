import Dispatch
import H2TCore
import Synchronization

/// Runs a ``NetworkDescription`` on this package's kernels (`NetworkKernels`: OpenBLAS GEMMs or an
/// AVX-512 kernel for 1×1 and im2col convolutions, a direct SIMD loop for depthwise ones), handing
/// every tap to the caller as it is produced.
///
/// Built once from a description and a state dict: each batch norm is folded into its
/// convolution, each operation is given a kernel, and each tensor a buffer slot. Slots are
/// reused as soon as the tensor they hold has no reader left, and element-wise operations
/// (activations, residual adds) write in place when their input dies with them, so a network of
/// inverted-residual blocks runs in three activation buffers, whatever its depth.
///
/// Activation layout: the batch input is example-major (`N × C × H × W`); spatial activations
/// are channel-major (`C × N × H × W`, see `NetworkKernels`); one-dimensional tensors (pooled
/// features, logits) are example-major `N × C`.
///
/// The kernels, not the description, limit what runs: the network input must feed dense
/// convolutions, grouped convolutions must be depthwise (groups = input = output channels) with
/// stride 1 or 2. Anything else is refused at creation with ``NetworkError/unsupported(network:detail:)``.
public final class NetworkInterpreter: Sendable {
    /// The network this interpreter runs.
    public let network: NetworkDescription
    /// Activation buffers one worker uses (each sized for the largest tensor of a run).
    public let activationBuffers: Int
    let steps: [Step]
    private let pool = Mutex<[Workspace]>([])

    /// Folds the weights of `network` from `weights` and plans its execution.
    ///
    /// Batch norm is folded as `w' = w · γ/√(σ²+ε)`, `b' = β − μ · γ/√(σ²+ε)`, computed in double
    /// precision.
    ///
    /// - Throws: `StateDictMismatch` (missing, unexpected or mis-shaped keys, naming the file;
    ///   keys ending in `.num_batches_tracked` are ignored), ``NetworkError/unsupported(network:detail:)``.
    public init(_ network: NetworkDescription, weights: StateDict) throws {
        try weights.validate(expected: network.expectedTensors, ignoring: { $0.hasSuffix(".num_batches_tracked") })
        self.network = network
        let eps = Double(network.batchNormEpsilon)
        let slots = Self.planSlots(network)
        var steps: [Step] = []
        for (i, op) in network.ops.enumerated() {
            let input = network.inputIndex[i], inputChannels = network.inputChannels(of: i)
            func unsupported(_ detail: String) -> NetworkError { .unsupported(network: network.name, detail: "\(op.name): \(detail)") }
            let kernel: Step.Kernel
            switch op.operation {
            case .convolution(let conv):
                let (folded, bias) = try Self.fold(conv, inputChannels: inputChannels, eps: eps, weights: weights)
                if conv.groups == 1 {
                    let weightsWithBias = NetworkKernels.appendingBiasColumn(weights: folded, bias: bias)
                    let packed = InstructionSet.selected == .avx512 ? NetworkKernels.PointwiseWeights(weights: folded, bias: bias) : nil
                    kernel = conv.kernel == 1 && conv.stride == 1 && input >= 0
                        ? .pointwise(weightsWithBias: weightsWithBias, packed: packed)
                        : .im2col(kernel: conv.kernel, stride: conv.stride, weightsWithBias: weightsWithBias, packed: packed)
                } else {
                    guard conv.groups == inputChannels, conv.outputChannels == inputChannels else {
                        throw unsupported("grouped convolution (\(conv.groups) groups of \(inputChannels) channels) that is not depthwise")
                    }
                    guard conv.stride == 1 || conv.stride == 2 else { throw unsupported("depthwise stride \(conv.stride) (1 or 2 only)") }
                    guard input >= 0 else { throw unsupported("a depthwise convolution of the network input") }
                    kernel = .depthwise(kernel: conv.kernel, stride: conv.stride, weights: folded, bias: bias)
                }
            case .activation(let activation):
                guard input >= 0 else { throw unsupported("an activation of the network input") }
                switch activation {
                case .relu6: kernel = .relu6
                }
            case .add:
                guard input >= 0 else { throw unsupported("an addition to the network input") }
                kernel = .add
            case .globalAveragePool:
                guard input >= 0 else { throw unsupported("pooling of the network input") }
                kernel = .globalAverage
            case .linear(let linear):
                let weight = try weights.floats(linear.weightKey, shape: [linear.outputs, inputChannels])
                let bias = try weights.floats(linear.biasKey, shape: [linear.outputs])
                kernel = .linear(weight: weight, bias: bias,
                                 packed: InstructionSet.selected != .baseline ? NetworkKernels.PointwiseWeights(weights: weight, bias: bias) : nil)
            }
            steps.append(Step(kernel: kernel, inputSlot: input < 0 ? -1 : slots.tensorSlot[input],
                              skipSlot: network.skipIndex[i].map { slots.tensorSlot[$0] } ?? -1,
                              outputSlot: slots.tensorSlot[i]))
        }
        self.steps = steps
        activationBuffers = slots.count
    }

    /// One convolution's weights with its batch norm folded in: `Cout × Cin/groups·k·k` and `Cout`.
    static func fold(_ conv: NetworkOp.Convolution, inputChannels: Int, eps: Double,
                     weights: StateDict) throws -> (weights: [Float], bias: [Float]) {
        let shape = conv.weightShape(inputChannels: inputChannels)
        let w = try weights.floats(conv.weightKey, shape: shape)
        let c = [conv.outputChannels]
        let bn = conv.batchNormKeys
        let gamma = try weights.floats(bn[0], shape: c), beta = try weights.floats(bn[1], shape: c)
        let mean = try weights.floats(bn[2], shape: c), variance = try weights.floats(bn[3], shape: c)
        let perOutput = w.count / conv.outputChannels
        var folded = [Float](repeating: 0, count: w.count)
        var bias = [Float](repeating: 0, count: conv.outputChannels)
        for o in 0..<conv.outputChannels {
            let scale = Double(gamma[o]) / (Double(variance[o]) + eps).squareRoot()
            for i in 0..<perOutput { folded[o * perOutput + i] = Float(Double(w[o * perOutput + i]) * scale) }
            bias[o] = Float(Double(beta[o]) - Double(mean[o]) * scale)
        }
        return (folded, bias)
    }

    /// Assigns every tensor a buffer slot: an element-wise operation takes over the slot of an
    /// operand that has no later reader; any other output takes the lowest free slot; a slot is
    /// freed after the last operation that reads its tensor.
    static func planSlots(_ network: NetworkDescription) -> (tensorSlot: [Int], count: Int) {
        let n = network.ops.count
        var lastUse = Array(0..<n)
        for i in 0..<n {
            for t in [network.inputIndex[i], network.skipIndex[i] ?? -1] where t >= 0 { lastUse[t] = max(lastUse[t], i) }
        }
        var tensorSlot = [Int](repeating: -1, count: n)
        var free: [Int] = [], count = 0
        for (i, op) in network.ops.enumerated() {
            let operands = [network.inputIndex[i], network.skipIndex[i] ?? -1].filter { $0 >= 0 }
            var inPlace: Int? = nil
            switch op.operation {
            case .activation, .add: inPlace = operands.first { lastUse[$0] == i }
            case .convolution, .globalAveragePool, .linear: break
            }
            if let inPlace {
                tensorSlot[i] = tensorSlot[inPlace]
            } else if let lowest = free.min() {
                tensorSlot[i] = lowest
                free.removeAll { $0 == lowest }
            } else {
                tensorSlot[i] = count
                count += 1
            }
            for t in Set(operands) where lastUse[t] == i && t != inPlace { free.append(tensorSlot[t]) }
            if lastUse[i] == i && !free.contains(tensorSlot[i]) { free.append(tensorSlot[i]) }
        }
        return (tensorSlot, count)
    }

    /// The ordered taps for a `height × width` input.
    public func taps(height: Int, width: Int) -> [BackboneTap] { network.taps(height: height, width: width) }

    /// The most examples per slice of a batch (``sliceExamples(taps:)``).
    public static let sliceExamples = 8

    /// Floats the largest activation of a slice may hold: 4 MB, so that a layer's output is
    /// still in cache (a core's L2 and its share of L3) when the next step and the pooling read
    /// it. A 224×224 MobileNetV2 slice of 8 examples had 38 MB activations that went to memory
    /// and back at every step, and its workspace alone was hundreds of MB of page faults.
    static let sliceFloatBudget = 1 << 20

    /// Examples per slice of a batch, the unit of work of a run, for a network whose taps at the
    /// input size are `taps`: as many as keep the largest activation within
    /// ``sliceFloatBudget`` (8 at 64×64, 4 at 97×97, 1 at 224×224 for MobileNetV2), between 1
    /// and ``sliceExamples``. It depends on the network and input size only, so every GEMM's
    /// shape, hence every rounding, is the same whatever the thread count.
    public static func sliceExamples(taps: [BackboneTap]) -> Int {
        max(1, min(sliceExamples, sliceFloatBudget / max(taps.map(\.elementCount).max() ?? 1, 1)))
    }

    /// Runs a batch and hands every selected tap to `body` as soon as it is computed.
    ///
    /// The batch is cut into contiguous slices of ``sliceExamples(taps:)`` examples (the
    /// last one padded to that size with zero images, whose taps are not delivered) that go
    /// through the whole network on `parallelism`'s threads, each slice with single-threaded
    /// GEMMs: the slices, not the thread count, fix every product's shape, so the activations are
    /// bit-identical whatever the thread count, and whatever the batch an example is in. `body` is called once per tap and
    /// slice, in tap order within a slice, concurrently for different slices; the activations are
    /// valid only during the call. Computation stops after the deepest selected tap.
    ///
    /// - Parameters:
    ///   - batch: `count × C × height × width` floats (`C` the description's input channels).
    ///   - parallelism: threads sharing the slices.
    public func run(
        _ batch: [Float], count: Int, height: Int, width: Int, taps selection: TapSelection, parallelism: Parallelism,
        body: @Sendable (TapActivations) -> Void
    ) throws {
        try batch.withUnsafeBufferPointer { batch in
            try run(batch, count: count, height: height, width: width, taps: selection, parallelism: parallelism, body: body)
        }
    }

    /// ``run(_:count:height:width:taps:parallelism:body:)`` on a batch the caller holds in memory of its own.
    public func run(
        _ batch: UnsafeBufferPointer<Float>, count: Int, height: Int, width: Int, taps selection: TapSelection, parallelism: Parallelism,
        body: @Sendable (TapActivations) -> Void
    ) throws {
        try validate(batch.count, count: count, height: height, width: width)
        let plan = try RunPlan(self, height: height, width: width, selection: selection)
        let slice = Self.sliceExamples(taps: plan.taps)
        let slices = (count + slice - 1) / slice
        let workers = parallelism.workers(items: slices)
        let workspaces = takeWorkspaces(workers, need: plan.sizes(capacity: slice, slots: activationBuffers))
        defer { returnWorkspaces(workspaces) }
        let perExample = network.inputChannels * height * width
        let shared = UnsafeSendable(batch.baseAddress!), sharedWorkspaces = UnsafeSendable(workspaces)
        try parallelism.withBLAS {
            try Parallel.forEachWorker(itemCount: slices, parallelism: parallelism) { worker, next in
                let ws = sharedWorkspaces.value[worker]
                while let s = next() {
                    let first = s * slice, real = min(count, first + slice) - first
                    var input = UnsafePointer(shared.value + first * perExample)
                    if real < slice {
                        // A short slice (a batch's tail) is padded with zero images to the full
                        // slice: every product then has the same shape for every example (OpenBLAS
                        // rounds a small product differently), so an image's features do not
                        // depend on where it falls in a batch.
                        ws.input.update(from: input, count: real * perExample)
                        (ws.input + real * perExample).update(repeating: 0, count: (slice - real) * perExample)
                        input = UnsafePointer(ws.input)
                    }
                    self.forward(input, first: first, count: slice, real: real, plan: plan, workspace: ws, body: body)
                }
            }
        }
    }

    /// Checks a batch of `floats` values against `count` examples of `height × width`.
    func validate(_ floats: Int, count: Int, height: Int, width: Int) throws {
        guard count > 0 else { throw NetworkError.invalidInput("empty batch") }
        let minimum = network.minimumInputSize
        guard height >= minimum, width >= minimum else {
            throw NetworkError.invalidInput("input \(height)×\(width) is smaller than \(minimum)×\(minimum)")
        }
        guard floats == count * network.inputChannels * height * width else {
            throw NetworkError.invalidInput("batch holds \(floats) floats, expected \(count)×\(network.inputChannels)×\(height)×\(width)")
        }
    }

    // MARK: - Forward pass

    /// One worker's pass over `count` examples, step by step; a step's output is delivered
    /// before the next step runs (which may overwrite it in place), for the first `real`
    /// examples only (the others pad a short slice).
    private func forward(
        _ input: UnsafePointer<Float>, first: Int, count n: Int, real: Int, plan: RunPlan, workspace ws: Workspace,
        body: (TapActivations) -> Void
    ) {
        let slots = ws.slots
        for (i, step) in steps.enumerated() {
            let tap = plan.taps[i]
            let output = slots[step.outputSlot]
            let elements = n * tap.elementCount
            let source = plan.inputShapes[i]
            switch step.kernel {
            case .im2col(let kernel, let stride, let weightsWithBias, let packed):
                NetworkKernels.convolution(
                    input: step.inputSlot < 0 ? input : UnsafePointer(slots[step.inputSlot]), output: output,
                    batch: n, inputChannels: source[0], height: source[1], width: source[2],
                    outputChannels: tap.shape[0], kernel: kernel, stride: stride, padding: plan.paddings[i],
                    weightsWithBias: weightsWithBias, packed: packed, columns: ws.columns, inputChannelMajor: step.inputSlot >= 0)
            case .pointwise(let weightsWithBias, let packed):
                NetworkKernels.pointwise(input: slots[step.inputSlot], output: output, inputChannels: source[0],
                                         outputChannels: tap.shape[0], count: n * source[1] * source[2],
                                         weightsWithBias: weightsWithBias, packed: packed)
            case .depthwise(let kernel, let stride, let weights, let bias):
                NetworkKernels.depthwise(input: slots[step.inputSlot], output: output, channels: source[0], batch: n,
                                         height: source[1], width: source[2], kernel: kernel, stride: stride,
                                         padding: plan.paddings[i], weights: weights, bias: bias,
                                         scratch: ws.depthwiseScratch)
            case .relu6:
                NetworkKernels.relu6(output, count: elements, from: slots[step.inputSlot])
            case .add:
                NetworkKernels.add(slots[step.inputSlot], slots[step.skipSlot], into: output, count: elements)
            case .globalAverage:
                NetworkKernels.globalAverage(input: slots[step.inputSlot], output: output, channels: source[0],
                                             batch: n, planeSize: source[1] * source[2])
            case .linear(let weight, let bias, let packed):
                NetworkKernels.linear(input: slots[step.inputSlot], output: output, examples: n, features: source[0],
                                      outputs: tap.shape[0], weight: weight, bias: bias, packed: packed)
            }
            if plan.selected[i] {
                var base = UnsafePointer(output)
                if real < n && tap.shape.count == 3 {
                    // Channel-major (`C × n × H × W`): each channel's real planes, without the padding's.
                    let planes = real * tap.shape[1] * tap.shape[2], stride = n * tap.shape[1] * tap.shape[2]
                    for c in 0..<tap.shape[0] { (ws.compact + c * planes).update(from: output + c * stride, count: planes) }
                    base = UnsafePointer(ws.compact)
                }
                body(TapActivations(tap: tap, firstExample: first, count: real, base: base,
                                    channelMajor: tap.shape.count == 3, scratch: ws.gather))
            }
            if i == plan.last { return }
        }
    }

    // MARK: - Workspaces

    private func takeWorkspaces(_ count: Int, need: Workspace.Sizes) -> [Workspace] {
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

/// One operation lowered onto a kernel, with the buffer slots it reads and writes.
struct Step: Sendable {
    enum Kernel: Sendable {
        /// Dense convolution by im2col and `pointwise`'s product; `weightsWithBias` is
        /// `Cout × (Cin·k·k + 1)`, `packed` the same for the AVX-512 kernel (at that level only).
        case im2col(kernel: Int, stride: Int, weightsWithBias: [Float], packed: NetworkKernels.PointwiseWeights?)
        /// 1×1 stride-1 convolution: `Cout × (Cin + 1)` for the GEMM, and the weights packed for
        /// the AVX-512 kernel (at that level only).
        case pointwise(weightsWithBias: [Float], packed: NetworkKernels.PointwiseWeights?)
        /// Depthwise convolution; weights `C × k × k`.
        case depthwise(kernel: Int, stride: Int, weights: [Float], bias: [Float])
        case relu6
        case add
        case globalAverage
        /// Classifier: weight `outputs × inputs`; `packed` the same for the vector kernel (from AVX2 up).
        case linear(weight: [Float], bias: [Float], packed: NetworkKernels.PointwiseWeights?)
    }

    let kernel: Kernel
    /// Slots of the operands (`-1`: the network input / none) and of the output.
    let inputSlot: Int
    let skipSlot: Int
    let outputSlot: Int
}

/// What one run needs that depends on the input size: the taps, each step's input shape and
/// convolution padding, which taps to deliver and where to stop.
struct RunPlan {
    let taps: [BackboneTap]
    let inputShapes: [[Int]]
    let paddings: [Padding2D]
    let selected: [Bool]
    let last: Int
    let steps: [Step]

    init(_ interpreter: NetworkInterpreter, height: Int, width: Int, selection: TapSelection) throws {
        let network = interpreter.network
        taps = network.taps(height: height, width: width)
        (selected, last) = try selection.resolve(taps)
        steps = interpreter.steps
        var inputShapes: [[Int]] = [], paddings: [Padding2D] = []
        for (i, op) in network.ops.enumerated() {
            let input = network.inputIndex[i]
            let shape = input < 0 ? [network.inputChannels, height, width] : taps[input].shape
            inputShapes.append(shape)
            switch op.operation {
            case .convolution(let conv):
                paddings.append(network.padding.padding(height: shape[1], width: shape[2], kernel: conv.kernel, stride: conv.stride))
            case .add:
                let skip = taps[network.skipIndex[i]!]
                guard skip.shape == shape else {
                    throw NetworkError.invalidInput("at \(height)×\(width), \(op.name) adds \(skip.name) \(skip.shape) to \(taps[input].name) \(shape)")
                }
                paddings.append(Padding2D(top: 0, left: 0, bottom: 0, right: 0))
            case .activation, .globalAveragePool, .linear:
                paddings.append(Padding2D(top: 0, left: 0, bottom: 0, right: 0))
            }
        }
        (self.inputShapes, self.paddings) = (inputShapes, paddings)
    }

    /// Buffer sizes for a worker of `capacity` examples.
    func sizes(capacity: Int, slots: Int) -> Workspace.Sizes {
        var sizes = Workspace.Sizes(slots: slots)
        // A short slice: its input padded to `capacity` examples, its taps without the padding.
        sizes.input = capacity * inputShapes[0].reduce(1, *)
        sizes.compact = (capacity - 1) * (taps.map(\.elementCount).max() ?? 0)
        for (i, tap) in taps.enumerated() {
            // One more channel than any tensor: the row of ones a 1×1 convolution appends to its input.
            sizes.slot = max(sizes.slot, (tap.shape[0] + 1) * (tap.elementCount / tap.shape[0]) * capacity)
            if tap.shape.count == 3 { sizes.gather = max(sizes.gather, tap.elementCount) }
            let source = inputShapes[i]
            switch steps[i].kernel {
            case .im2col(let kernel, _, _, _):
                sizes.columns = max(sizes.columns, (source[0] * kernel * kernel + 1) * capacity * tap.shape[1] * tap.shape[2])
            case .depthwise:
                sizes.depthwise = max(sizes.depthwise, NetworkKernels.depthwiseScratchCount(
                    height: source[1], width: source[2], padding: paddings[i]))
            case .pointwise, .relu6, .add, .globalAverage, .linear:
                break
            }
        }
        return sizes
    }
}

/// Buffers of one worker; reused across runs.
final class Workspace: @unchecked Sendable {
    // @unchecked: a workspace is owned by exactly one worker between take and return; the pool
    // that hands it over is behind a Mutex.
    struct Sizes: Equatable {
        var slots: Int
        var slot = 0, columns = 0, depthwise = 0, gather = 0, input = 0, compact = 0

        func covers(_ other: Sizes) -> Bool {
            slots >= other.slots && slot >= other.slot && columns >= other.columns && depthwise >= other.depthwise
                && gather >= other.gather && input >= other.input && compact >= other.compact
        }

        func union(_ other: Sizes) -> Sizes {
            Sizes(slots: max(slots, other.slots), slot: max(slot, other.slot), columns: max(columns, other.columns),
                  depthwise: max(depthwise, other.depthwise), gather: max(gather, other.gather),
                  input: max(input, other.input), compact: max(compact, other.compact))
        }
    }

    let sizes: Sizes
    let slots: [UnsafeMutablePointer<Float>]
    let columns, depthwiseScratch, gather, input, compact: UnsafeMutablePointer<Float>

    init(_ sizes: Sizes) {
        self.sizes = sizes
        func make(_ n: Int) -> UnsafeMutablePointer<Float> { .allocate(capacity: max(n, 1)) }
        slots = (0..<sizes.slots).map { _ in make(sizes.slot) }
        columns = make(sizes.columns)
        depthwiseScratch = make(sizes.depthwise)
        gather = make(sizes.gather)
        input = make(sizes.input)
        compact = make(sizes.compact)
    }

    deinit {
        for p in slots + [columns, depthwiseScratch, gather, input, compact] { p.deallocate() }
    }
}
