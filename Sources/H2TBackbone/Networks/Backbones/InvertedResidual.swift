/// The operations of an inverted-residual network (MobileNetV2 and the EfficientNet family):
/// a 3×3 stride-2 stem, a table of blocks (1×1 expansion, k×k depthwise, 1×1 linear
/// projection, a skip connection when the block keeps its shape), a 1×1 head, global pooling
/// and a classifier; ReLU6 after every convolution but the projections.
///
/// The tap names follow ``BackboneTap``'s scheme; where the weights sit in the checkpoint is the
/// network's ``InvertedResidualWeightNames``.
struct InvertedResidualNetwork {
    /// One row of the block table: `repeats` blocks, the first with `stride`.
    struct Stage {
        let expansion: Int
        let kernel: Int
        let stride: Int
        let channels: Int
        let repeats: Int
    }

    let stemChannels: Int
    let stages: [Stage]
    let headChannels: Int
    let classes: Int
    let names: InvertedResidualWeightNames

    var ops: [NetworkOp] {
        var ops: [NetworkOp] = []
        func convolution(_ tap: String, _ weights: InvertedResidualWeightNames.Conv, channels: Int, kernel: Int = 1,
                         stride: Int = 1, groups: Int = 1, activation: Bool, aliases: [String] = []) {
            let module = "\(weights.conv)+\(weights.batchNorm)"
            let conv = NetworkOp.Convolution(outputChannels: channels, kernel: kernel, stride: stride, groups: groups,
                                             weights: weights.conv, batchNorm: weights.batchNorm)
            ops.append(NetworkOp("\(tap).conv_bn", .convolution(conv), module: module, aliases: aliases))
            if activation { ops.append(NetworkOp("\(tap).relu6", .activation(.relu6), module: module)) }
        }
        convolution("stem", names.stem, channels: stemChannels, kernel: 3, stride: 2, activation: true)
        var (inputChannels, block, blockInput) = (stemChannels, 0, "stem.relu6")
        for stage in stages {
            for repeat_ in 0..<stage.repeats {
                let tap = "block\(block)", hidden = inputChannels * stage.expansion
                let stride = repeat_ == 0 ? stage.stride : 1
                let expanded = stage.expansion != 1
                let residual = stride == 1 && inputChannels == stage.channels
                if expanded {
                    convolution("\(tap).expand", names.expand(block), channels: hidden, activation: true)
                }
                convolution("\(tap).depthwise", names.depthwise(block, expanded), channels: hidden, kernel: stage.kernel,
                            stride: stride, groups: hidden, activation: true)
                convolution("\(tap).project", names.project(block, expanded), channels: stage.channels,
                            activation: false, aliases: residual ? [] : ["\(tap).output"])
                if residual {
                    ops.append(NetworkOp("\(tap).residual_add", .add(skip: blockInput), module: names.block(block),
                                         aliases: ["\(tap).output"]))
                }
                (inputChannels, block, blockInput) = (stage.channels, block + 1, "\(tap).output")
            }
        }
        convolution("head", names.head, channels: headChannels, activation: true)
        ops.append(NetworkOp("pool", .globalAveragePool, module: "avgpool", aliases: ["pre_logits"]))
        ops.append(NetworkOp("logits", .linear(.init(outputs: classes, weights: names.classifier)), module: names.classifier))
        return ops
    }
}

/// Where an inverted-residual network's weights sit in its checkpoint: PyTorch module paths per
/// part (a block's paths may depend on whether it has an expansion convolution).
struct InvertedResidualWeightNames {
    /// A convolution's module path and that of the batch norm folded into it.
    struct Conv {
        let conv: String
        let batchNorm: String
    }

    let stem: Conv
    /// Module path of block `i` as a whole (named by its `residual_add` tap).
    let block: (_ index: Int) -> String
    let expand: (_ index: Int) -> Conv
    let depthwise: (_ index: Int, _ expanded: Bool) -> Conv
    let project: (_ index: Int, _ expanded: Bool) -> Conv
    let head: Conv
    /// Module path of the classifier (`.weight`, `.bias`).
    let classifier: String
}

extension NetworkDescription {
    /// A built-in description, which its tests show to be valid.
    static func builtIn(_ make: () throws -> NetworkDescription) -> NetworkDescription {
        do {
            return try make()
        } catch {
            preconditionFailure("built-in network description is invalid: \(error)")
        }
    }
}
