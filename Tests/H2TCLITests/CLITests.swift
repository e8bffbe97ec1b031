import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import H2TCore
import Testing

/// Runs the built `h2t-store` binary (next to the test bundle) and checks stdout, `--json`
/// against `schemas/`, stderr and exit codes.
struct CLI {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static let binary: String = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [beside, beside.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("h2t-store").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        for config in ["release", "debug"] {
            let path = packageRoot + "/.build/\(config)/h2t-store"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "h2t-store"
    }()

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    @discardableResult
    static func run(_ arguments: [String], executable: String = binary, stdin: String? = nil,
                    environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        if stdin != nil { process.standardInput = input }
        try process.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// `export` of every feature set of `store` for `dataset`/train (by id), as the .npy files' bytes
    /// (written under `dir`).
    static func exports(_ store: String, dataset: String, dir: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Data] {
        let ls = try run(["ls", "--json", "--store", store])
        let listing = try #require(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [String: Any], "\(ls.stderr)",
                                   sourceLocation: sourceLocation)
        var out: [String: Data] = [:]
        for featureSet in try #require(listing["feature_sets"] as? [[String: Any]], sourceLocation: sourceLocation) {
            let id = try #require(featureSet["id"] as? String, sourceLocation: sourceLocation)
            let file = dir + "/\(UUID().uuidString).npy"
            let export = try run(["export", "--store", store, "--feature-set", id, "--dataset", dataset, "--split", "train", "--out", file])
            #expect(export.status == 0, "\(export.stderr)", sourceLocation: sourceLocation)
            out[id] = try Data(contentsOf: URL(fileURLWithPath: file))
        }
        return out
    }

    /// Validates `json` against `schemas/<name>.schema.json` with python's jsonschema.
    static func expectValid(_ json: String, schema name: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try run(["python3", packageRoot + "/tools/validate_json.py", name, "-"], executable: "/usr/bin/env", stdin: json)
        #expect(result.status == 0, "\(name): \(result.stderr)", sourceLocation: sourceLocation)
    }
}

/// Writes a safetensors input: a spatial tap [n, 8, 4, 4] and a vector tap [n, 16], 3 classes.
func writeInput(_ path: String, n: Int, prefix: String, seed: UInt64 = 1) throws {
    var state = seed
    func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(state >> 40) / Float(1 << 24)
    }
    let labels = (0..<n).map { $0 % 3 }
    var conv = (0..<(n * 128)).map { _ in next() }
    for e in 0..<n { for i in 0..<16 { conv[e * 128 + labels[e] * 16 + i] += 1 } }
    let vector = (0..<(n * 16)).map { _ in next() }
    var writer = SafetensorsWriter(metadata: [
        "example_ids": "[" + (0..<n).map { "\"\(prefix)\($0)\"" }.joined(separator: ",") + "]",
        "labels": "[" + labels.map { "\"c\($0)\"" }.joined(separator: ",") + "]",
        "class_names": "[\"c0\",\"c1\",\"c2\"]",
    ])
    writer.add("conv", shape: [n, 8, 4, 4], float32: conv)
    writer.add("pre_logits", shape: [n, 16], float32: vector)
    try writer.write(to: path)
}

@Suite("h2t-store command line", .serialized)
struct CLITests {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    func ingest(_ file: String, split: String, extra: [String] = []) throws -> CLI.Result {
        try CLI.run(["ingest", "--store", dir + "/store", "--external", "toy", "--dataset", "toy", "--split", split,
                     "--target-size", "32", "--column-block", "64", "--segment-rows", "50"] + extra + [file])
    }

    @Test func ingestInspectFitAndTheirJSON() throws {
        try writeInput(dir + "/train.safetensors", n: 150, prefix: "tr")
        try writeInput(dir + "/test.safetensors", n: 90, prefix: "te", seed: 2)
        let first = try ingest(dir + "/train.safetensors", split: "train", extra: ["--json"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.isEmpty, "--json must keep stderr quiet: \(first.stderr)")
        try CLI.expectValid(first.stdout, schema: "ingest-output")
        #expect(try ingest(dir + "/test.safetensors", split: "test").status == 0)

        let store = ["--store", dir + "/store"]
        let ls = try CLI.run(["ls", "--json"] + store)
        try CLI.expectValid(ls.stdout, schema: "ls-output")
        let listing = try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as! [String: Any]
        let featureSet = ((listing["feature_sets"] as! [[String: Any]])[0]["id"] as! String)
        #expect(((listing["feature_sets"] as! [[String: Any]])[0]["rows"] as! Int) == 240)

        try CLI.expectValid(try CLI.run(["show", String(featureSet.prefix(8)), "--json"] + store).stdout, schema: "show-output")
        try CLI.expectValid(try CLI.run(["show", "toy", "--json"] + store).stdout, schema: "show-output")
        let du = try CLI.run(["du", "--json"] + store)
        try CLI.expectValid(du.stdout, schema: "du-output")
        let verify = try CLI.run(["verify", "--json"] + store)
        #expect(verify.status == 0)
        try CLI.expectValid(verify.stdout, schema: "verify-output")

        let fit = try CLI.run(["fit", "--dataset", "toy", "--fractions", "0.1,0.3", "--lambdas", "0.5", "--folds", "3", "--json"] + store)
        #expect(fit.status == 0, "\(fit.stderr)")
        try CLI.expectValid(fit.stdout, schema: "fit-output")
        let summary = try JSONSerialization.jsonObject(with: Data(fit.stdout.utf8)) as! [String: Any]
        let methods = summary["methods"] as! [[String: Any]]
        #expect(methods.map { $0["method"] as! String } == ["head2toe", "linear_probe", "all_features"])
        let oneSE = try CLI.run(["fit", "--dataset", "toy", "--fractions", "0.1,0.3", "--lambdas", "0.5", "--folds", "3",
                                 "--selection-rule", "one-se", "--fraction-curve", "--no-register", "--json"] + store)
        #expect(oneSE.status == 0, "\(oneSE.stderr)")
        try CLI.expectValid(oneSE.stdout, schema: "fit-output")
        let curve = (try JSONSerialization.jsonObject(with: Data(oneSE.stdout.utf8)) as! [String: Any])["fraction_curve"] as! [[String: Any]]
        #expect(curve.map { $0["fraction"] as! Double } == [0.1, 0.3])
        let badRule = try CLI.run(["fit", "--dataset", "toy", "--selection-rule", "median"] + store)
        #expect(badRule.status != 0 && badRule.stderr.contains("--selection-rule"))
        // The class signal is in the spatial tap: Head2Toe must find it, the probe (vector tap) cannot.
        let h2t = methods[0]["test_accuracy"] as! Double
        let probe = methods[1]["test_accuracy"] as! Double
        #expect(h2t > 0.9)
        #expect(probe < 0.6)

        let export = try CLI.run(["export", "--feature-set", featureSet, "--dataset", "toy", "--split", "test", "--columns", "0", "5", "--out", dir + "/x.npy"] + store)
        #expect(export.status == 0, "\(export.stderr)")
        let check = try CLI.run(["python3", "-c", "import numpy; x = numpy.load('\(dir)/x.npy'); print(x.shape)"], executable: "/usr/bin/env")
        #expect(check.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "(90, 2)")
    }

    @Test func badInputGetsOneLineErrorAndNonZeroExit() throws {
        try writeInput(dir + "/train.safetensors", n: 20, prefix: "tr")
        let cases: [([String], String)] = [
            (["ingest", "--store", dir + "/s", "--external", "x", "--dataset", "d", dir + "/missing.safetensors"], "missing.safetensors"),
            (["ingest", "--store", dir + "/s", "--external", "x", "--dataset", "d", "--target-size", "0", dir + "/train.safetensors"], "--target-size"),
            (["ls", "--store", dir + "/nothing-here"], "no store at"),
            (["show", "deadbeef", "--store", dir + "/s"], "is neither a feature set"),
            (["fit", "--dataset", "nope", "--store", dir + "/s"], "unknown dataset 'nope'"),
            (["fit", "--dataset", "d", "--fractions", "0", "--store", dir + "/s"], "--fractions"),
            (["fit", "--dataset", "d", "--fractions", "", "--store", dir + "/s"], "--fractions"),
            (["fit", "--dataset", "d", "--ridges", "1e-4,-1", "--store", dir + "/s"], "--ridges"),
        ]
        _ = try CLI.run(["ingest", "--store", dir + "/s", "--external", "x", "--dataset", "d", dir + "/train.safetensors"])
        for (arguments, fragment) in cases {
            let result = try CLI.run(arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.contains(fragment), "\(arguments): \(result.stderr)")
            #expect(!result.stderr.contains("Fatal error"), "\(arguments) crashed")
        }
        let single = try CLI.run(["fit", "--dataset", "d", "--store", dir + "/s", "--train-limit", "1", "--test-split", "none"])
        #expect(single.status != 0)
        #expect(single.stderr.contains("single class"), "\(single.stderr)")
    }

    /// An ingest whose input is missing (a mistyped path: external file, IDX images or labels,
    /// image folder, a cache without the pinned dataset) or malformed (a folder without `.npy`
    /// files, a safetensors file cut short, a file that is not IDX, a directory as IDX, labels
    /// that do not match the images, an image folder without class folders) fails with one line
    /// naming it, exit 1, and creates no store: inputs are opened and checked before the store is.
    @Test func anIngestOfAMissingOrMalformedInputCreatesNoStore() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/no-npy", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/no-npy/readme.txt"))
        try fm.createDirectory(atPath: dir + "/no-classes", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/one-byte.safetensors"))
        try Data("not an IDX file\n".utf8).write(to: URL(fileURLWithPath: dir + "/text.idx"))
        func bigEndian(_ values: [UInt32]) -> Data { Data(values.flatMap { v in (0..<4).reversed().map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }) }
        try (bigEndian([2051, 3, 28, 28]) + Data(count: 3 * 784)).write(to: URL(fileURLWithPath: dir + "/three-images"))
        try (bigEndian([2049, 5]) + Data(count: 5)).write(to: URL(fileURLWithPath: dir + "/five-labels"))
        let images = ["ingest", "--backbone", "mobilenet_v2", "--dataset", "d"]
        let cases: [([String], String)] = [
            (["ingest", "--external", "x", "--dataset", "d", dir + "/no-npy"], "\(dir)/no-npy: folder has no .npy files"),
            (["ingest", "--external", "x", "--dataset", "d", dir + "/one-byte.safetensors"], "\(dir)/one-byte.safetensors: malformed"),
            (images + ["--idx", dir + "/text.idx"], "\(dir)/text.idx: not a supported IDX file"),
            (images + ["--idx", dir + "/no-npy"], "\(dir)/no-npy: cannot read: is a directory"),
            (images + ["--idx", dir + "/three-images", "--labels", dir + "/five-labels"], "\(dir)/five-labels: 5 labels for the 3 images"),
            (images + ["--folder", dir + "/no-classes"], "\(dir)/no-classes: no class subfolders in the image folder"),
            (["ingest", "--external", "x", "--dataset", "d", dir + "/missing.safetensors"],
             "\(dir)/missing.safetensors: cannot read: no such file or directory"),
            (images + ["--idx", dir + "/missing.gz"], "\(dir)/missing.gz: cannot read: No such file or directory"),
            (images + ["--idx", "/dev/null", "--labels", dir + "/labels.gz"], "\(dir)/labels.gz: cannot read: No such file or directory"),
            (images + ["--folder", dir + "/photos"], "\(dir)/photos: image folder does not exist"),
            (images + ["--fashion-mnist", "train", "--cache", dir + "/empty-cache"], "artefact fashion_mnist_train_images is missing"),
        ]
        for (i, (arguments, message)) in cases.enumerated() {
            let store = dir + "/never-\(i)"
            let result = try CLI.run(arguments + ["--store", store])
            #expect(result.status == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.hasPrefix("Error: \(message)") && result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: store), "\(arguments) created \(store)")
        }
    }

    @Test func corruptedTileMakesVerifyFailNamingTheKey() throws {
        try writeInput(dir + "/train.safetensors", n: 60, prefix: "tr")
        #expect(try ingest(dir + "/train.safetensors", split: "train").status == 0)
        // Flip bytes inside an LMDB value: the tile payloads are the large incompressible runs in data.mdb.
        let path = dir + "/store/data.mdb"
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        let tiles = try CLI.run(["python3", "-c", """
            import lmdb; e = lmdb.open('\(dir)/store', max_dbs=32, readonly=True, lock=False); db = e.open_db(b'tiles', create=False)
            with e.begin() as t:
                k, v = next(iter(t.cursor(db)))
                print(v[200:216].hex())
            """], executable: "/usr/bin/env")
        let needle = Data(stride(from: 0, to: 32, by: 2).map { i -> UInt8 in
            let s = Array(tiles.stdout.utf8)
            return UInt8(String(decoding: s[i..<(i + 2)], as: UTF8.self), radix: 16)!
        })
        let range = try #require(data.range(of: needle))
        data[range.lowerBound + 3] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: path))
        let verify = try CLI.run(["verify", "--store", dir + "/store"])
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("tiles/"), "\(verify.stdout)")
        #expect(verify.stdout.contains("checksum mismatch"), "\(verify.stdout)")
    }

    @Test func killedIngestResumesWithoutDuplicatesOrGaps() throws {
        let n = 4000
        try writeInput(dir + "/big.safetensors", n: n, prefix: "big")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["ingest", "--store", dir + "/store", "--external", "toy", "--dataset", "toy", "--target-size", "32",
                             "--segment-rows", "10", "--json", dir + "/big.safetensors"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Wait for some commits, then SIGKILL in the middle.
        let deadline = Date().addingTimeInterval(30)
        var stored = 0
        while Date() < deadline {
            usleep(20_000)
            if let result = try? CLI.run(["ls", "--json", "--store", dir + "/store"]), result.status == 0,
               let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
               let sets = object["feature_sets"] as? [[String: Any]], let rows = sets.first?["rows"] as? Int, rows > 0 {
                stored = rows
                break
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(stored > 0)
        let resumed = try CLI.run(["ingest", "--store", dir + "/store", "--external", "toy", "--dataset", "toy", "--target-size", "32",
                                   "--segment-rows", "10", "--json", dir + "/big.safetensors"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as! [String: Any]
        #expect((summary["examples_computed"] as! Int) + (summary["examples_reused"] as! Int) == n)
        #expect((summary["examples_reused"] as! Int) >= stored)
        let ls = try JSONSerialization.jsonObject(with: Data(try CLI.run(["ls", "--json", "--store", dir + "/store"]).stdout.utf8)) as! [String: Any]
        #expect(((ls["feature_sets"] as! [[String: Any]])[0]["rows"] as! Int) == n)
        let splits = ((ls["datasets"] as! [[String: Any]])[0]["splits"] as! [[String: Any]])
        #expect((splits[0]["count"] as! Int) == n)
        #expect(try CLI.run(["verify", "--store", dir + "/store"]).status == 0)
    }

    @Test func twoWritersAtOnceBothLand() throws {
        try writeInput(dir + "/a.safetensors", n: 300, prefix: "a")
        try writeInput(dir + "/b.safetensors", n: 300, prefix: "b", seed: 9)
        _ = try ingest(dir + "/a.safetensors", split: "warmup", extra: ["--json"])  // creates the store and feature set
        let processes = try ["a", "b"].map { name -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["ingest", "--store", dir + "/store", "--external", "toy", "--dataset", "toy", "--split", name,
                           "--target-size", "32", "--column-block", "64", "--segment-rows", "20", "--json", dir + "/\(name).safetensors"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        for p in processes {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
        let ls = try JSONSerialization.jsonObject(with: Data(try CLI.run(["ls", "--json", "--store", dir + "/store"]).stdout.utf8)) as! [String: Any]
        #expect(((ls["feature_sets"] as! [[String: Any]])[0]["rows"] as! Int) == 600)
        #expect(try CLI.run(["verify", "--store", dir + "/store"]).status == 0)
    }

    /// A disk that fills during an ingest: one line saying the disk is full, where and how much
    /// is free; a non-zero exit; every earlier commit intact. Needs a small tmpfs (root).
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/mount")))
    func fullDiskIsNamedAndLosesNothing() throws {
        let mountPoint = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard try CLI.run(["-t", "tmpfs", "-o", "size=3m", "tmpfs", mountPoint], executable: "/usr/bin/mount").status == 0 else { return }
        defer { _ = try? CLI.run([mountPoint], executable: "/usr/bin/umount") }
        let store = mountPoint + "/store"
        try writeInput(dir + "/small.safetensors", n: 200, prefix: "small")
        try writeInput(dir + "/big.safetensors", n: 6000, prefix: "big", seed: 5)
        let small = try CLI.run(["ingest", "--store", store, "--external", "toy", "--dataset", "toy", "--split", "small",
                                 "--target-size", "512", "--dtype", "float32", "--zstd-level", "0", "--json", dir + "/small.safetensors"])
        #expect(small.status == 0, "\(small.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(small.stdout.utf8)) as? [String: Any])
        let featureSet = try #require((summary["feature_sets"] as? [[String: Any]])?.first?["id"] as? String)
        let export = ["export", "--store", store, "--feature-set", featureSet, "--dataset", "toy", "--split", "small", "--out"]
        let before = try CLI.run(export + [dir + "/before.npy"])
        #expect(before.status == 0, "\(before.stderr)")
        let big = try CLI.run(["ingest", "--store", store, "--external", "toy", "--dataset", "toy", "--split", "big",
                               "--target-size", "512", "--dtype", "float32", "--zstd-level", "0", dir + "/big.safetensors"])
        #expect(big.status != 0)
        #expect(big.stderr.contains("the disk holding the store is full"), "\(big.stderr)")
        #expect(big.stderr.contains(store))
        #expect(big.stderr.split(separator: "\n").count == 1, "\(big.stderr)")
        #expect(try CLI.run(["verify", "--store", store]).status == 0)
        let after = try CLI.run(export + [dir + "/after.npy"])
        #expect(after.status == 0, "\(after.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/before.npy")) == Data(contentsOf: URL(fileURLWithPath: dir + "/after.npy")))
    }

    /// Two ingests of the same inputs into one store at once compute the same examples in
    /// parallel; LMDB runs their commits one after the other, and the later keeps what the
    /// earlier stored. Both finish without error and every example is stored once.
    @Test func twoIngestsOfTheSameInputsBothFinishWithEachExampleOnce() throws {
        let n = 1200
        try writeInput(dir + "/same.safetensors", n: n, prefix: "s")
        let processes = try (0..<2).map { _ -> (Process, Pipe) in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["ingest", "--store", dir + "/store", "--external", "toy", "--dataset", "toy", "--split", "train",
                           "--target-size", "32", "--column-block", "64", "--segment-rows", "20", "--json", dir + "/same.safetensors"]
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            return (p, err)
        }
        for (p, err) in processes {
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(stderr)")
        }
        let ls = try JSONSerialization.jsonObject(with: Data(try CLI.run(["ls", "--json", "--store", dir + "/store"]).stdout.utf8)) as! [String: Any]
        #expect(((ls["feature_sets"] as! [[String: Any]])[0]["rows"] as! Int) == n)
        let splits = ((ls["datasets"] as! [[String: Any]])[0]["splits"] as! [[String: Any]])
        #expect((splits[0]["count"] as! Int) == n)
        #expect(try CLI.run(["verify", "--store", dir + "/store"]).status == 0)
    }
}

/// Real weights and real images (the artefacts `tools/fetch-artifacts` pins; CI fetches them first).
@Suite("h2t-store on real weights and images", .serialized)
struct RealDataCLITests {
    let dir: String
    let cache = ProcessInfo.processInfo.environment["H2T_CACHE"] ?? (NSHomeDirectory() + "/.cache/h2t-store")

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-cli-real-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    @Test(arguments: ["mobilenet_v2", "efficientnet_lite0"])
    func classifyGivesTheImageNetClassesOfTheSamplePhotos(backbone: String) throws {
        let result = try CLI.run(["classify", "--backbone", backbone, "--json", cache + "/images/chelsea.png", cache + "/images/coffee.png"])
        #expect(result.status == 0, "\(result.stderr)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        let top1 = list.map { (($0["top"] as! [[String: Any]])[0]["class_index"] as! Int) }
        #expect(top1 == [285, 967])
    }

    /// Every kernel path gives the same classes: the Swift loops a CPU without AVX2 runs, and the
    /// AVX2 and AVX-512 variants where this CPU has them (`H2T_ISA` caps the process to each).
    @Test(arguments: ["baseline", "avx2", "avx512"])
    func classifyAgreesAtEveryInstructionSet(isa: String) throws {
        let result = try CLI.run(["classify", "--backbone", "mobilenet_v2", "--json", cache + "/images/chelsea.png",
                                  cache + "/images/coffee.png"], environment: ["H2T_ISA": isa])
        #expect(result.status == 0, "\(result.stderr)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(list.map { (($0["top"] as! [[String: Any]])[0]["class_index"] as! Int) } == [285, 967])
    }

    @Test func invalidInstructionSetIsAOneLineError() throws {
        let result = try CLI.run(["classify", "--backbone", "mobilenet_v2", cache + "/images/chelsea.png"],
                                 environment: ["H2T_ISA": "avx9"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("H2T_ISA=avx9 is not an instruction set"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }

    /// Issue 4's protocol end to end, exactly as `tools/run-main` runs it: MobileNetV2 at 64×64
    /// over the first 1,000 Fashion-MNIST training images and all 10,000 test images, F_T 512 and
    /// 1024 in one pass, `fit` with the default grid (5-fold CV), the head registered.
    @Test func vtab1kProtocolOnFashionMNIST() throws {
        let store = ["--store", dir + "/protocol"]
        defer { try? FileManager.default.removeItem(atPath: dir + "/protocol") }  // about 2 GB
        for (split, limit) in [("train", ["--limit", "1000"]), ("test", [])] {
            let ingest = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--fashion-mnist", split, "--dataset", "fashion-mnist",
                                      "--split", split, "--target-size", "512", "--target-size", "1024", "--json"] + limit + store)
            #expect(ingest.status == 0, "\(ingest.stderr)")
        }
        let fit = try CLI.run(["fit", "--dataset", "fashion-mnist", "--train-limit", "1000", "--alias", "prod", "--json"] + store)
        #expect(fit.status == 0, "\(fit.stderr)")
        try CLI.expectValid(fit.stdout, schema: "fit-output")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(fit.stdout.utf8)) as? [String: Any])
        #expect(summary["train_count"] as? Int == 1000 && summary["test_count"] as? Int == 10000)
        let methods = try #require(summary["methods"] as? [[String: Any]])
        let test = Dictionary(uniqueKeysWithValues: methods.map { ($0["method"] as! String, $0["test_accuracy"] as! Double) })
        let cv = Dictionary(uniqueKeysWithValues: methods.map { ($0["method"] as! String, $0["cv_accuracy"] as! Double) })
        let h2t = try #require(test["head2toe"]), probe = try #require(test["linear_probe"]), all = try #require(test["all_features"])
        // The criteria: at least 5 points over the linear probe; not below all features.
        // The second is checked up to 0.5 points, 1.5 standard errors of a 10,000-image test
        // set: the two are tied on this task (docs/benchmarks.md, "The main job"), and the last bits of the
        // features (BLAS kernels of another CPU) may move CV among its equal top points.
        #expect(h2t >= probe + 0.05, "head2toe \(h2t), probe \(probe)")
        #expect(h2t >= all - 0.005, "head2toe \(h2t), all features \(all)")
        #expect(cv["head2toe"]! >= cv["all_features"]!, "CV: \(cv)")
        #expect(h2t > 0.86 && h2t < 0.90, "head2toe \(h2t)")
        // The registered head predicts the stored test split exactly as the fit evaluated it.
        let eval = try CLI.run(["eval", "fashion-mnist@prod", "--dataset", "fashion-mnist", "--split", "test", "--json"] + store)
        #expect(eval.status == 0, "\(eval.stderr)")
        let evaluated = try #require(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
        try CLI.expectValid(eval.stdout, schema: "eval-output")
        #expect((evaluated["metrics"] as? [String: Any])?["accuracy"] as? Double == h2t, "\(eval.stdout.prefix(300))")
        #expect(evaluated["same_as_recorded_test"] as? Bool == true)
        // The test images as new images: all 10,000 are stored examples (same pixels, same content
        // id), so their stored features are read and the labels are predict-on-stored-examples'.
        let images = try CLI.run(["predict", "fashion-mnist@prod", "--images", cache + "/fashion-mnist/t10k-images-idx3-ubyte.gz", "--json"] + store)
        #expect(images.status == 0, "\(images.stderr)")
        try CLI.expectValid(images.stdout, schema: "predict-output")
        let stored = try CLI.run(["predict", "fashion-mnist@prod", "--dataset", "fashion-mnist", "--split", "test", "--json"] + store)
        func labels(_ stdout: String) throws -> [Int] {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
            return (object["predictions"] as? [[String: Any]] ?? []).compactMap { $0["label_index"] as? Int }
        }
        let fromImages = try #require(try JSONSerialization.jsonObject(with: Data(images.stdout.utf8)) as? [String: Any])
        #expect(fromImages["from_store"] as? Int == 10000)
        #expect(try labels(images.stdout) == labels(stored.stdout))
        #expect(try labels(images.stdout).count == 10000)
    }

    /// A repeated image inside an IDX segment leaves a gap in the rows the backbone computes, so
    /// that batch is preprocessed image by image: every kept image must get the features it gets
    /// in a file without the repeat, and the repeat none.
    @Test func idxSegmentWithARepeatedImageStoresWhatTheImagesGetAlone() throws {
        let images = cache + "/fashion-mnist/t10k-images-idx3-ubyte.gz", labels = cache + "/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        let script = """
            import gzip, struct
            raw = gzip.open('\(images)').read(); n, h, w = struct.unpack('>III', raw[4:16])
            lab = gzip.open('\(labels)').read()[8:]
            def write(order, name):
                px = b''.join(raw[16 + i * h * w:16 + (i + 1) * h * w] for i in order)
                open('\(dir)/' + name + '-images', 'wb').write(struct.pack('>IIII', 2051, len(order), h, w) + px)
                open('\(dir)/' + name + '-labels', 'wb').write(struct.pack('>II', 2049, len(order)) + bytes(lab[i] for i in order))
            write([0, 1, 2, 3, 4, 5], 'plain')
            write([0, 1, 2, 1, 3, 4, 5], 'repeated')
            """
        let made = try CLI.run(["python3", "-c", script], executable: "/usr/bin/env")
        #expect(made.status == 0, "\(made.stderr)")
        var exported: [Data] = []
        for name in ["plain", "repeated"] {
            let store = ["--store", dir + "/store-" + name]
            let ingest = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--idx", dir + "/\(name)-images", "--labels", dir + "/\(name)-labels",
                                      "--dataset", "fm", "--target-size", "512", "--segment-rows", "8", "--batch-size", "4", "--json"] + store)
            #expect(ingest.status == 0, "\(ingest.stderr)")
            let summary = try JSONSerialization.jsonObject(with: Data(ingest.stdout.utf8)) as! [String: Any]
            #expect(summary["examples_computed"] as? Int == 6)
            let featureSet = ((summary["feature_sets"] as! [[String: Any]])[0]["id"] as! String)
            let out = dir + "/\(name).npy"
            let export = try CLI.run(["export", "--feature-set", featureSet, "--dataset", "fm", "--split", "train", "--out", out] + store)
            #expect(export.status == 0, "\(export.stderr)")
            exported.append(try Data(contentsOf: URL(fileURLWithPath: out)))
        }
        #expect(exported[0] == exported[1])
    }

    /// With `--limit`, an IDX file is read as far as the limit and checked whole meanwhile (on 2
    /// threads): a stream truncated or with a wrong checksum further on is still an error naming
    /// the file, and nothing is stored.
    @Test func idxDamagedPastTheLimitIsRejectedBeforeAnythingIsStored() throws {
        let images = cache + "/fashion-mnist/t10k-images-idx3-ubyte.gz"
        let script = """
            import gzip
            raw = gzip.open('\(images)').read()
            body = bytearray(raw[:16]); body[4:8] = (50).to_bytes(4, 'big'); body += raw[16:16 + 50 * 784]
            packed = gzip.compress(bytes(body))
            open('\(dir)/good.gz', 'wb').write(packed)
            open('\(dir)/truncated.gz', 'wb').write(packed[:-200])
            flipped = bytearray(packed); flipped[-6] ^= 0xFF  # the CRC-32 of the uncompressed data
            open('\(dir)/badcrc.gz', 'wb').write(bytes(flipped))
            """
        let made = try CLI.run(["python3", "-c", script], executable: "/usr/bin/env")
        #expect(made.status == 0, "\(made.stderr)")
        for name in ["truncated", "badcrc", "good"] {
            let store = dir + "/store-" + name
            let result = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--idx", dir + "/\(name).gz", "--limit", "8", "--dataset", "d",
                                      "--target-size", "512", "--threads", "2", "--store", store])
            let listed = try CLI.run(["ls", "--json", "--store", store])
            if name == "good" {
                #expect(result.status == 0, "\(result.stderr)")
                #expect(listed.stdout.contains("\"d\""))
            } else {
                #expect(result.status != 0)
                #expect(result.stderr.contains(dir + "/\(name).gz"), "\(result.stderr)")
                #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
                #expect(!listed.stdout.contains("\"d\""), "\(name): \(listed.stdout)")
            }
        }
        // A pipe cannot be read twice: it is read and checked whole first, and stores what the
        // file stores (a damaged one is refused the same way).
        for name in ["good", "badcrc"] {
            let store = dir + "/store-pipe-" + name
            let command = "\(CLI.binary) ingest --backbone mobilenet_v2 --idx <(cat \(dir)/\(name).gz) --limit 8 --dataset d "
                + "--target-size 512 --threads 2 --store \(store) --json"
            let piped = try CLI.run(["bash", "-c", command], executable: "/usr/bin/env")
            if name == "good" {
                #expect(piped.status == 0, "\(piped.stderr)")
                let fromPipe = try CLI.exports(store, dataset: "d", dir: dir), fromFile = try CLI.exports(dir + "/store-good", dataset: "d", dir: dir)
                #expect(!fromPipe.isEmpty && fromPipe == fromFile)
            } else {
                #expect(piped.status != 0 && piped.stderr.contains("corrupt gzip data"), "\(piped.stderr)")
            }
        }
    }

    @Test func imageIngestIsResumableAndDeduplicatesAcrossSources() throws {
        let store = ["--store", dir + "/store"]
        let images = cache + "/fashion-mnist/t10k-images-idx3-ubyte.gz", labels = cache + "/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        func ingest(_ extra: [String], dataset: String = "fm") throws -> [String: Any] {
            let result = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--dataset", dataset, "--target-size", "512", "--segment-rows", "16", "--json"] + extra + store)
            #expect(result.status == 0, "\(result.stderr)")
            try CLI.expectValid(result.stdout, schema: "ingest-output")
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        }
        let first = try ingest(["--idx", images, "--labels", labels, "--limit", "40", "--split", "test"])
        #expect(first["examples_computed"] as? Int == 40)
        let again = try ingest(["--idx", images, "--labels", labels, "--limit", "48", "--split", "test"])
        #expect(again["examples_computed"] as? Int == 8)
        #expect(again["examples_reused"] as? Int == 40)

        // The same pixels as PNG files in a class folder are the same examples: no backbone pass.
        // A non-image file and a broken PNG are skipped and reported, never silently.
        let folder = dir + "/folder"
        let script = """
            import gzip, struct, zlib, os, numpy as np
            raw = gzip.open('\(images)').read(); n, h, w = struct.unpack('>III', raw[4:16])
            px = np.frombuffer(raw[16:16 + 3 * h * w], np.uint8).reshape(3, h, w)
            def png(a):
                rows = b''.join(b'\\x00' + a[i].tobytes() for i in range(a.shape[0]))
                chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
                return b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', a.shape[1], a.shape[0], 8, 0, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')
            os.makedirs('\(folder)/ankle', exist_ok=True)
            for i in range(3): open(f'\(folder)/ankle/{i}.png', 'wb').write(png(px[i]))
            open('\(folder)/ankle/notes.txt', 'w').write('not an image')
            open('\(folder)/ankle/broken.png', 'wb').write(png(px[0])[:40])
            """
        let made = try CLI.run(["python3", "-c", script], executable: "/usr/bin/env")
        #expect(made.status == 0, "\(made.stderr)")
        let fromFolder = try ingest(["--folder", folder, "--split", "png", "--input-size", "64"], dataset: "fm-png")
        #expect(fromFolder["examples_reused"] as? Int == 3)
        #expect(fromFolder["examples_computed"] as? Int == 0)
        let skipped = (fromFolder["skipped"] as? [[String: Any]] ?? []).map { $0["path"] as! String }
        #expect(skipped.contains { $0.hasSuffix("broken.png") }, "\(skipped)")
        #expect(skipped.contains { $0.hasSuffix("notes.txt") }, "\(skipped)")
        #expect(try CLI.run(["verify"] + store).status == 0)
    }
}
