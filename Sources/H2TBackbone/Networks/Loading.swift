import H2TCore

extension BackboneNetwork {
    /// Loads the pinned weights of `architecture` from the artefact cache (SHA-256 verified) and
    /// builds the network.
    ///
    /// - Throws: `ArtifactError` when the file is missing or differs from its pin (the message
    ///   says which command fetches it), `WeightFileError` for an unreadable checkpoint,
    ///   `StateDictMismatch` when its keys do not fit, `InstructionSetError` for an `H2T_ISA`
    ///   that names no instruction set (checked here, before any kernel runs, so that a typo is an
    ///   error rather than a silent fallback to the detected set).
    public static func load(_ architecture: BackboneArchitecture, from cache: ArtifactCache) throws -> BackboneNetwork {
        try InstructionSet.validateEnvironment()
        let state = try PyTorchCheckpoint.read(architecture.weightsArtifact, from: cache)
        return try BackboneNetwork(architecture: architecture, weights: state)
    }
}

extension BackboneNetwork {
    /// ImageNet top-`k` classes for an image file (PNG or JPEG), decoded and preprocessed the way
    /// ingest does it (`Preprocessing(architecture:size:)`: PIL-style bilinear resize of the whole
    /// image to `size × size`, the architecture's normalisation). The sanity check behind the CLI:
    /// scikit-image's chelsea.png must give 285 (Egyptian cat), coffee.png 967 (espresso).
    ///
    /// - Throws: `ImageInputError` naming the file when it cannot be decoded.
    public func classify(imageAt path: String, size: Int? = nil, top k: Int = 5) throws -> [ImageNetPrediction] {
        let image = try ImageDecoder.decode(contentsOfFile: path)
        let side = size ?? architecture.trainingInputSize
        let preprocessing = Preprocessing(architecture: architecture, size: side)
        try preprocessing.validate()
        return try classify(preprocessing.tensor([image]), height: side, width: side, top: k)
    }
}
