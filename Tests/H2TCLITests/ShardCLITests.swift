import Foundation
import Testing

/// `ingest --shard`, `merge`, and the Slurm scripts in `tools/slurm/`, through the built binary.
@Suite("h2t-store sharded ingest and merge", .serialized)
struct ShardCLITests {
    let dir: String
    let input: String

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-cli-shards-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        input = dir + "/train.safetensors"
        try writeInput(input, n: 130, prefix: "tr")
    }

    /// The options every ingest of the test shares (one run: same plan for every shard).
    var ingestOptions: [String] {
        ["--external", "toy", "--dataset", "toy", "--split", "train", "--target-size", "32", "--target-size", "8",
         "--column-block", "64", "--segment-rows", "20", input]
    }

    func ingest(_ store: String, _ extra: [String] = [], environment: [String: String] = [:]) throws -> CLI.Result {
        try CLI.run(["ingest", "--store", store] + extra + ingestOptions, environment: environment)
    }

    /// `export` of every feature set of `store` (by id), as the .npy files' bytes.
    func exports(_ store: String) throws -> [String: Data] { try CLI.exports(store, dataset: "toy", dir: dir) }

    @Test func shardsMergeIntoTheStoreASingleIngestGives() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try ingest(dir + "/single", ["--quiet"]).status == 0)
        var plans: Set<String> = []
        for k in 0..<3 {
            let shard = try ingest(dir + "/shard-\(k)", ["--shard", "\(k)/3", "--json"])
            #expect(shard.status == 0, "\(shard.stderr)")
            try CLI.expectValid(shard.stdout, schema: "ingest-output")
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(shard.stdout.utf8)) as? [String: Any])
            let record = try #require(summary["shard"] as? [String: Any])
            #expect(record["state"] as? String == "started" && record["total_inputs"] as? Int == 130)
            #expect(record["first_input"] as? Int == 130 * k / 3 && record["end_input"] as? Int == 130 * (k + 1) / 3)
            plans.insert(try #require(record["plan"] as? String))
        }
        #expect(plans.count == 1)
        let again = try ingest(dir + "/shard-1", ["--shard", "1/3"])
        #expect(again.status == 0 && again.stdout.contains("is already sealed: nothing to do"), "\(again.stdout)")

        let merge = try CLI.run(["merge", "--into", dir + "/merged", "--json"] + (0..<3).map { dir + "/shard-\($0)" })
        #expect(merge.status == 0, "\(merge.stderr)")
        try CLI.expectValid(merge.stdout, schema: "merge-output")
        let reference = try exports(dir + "/single")
        #expect(reference.count == 2)
        #expect(try exports(dir + "/merged") == reference)
        #expect(try CLI.run(["verify", "--store", dir + "/merged"]).status == 0)
        let twice = try CLI.run(["merge", "--into", dir + "/merged"] + (0..<3).map { dir + "/shard-\($0)" })
        #expect(twice.status == 0 && twice.stdout.contains("merged 0 of 3 shards"), "\(twice.stdout)")
    }

    /// A merge and an ingest of other data into the same store at once: LMDB's writer lock makes
    /// them take turns; both finish and the merged data still equals one ingest.
    @Test func mergeBesideAnotherWriterOfTheTarget() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for k in 0..<2 { #expect(try ingest(dir + "/shard-\(k)", ["--shard", "\(k)/2", "--quiet"]).status == 0) }
        #expect(try ingest(dir + "/single", ["--quiet"]).status == 0)
        try writeInput(dir + "/other.safetensors", n: 400, prefix: "other", seed: 9)
        let other = Process()
        other.executableURL = URL(fileURLWithPath: CLI.binary)
        other.arguments = ["ingest", "--store", dir + "/merged", "--external", "toy", "--dataset", "other", "--target-size", "32",
                           "--column-block", "64", "--segment-rows", "10", "--quiet", dir + "/other.safetensors"]
        other.standardOutput = FileHandle.nullDevice
        try other.run()
        let merge = try CLI.run(["merge", "--into", dir + "/merged", "--quiet", dir + "/shard-0", dir + "/shard-1"])
        other.waitUntilExit()
        #expect(merge.status == 0 && other.terminationStatus == 0, "\(merge.stderr)")
        let merged = try exports(dir + "/merged")
        for (id, bytes) in try exports(dir + "/single") { #expect(merged[id] == bytes) }
        #expect(try CLI.run(["verify", "--store", dir + "/merged"]).status == 0)
    }

    @Test func badShardSpecsAndMergesAreOneLineErrors() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (spec, words) in [("3/2", "K must be in 0...1"), ("2/2", "K must be in 0...1"), ("0/0", "N ≥ 1"), ("a/2", "K must be a number"),
                              ("auto/4", "SLURM_ARRAY_TASK_ID")] {
            let result = try ingest(dir + "/bad", ["--shard", spec], environment: ["SLURM_ARRAY_TASK_ID": ""])
            #expect(result.status != 0, "\(spec)")
            let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error: ") }
            #expect(lines.count == 1 && lines[0].contains(words), "\(spec): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/bad/data.mdb"), "a refused spec must not create the store")

        #expect(try ingest(dir + "/shard-0", ["--shard", "0/2", "--quiet"]).status == 0)
        let missing = try CLI.run(["merge", "--into", dir + "/merged", dir + "/shard-0"])
        #expect(missing.status == 1)
        #expect(missing.stderr.hasPrefix("Error: shard 1/2 of plan ") && missing.stderr.contains("is missing"), "\(missing.stderr)")
        let notAStore = try CLI.run(["merge", "--into", dir + "/merged", dir + "/shard-0", dir])
        #expect(notAStore.status == 1 && notAStore.stderr.contains("\(dir) is not a shard store"), "\(notAStore.stderr)")
        // A shard of the run in a store another shard of it already uses.
        let reused = try ingest(dir + "/shard-0", ["--shard", "1/2"])
        #expect(reused.status == 1 && reused.stderr.contains("is shard 0/2 of plan") && reused.stderr.contains("not shard 1/2"), "\(reused.stderr)")
    }

    /// Image sources (real MobileNetV2 weights from the artefact cache): Fashion-MNIST and an
    /// image folder with a file the ingest skips, sharded and merged, export equal to one ingest.
    @Test func imageSourcesShardAndMergeToTheSingleIngest() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folder = dir + "/images"
        let fixtures = CLI.packageRoot + "/Tests/H2TBackboneTests/Fixtures/images"
        for (label, files) in [("a", ["rgb.jpg", "gray.png", "not_an_image.png"]), ("b", ["rgb.png", "palette.png", "cmyk.jpg", "rgba.png"])] {
            try FileManager.default.createDirectory(atPath: folder + "/" + label, withIntermediateDirectories: true)
            for file in files { try FileManager.default.copyItem(atPath: fixtures + "/" + file, toPath: folder + "/\(label)/" + file) }
        }
        let sources: [(String, [String])] = [("idx", ["--fashion-mnist", "train", "--limit", "10"]), ("folder", ["--folder", folder])]
        for (name, source) in sources {
            let options = ["--backbone", "mobilenet_v2", "--input-size", "32", "--target-size", "64", "--segment-rows", "2", "--dataset", "toy", "--quiet"] + source
            let single = try CLI.run(["ingest", "--store", dir + "/\(name)-single"] + options)
            #expect(single.status == 0, "\(single.stderr)")
            var shards: [String] = []
            for k in 0..<3 {
                shards.append(dir + "/\(name)-shard-\(k)")
                let shard = try CLI.run(["ingest", "--store", shards[k], "--shard", "\(k)/3"] + options)
                #expect(shard.status == 0, "\(name) shard \(k): \(shard.stderr)")
                // The file the folder scan skips is reported once, by shard 0.
                #expect(shard.stderr.contains("not_an_image.png") == (name == "folder" && k == 0), "\(name) shard \(k): \(shard.stderr)")
            }
            let merge = try CLI.run(["merge", "--into", dir + "/\(name)-merged", "--quiet"] + shards)
            #expect(merge.status == 0, "\(name): \(merge.stderr)")
            let reference = try exports(dir + "/\(name)-single")
            #expect(reference.count == 1)
            #expect(try exports(dir + "/\(name)-merged") == reference, "\(name)")
        }
    }

    /// The Slurm array script run as processes with `SLURM_ARRAY_TASK_ID` set, as Slurm would
    /// (task 2 twice, as after a requeue), then the merge step.
    @Test func slurmArrayScriptsShardAndMerge() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let scripts = CLI.packageRoot + "/tools/slurm"
        let environment = ["H2T_STORE_BIN": CLI.binary]
        for task in [1, 2, 0, 3, 2] {
            let result = try CLI.run(["bash", scripts + "/ingest-array.sbatch", dir + "/shards", "4", "--quiet"] + ingestOptions,
                                     executable: "/usr/bin/env", environment: environment.merging(["SLURM_ARRAY_TASK_ID": "\(task)"]) { $1 })
            #expect(result.status == 0, "task \(task): \(result.stderr)")
        }
        let early = try CLI.run(["bash", scripts + "/merge.sbatch", dir + "/shards", "5", dir + "/merged"], executable: "/usr/bin/env", environment: environment)
        #expect(early.status == 1 && early.stderr.contains("shards/shard-4 is not a shard store"), "\(early.stderr)")
        let merge = try CLI.run(["bash", scripts + "/merge.sbatch", dir + "/shards", "4", dir + "/merged"], executable: "/usr/bin/env", environment: environment)
        #expect(merge.status == 0, "\(merge.stderr)")
        #expect(try ingest(dir + "/single", ["--quiet"]).status == 0)
        #expect(try exports(dir + "/merged") == exports(dir + "/single"))
        let noTask = try CLI.run(["bash", scripts + "/ingest-array.sbatch", dir + "/shards", "4"] + ingestOptions, executable: "/usr/bin/env", environment: environment)
        #expect(noTask.status == 2 && noTask.stderr.contains("SLURM_ARRAY_TASK_ID is not set"), "\(noTask.stderr)")
        // A task computes on its --cpus-per-task (Slurm need not pin it to them), at most
        // SLURM_CPUS_ON_NODE; H2T_THREADS and --threads still win. More CPUs per task than the
        // machine has cores, so that the default cannot pass for them.
        let cpus = ProcessInfo.processInfo.activeProcessorCount + 3
        let unset = ["H2T_THREADS": "", "SLURM_CPUS_ON_NODE": ""]
        for (extra, options, expected) in [(unset.merging(["SLURM_CPUS_PER_TASK": "\(cpus)"]) { $1 }, [String](), cpus),
                                           (unset.merging(["SLURM_CPUS_PER_TASK": "\(cpus)", "SLURM_CPUS_ON_NODE": "\(cpus - 1)"]) { $1 }, [], cpus - 1),
                                           (unset.merging(["SLURM_CPUS_PER_TASK": "\(cpus)", "H2T_THREADS": "1"]) { $1 }, [], 1),
                                           (unset.merging(["SLURM_CPUS_PER_TASK": "\(cpus)"]) { $1 }, ["--threads", "2"], 2)] {
            let root = dir + "/threads-\(expected)"
            let result = try CLI.run(["bash", scripts + "/ingest-array.sbatch", root, "4", "--json"] + options + ingestOptions,
                                     executable: "/usr/bin/env",
                                     environment: environment.merging(extra.merging(["SLURM_ARRAY_TASK_ID": "0"]) { $1 }) { $1 })
            #expect(result.status == 0, "\(extra): \(result.stderr)")
            let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            #expect(summary?["threads"] as? Int == expected, "\(extra) \(options): \(result.stdout)")
        }
    }
}
