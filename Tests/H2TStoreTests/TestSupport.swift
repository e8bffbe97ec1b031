import Foundation
import H2TCore
import H2TStore
@_exported import H2TTestSupport

/// Deterministic pseudo-random activations: dense, mostly non-negative, a few exact zeros.
struct ActivationGenerator {
    var random: SplitMix64

    init(state: UInt64) { random = SplitMix64(seed: state) }

    mutating func uniform() -> Float { random.uniform() }

    mutating func matrix(rows: Int, cols: Int) -> [Float] {
        (0..<(rows * cols)).map { i in
            let u = uniform()
            return u < 0.05 ? 0 : u * u * Float(1 + i % cols % 7)
        }
    }
}

/// A toy backbone: a spatial tap and a vector tap.
func toyBackbone(channels: Int = 4, width: Int = 4, vector: Int = 8) -> BackboneManifest {
    BackboneManifest(architecture: "external:toy", weightsSHA256: nil,
                     taps: [TapDescriptor(name: "conv", shape: [channels, width, width]), TapDescriptor(name: "logits", shape: [vector])])
}
