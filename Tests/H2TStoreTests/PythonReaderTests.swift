import Foundation
import H2TCore
@_spi(Testing) import H2TStore
import Testing

/// The on-disk format is a public contract: `tools/read_store.py` (py-lmdb + zstandard + numpy,
/// none of our code) must read what the Swift store wrote, bit for bit. Needs python3 with the
/// modules of `tools/requirements.txt`; skipped with that hint when they are missing.
@Suite("Python reader of the on-disk format")
struct PythonReaderTests {
    @Test("read_store.py reads a split, selected columns and rows exactly as the Swift query layer",
          .enabled(if: PyReaderEnv.readerModulesPresent, PyReaderEnv.installHint),
          arguments: [TileCodec.default, .lossless, TileCodec(dtype: .float16, compressed: false, frameWidth: 3)])
    func pythonMatchesSwift(codec: TileCodec) throws {
        var fixture = try PyReaderFixture(codec: codec)
        defer { fixture.remove() }
        let store = try fixture.build()
        let fsPrefix = String(fixture.featureSetID.prefix(12))

        // Whole split, all columns: interleaves both segments, in split order.
        let swiftSplit = try store.read(featureSet: fixture.featureSetID, dataset: "toy", split: "train")
        let out = fixture.dir + "/train.npy", labelsOut = fixture.dir + "/labels.npy"
        try PyReaderEnv.run(["--featureset", fsPrefix, "--dataset", "toy", "--split", "train",
                             "--out", out, "--labels-out", labelsOut], store: fixture.storePath).expectSuccess()
        let pyMatrix = try NPY.read(out)
        #expect(pyMatrix.descr == "<f4")
        #expect(pyMatrix.shape == [fixture.trainOrder.count, fixture.width])
        #expect(bitwiseMismatch(pyMatrix.floats, swiftSplit.features.values) == nil)
        let pyLabels = try NPY.read(labelsOut)
        #expect(pyLabels.descr == "<i8")
        #expect(pyLabels.int64s == swiftSplit.labels.map(Int64.init))
        #expect(swiftSplit.labels == fixture.trainOrder.map { fixture.labels[$0] })

        // Both equal the original values rounded to the stored type (computed here independently).
        var worst: Float = 0
        var expected: [Float] = []
        for row in fixture.trainOrder {
            for c in 0..<fixture.width {
                let original = fixture.values[row * fixture.width + c]
                let decoded = pyMatrix.floats[expected.count]
                expected.append(PyReaderFixture.rounded(original, to: codec.dtype))
                if original != 0 { worst = max(worst, abs(decoded - original) / abs(original)) }
            }
        }
        #expect(bitwiseMismatch(pyMatrix.floats, expected) == nil)
        switch codec.dtype {
        case .float32: #expect(worst == 0)
        case .float16: #expect(worst > 0 && worst <= 1.0 / 2048, "float16 keeps 11 significant bits; worst relative error \(worst)")
        case .bfloat16: #expect(worst > 0 && worst <= 1.0 / 256, "bfloat16 keeps 8 significant bits; worst relative error \(worst)")
        }

        // Selected columns across all three column blocks, unsorted, one repeated.
        let columns = [148, 0, 63, 64, 5, 127, 128, 70, 5, 131]
        let swiftColumns = try store.read(featureSet: fixture.featureSetID, dataset: "toy", split: "train", columns: columns)
        let colsOut = fixture.dir + "/cols.npy"
        try PyReaderEnv.run(["--featureset", fsPrefix, "--dataset", "toy", "--split", "train", "--out", colsOut,
                             "--columns", columns.map(String.init).joined(separator: ",")],
                            store: fixture.storePath).expectSuccess()
        let pyColumns = try NPY.read(colsOut)
        #expect(pyColumns.shape == [fixture.trainOrder.count, columns.count])
        #expect(bitwiseMismatch(pyColumns.floats, swiftColumns.features.values) == nil)
        let gathered = fixture.trainOrder.indices.flatMap { i in columns.map { pyMatrix.floats[i * fixture.width + $0] } }
        #expect(bitwiseMismatch(pyColumns.floats, gathered) == nil)

        // Rows by example id, in an order that jumps between segments.
        let picked = [11, 0, 7, 6, 3].map { fixture.examples[$0] }
        let swiftRows = try store.read(featureSet: fixture.featureSetID, examples: picked)
        let rowsOut = fixture.dir + "/rows.npy"
        try PyReaderEnv.run(["--featureset", fsPrefix, "--examples", picked.map(\.hex).joined(separator: ","),
                             "--out", rowsOut], store: fixture.storePath).expectSuccess()
        let pyRows = try NPY.read(rowsOut)
        #expect(pyRows.shape == [picked.count, fixture.width])
        #expect(bitwiseMismatch(pyRows.floats, swiftRows.values) == nil)

        // The listing finds the feature set with both segments.
        let listing = try PyReaderEnv.run([], store: fixture.storePath)
        try listing.expectSuccess()
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(listing.stdout.utf8)) as? [[String: Any]])
        #expect(listed.count == 1)
        #expect(listed.first?["id"] as? String == fixture.featureSetID)
        #expect(listed.first?["rows"] as? Int == fixture.examples.count)
        #expect(listed.first?["segments"] as? Int == 2)
    }

    @Test("stored manifests match schemas/*.schema.json and their ids are the SHA-256 of the stored bytes",
          .enabled(if: PyReaderEnv.schemaModulesPresent, PyReaderEnv.installHint))
    func manifestsMatchSchemas() throws {
        var fixture = try PyReaderFixture()
        defer { fixture.remove() }
        let store = try fixture.build()
        // A second backbone exercising the optional and free-form fields.
        let other = BackboneManifest(architecture: "external:résumé/net", weightsSHA256: String(repeating: "ab", count: 32),
                                     preprocessing: .object(["size": .number(224), "mean": .array([.number(0.485), .number(0.456)]),
                                                             "note": .string("a/b \"q\""), "flip": .bool(false), "crop": .null]),
                                     taps: [TapDescriptor(name: "x", shape: [3])])
        let otherID = try store.register(backbone: other)
        // A feature set of store format 2 with a pooling rule other than the default.
        let ruledID = try store.register(featureSet: FeatureSetManifest(backbone: other, backboneID: otherID, targetSize: 4,
                                                                         poolingRule: PoolingRule(name: "head2toe-avgpool", version: 2)))
        let result = try PyReaderEnv.runScript("tools/check_schemas.py", [fixture.storePath])
        try result.expectSuccess()
        // 2 backbones, 2 feature sets, 1 dataset, 12 examples.
        #expect(result.stdout.contains("17 records valid"), "\(result.stdout)")
        let dump = try PyReaderEnv.run(["--manifests"], store: fixture.storePath)
        try dump.expectSuccess()
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: [String: Any]])
        #expect(Set(json["backbones"]?.keys.map { $0 } ?? []) == [fixture.backboneID, otherID])
        #expect(Set(json["featuresets"]?.keys.map { $0 } ?? []) == [fixture.featureSetID, ruledID])
    }

    @Test("read_store.py refuses corrupted tiles (naming the key) and unknown store versions",
          .enabled(if: PyReaderEnv.readerModulesPresent, PyReaderEnv.installHint))
    func pythonRejectsCorruption() throws {
        var fixture = try PyReaderFixture()
        defer { fixture.remove() }
        let store = try fixture.build()
        let fsPrefix = String(fixture.featureSetID.prefix(12))
        let args = ["--featureset", fsPrefix, "--dataset", "toy", "--split", "train", "--out", fixture.dir + "/x.npy"]
        // Key of the tile of the second segment (first row 7), column block 1.
        let key = Hex.decode(fixture.featureSetID.prefix(32))! + [0, 0, 0, 7] + [0, 0, 0, 1]
        let tiles = store.rawEnvironment.table("tiles")
        let original = try #require(try store.rawEnvironment.read { try $0.bytes(tiles, key) })

        func corrupt(at index: Int) throws -> PyReaderEnv.Result {
            var bad = original
            bad[index] ^= 0x10
            try store.rawEnvironment.write { try $0.put(tiles, key, bad) }
            return try PyReaderEnv.run(args, store: fixture.storePath)
        }
        let frameFlip = try corrupt(at: original.count - 1)
        #expect(frameFlip.status == 1)
        #expect(frameFlip.stderr.contains("tiles/\(fsPrefix)/rows@7/block1"), "\(frameFlip.stderr)")
        #expect(frameFlip.stderr.contains("frame 15 checksum mismatch"), "\(frameFlip.stderr)")

        let headerFlip = try corrupt(at: 9)  // the row count
        #expect(headerFlip.status == 1)
        #expect(headerFlip.stderr.contains("tiles/\(fsPrefix)/rows@7/block1: header checksum mismatch"), "\(headerFlip.stderr)")

        try store.rawEnvironment.write { try $0.put(tiles, key, original) }
        try PyReaderEnv.run(args, store: fixture.storePath).expectSuccess()

        let meta = store.rawEnvironment.table("meta")
        // Version 1 (a store written before the pooling rule was recorded) and 2 are read; 3 is not.
        try store.rawEnvironment.write { try $0.put(meta, Array("format".utf8), [1, 0, 0, 0]) }
        try PyReaderEnv.run(args, store: fixture.storePath).expectSuccess()
        try store.rawEnvironment.write { try $0.put(meta, Array("format".utf8), [3, 0, 0, 0]) }
        let newer = try PyReaderEnv.run(args, store: fixture.storePath)
        #expect(newer.status == 1)
        #expect(newer.stderr.contains("format version 3"), "\(newer.stderr)")
    }
}

/// `nil` when `a` and `b` hold the same float bit patterns; otherwise where and how they differ.
fileprivate func bitwiseMismatch(_ a: [Float], _ b: [Float]) -> String? {
    guard a.count == b.count else { return "\(a.count) values versus \(b.count)" }
    let differing = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }
    guard let first = differing.first else { return nil }
    return "\(differing.count) of \(a.count) values differ; first at \(first): \(a[first]) versus \(b[first])"
}

/// A small store written through the public Swift API: 3 taps (149 columns, column blocks of
/// 64 → 64 + 64 + 21, with the default frames of 4 a 1-column last frame), two segments (7 and 5
/// rows), a dataset with a `train` split that interleaves the segments and a `test` split.
fileprivate struct PyReaderFixture {
    let dir: String
    let codec: TileCodec
    var storePath: String { dir + "/store" }
    let backbone = BackboneManifest(architecture: "external:pyreader-test", weightsSHA256: nil,
                                    taps: [TapDescriptor(name: "stem", shape: [4, 8, 8]),
                                           TapDescriptor(name: "block.3", shape: [32, 4, 4]),
                                           TapDescriptor(name: "head", shape: [53])])
    let width = 149
    let examples: [ExampleID] = (0..<12).map { ExampleID(name: "pyreader-\($0)") }
    let labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 1, 0]
    /// Split order of `train` as indices into `examples`.
    let trainOrder = [10, 2, 7, 0, 11, 5, 8, 3, 9]
    let values: [Float]
    var backboneID = ""
    var featureSetID = ""

    init(codec: TileCodec = .default) throws {
        self.codec = codec
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-pyreader-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Activation-like values: mostly non-negative, some zeros, magnitudes over six decades, a few negatives.
        var state: UInt64 = 0x5EED
        var out: [Float] = []
        for i in 0..<(examples.count * width) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) / Float(1 << 24)
            let magnitude = Float(pow(10.0, Double(u) * 6 - 3))
            switch i % 7 {
            case 0: out.append(0)
            case 3: out.append(-magnitude)
            default: out.append(magnitude)
            }
        }
        values = out
    }

    mutating func build() throws -> FeatureStore {
        let store = try FeatureStore(path: storePath)
        backboneID = try store.register(backbone: backbone)
        let manifest = FeatureSetManifest(backbone: backbone, backboneID: backboneID, targetSize: 64, codec: codec, columnBlock: 64)
        precondition(manifest.width == width && manifest.columnBlocks == 3)
        featureSetID = try store.register(featureSet: manifest)
        let encoder = SegmentEncoder(manifest: manifest)
        let classes = ["cat", "dog", "emu"]
        for rows in [0..<7, 7..<12] {
            let tiles = values[(rows.lowerBound * width)..<(rows.upperBound * width)].withUnsafeBufferPointer {
                encoder.encode($0.baseAddress!, rows: rows.count)
            }
            let segment = SegmentPayload(featureSet: featureSetID, examples: Array(examples[rows]), tiles: tiles)
            let records = rows.map { (examples[$0], ExampleRecord(name: "pyreader-\($0)", source: "PythonReaderTests")) }
            // `test` lands with the first segment; `train` (which needs both) with the second.
            let split = rows.lowerBound == 0
                ? DatasetAppend(dataset: "toy", classNames: classes, split: "test", items: [1, 4, 6].map { (examples[$0], labels[$0]) })
                : DatasetAppend(dataset: "toy", classNames: classes, split: "train", items: trainOrder.map { (examples[$0], labels[$0]) })
            try store.commit(segments: [segment], examples: records, datasets: [split])
        }
        return store
    }

    func remove() { try? FileManager.default.removeItem(atPath: dir) }

    /// `value` as stored in `dtype` and read back (finite inputs in float16's range).
    static func rounded(_ value: Float, to dtype: StorageDType) -> Float {
        switch dtype {
        case .float32: return value
        case .float16: return Float(Float16(value))
        case .bfloat16: break
        }
        // Round to nearest even at 8 significant bits.
        let bits = value.bitPattern
        let lower = bits & 0xFFFF
        var upper = bits >> 16
        if lower > 0x8000 || (lower == 0x8000 && upper & 1 == 1) { upper += 1 }
        return Float(bitPattern: upper << 16)
    }
}

/// Running the Python tools from the package root (found from this file's path).
fileprivate enum PyReaderEnv {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let installHint: Comment = "needs python3 with the modules in tools/requirements.txt: python3 -m pip install -r tools/requirements.txt"

    static let readerModulesPresent = canImport("lmdb, zstandard, numpy")
    static let schemaModulesPresent = canImport("lmdb, zstandard, numpy, jsonschema")

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String

        func expectSuccess(sourceLocation: SourceLocation = #_sourceLocation) throws {
            try #require(status == 0, "python exited \(status): \(stderr)", sourceLocation: sourceLocation)
        }
    }

    private static func canImport(_ modules: String) -> Bool {
        (try? execute(["-c", "import \(modules)"]))?.status == 0
    }

    static func run(_ arguments: [String], store: String) throws -> Result {
        try runScript("tools/read_store.py", [store] + arguments)
    }

    static func runScript(_ script: String, _ arguments: [String]) throws -> Result {
        try execute([packageRoot + "/" + script] + arguments)
    }

    /// Runs python3 with output in files, so a chatty child can never block on a full pipe.
    private static func execute(_ arguments: [String]) throws -> Result {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-py-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("stdout"), errURL = scratch.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let outHandle = try FileHandle(forWritingTo: outURL), errHandle = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: packageRoot)
        process.standardOutput = outHandle
        process.standardError = errHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try outHandle.close()
        try errHandle.close()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
                      stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }
}

/// A minimal reader of numpy `.npy` files (versions 1–3, little-endian, C order).
fileprivate struct NPY {
    var descr: String
    var shape: [Int]
    var data: [UInt8]

    var floats: [Float] {
        stride(from: 0, to: data.count, by: 4).map { i in
            Float(bitPattern: UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24)
        }
    }

    var int64s: [Int64] {
        stride(from: 0, to: data.count, by: 8).map { i in
            (0..<8).reduce(Int64(0)) { $0 | Int64(data[i + $1]) << (8 * $1) }
        }
    }

    struct FormatError: Error, CustomStringConvertible {
        var description: String
    }

    static func read(_ path: String) throws -> NPY {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
            throw FormatError(description: "\(path) is not a .npy file")
        }
        let (headerLength, headerStart) = bytes[6] == 1
            ? (Int(bytes[8]) | Int(bytes[9]) << 8, 10)
            : (Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24, 12)
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func field(_ name: String, _ terminator: Character) -> Substring? {
            guard let r = header.range(of: "'\(name)': ") else { return nil }
            let rest = header[r.upperBound...]
            return rest.firstIndex(of: terminator).map { rest[..<$0] }
        }
        guard let descr = field("descr", ",")?.trimmingCharacters(in: CharacterSet(charactersIn: "'")),
              field("fortran_order", ",") == "False",
              let shapeText = field("shape", ")") else {
            throw FormatError(description: "\(path): unexpected header \(header)")
        }
        let shape = shapeText.dropFirst().split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        return NPY(descr: descr, shape: shape, data: Array(bytes[(headerStart + headerLength)...]))
    }
}
