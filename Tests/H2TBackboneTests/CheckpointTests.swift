import Foundation
import H2TBackbone
import H2TCore
import Testing

/// Test fixtures committed under Fixtures/ (regenerate with `tools/checkpoint_reference.py fixtures`).
enum Fixtures {
    static func url(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil), "fixture \(name)")
    }

    static func bytes(_ name: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: url(name))) }

    static func json(_ name: String) throws -> Any { try JSONSerialization.jsonObject(with: Data(contentsOf: url(name))) }
}

/// The weighted checksum of tools/checkpoint_reference.py (see its docstring), in the same order.
func referenceChecksums(_ tensor: WeightTensor) -> (sum: Double, weighted: Double) {
    var sum = 0.0, weighted = 0.0
    func add(_ v: Double, _ i: Int) {
        sum += v
        weighted += v * Double(i % 251 + 1)
    }
    switch tensor.values {
    case .float(let values): for (i, v) in values.enumerated() { add(Double(v), i) }
    case .integer(let values): for (i, v) in values.enumerated() { add(Double(v), i) }
    }
    return (sum, weighted)
}

@Suite struct CheckpointTests {
    // MARK: Tiny fixtures (always run)

    @Test(arguments: ["tiny_legacy.pth", "tiny_zip.pth"])
    func tinyCheckpointMatchesReference(fixture: String) throws {
        let path = try Fixtures.url(fixture).path
        let dict = try PyTorchCheckpoint.read(contentsOfFile: path)
        let expected = try #require(Fixtures.json("tiny_checkpoint_expected.json") as? [String: [String: Any]])
        #expect(dict.names == ["a.weight", "a.weight_t", "b.strided", "c.half", "bn.num_batches_tracked",
                               "e.double", "f.empty"])
        #expect(dict.source == path)
        for name in dict.names {
            let tensor = try #require(dict[name])
            let reference = try #require(expected[name])
            #expect(tensor.shape == reference["shape"] as? [Int], "\(name)")
            #expect(tensor.storedType.rawValue == reference["dtype"] as? String, "\(name)")
            let values = try #require(reference["values"] as? [Double])
            switch tensor.values {
            case .float(let floats): #expect(floats == values.map { Float($0) }, "\(name)")
            case .integer(let ints): #expect(ints.map(Double.init) == values, "\(name)")
            }
        }
        // Strides and offsets: the transposed view and the strided slice of shared storages.
        #expect(dict["a.weight_t"]?.floats == [0.5, 3.5, -1.25, -4.0, 2.0, 8.125])
        #expect(dict["b.strided"]?.floats == [0.4, 0.6, 0.8].map { Float($0) })
        #expect(dict["bn.num_batches_tracked"]?.values == .integer([7]))
        #expect(dict["bn.num_batches_tracked"]?.shape == [])
    }

    /// Legacy storage views (a slice of a root storage named in the persistent id).
    @Test func legacyStorageViews() throws {
        let dict = try PyTorchCheckpoint.read(contentsOfFile: Fixtures.url("tiny_legacy_views.pth").path)
        #expect(dict.names == ["v.a", "v.b"])
        #expect(dict["v.a"]?.floats == [3, 4, 5, 6])
        #expect(dict["v.b"]?.floats == [8, 10, 9, 11])
    }

    @Test func tensorsReachingPastTheirStorageAreRefused() throws {
        // In the tiny legacy fixture, "b.strided" is size (3,), stride (2,), offset 4 of a 10-element
        // storage: change its size to 4 (reaches element 10) by patching the BININT1 3 that follows
        // its key's tuple. Find the pattern: offset 4 (K 4), then MARK K 3 TUPLE... written as TUPLE1.
        var bytes = try Fixtures.bytes("tiny_legacy.pth")
        let pattern: [UInt8] = [0x4B, 0x04, 0x4B, 0x03, 0x85]  // BININT1 4, BININT1 3, TUPLE1
        let at = try #require(bytes.indices.first { bytes[$0..<min($0 + 5, bytes.count)].elementsEqual(pattern) })
        bytes[at + 3] = 0x04
        let error = #expect(throws: WeightFileError.self) { try PyTorchCheckpoint.read(bytes: bytes, file: "far.pth") }
        #expect(error?.description.contains("reaches element 10 of a storage of 10") == true, "\(String(describing: error))")
    }

    @Test func nonFloatTensorsCanBeSkippedExplicitly() throws {
        let dict = try PyTorchCheckpoint.read(contentsOfFile: Fixtures.url("tiny_zip.pth").path, nonFloatTensors: .skip)
        #expect(dict["bn.num_batches_tracked"] == nil)
        #expect(dict.skippedNames == ["bn.num_batches_tracked"])
        #expect(dict.count == 6)
    }

    // MARK: Real checkpoints (gated on the artefact being fetched)

    /// `verified`: load through the artefact cache (sha256 checked); otherwise read the file
    /// directly (hashing is slow in debug builds; the per-tensor checksums cover the content).
    static func checkRealCheckpoint(_ artifact: Artifact, fixture: String, keyCount: Int,
                                    shapes: [String: [Int]], verified: Bool) throws {
        let dict = verified ? try PyTorchCheckpoint.read(artifact, from: TestPaths.cache)
                            : try PyTorchCheckpoint.read(contentsOfFile: TestPaths.cache.expectedPath(of: artifact))
        let reference = try #require(Fixtures.json(fixture) as? [String: Any])
        let tensors = try #require(reference["tensors"] as? [String: [String: Any]])
        #expect(dict.count == keyCount)
        #expect(tensors.count == keyCount)
        for (name, shape) in shapes { #expect(dict[name]?.shape == shape, "\(name)") }
        for name in dict.names {
            let tensor = try #require(dict[name])
            let expected = try #require(tensors[name], "\(name) not in the reference")
            #expect(tensor.shape == expected["shape"] as? [Int], "\(name)")
            #expect(tensor.storedType.rawValue == expected["dtype"] as? String, "\(name)")
            let (sum, weighted) = referenceChecksums(tensor)
            let expectedSum = try #require(expected["sum"] as? Double)
            let expectedWeighted = try #require(expected["weighted"] as? Double)
            #expect(abs(sum - expectedSum) <= 1e-9 * max(1, abs(expectedSum)), "\(name) sum")
            #expect(abs(weighted - expectedWeighted) <= 1e-9 * max(1, abs(expectedWeighted)), "\(name) weighted")
        }
    }

    @Test(.enabled(if: TestPaths.cache.isPresent(.mobilenetV2), "run tools/fetch-artifacts mobilenet_v2"))
    func realMobileNetV2() throws {
        try Self.checkRealCheckpoint(.mobilenetV2, fixture: "mobilenet_v2_checksums.json", keyCount: 314, shapes: [
            "features.0.0.weight": [32, 3, 3, 3],
            "features.1.conv.0.0.weight": [32, 1, 3, 3],
            "features.18.1.running_var": [1280],
            "classifier.1.weight": [1000, 1280],
            "classifier.1.bias": [1000],
            "features.0.1.num_batches_tracked": [],
        ], verified: true)
    }

    @Test(.enabled(if: TestPaths.cache.isPresent(.efficientnetLite0), "run tools/fetch-artifacts efficientnet_lite0"))
    func realEfficientNetLite0() throws {
        try Self.checkRealCheckpoint(.efficientnetLite0, fixture: "efficientnet_lite0_checksums.json", keyCount: 296, shapes: [
            "_conv_stem.weight": [32, 3, 3, 3],
            "_fc.weight": [1000, 1280],
        ], verified: false)
    }

    // MARK: Bad input

    @Test(arguments: ["tiny_legacy.pth", "tiny_zip.pth"])
    func everyTruncationIsAnErrorNamingTheFile(fixture: String) throws {
        let bytes = try Fixtures.bytes(fixture)
        for length in 0..<bytes.count {
            do {
                _ = try PyTorchCheckpoint.read(bytes: Array(bytes[..<length]), file: "cut-\(length).pth")
                Issue.record("a checkpoint cut to \(length) of \(bytes.count) bytes was accepted")
            } catch let error as WeightFileError {
                #expect(error.description.hasPrefix("cut-\(length).pth"), "\(error)")
            }
        }
    }

    /// Flipping any single byte must give an error or a (different) state dict, never a crash.
    @Test(arguments: ["tiny_legacy.pth", "tiny_zip.pth"])
    func singleByteCorruptionNeverCrashes(fixture: String) throws {
        let bytes = try Fixtures.bytes(fixture)
        var rejected = 0
        for position in bytes.indices {
            var corrupt = bytes
            corrupt[position] ^= 0xA5
            if (try? PyTorchCheckpoint.read(bytes: corrupt, file: "x.pth")) == nil { rejected += 1 }
        }
        // Most positions hold pickle structure, zip headers or CRC-checked data.
        #expect(rejected > bytes.count / 2)
    }

    @Test func corruptedTensorBytesAreCaught() throws {
        // Zip: the member CRC catches it.
        var zip = try Fixtures.bytes("tiny_zip.pth")
        let pattern: [UInt8] = [0x00, 0x00, 0x00, 0x3F]  // 0.5 as float32 LE: first element of storage 0
        let at = try #require(zip.indices.first { zip[$0..<min($0 + 4, zip.count)].elementsEqual(pattern) })
        zip[at + 3] ^= 0x01
        let zipError = #expect(throws: WeightFileError.self) { try PyTorchCheckpoint.read(bytes: zip, file: "c.pth") }
        #expect(zipError?.description.contains("CRC-32") == true)

        // Legacy has no per-storage checksum: the pinned sha256 catches it.
        let legacy = try Fixtures.bytes("tiny_legacy.pth")
        let digest = SHA256.hexDigest(legacy)
        #expect(throws: Never.self) { try PyTorchCheckpoint.read(bytes: legacy, file: "l.pth", expectedSHA256: digest) }
        var corrupt = legacy
        corrupt[corrupt.count - 2] ^= 0x40
        let error = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: corrupt, file: "l.pth", expectedSHA256: digest)
        }
        guard case .checksumMismatch(let file, let expected, _) = error else {
            Issue.record("expected checksumMismatch, got \(String(describing: error))")
            return
        }
        #expect(file == "l.pth" && expected == digest)
    }

    @Test func trailingBytesAreRefused() throws {
        let error = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: Fixtures.bytes("tiny_legacy.pth") + [0, 1, 2], file: "t.pth")
        }
        #expect(error?.description.contains("3 unexpected bytes") == true)
    }

    /// A legacy checkpoint header followed by a pickle `payload` (the state-dict position).
    static func legacyCheckpoint(statePickle payload: [UInt8]) -> [UInt8] {
        let magic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
        let proto: [UInt8] = [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E]
        let sysInfo: [UInt8] = [0x80, 0x02, 0x7D, 0x2E]
        let keys: [UInt8] = [0x80, 0x02, 0x5D, 0x2E]
        return magic + proto + sysInfo + payload + keys
    }

    /// `module.name(arg)` as protocol-2 GLOBAL + REDUCE, the classic code-execution pickle.
    static func callPickle(module: String, name: String, argument: String) -> [UInt8] {
        let arg = Array(argument.utf8)
        let count = UInt32(arg.count)
        return [0x80, 0x02, 0x63] + Array("\(module)\n\(name)\n".utf8)
            + [0x58] + withUnsafeBytes(of: count.littleEndian, Array.init) + arg + [0x85, 0x52, 0x2E]
    }

    @Test func osSystemGlobalIsRefusedAndNothingRuns() throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-pwned-\(UUID().uuidString)").path
        let bytes = Self.legacyCheckpoint(statePickle: Self.callPickle(module: "os", name: "system", argument: "touch \(marker)"))
        let error = #expect(throws: WeightFileError.self) { try PyTorchCheckpoint.read(bytes: bytes, file: "evil.pth") }
        guard case .refusedGlobal(let file, let global, _) = error else {
            Issue.record("expected refusedGlobal, got \(String(describing: error))")
            return
        }
        #expect(file == "evil.pth")
        #expect(global == "os.system")
        #expect(error?.description.contains("'os.system'") == true)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func otherGlobalsAndObjectOpcodesAreRefused() throws {
        // builtins.eval through STACK_GLOBAL (protocol 4 spelling).
        let stackGlobal: [UInt8] = [0x80, 0x04, 0x8C, 0x08] + Array("builtins".utf8) + [0x8C, 0x04] + Array("eval".utf8)
            + [0x93, 0x8C, 0x01, 0x31, 0x85, 0x52, 0x2E]
        let e1 = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: Self.legacyCheckpoint(statePickle: stackGlobal), file: "e.pth")
        }
        #expect(e1 == .refusedGlobal(file: "e.pth", global: "builtins.eval", offset: 25 + 18))
        // A torch global that is not on the list.
        let e2 = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: Self.legacyCheckpoint(
                statePickle: Self.callPickle(module: "torch._utils", name: "_rebuild_qtensor", argument: "x")), file: "q.pth")
        }
        #expect(e2?.description.contains("torch._utils._rebuild_qtensor") == true)
        // INST builds an object from a class named inline; refused as an opcode.
        let inst: [UInt8] = [0x80, 0x02, 0x28, 0x69] + Array("os\nsystem\n".utf8) + [0x2E]
        let e3 = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: Self.legacyCheckpoint(statePickle: inst), file: "i.pth")
        }
        #expect(e3?.description.contains("INST") == true)
    }

    @Test func evilZipCheckpointIsRefused() throws {
        let marker = "/tmp/h2t-evil-pickle-marker-zip"
        try? FileManager.default.removeItem(atPath: marker)
        let error = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(contentsOfFile: Fixtures.url("evil_os_system_zip.pth").path)
        }
        #expect(error?.description.contains("refused pickle global 'os.system'") == true)
        #expect(!FileManager.default.fileExists(atPath: marker))
    }

    @Test func compressedZipMembersAreRefused() throws {
        let error = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(contentsOfFile: Fixtures.url("deflated_zip.pth").path)
        }
        #expect(error?.description.contains("archive/data.pkl uses compression method 8") == true)
    }

    @Test func notACheckpoint() {
        let error = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(bytes: Array("hello".utf8), file: "h.txt")
        }
        #expect(error?.description.hasPrefix("h.txt: not a supported weight file") == true)
        let missing = #expect(throws: WeightFileError.self) {
            try PyTorchCheckpoint.read(contentsOfFile: "/nonexistent/w.pth")
        }
        #expect(missing?.description.hasPrefix("/nonexistent/w.pth") == true)
    }

    // MARK: Validation against a network's expected keys

    @Test func validationReportsEveryMismatch() throws {
        let dict = try PyTorchCheckpoint.read(contentsOfFile: Fixtures.url("tiny_legacy.pth").path)
        let good: [ExpectedTensor] = [
            .init("a.weight", [2, 3]), .init("a.weight_t", [3, 2]), .init("b.strided", [3]),
            .init("c.half", [2, 2]), .init("e.double", [3]), .init("f.empty", [0, 4]),
            .init("bn.num_batches_tracked", [], allowInteger: true),
        ]
        try dict.validate(expected: good)
        try dict.validate(expected: good.filter { $0.name != "bn.num_batches_tracked" },
                          ignoring: { $0.hasSuffix("num_batches_tracked") })

        var bad = good.filter { $0.name != "e.double" && $0.name != "bn.num_batches_tracked" }
        bad[0] = .init("a.weight", [3, 2])
        bad.append(.init("z.missing", [1]))
        bad.append(.init("bn.num_batches_tracked", []))
        let error = #expect(throws: StateDictMismatch.self) { try dict.validate(expected: bad) }
        #expect(error?.missing == ["z.missing"])
        #expect(error?.unexpected == ["e.double"])
        #expect(error?.wrongShapes == [.init(name: "a.weight", expected: [3, 2], actual: [2, 3])])
        #expect(error?.wrongTypes == [.init(name: "bn.num_batches_tracked", storedType: .int64)])
        #expect(error?.description.contains("tiny_legacy.pth") == true)

        #expect(try dict.floats("a.weight", shape: [2, 3]) == [0.5, -1.25, 2.0, 3.5, -4.0, 8.125])
        #expect(throws: StateDictMismatch.self) { try dict.floats("a.weight", shape: [6]) }
        #expect(throws: StateDictMismatch.self) { try dict.floats("nope", shape: [1]) }
    }
}
