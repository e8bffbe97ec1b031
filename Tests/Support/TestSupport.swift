import Foundation
import H2TCore

/// Helpers shared by the test targets (a library target that only tests depend on).

/// A fresh temporary directory per test, removed when the value is released.
public final class TemporaryDirectory {
    /// The directory.
    public let path: String

    /// Creates `NSTemporaryDirectory()/<prefix>-<uuid>`.
    public init(prefix: String = "h2t-test") {
        path = NSTemporaryDirectory() + prefix + "-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// A path inside the directory.
    public func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// SplitMix64 numbers for deterministic fixtures.
public struct SeededRandom {
    /// The generator state.
    public var state: UInt64

    /// Starts from `state`.
    public init(state: UInt64) { self.state = state }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits.
    public mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// Writes a safetensors file: tensors in order, float32 unless another dtype name is given.
public func writeSafetensors(_ path: String, tensors: [(name: String, shape: [Int], values: [Float])],
                             metadata: [String: String] = [:], dtypeOverride: String? = nil) throws {
    var writer = SafetensorsWriter(metadata: metadata)
    for tensor in tensors {
        tensor.values.withUnsafeBytes { writer.append(tensor.name, dtype: dtypeOverride ?? "F32", shape: tensor.shape, bytes: $0) }
    }
    try writer.write(to: path)
}
