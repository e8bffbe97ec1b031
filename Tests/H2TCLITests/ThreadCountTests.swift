import Dispatch
import Foundation
import H2TCore
import Synchronization
import Testing

/// The parallelism policy (issue 11): `--threads`, `H2T_THREADS`, the default from the process's
/// CPU affinity, results that do not depend on the thread count, no fixed counts in the sources.
@Suite("thread counts")
struct ThreadCountTests {
    /// The commands that compute, each with a command line that is complete but for `--threads`
    /// (validation runs before any file or store is opened, so the paths need not exist).
    static let computing: [[String]] = [
        ["ingest", "--store", "/nonexistent/s", "--backbone", "mobilenet_v2", "--folder", "/nonexistent/f", "--dataset", "d"],
        ["ingest", "--store", "/nonexistent/s", "--external", "x", "--dataset", "d", "/nonexistent/a.safetensors"],
        ["fit", "--store", "/nonexistent/s", "--dataset", "d"],
        ["predict", "t@v1", "--store", "/nonexistent/s", "--dataset", "d", "--split", "s"],
        ["eval", "t@v1", "--store", "/nonexistent/s", "--dataset", "d"],
        ["export", "--store", "/nonexistent/s", "--feature-set", "f", "--dataset", "d", "--split", "s", "--out", "/nonexistent/x.npy"],
        ["verify", "--store", "/nonexistent/s"],
        ["classify", "/nonexistent/x.png"],
        ["merge", "--into", "/nonexistent/t", "/nonexistent/s0", "/nonexistent/s1"],
    ]

    @Test(arguments: computing)
    func badThreadCountsAreOneLineAndExit64(_ command: [String]) throws {
        for value in ["0", "-2"] {
            for spelling in [["--threads=\(value)"], ["--threads", value]] {
                let result = try CLI.run(command + spelling)
                #expect(result.status == 64, "\(command + spelling): exit \(result.status), \(result.stderr)")
                #expect(result.stderr.hasPrefix("Error: --threads must be in 1... (a positive count), got \(value)\n"), "\(result.stderr)")
            }
        }
        for value in ["0", "-3", "four", "2.5", " "] {
            let result = try CLI.run(command, environment: ["H2T_THREADS": value])
            #expect(result.status == 64, "H2T_THREADS=\(value) \(command): exit \(result.status), \(result.stderr)")
            #expect(result.stderr.hasPrefix("Error: H2T_THREADS must be a positive whole number of threads, got '\(value)'\n"), "\(result.stderr)")
        }
    }

    /// `Parallel.defaultWorkers` counts the CPUs of the affinity mask, as the kernel reports it in
    /// `/proc/self/status` (an independent reading of the same mask), bounded by a cgroup CPU
    /// quota when the process has one (`CPUQuotaTests`).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/self/status")))
    func defaultIsTheAffinityMask() throws {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
        let list = line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)
        let cpus = try list.split(separator: ",").reduce(0) { total, part in
            let bounds = try part.split(separator: "-").map { try #require(Int($0)) }
            return total + (bounds.count == 2 ? bounds[1] - bounds[0] + 1 : 1)
        }
        #expect(Parallel.defaultWorkers == min(cpus, CgroupCPULimit.current ?? cpus))
        #expect(try Parallelism.fromEnvironment([:]) == nil)
        #expect(try Parallelism.fromEnvironment(["H2T_THREADS": "3"])?.threads == 3)
        #expect(throws: ParallelismError.self) { try Parallelism.fromEnvironment(["H2T_THREADS": "-1"]) }
    }

    /// A parallel loop inside `Parallel.both`'s closures keeps its full width: its two items run
    /// at the same time while the other closure runs (each waits for the other to start; with
    /// one thread for the loop, as when both ran as one `concurrentPerform`, the first item waits
    /// in vain for 10 s and the test fails).
    @Test func loopsInsideBothKeepTheirThreads() throws {
        let two = Parallelism(threads: 2)
        func itemsMeet() throws -> Bool {
            let started = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
            let met = try Parallel.map(count: 2, parallelism: two) { item -> Bool in
                started[item].signal()
                return started[1 - item].wait(timeout: .now() + 10) == .success
            }
            return met.allSatisfy { $0 }
        }
        let (first, second) = try Parallel.both(parallelism: two, { try itemsMeet() }, { try itemsMeet() })
        #expect(first && second)
    }

    /// `Parallel.both`: both results, both closures run to the end even when one fails, and the
    /// first closure's error wins over the second's, at one thread and at two.
    @Test func bothRunsTwoClosuresAndReportsTheFirstError() throws {
        struct Failure: Error, Equatable { let which: Int }
        for threads in [1, 2] {
            let parallelism = Parallelism(threads: threads)
            let (a, b) = try Parallel.both(parallelism: parallelism, { 6 * 7 }, { "second" })
            #expect(a == 42 && b == "second")
            let ran = Mutex(0)
            #expect(throws: Failure(which: 1)) {
                _ = try Parallel.both(parallelism: parallelism, { () throws -> Int in
                    ran.withLock { $0 += 1 }
                    throw Failure(which: 1)
                }, { () throws -> Int in
                    ran.withLock { $0 += 1 }
                    throw Failure(which: 2)
                })
            }
            #expect(ran.withLock { $0 } == 2, "\(threads) threads: a closure did not run")
            #expect(throws: Failure(which: 2)) {
                _ = try Parallel.both(parallelism: parallelism, { 1 }, { () throws -> Int in throw Failure(which: 2) })
            }
        }
        // The second closure runs on a thread of its own and must not outlive the call (a
        // closure that escapes `withoutActuallyEscaping` stops the process): many short calls.
        for k in 0..<500 {
            let (a, b) = try Parallel.both(parallelism: Parallelism(threads: 2), { k }, { [k] })
            #expect(a == k && b == [k])
        }
    }

    /// `Parallel.forEachWhenReady`: every item once, never before its dependencies have
    /// finished, at 1 to 4 threads (in index order at one thread); a free worker takes the
    /// lowest-numbered ready item; an error is rethrown, wakes a worker waiting for the failed
    /// item, and what depends on it never runs.
    @Test func itemsRunWhenTheirDependenciesHaveFinished() throws {
        enum Event: Equatable { case start(Int), end(Int) }
        let dependencies = [[], [], [0, 1], [], [2], [2, 3], [], [5, 6]]
        for threads in 1...4 {
            let log = Mutex<[Event]>([])
            try Parallel.forEachWhenReady(count: dependencies.count, dependencies: dependencies,
                                          parallelism: Parallelism(threads: threads)) { item in
                log.withLock { $0.append(.start(item)) }
                usleep(UInt32(1_000 * (item % 3)))
                log.withLock { $0.append(.end(item)) }
            }
            let events = log.withLock { $0 }
            for item in dependencies.indices {
                #expect(events.filter { $0 == .start(item) }.count == 1, "\(threads) threads: item \(item)")
                let start = events.firstIndex(of: .start(item)) ?? -1
                for d in dependencies[item] {
                    #expect((events.firstIndex(of: .end(d)) ?? .max) < start, "\(threads) threads: \(item) started before \(d) ended")
                }
            }
            if threads == 1 { #expect(events.compactMap { if case .start(let i) = $0 { i } else { nil } } == Array(0..<8)) }
        }

        // Two threads: item 0 holds one worker until item 2 starts; the other runs item 1, and
        // then item 2 (ready once 1 is done) goes before item 3, its lower number first.
        let started2 = DispatchSemaphore(value: 0), order = Mutex<[Int]>([])
        let sawTwo = Mutex(false)
        try Parallel.forEachWhenReady(count: 4, dependencies: [[], [], [1], []], parallelism: Parallelism(threads: 2)) { item in
            order.withLock { $0.append(item) }
            if item == 0 { sawTwo.withLock { $0 = started2.wait(timeout: .now() + 10) == .success } }
            if item == 2 { started2.signal() }
        }
        #expect(sawTwo.withLock { $0 }, "item 3 was taken before the ready item 2")
        #expect(order.withLock { $0.firstIndex(of: 2)! < $0.firstIndex(of: 3)! })

        struct Failure: Error, Equatable {}
        for threads in 1...3 {
            let ran = Mutex<Set<Int>>([])
            #expect(throws: Failure()) {
                try Parallel.forEachWhenReady(count: 3, dependencies: [[], [0], []], parallelism: Parallelism(threads: threads)) { item in
                    ran.withLock { _ = $0.insert(item) }
                    if item == 0 {
                        usleep(20_000)
                        throw Failure()
                    }
                }
            }
            #expect(!ran.withLock { $0 }.contains(1), "\(threads) threads: an item ran after its dependency failed")
        }
    }

    /// Overlapping BLAS scopes: the smallest limit wins while they are open.
    @Test func blasScopesTakeTheSmallestLimit() {
        BLAS.withThreadLimit(1) {
            #expect(BLAS.threadCount == 1)
            BLAS.withThreadLimit(4) { #expect(BLAS.threadCount == 1) }
            #expect(BLAS.threadCount == 1)
        }
        Parallelism(threads: 3, setsBLASThreads: false).withBLAS {
            // Left alone: whatever the process (or another scope) has, not necessarily 1.
            #expect(BLAS.threadCount >= 1)
        }
    }

    /// The CLI stops OpenBLAS's idle pool as it starts (`BLAS.stopIdleThreadPool`), so every
    /// CLI test here (`ingestFitAndPredictAreBitIdentical` above all) runs its products with the
    /// pool stopped. This only checks that the linked OpenBLAS has the entry point: stopping the
    /// pool inside this test process could cut a concurrent test's threaded product short.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/self/status")))
    func theLinkedOpenBLASCanStopItsPool() {
        #expect(BLAS.canStopIdleThreadPool)
    }

    /// No fixed thread or worker count anywhere in the sources: counts come from a `Parallelism`;
    /// only `Parallel` counts cores and only `BLAS` sets OpenBLAS's threads.
    @Test func sourcesHoldNoFixedThreadCounts() throws {
        let root = CLI.packageRoot
        let fixedCount = #/(?i)\b(threads|workers|threadCount|workerCount|maxConcurrent\w*)\s*(:\s*Int\??\s*=|:|=)\s*([2-9]|[1-9][0-9]+)\b/#
        let rules: [(pattern: Regex<AnyRegexOutput>, name: String, allowedIn: Set<String>)] = [
            (try Regex(#"activeProcessorCount|openblas_get_num_procs|sysconf\(\s*_SC_NPROCESSORS"#), "core count", ["Sources/H2TCore/Parallel.swift"]),
            (try Regex(#"openblas_set_num_threads"#), "OpenBLAS thread setting", ["Sources/H2TCore/BLAS.swift"]),
            (try Regex(#"concurrentPerform\("#), "raw thread pool", ["Sources/H2TCore/Parallel.swift"]),
            (try Regex(#"min\(\s*[0-9]+\s*,\s*\w*(?:Parallel|Processor|processor|cores)"#), "capped core count", []),
        ]
        var problems: [String] = []
        var scanned = 0
        for folder in ["Sources", "tools/bench"] {
            let enumerator = FileManager.default.enumerator(atPath: root + "/" + folder)
            while let file = enumerator?.nextObject() as? String {
                guard file.hasSuffix(".swift") else { continue }
                let relative = folder + "/" + file
                let text = try String(contentsOfFile: root + "/" + relative, encoding: .utf8)
                scanned += 1
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                    if code.contains(fixedCount) { problems.append("\(relative):\(number + 1): fixed count: \(line)") }
                    for rule in rules where !rule.allowedIn.contains(relative) && code.contains(rule.pattern) {
                        problems.append("\(relative):\(number + 1): \(rule.name): \(line)")
                    }
                }
            }
        }
        #expect(scanned > 50, "scanned only \(scanned) files")
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    /// The scan above finds what it looks for.
    @Test func theScanCatchesAFixedCount() {
        let fixedCount = #/(?i)\b(threads|workers|threadCount|workerCount|maxConcurrent\w*)\s*(:\s*Int\??\s*=|:|=)\s*([2-9]|[1-9][0-9]+)\b/#
        #expect("public var threads: Int = 2".contains(fixedCount))
        #expect("Parallel.forEachWorker(itemCount: n, workers: 2)".contains(fixedCount))
        #expect(!"Parallelism(threads: 1)".contains(fixedCount))
        #expect(!"parallelism: Parallelism = .default".contains(fixedCount))
    }
}

/// Ingest, fit and predict with 1, 2, 3 and 4 threads give bit-identical results.
@Suite("results whatever the thread count", .serialized)
struct ThreadInvarianceTests {
    let dir: String
    let cache = ProcessInfo.processInfo.environment["H2T_CACHE"] ?? (NSHomeDirectory() + "/.cache/h2t-store")

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-threads-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// Per thread count, in its own store: an ingest of 52 training and 20 test images through
    /// MobileNetV2 (float32 tiles, so the stored values are the computed ones; the default batch
    /// size, which grows with the thread count; segments of 24 so that batches end mid-slice),
    /// the exported training features, a small fit's methods and head, and the head's
    /// predictions. Every one must equal the one-thread run's, byte for byte.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: NSHomeDirectory() + "/.cache/h2t-store/fashion-mnist/t10k-images-idx3-ubyte.gz")
                    || ProcessInfo.processInfo.environment["H2T_CACHE"] != nil, "run tools/fetch-artifacts first"))
    func ingestFitAndPredictAreBitIdentical() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = cache + "/fashion-mnist/"
        var outputs: [Int: [String: String]] = [:]
        for threads in [1, 2, 3, 4] {
            let store = ["--store", "\(dir)/s\(threads)", "--threads", "\(threads)"]
            var got: [String: String] = [:]
            for (split, file, limit) in [("train", "train", "52"), ("test", "t10k", "20")] {
                let ingest = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--idx", fm + file + "-images-idx3-ubyte.gz",
                                          "--labels", fm + file + "-labels-idx1-ubyte.gz", "--limit", limit, "--dataset", "fm",
                                          "--split", split, "--target-size", "64", "--dtype", "float32", "--segment-rows", "24", "--json"] + store)
                #expect(ingest.status == 0, "\(ingest.stderr)")
                let summary = try #require(try JSONSerialization.jsonObject(with: Data(ingest.stdout.utf8)) as? [String: Any])
                let featureSet = try #require((summary["feature_sets"] as? [[String: Any]])?.first?["id"] as? String)
                got["feature set"] = featureSet
                let out = "\(dir)/x\(threads)-\(split).npy"
                let export = try CLI.run(["export", "--feature-set", featureSet, "--dataset", "fm", "--split", split, "--out", out] + store)
                #expect(export.status == 0, "\(export.stderr)")
                got["features \(split)"] = try Data(contentsOf: URL(fileURLWithPath: out)).base64EncodedString()
            }
            let fit = try CLI.run(["fit", "--dataset", "fm", "--folds", "3", "--fractions", "0.1,0.5", "--lambdas", "0.1,0.03",
                                   "--ridges", "1e-4", "--alias", "prod", "--json"] + store)
            #expect(fit.status == 0, "\(fit.stderr)")
            var summary = try #require(try JSONSerialization.jsonObject(with: Data(fit.stdout.utf8)) as? [String: Any])
            summary["seconds"] = nil
            got["fit"] = String(decoding: try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys]), as: UTF8.self)
            let exported = "\(dir)/head\(threads).safetensors"
            let head = try CLI.run(["head", "export", "fm@prod", "--out", exported] + store.prefix(2))
            #expect(head.status == 0, "\(head.stderr)")
            got["head weights"] = try Self.tensors(exported)
            let predict = try CLI.run(["predict", "fm@prod", "--dataset", "fm", "--split", "test", "--json"] + store)
            #expect(predict.status == 0, "\(predict.stderr)")
            got["predict"] = predict.stdout
            outputs[threads] = got
        }
        let reference = try #require(outputs[1])
        #expect(reference.count == 6)
        for threads in [2, 3, 4] {
            for (key, value) in reference.sorted(by: { $0.key < $1.key }) {
                // Compared as a Bool: the values are megabytes of base64.
                let same = outputs[threads]?[key] == value
                #expect(same, "\(threads) threads: \(key) differs from 1 thread")
            }
        }
    }

    /// An image-folder ingest (photos of 180-600 pixels a side, decoded, identified and resized
    /// on the workers) with two undecodable files among them, in segments of 5 so that the gaps
    /// they leave fall inside segments: at 1-4 threads, the same stored features (float32), the
    /// same examples and the same skipped files in the same order.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: NSHomeDirectory() + "/.cache/h2t-store/images/coffee.png")
                    || ProcessInfo.processInfo.environment["H2T_CACHE"] != nil, "run tools/fetch-artifacts first"))
    func folderIngestIsBitIdentical() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folder = dir + "/photos"
        let made = try CLI.run([CLI.packageRoot + "/tools/make-photo-folder", folder, "--count", "14", "--cache", cache],
                               executable: "/usr/bin/env")
        #expect(made.status == 0, "\(made.stderr)")
        let bad = [folder + "/chelsea/000004.jpg", folder + "/coffee/000007.jpg"]
        let original = try Data(contentsOf: URL(fileURLWithPath: bad[0]))
        try original.prefix(original.count / 3).write(to: URL(fileURLWithPath: bad[0]))
        try Data([0xFF, 0xD8, 0xFF, 0xE0] + (0..<300).map { UInt8(($0 * 37) % 251) }).write(to: URL(fileURLWithPath: bad[1]))
        var outputs: [Int: [String]] = [:]
        for threads in [1, 2, 3, 4] {
            let store = ["--store", "\(dir)/s\(threads)", "--threads", "\(threads)"]
            let ingest = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--folder", folder, "--dataset", "photos", "--input-size", "32",
                                      "--target-size", "64", "--dtype", "float32", "--segment-rows", "5", "--json"] + store)
            #expect(ingest.status == 0, "\(ingest.stderr)")
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(ingest.stdout.utf8)) as? [String: Any])
            #expect(summary["examples_computed"] as? Int == 12, "\(ingest.stdout)")
            let skipped = (summary["skipped"] as? [[String: Any]] ?? []).map { $0["path"] as? String ?? "" }
            #expect(skipped == bad.sorted(), "\(threads) threads: \(skipped)")
            let featureSet = try #require((summary["feature_sets"] as? [[String: Any]])?.first?["id"] as? String)
            let out = "\(dir)/photos\(threads).npy"
            let export = try CLI.run(["export", "--feature-set", featureSet, "--dataset", "photos", "--split", "train", "--out", out] + store)
            #expect(export.status == 0, "\(export.stderr)")
            outputs[threads] = [try Data(contentsOf: URL(fileURLWithPath: out)).base64EncodedString(), skipped.joined(separator: ",")]
        }
        for threads in [2, 3, 4] {
            let same = outputs[threads] == outputs[1]
            #expect(same, "\(threads) threads: features or skipped files differ from 1 thread")
        }
    }

    /// A stored feature does not depend on where its image falls in a batch: with batches of 3
    /// and of 32 the same images store the same bits, at 64×64 (slices of 8), 97×97 (slices of
    /// 4) and 160×160 (slices of 1). Before, a short slice (a batch's tail) ran its narrow
    /// depthwise maps in a scalar loop without fused multiply-adds, and its small 1×1 products
    /// went to OpenBLAS's small-matrix kernel: both round differently. Short slices are now
    /// padded to the full slice.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: NSHomeDirectory() + "/.cache/h2t-store/fashion-mnist/t10k-images-idx3-ubyte.gz")
                    || ProcessInfo.processInfo.environment["H2T_CACHE"] != nil, "run tools/fetch-artifacts first"))
    func featuresDoNotDependOnTheBatchSize() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = cache + "/fashion-mnist/"
        for size in ["64", "97", "160"] {
            var outputs: [String: Data] = [:]
            for batch in ["32", "3"] {
                let store = ["--store", "\(dir)/s\(size)-\(batch)"]
                let ingest = try CLI.run(["ingest", "--backbone", "mobilenet_v2", "--idx", fm + "t10k-images-idx3-ubyte.gz",
                                          "--labels", fm + "t10k-labels-idx1-ubyte.gz", "--limit", "20", "--dataset", "fm",
                                          "--input-size", size, "--target-size", "64", "--dtype", "float32",
                                          "--batch-size", batch, "--json"] + store)
                #expect(ingest.status == 0, "\(ingest.stderr)")
                let summary = try #require(try JSONSerialization.jsonObject(with: Data(ingest.stdout.utf8)) as? [String: Any])
                let featureSet = try #require((summary["feature_sets"] as? [[String: Any]])?.first?["id"] as? String)
                let out = "\(dir)/x\(size)-\(batch).npy"
                let export = try CLI.run(["export", "--feature-set", featureSet, "--dataset", "fm", "--split", "train", "--out", out] + store)
                #expect(export.status == 0, "\(export.stderr)")
                outputs[batch] = try Data(contentsOf: URL(fileURLWithPath: out))
            }
            #expect(outputs["3"] == outputs["32"], "\(size)×\(size): batches of 3 and 32 store different features")
        }
    }

    /// The tensors of a safetensors file (its data section and the header's tensor entries, not
    /// the metadata, which records when the file was written).
    static func tensors(_ path: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
        header["__metadata__"] = nil
        let entries = String(decoding: try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]), as: UTF8.self)
        return entries + data.subdata(in: (8 + headerLength)..<data.count).base64EncodedString()
    }
}

/// The default thread count under a cgroup CPU quota (`docker run --cpus`, Kubernetes limits):
/// the cases shared with the Python package, and a real cgroup where this machine lets us make one.
@Suite("cgroup CPU quotas")
struct CPUQuotaTests {
    /// Tests/Fixtures/cgroup-cpu-limits.json: the texts of `/proc/self/cgroup` and
    /// `/proc/self/mountinfo`, the control files, and the cores they grant (`null`: no limit).
    @Test func theSharedTableOfQuotas() throws {
        let url = URL(fileURLWithPath: CLI.packageRoot + "/Tests/Fixtures/cgroup-cpu-limits.json")
        let table = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try #require(table["cases"] as? [[String: Any]])
        #expect(cases.count >= 10)
        for entry in cases {
            let name = try #require(entry["name"] as? String)
            let files = try #require(entry["files"] as? [String: String])
            let groups = try #require(entry["cgroup"] as? String), mounts = try #require(entry["mountinfo"] as? String)
            let expected = entry["cores"] as? Int
            #expect(CgroupCPULimit.cores(groups: groups, mounts: mounts, read: { files[$0] }) == expected, "\(name)")
        }
        // The same files under a directory standing for `/`, read as the process reads its own.
        let root = NSTemporaryDirectory() + "h2t-cgroup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let deep = cases[1]
        var files = try #require(deep["files"] as? [String: String])
        files["/proc/self/cgroup"] = deep["cgroup"] as? String
        files["/proc/self/mountinfo"] = deep["mountinfo"] as? String
        for (path, text) in files {
            try FileManager.default.createDirectory(atPath: root + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: root + path, atomically: false, encoding: .utf8)
        }
        #expect(CgroupCPULimit.cores(root: root) == deep["cores"] as? Int)
        #expect(CgroupCPULimit.cores(root: root + "/missing") == nil)
    }

    /// A mount point named in another encoding (not UTF-8) is not read, as in the Python reader;
    /// the other hierarchies still are.
    @Test func aMountinfoThatIsNotUTF8() throws {
        let root = NSTemporaryDirectory() + "h2t-cgroup-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let latin1 = Array("/mnt/caf".utf8) + [0xE9]
        let files: [([UInt8], [UInt8])] = [
            (Array("/proc/self/cgroup".utf8), Array("4:cpu:/job\n0::/job\n".utf8)),
            (Array("/proc/self/mountinfo".utf8), Array("32 31 0:29 / ".utf8) + latin1 + Array(" rw - cgroup cgroup rw,cpu\n".utf8)
                + Array("41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n".utf8)),
            (latin1 + Array("/job/cpu.cfs_quota_us".utf8), Array("100000".utf8)),
            (latin1 + Array("/job/cpu.cfs_period_us".utf8), Array("100000".utf8)),
            (Array("/sys/fs/cgroup/job/cpu.max".utf8), Array("300000 100000".utf8)),
        ]
        for (path, contents) in files {
            // Raw bytes all the way: a Swift String cannot hold the Latin-1 name.
            let full = Array(root.utf8) + path
            var end = 0
            while let slash = full[(end + 1)...].firstIndex(of: UInt8(ascii: "/")) {
                _ = (full[..<slash].map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { mkdir($0.baseAddress!, 0o755) }
                end = slash
            }
            let fd = (full.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { open($0.baseAddress!, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
            try #require(fd >= 0)
            #expect(contents.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == contents.count)
            close(fd)
        }
        #expect(CgroupCPULimit.cores(root: root) == 3)
    }

    /// A new child of this process's cgroup with the cpu controller, or `nil` when the machine
    /// does not let us make one (not root, a read-only cgroup file system, no cpu controller).
    static func makeCPUGroup() -> String? {
        guard let groups = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        let memberships = groups.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 3 < fields.count, fields[3] == "/" else { continue }
            let v2 = fields[dash + 1] == "cgroup2"
            guard v2 || (fields[dash + 1] == "cgroup" && fields[dash + 3].split(separator: ",").contains("cpu")) else { continue }
            guard let group = memberships.first(where: { $0.count == 3 && (v2 ? $0[0] == "0" : $0[1].split(separator: ",").contains("cpu")) })?[2]
            else { continue }
            let child = "\(fields[4])\(group)/h2t-test-\(UUID().uuidString.prefix(12))"
            guard mkdir(child, 0o755) == 0 else { continue }
            if FileManager.default.fileExists(atPath: child + (v2 ? "/cpu.max" : "/cpu.cfs_quota_us")) { return child }
            rmdir(child)
        }
        return nil
    }

    static let cpuGroupsCanBeMade: Bool = {
        guard let group = makeCPUGroup() else { return false }
        return rmdir(group) == 0
    }()

    /// An ingest started inside a cgroup limited to one CPU computes with one thread by default
    /// (its affinity mask still shows every core), `H2T_THREADS` still wins there, and in an
    /// unlimited group the default is the affinity mask. Reported by `ingest --json` (`threads`).
    @Test(.enabled(if: cpuGroupsCanBeMade))
    func aRealQuotaBoundsTheDefault() throws {
        let dir = NSTemporaryDirectory() + "h2t-quota-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeInput(dir + "/in.safetensors", n: 12, prefix: "q")
        let group = try #require(Self.makeCPUGroup())
        defer { rmdir(group) }
        func threads(_ name: String, environment: [String: String] = [:]) throws -> Int {
            // The shell joins the group, then becomes the CLI (so it runs there from its first instruction).
            let result = try CLI.run(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", group, CLI.binary, "ingest", "--store", dir + "/" + name,
                                      "--external", "toy", "--dataset", "toy", "--target-size", "32", "--json", dir + "/in.safetensors"],
                                     executable: "/bin/sh", environment: environment)
            #expect(result.status == 0, "\(result.stderr)")
            try CLI.expectValid(result.stdout, schema: "ingest-output")
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
            return try #require(summary["threads"] as? Int)
        }
        let unlimited = try threads("unlimited", environment: ["H2T_THREADS": ""])
        #expect(unlimited == Parallel.defaultWorkers && unlimited >= 1)
        let quota = FileManager.default.fileExists(atPath: group + "/cpu.max")
        if quota {
            try "100000 100000".write(toFile: group + "/cpu.max", atomically: false, encoding: .utf8)
        } else {
            try "100000".write(toFile: group + "/cpu.cfs_period_us", atomically: false, encoding: .utf8)
            try "100000".write(toFile: group + "/cpu.cfs_quota_us", atomically: false, encoding: .utf8)
        }
        #expect(try threads("one-cpu", environment: ["H2T_THREADS": ""]) == 1)
        #expect(try threads("explicit", environment: ["H2T_THREADS": "3"]) == 3)
    }
}
