import Foundation
import H2TBackbone
import H2TCore
import Testing

@Suite struct SafetensorsWeightsTests {
    @Test func readsEveryElementTypeIntoAStateDict() throws {
        let path = try Fixtures.url("tiny_weights.safetensors").path
        let dict = try SafetensorsWeights.read(contentsOfFile: path)
        #expect(dict.names == ["conv.weight", "conv.bias", "bn.num_batches_tracked", "head.scale"])
        #expect(dict["conv.weight"] == WeightTensor(shape: [2, 2], storedType: .float32, values: .float([0.5, -1.5, 2.25, 3.0])))
        #expect(dict["conv.bias"] == WeightTensor(shape: [2], storedType: .float16, values: .float([0.125, -8.0])))
        #expect(dict["bn.num_batches_tracked"] == WeightTensor(shape: [], storedType: .int64, values: .integer([42])))
        #expect(dict["head.scale"]?.floats == [1.5])
        #expect(dict.source == path)

        let skipped = try SafetensorsWeights.read(contentsOfFile: path, nonFloatTensors: .skip)
        #expect(skipped.names == ["conv.weight", "conv.bias", "head.scale"])
        #expect(skipped.skippedNames == ["bn.num_batches_tracked"])
    }

    @Test func pinnedDigestIsVerified() throws {
        let path = try Fixtures.url("tiny_weights.safetensors").path
        let digest = try SHA256.hexDigest(fileAtPath: path)
        #expect(try SafetensorsWeights.read(contentsOfFile: path, expectedSHA256: digest).count == 4)
        let wrong = String(repeating: "0", count: 64)
        let error = #expect(throws: WeightFileError.self) {
            try SafetensorsWeights.read(contentsOfFile: path, expectedSHA256: wrong)
        }
        #expect(error == .checksumMismatch(file: path, expected: wrong, actual: digest))
    }

    @Test func truncatedFileIsAnErrorNamingIt() throws {
        let bytes = try Fixtures.bytes("tiny_weights.safetensors")
        let dir = try TestPaths.temporaryDirectory("st")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cut = dir.appendingPathComponent("cut.safetensors")
        for length in [0, 7, 8, 20, bytes.count - 1] {
            try Data(bytes[..<length]).write(to: cut)
            let error = #expect(throws: (any Error).self) { try SafetensorsWeights.read(contentsOfFile: cut.path) }
            #expect("\(error.map { "\($0)" } ?? "")".contains(cut.path), "length \(length)")
        }
    }
}
