import Foundation
import H2TCore
import H2TStore

/// A fresh temporary directory per test, removed when the value is released.
final class TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "h2t-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic pseudo-random activations: dense, mostly non-negative, a few exact zeros.
struct ActivationGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }

    mutating func matrix(rows: Int, cols: Int) -> [Float] {
        (0..<(rows * cols)).map { i in
            let u = uniform()
            return u < 0.05 ? 0 : u * u * Float(1 + i % cols % 7)
        }
    }
}

/// Writes a safetensors file: tensors in order, float32 unless another dtype name is given.
func writeSafetensors(_ path: String, tensors: [(name: String, shape: [Int], values: [Float])],
                      metadata: [String: String] = [:], dtypeOverride: String? = nil) throws {
    var writer = SafetensorsWriter(metadata: metadata)
    for tensor in tensors {
        tensor.values.withUnsafeBytes { writer.append(tensor.name, dtype: dtypeOverride ?? "F32", shape: tensor.shape, bytes: $0) }
    }
    try writer.write(to: path)
}

/// A toy backbone: a spatial tap and a vector tap.
func toyBackbone(channels: Int = 4, width: Int = 4, vector: Int = 8) -> BackboneManifest {
    BackboneManifest(architecture: "external:toy", weightsSHA256: nil,
                     taps: [TapDescriptor(name: "conv", shape: [channels, width, width]), TapDescriptor(name: "logits", shape: [vector])])
}
