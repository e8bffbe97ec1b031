/// A backbone as data: an ordered list of operations, each producing one tensor that is also one
/// tap, with the checkpoint names of its weights.
///
/// Everything else about a network is derived from this list: the tap list for an input size
/// (``taps(height:width:)``), the state-dict keys and shapes a checkpoint must hold
/// (``expectedTensors``), and, through ``NetworkInterpreter``, the forward pass. The description
/// says *what* is computed, not *how*: which kernel runs a convolution (GEMM, im2col, a direct
/// depthwise loop, or another library) is the interpreter's choice.
///
/// A description is validated when it is created (names unique, references resolved, channel
/// counts consistent), so every value of this type describes a well-formed network.
public struct NetworkDescription: Sendable, Hashable {
    /// Network name, e.g. `mobilenet_v2` (used in error messages).
    public let name: String
    /// The per-channel input normalisation the weights were trained with, on values in 0...1.
    public let normalisation: InputNormalisation
    /// How every convolution pads its input.
    public let padding: PaddingRule
    /// Batch-norm epsilon, folded into the convolutions at load time.
    public let batchNormEpsilon: Float
    /// Input size the weights were trained at.
    public let trainingInputSize: Int
    /// Side below which the network makes no sense (e.g. 32 for a stride-32 stack).
    public let minimumInputSize: Int
    /// Channels of the network input (3 for RGB).
    public let inputChannels: Int
    /// The operations in execution order; operation `i` produces tap `i`.
    public let ops: [NetworkOp]

    /// The resolved graph: per operation, the index of its input (`-1`: the network input), of
    /// its skip operand (`add` only), and its output channel count.
    let inputIndex: [Int]
    let skipIndex: [Int?]
    let outputChannels: [Int]

    /// Creates and validates a description.
    ///
    /// - Throws: ``NetworkError/invalidDescription(network:detail:)`` naming the first operation
    ///   that does not fit: a duplicate or unknown name, channel counts that do not match, an
    ///   operation applied to a tensor of the wrong rank.
    public init(name: String, normalisation: InputNormalisation, padding: PaddingRule, batchNormEpsilon: Float,
                trainingInputSize: Int, minimumInputSize: Int, inputChannels: Int = 3, ops: [NetworkOp]) throws {
        self.name = name
        self.normalisation = normalisation
        self.padding = padding
        self.batchNormEpsilon = batchNormEpsilon
        self.trainingInputSize = trainingInputSize
        self.minimumInputSize = minimumInputSize
        self.inputChannels = inputChannels
        self.ops = ops
        func fail(_ detail: String) -> NetworkError { .invalidDescription(network: name, detail: detail) }
        guard !ops.isEmpty else { throw fail("no operations") }
        guard inputChannels > 0, minimumInputSize > 0, trainingInputSize >= minimumInputSize else {
            throw fail("input channels and sizes must be positive, the training size at least the minimum")
        }
        guard batchNormEpsilon > 0 else { throw fail("batch-norm epsilon must be positive") }
        var index: [String: Int] = [:]
        var inputs: [Int] = [], skips: [Int?] = [], channels: [Int] = [], spatial: [Bool] = []
        for (i, op) in ops.enumerated() {
            func resolve(_ reference: String) throws -> Int {
                guard let found = index[reference] else {
                    throw fail("\(op.name) reads '\(reference)', which no earlier operation produces")
                }
                return found
            }
            let input = try op.input.map(resolve) ?? (i - 1)
            let (inChannels, inSpatial) = input < 0 ? (inputChannels, true) : (channels[input], spatial[input])
            var skip: Int? = nil
            switch op.operation {
            case .convolution(let conv):
                guard inSpatial else { throw fail("\(op.name): convolution of a tensor without spatial dimensions") }
                guard conv.outputChannels > 0, conv.kernel > 0, conv.stride > 0, conv.groups > 0 else {
                    throw fail("\(op.name): channels, kernel, stride and groups must be positive")
                }
                guard inChannels % conv.groups == 0, conv.outputChannels % conv.groups == 0 else {
                    throw fail("\(op.name): \(conv.groups) groups do not divide \(inChannels) input and \(conv.outputChannels) output channels")
                }
                channels.append(conv.outputChannels)
                spatial.append(true)
            case .activation:
                channels.append(inChannels)
                spatial.append(inSpatial)
            case .add(let other):
                let s = try resolve(other)
                guard channels[s] == inChannels, spatial[s] == inSpatial else {
                    throw fail("\(op.name): cannot add '\(other)' (\(channels[s]) channels) to a tensor of \(inChannels)")
                }
                skip = s
                channels.append(inChannels)
                spatial.append(inSpatial)
            case .globalAveragePool:
                guard inSpatial else { throw fail("\(op.name): global pooling of a tensor without spatial dimensions") }
                channels.append(inChannels)
                spatial.append(false)
            case .linear(let linear):
                guard !inSpatial else { throw fail("\(op.name): a linear layer needs a pooled (one-dimensional) input") }
                guard linear.outputs > 0 else { throw fail("\(op.name): a linear layer needs outputs") }
                channels.append(linear.outputs)
                spatial.append(false)
            }
            inputs.append(input)
            skips.append(skip)
            for name in [op.name] + op.aliases {
                guard !name.isEmpty, index.updateValue(i, forKey: name) == nil else {
                    throw fail("the name '\(name)' is empty or used twice")
                }
            }
        }
        (inputIndex, skipIndex, outputChannels) = (inputs, skips, channels)
    }

    /// Number of input channels of operation `i`.
    func inputChannels(of i: Int) -> Int { inputIndex[i] < 0 ? inputChannels : outputChannels[inputIndex[i]] }

    /// The ordered taps for a `height × width` input: one per operation, with its per-example
    /// shape (`[C, H, W]` or `[C]`). Needs no weights, so a manifest can be written before loading.
    public func taps(height: Int, width: Int) -> [BackboneTap] {
        var shapes: [[Int]] = []
        shapes.reserveCapacity(ops.count)
        for (i, op) in ops.enumerated() {
            let input = inputIndex[i] < 0 ? [inputChannels, height, width] : shapes[inputIndex[i]]
            switch op.operation {
            case .convolution(let conv):
                let (h, w) = padding.padding(height: input[1], width: input[2], kernel: conv.kernel, stride: conv.stride)
                    .outputSize(height: input[1], width: input[2], kernel: conv.kernel, stride: conv.stride)
                shapes.append([conv.outputChannels, h, w])
            case .activation, .add:
                shapes.append(input)
            case .globalAveragePool:
                shapes.append([input[0]])
            case .linear(let linear):
                shapes.append([linear.outputs])
            }
        }
        return ops.enumerated().map { i, op in
            BackboneTap(order: i, name: op.name, shape: shapes[i], kind: op.tapKind, module: op.module, aliases: op.aliases)
        }
    }

    /// Every state-dict key and shape the network reads, in operation order: per convolution its
    /// weight (`[Cout, Cin / groups, k, k]`) and its batch norm's four vectors; per linear layer
    /// its weight (`[outputs, inputs]`) and bias. Other keys (e.g. BN counters) are not read.
    public var expectedTensors: [ExpectedTensor] {
        var out: [ExpectedTensor] = []
        for (i, op) in ops.enumerated() {
            switch op.operation {
            case .convolution(let conv):
                out.append(ExpectedTensor(conv.weightKey, conv.weightShape(inputChannels: inputChannels(of: i))))
                for key in conv.batchNormKeys { out.append(ExpectedTensor(key, [conv.outputChannels])) }
            case .linear(let linear):
                out.append(ExpectedTensor(linear.weightKey, [linear.outputs, inputChannels(of: i)]))
                out.append(ExpectedTensor(linear.biasKey, [linear.outputs]))
            case .activation, .add, .globalAveragePool:
                break
            }
        }
        return out
    }
}

/// One operation of a ``NetworkDescription``: what it computes, from which tensor, and the tap
/// its output is.
public struct NetworkOp: Sendable, Hashable {
    /// What an operation computes.
    public enum Operation: Sendable, Hashable {
        /// A convolution without bias followed by its batch norm (folded at load time); tap kind
        /// `conv_bn`.
        case convolution(Convolution)
        /// An element-wise activation; tap kind named by the activation.
        case activation(Activation)
        /// The input plus the tensor named `skip` (a residual connection); tap kind `residual_add`.
        case add(skip: String)
        /// The mean of each channel over its spatial positions, `[C, H, W]` → `[C]`; tap kind
        /// `global_pool`.
        case globalAveragePool
        /// A fully connected layer with bias on a `[C]` tensor; tap kind `logits`.
        case linear(Linear)
    }

    /// The tap name of the output (see ``BackboneTap`` for the naming scheme).
    public var name: String
    /// What is computed.
    public var operation: Operation
    /// The name (or alias) of the tensor it reads; `nil` for the previous operation's output
    /// (the network input for the first operation).
    public var input: String?
    /// The checkpoint module(s) that produce the output, for people (e.g. `features.1.conv.0.0+features.1.conv.0.1`).
    public var module: String
    /// Other names for the output (e.g. `block3.output`), usable wherever a name is.
    public var aliases: [String]

    /// Creates an operation.
    public init(_ name: String, _ operation: Operation, input: String? = nil, module: String, aliases: [String] = []) {
        self.name = name
        self.operation = operation
        self.input = input
        self.module = module
        self.aliases = aliases
    }

    /// The kind of tap the output is.
    public var tapKind: BackboneTap.Kind {
        switch operation {
        case .convolution: .convBN
        case .activation(let activation):
            switch activation {
            case .relu6: .relu6
            }
        case .add: .residualAdd
        case .globalAveragePool: .globalPool
        case .linear: .logits
        }
    }
}

extension NetworkOp {
    /// A convolution whose batch norm is folded in, with the PyTorch module paths of its weights.
    public struct Convolution: Sendable, Hashable {
        /// Output channels.
        public var outputChannels: Int
        /// Square kernel side.
        public var kernel: Int
        /// Stride in both directions.
        public var stride: Int
        /// Channel groups: 1 for a dense convolution, the channel count for a depthwise one.
        public var groups: Int
        /// Module path of the convolution: its weight is `<path>.weight`, `[Cout, Cin / groups, k, k]`.
        public var weights: String
        /// Module path of the batch norm: `<path>.weight`, `.bias`, `.running_mean`, `.running_var`.
        public var batchNorm: String

        /// Creates a convolution description.
        public init(outputChannels: Int, kernel: Int, stride: Int = 1, groups: Int = 1, weights: String, batchNorm: String) {
            self.outputChannels = outputChannels
            self.kernel = kernel
            self.stride = stride
            self.groups = groups
            self.weights = weights
            self.batchNorm = batchNorm
        }

        var weightKey: String { "\(weights).weight" }
        /// Scale γ, shift β, running mean μ, running variance σ², in that order.
        var batchNormKeys: [String] { ["weight", "bias", "running_mean", "running_var"].map { "\(batchNorm).\($0)" } }
        func weightShape(inputChannels: Int) -> [Int] { [outputChannels, inputChannels / groups, kernel, kernel] }
    }

    /// A fully connected layer, with the PyTorch module path of its weight and bias.
    public struct Linear: Sendable, Hashable {
        /// Output features.
        public var outputs: Int
        /// Module path: `<path>.weight` (`[outputs, inputs]`) and `<path>.bias` (`[outputs]`).
        public var weights: String

        /// Creates a linear layer description.
        public init(outputs: Int, weights: String) {
            self.outputs = outputs
            self.weights = weights
        }

        var weightKey: String { "\(weights).weight" }
        var biasKey: String { "\(weights).bias" }
    }

    /// Element-wise activations.
    public enum Activation: String, Sendable, Hashable, Codable {
        /// `min(max(x, 0), 6)`.
        case relu6
    }
}

/// How a network's convolutions pad their input.
public enum PaddingRule: String, Sendable, Hashable, Codable {
    /// PyTorch: `(k - 1) / 2` on every side.
    case symmetric
    /// TensorFlow "SAME": output `ceil(size / stride)`, the odd extra row/column at the bottom/right.
    case tfSame = "tf_same"

    /// The padding of a `kernel × kernel`, `stride` convolution over a `height × width` map.
    public func padding(height: Int, width: Int, kernel: Int, stride: Int) -> Padding2D {
        switch self {
        case .symmetric: .symmetric(kernel: kernel)
        case .tfSame: .same(height: height, width: width, kernel: kernel, stride: stride)
        }
    }
}
