import Foundation
import H2TCore
import H2TPipeline
import H2TStore
import Testing

/// Messages for malformed activation files: they describe the file as it is.
@Suite("Tensor file messages")
struct TensorFileMessageTests {
    /// A safetensors header length of 2^63 or more is printed as the unsigned number the file
    /// holds (it was read as an Int: negative, or a trap in a checked build).
    @Test(arguments: [UInt64(1) << 63, UInt64.max, UInt64(1) << 40])
    func anImpossibleHeaderLengthIsPrintedAsWritten(length: UInt64) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("huge.safetensors")
        var bytes = Data()
        withUnsafeBytes(of: length.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array("{\"x\":{}}".utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("a header length of \(length) was accepted")
        } catch let error as TensorFileError {
            #expect(error.description == "\(path): malformed: header length \(length) does not fit in a 16-byte file (truncated?)")
        }
    }

    /// A tap of shape [] has no first axis of examples: the message says so instead of comparing
    /// example counts of 0.
    @Test(arguments: [true, false])
    func aScalarTapIsNamedAsOne(alone: Bool) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("scalar.safetensors")
        let vector = (name: "v", shape: [3, 2], values: [Float](repeating: 0, count: 6))
        try writeSafetensors(path, tensors: (alone ? [] : [vector]) + [(name: "x", shape: [], values: [1])])
        let store = try FeatureStore(path: dir.file("store"))
        let options = ExternalIngestOptions(backboneName: "toy", dataset: "d", split: "train", targetSizes: [16])
        do {
            _ = try ExternalIngest(store: store, options: options).run(paths: [path])
            Issue.record("a scalar tap was ingested")
        } catch let error as IngestError {
            #expect(error.description == "\(path): tap 'x' is a scalar (shape []); every tap needs a first axis of examples")
        }
    }
}
