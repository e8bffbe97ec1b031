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

/// Writes a float32 `.npy` file (format 1.0, C order) of `shape` at `path`.
public func writeNpy(_ path: String, shape: [Int], values: [Float]) throws {
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", ")),), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count), 0])
    data.append(contentsOf: Array(header.utf8))
    values.withUnsafeBytes { data.append(contentsOf: $0) }
    try data.write(to: URL(fileURLWithPath: path))
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
