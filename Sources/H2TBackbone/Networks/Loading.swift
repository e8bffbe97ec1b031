extension BackboneArchitecture {
    /// The pinned checkpoint of this backbone in the artefact cache.
    public var weightsArtifact: Artifact {
        switch self {
        case .mobileNetV2: .mobilenetV2
        case .efficientNetLite0: .efficientnetLite0
        }
    }
}

extension BackboneNetwork {
    /// Loads the pinned weights of `architecture` from the artefact cache (SHA-256 verified) and
    /// builds the network.
    ///
    /// - Throws: `ArtifactError` when the file is missing or differs from its pin (the message
    ///   says which command fetches it), `WeightFileError` for an unreadable checkpoint,
    ///   `StateDictMismatch` when its keys do not fit.
    public static func load(_ architecture: BackboneArchitecture, from cache: ArtifactCache) throws -> BackboneNetwork {
        let state = try PyTorchCheckpoint.read(architecture.weightsArtifact, from: cache)
        return try BackboneNetwork(architecture: architecture, weights: state)
    }
}
