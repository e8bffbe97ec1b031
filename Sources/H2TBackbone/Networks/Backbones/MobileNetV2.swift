extension NetworkDescription {
    /// torchvision's MobileNetV2 (ImageNet-1k, `mobilenet_v2-b0353104.pth`): symmetric padding,
    /// BN eps 1e-5, ReLU6; 99 taps (17 blocks, 10 with skips).
    public static let mobileNetV2 = builtIn {
        // torchvision's table: (expansion t, channels c, repeats n, first stride s), kernels 3×3.
        let table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        // torchvision: `features.0` the stem, `features.(i+1)` block i (its `conv` a Sequential of
        // ConvBNReLU modules, `.0` conv and `.1` BN, then the projection conv and BN), `features.18`
        // the head, `classifier.1` the Linear after the dropout.
        func conv(_ path: String) -> InvertedResidualWeightNames.Conv { .init(conv: "\(path).0", batchNorm: "\(path).1") }
        let names = InvertedResidualWeightNames(
            stem: conv("features.0"),
            block: { "features.\($0 + 1)" },
            expand: { conv("features.\($0 + 1).conv.0") },
            depthwise: { conv("features.\($0 + 1).conv.\($1 ? 1 : 0)") },
            project: { .init(conv: "features.\($0 + 1).conv.\($1 ? 2 : 1)", batchNorm: "features.\($0 + 1).conv.\($1 ? 3 : 2)") },
            head: conv("features.18"),
            classifier: "classifier.1")
        let network = InvertedResidualNetwork(
            stemChannels: 32,
            stages: table.map { .init(expansion: $0.0, kernel: 3, stride: $0.3, channels: $0.1, repeats: $0.2) },
            headChannels: 1280, classes: 1000, names: names)
        return try NetworkDescription(
            name: "mobilenet_v2",
            normalisation: InputNormalisation(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]),
            padding: .symmetric, batchNormEpsilon: 1e-5, trainingInputSize: 224, minimumInputSize: 32,
            ops: network.ops)
    }
}
