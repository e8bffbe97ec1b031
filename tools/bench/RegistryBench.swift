import Dispatch
import Foundation
import H2TBackbone
import H2TCore
import H2TPipeline
import H2TRegistry
@_spi(Testing) import H2TStore

/// The `registry` section of h2t-bench (release build):
/// 1. listing 10,000 registered heads (library and CLI);
/// 2. `predict` on 10,000 stored examples of a D = 50,000 feature set with a head keeping 1% of
///    the columns, scattered: selected-column reads against whole-row reads (time and bytes of
///    tile frames touched) and against recomputing the features with the backbone;
/// 3. early-exit inference on new images for a head whose deepest tap is mid-network, against the
///    full forward pass.
enum RegistryBench {
    static let usage = "usage: h2t-bench registry [--quick] [--heads 10000] [--examples 10000] [--only listing|predict|exit] [--keep-store]"

    static func option(_ args: [String], _ name: String) -> String? {
        guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
        return args[i + 1]
    }

    static func say(_ line: String = "") {
        print(line)
        fflush(nil)
    }

    static func run(arguments: [String]) throws {
        let quick = arguments.contains("--quick")
        let headCount = option(arguments, "--heads").flatMap(Int.init) ?? (quick ? 2000 : 10_000)
        let exampleCount = option(arguments, "--examples").flatMap(Int.init) ?? (quick ? 2000 : 10_000)
        let root = NSTemporaryDirectory() + "h2t-bench-registry-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if !arguments.contains("--keep-store") { try? FileManager.default.removeItem(atPath: root) } }
        say("h2t-bench registry: \(headCount) heads, \(exampleCount) stored examples, \(Parallel.defaultWorkers) cores, load \(StoreBench.loadAverage())")
        let only = option(arguments, "--only")
        if only == nil || only == "listing" { try listing(root: root + "/heads", count: headCount) }
        if only == nil || only == "predict" { try storedPrediction(root: root + "/features", count: exampleCount) }
        if only == nil || only == "exit" { try earlyExit() }
        if arguments.contains("--keep-store") { say("\nstores kept in \(root)") }
    }

    // MARK: 1. Listing

    static func listing(root: String, count: Int) throws {
        let store = try FeatureStore(path: root, noSync: true)
        let registry = try Registry(store: store)
        let fs = String(repeating: "ab", count: 32), bb = String(repeating: "cd", count: 32)
        var rng = StoreBench.SplitMix(11)
        let tasks = max(1, count / 100)
        let setup = try StoreBench.time {
            for i in 0..<count {
                // A realistic Head2Toe head: 1% of 50,000 features over 12 taps, 10 classes.
                let selection = (0..<12).map { t in
                    TapIndices(tap: "block\(t).output", order: 4 * t, offset: 4000 * t, width: 4000,
                               indices: Array(stride(from: Int(rng.next() % 50), to: 4000, by: 96)))
                }
                let d = selection.reduce(0) { $0 + $1.indices.count }
                let test = 0.7 + 0.25 * rng.unitOpen()
                let draft = HeadDraft(
                    task: "task\(i % tasks)", classNames: (0..<10).map { "class\($0)" }, selection: selection,
                    weights: (0..<(d * 10)).map { _ in Float(rng.unitOpen() - 0.5) }, bias: [Float](repeating: 0, count: 10),
                    hyperParameters: HyperParameters(method: .head2toe, targetSize: 8192, fraction: 0.01, lambda: 0.25),
                    metrics: HeadMetrics(head: MethodScore(method: .head2toe, featureSet: fs, keptFeatures: d, cvAccuracy: test - 0.01, testAccuracy: test),
                                         linearProbe: MethodScore(method: .linearProbe, featureSet: fs, keptFeatures: 1280, cvAccuracy: 0.7, testAccuracy: 0.69),
                                         allFeatures: MethodScore(method: .allFeatures, featureSet: fs, keptFeatures: 50_000, cvAccuracy: 0.8, testAccuracy: 0.8)),
                    lineage: HeadLineage(featureSet: fs, backbone: bb, architecture: "mobilenet_v2", dataset: "fashion-mnist",
                                         train: SplitLineage(split: "train", digest: fs, count: 1000),
                                         test: SplitLineage(split: "test", digest: bb, count: 10_000), seed: UInt64(i)),
                    tags: ["team": i % 3 == 0 ? "vision" : "audio", "run": "\(i)"])
                _ = try registry.register(draft)
            }
            for t in 0..<tasks { try registry.setAlias("prod", to: HeadReference(task: "task\(t)")) }
        }
        try store.sync()
        var table = StoreBench.Table("registry", ["listing \(count) heads", "median wall s", "median CPU s", "heads/s (wall)"])
        func row(_ name: String, _ body: () throws -> Int) rethrows {
            var samples: [StoreBench.Sample] = []
            var n = 0
            for _ in 0..<5 { samples.append(try StoreBench.measure { n = try body() }) }
            let m = StoreBench.median(samples.map(\.wall)), c = StoreBench.median(samples.map(\.cpu))
            table.add([name + " (\(n) listed)", StoreBench.fmt(m, 3), StoreBench.fmt(c, 3), StoreBench.fmt(Double(count) / m, 0)])
        }
        try row("list all (library)") { try registry.list().count }
        try row("list all, sorted by test accuracy") { try registry.list(HeadFilter(sort: "test_accuracy")).count }
        try row("filter tag team=vision") { try registry.list(HeadFilter(tags: [("team", "vision")])).count }
        try row("filter alias prod") { try registry.list(HeadFilter(alias: "prod")).count }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("h2t-store").path
        if FileManager.default.isExecutableFile(atPath: binary) {
            for args in [["heads", "--sort", "test_accuracy", "--limit", "20"], ["heads", "--json"]] {
                try row("CLI h2t-store \(args.joined(separator: " ")) (process, to /dev/null)") {
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: binary)
                    p.arguments = args + ["--store", root]
                    p.standardOutput = FileHandle.nullDevice
                    try p.run()
                    p.waitUntilExit()
                    return count
                }
            }
        }
        say("\nsetup: \(count) registrations + \(tasks) aliases in \(StoreBench.fmt(setup, 1)) s (\(StoreBench.fmt(Double(count) / setup, 0)) registrations/s, noSync)")
        table.print()
    }

    // MARK: 2. Predict on stored examples

    static func storedPrediction(root: String, count: Int) throws {
        let taps = 50, tapWidth = 1000, width = taps * tapWidth
        let store = try FeatureStore(path: root, noSync: true)
        let registry = try Registry(store: store)
        let backbone = BackboneManifest(architecture: "external:bench", weightsSHA256: nil,
                                        taps: (0..<taps).map { TapDescriptor(name: "tap\($0)", shape: [tapWidth]) })
        let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: [8192])
        let generator = StoreBench.ActivationGenerator(width: width, tapWidth: tapWidth, seed: 5)
        let ids = (0..<count).map { ExampleID(name: "bench-\($0)") }
        var rowBuffer = [Float](repeating: 0, count: width)
        let ingest = try StoreBench.time {
            var first = 0
            while first < count {
                let chunkIDs = Array(ids[first..<min(first + 512, count)])
                let chunk = try writer.chunk(examples: chunkIDs)
                for (e, _) in chunkIDs.enumerated() {
                    rowBuffer.withUnsafeMutableBufferPointer { row in
                        generator.fill(row: first + e, into: row.baseAddress!)
                        for t in 0..<taps {
                            chunk.add(tap: t, example: e, activation: UnsafeBufferPointer(rebasing: row[(t * tapWidth)..<((t + 1) * tapWidth)]))
                        }
                    }
                }
                try chunk.commit(records: chunkIDs.map { ExampleRecord(name: $0.hex, source: "bench") },
                                 datasets: [DatasetAppend(dataset: "bench", classNames: (0..<10).map { "c\($0)" }, split: "all",
                                                          items: chunkIDs.enumerated().map { ($1, (first + $0) % 10) })])
                first += chunkIDs.count
            }
        }
        try store.sync()
        let fsID = writer.featureSetIDs[0], manifest = writer.manifests[0]
        // 1% of the columns, scattered over every tap.
        var rng = StoreBench.SplitMix(3)
        var chosen = Set<Int>()
        while chosen.count < width / 100 { chosen.insert(Int(rng.next() % UInt64(width))) }
        let columns = chosen.sorted()
        var selection: [TapIndices] = []
        for c in columns {
            let t = c / tapWidth
            if selection.last?.order != t { selection.append(TapIndices(tap: "tap\(t)", order: t, offset: t * tapWidth, width: tapWidth, indices: [])) }
            selection[selection.count - 1].indices.append(c - t * tapWidth)
        }
        let d = columns.count
        let head = try registry.register(HeadDraft(
            task: "bench", classNames: (0..<10).map { "c\($0)" }, selection: selection,
            weights: (0..<(d * 10)).map { _ in Float(rng.unitOpen() - 0.5) }, bias: [Float](repeating: 0, count: 10),
            hyperParameters: HyperParameters(method: .head2toe, targetSize: 8192),
            metrics: HeadMetrics(head: MethodScore(method: .head2toe, featureSet: fsID, keptFeatures: d, cvAccuracy: 0.5, testAccuracy: nil), linearProbe: nil, allFeatures: nil),
            lineage: HeadLineage(featureSet: fsID, backbone: writer.backboneID, architecture: "external:bench", dataset: "bench",
                                 train: SplitLineage(split: "all", digest: "", count: count), test: nil, seed: 0)))

        // Bytes of the tile frames each read touches (headers included), from the tile frame tables.
        let (selectedBytes, wholeBytes) = try frameBytes(store: store, featureSet: fsID, manifest: manifest, columns: columns)
        var selectedTimes: [Double] = [], wholeTimes: [Double] = []
        var labelsSelected: [Int] = [], labelsWhole: [Int] = []
        for _ in 0..<3 {
            selectedTimes.append(try StoreBench.time { labelsSelected = try registry.predict(head, examples: ids).labels })
            wholeTimes.append(try StoreBench.time {
                // Whole rows, 1000 at a time (bounded memory), then the same columns and head.
                let applier = try HeadApplier(head: head)
                var labels: [Int] = []
                var first = 0
                while first < count {
                    let chunk = Array(ids[first..<min(first + 1000, count)])
                    let rows = try store.read(featureSet: fsID, examples: chunk)
                    var gathered = [Float](repeating: 0, count: chunk.count * d)
                    for r in 0..<chunk.count { for (j, c) in columns.enumerated() { gathered[r * d + j] = rows.values[r * width + c] } }
                    labels += try applier.apply(gathered, rows: chunk.count, inputs: chunk.map(\.hex)).labels
                    first += chunk.count
                }
                labelsWhole = labels
            })
        }
        precondition(labelsSelected == labelsWhole, "both reads must predict the same labels")
        // Recomputing the features: MobileNetV2 at 64×64, every tap pooled to F_T 8192, on a sample
        // of images, scaled to the same number of examples.
        var recompute: Double?
        var sample = 0
        let cache = ArtifactCache()
        if cache.isPresent(.mobilenetV2) {
            let network = try BackboneNetwork.load(.mobileNetV2, from: cache)
            sample = min(count, 512)
            let batch = (0..<(sample * 3 * 64 * 64)).map { _ in Float(rng.unitOpen() * 2 - 1) }
            _ = try network.pooledFeatures(Array(batch[0..<(32 * 3 * 64 * 64)]), count: 32, height: 64, width: 64, targetSizes: [8192])
            let t = try StoreBench.time {
                var first = 0
                while first < sample {
                    let n = min(64, sample - first)
                    _ = try network.pooledFeatures(Array(batch[(first * 3 * 64 * 64)..<((first + n) * 3 * 64 * 64)]), count: n, height: 64, width: 64, targetSizes: [8192])
                    first += n
                }
            }
            recompute = t * Double(count) / Double(sample)
        }
        let sel = StoreBench.median(selectedTimes), whole = StoreBench.median(wholeTimes)
        say("\nstore: \(count) examples × \(width) features (\(taps) taps), default codec, ingested in \(StoreBench.fmt(ingest, 1)) s; head keeps \(d) columns (1%), scattered over \(selection.count) taps")
        var table = StoreBench.Table("registry", ["predict \(count) stored examples", "median s", "examples/s", "tile bytes touched", "vs selected"])
        table.add(["selected columns (registry.predict)", StoreBench.fmt(sel, 3), StoreBench.fmt(Double(count) / sel, 0),
                   formatMB(selectedBytes), "1.0×"])
        table.add(["whole rows, then the same head", StoreBench.fmt(whole, 3), StoreBench.fmt(Double(count) / whole, 0),
                   formatMB(wholeBytes), "\(StoreBench.fmt(whole / sel, 1))× time, \(StoreBench.fmt(Double(wholeBytes) / Double(selectedBytes), 1))× bytes"])
        if let recompute {
            table.add(["recompute: MobileNetV2 64×64 + pooling (\(sample) timed, scaled)", StoreBench.fmt(recompute, 2),
                       StoreBench.fmt(Double(count) / recompute, 0), "-", "\(StoreBench.fmt(recompute / sel, 1))× time"])
        } else {
            table.add(["recompute with the backbone", "-", "-", "-", "MobileNetV2 weights absent (tools/fetch-artifacts)"])
        }
        table.print()
    }

    static func formatMB(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }

    /// Tile bytes a selected-column read and a whole-row read touch: for the selected read, the
    /// header and frame table of each tile with a selected column plus the frames holding one;
    /// for the whole read, every tile in full.
    static func frameBytes(store: FeatureStore, featureSet: String, manifest: FeatureSetManifest, columns: [Int]) throws -> (Int, Int) {
        var selected = 0, whole = 0
        var framesByBlock: [Int: Set<Int>] = [:]
        do {
            try store.scanTiles(featureSet: featureSet) { _, block, value in
                whole += value.count
                let header = try TileHeader(parsing: value, binding: nil)
                if framesByBlock.isEmpty {
                    for c in columns { framesByBlock[c / manifest.columnBlock, default: []].insert((c % manifest.columnBlock) / header.frameWidth) }
                }
                guard let frames = framesByBlock[block] else { return true }
                let counts = header.frameByteCounts(value)
                selected += 28 + header.frameCount * 4 * ((manifest.codec.dtype == .float32 ? 4 : 2) + 2)
                for f in frames { selected += counts[f] }
                return true
            }
        }
        return (selected, whole)
    }

    // MARK: 3. Early exit

    static func earlyExit() throws {
        let cache = ArtifactCache()
        guard cache.isPresent(.mobilenetV2) else {
            say("\nearly exit: MobileNetV2 weights absent (tools/fetch-artifacts); skipped")
            return
        }
        let network = try BackboneNetwork.load(.mobileNetV2, from: cache)
        let size = 64, count = 256
        let taps = network.taps(height: size, width: size)
        let root = NSTemporaryDirectory() + "h2t-bench-exit-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try FeatureStore(path: root, noSync: true)
        let registry = try Registry(store: store)
        let backbone = BackboneManifest(architecture: "mobilenet_v2", weightsSHA256: Artifact.mobilenetV2.pin.sha256,
                                        taps: taps.map { TapDescriptor(name: $0.name, shape: $0.shape) })
        let writer = try FeatureSetWriter(store: store, backbone: backbone, targetSizes: [8192])
        let manifest = writer.manifests[0]
        var rng = StoreBench.SplitMix(4)
        let images = (0..<count).map { _ in DecodedImage(width: size, height: size, channels: 3, pixels: (0..<(size * size * 3)).map { _ in UInt8(rng.next() % 256) }) }
        var table = StoreBench.Table("registry", ["\(count) images \(size)×\(size), MobileNetV2 (\(taps.count) taps)", "median s", "images/s", "vs full", "MACs computed", "ideal by MACs", "ideal by time"])
        // Multiply-accumulates up to each tap (3×3 stem and depthwise, 1×1 expand/project/head, the
        // classifier), to say what "in proportion to the layers skipped" should give.
        var macs = [Double](repeating: 0, count: taps.count)
        var lastChannels = 3.0, running = 0.0
        for tap in taps {
            let c = Double(tap.shape[0]), plane = tap.shape.count == 3 ? Double(tap.shape[1] * tap.shape[2]) : 1
            if tap.kind == .convBN {
                running += tap.name.hasSuffix("depthwise.conv_bn") ? c * plane * 9 : c * plane * lastChannels * (tap.name.hasPrefix("stem") ? 9 : 1)
                lastChannels = c
            } else if tap.kind == .logits {
                running += c * lastChannels
            }
            macs[tap.order] = running
        }
        // Full forward pass: every layer computed, only the logits delivered.
        var full: [Double] = []
        let batchFloats: [Float] = try {
            let probe = try ImagePredictor(head: try registry.register(headDraft(manifest: manifest, writer: writer, orders: [taps.count - 1], rng: &rng, task: "full")),
                                           registry: registry, network: network)
            return try probe.batch(images, names: [])
        }()
        _ = try network.pooledFeatures(Array(batchFloats[0..<(16 * 3 * size * size)]), count: 16, height: size, width: size, targetSizes: [8192], taps: .only(["logits"]))
        for _ in 0..<3 {
            full.append(try StoreBench.time { try network.run(batchFloats, count: count, height: size, width: size, taps: .only(["logits"])) { _ in } })
        }
        let fullTime = StoreBench.median(full)
        // Where the time of a full pass goes: the moment each tap is delivered (worker 0, every tap
        // delivered to an empty callback), as a share of the pass. This is the proportion an early
        // exit can save; at 64×64 the high-resolution early layers take more time than their MACs.
        let reached = TapClock(count: taps.count)
        var shares = [Double](repeating: 1, count: taps.count)
        var shareRuns: [[Double]] = []
        for _ in 0..<3 {
            let start = StoreBench.now()
            try network.run(batchFloats, count: count, height: size, width: size, taps: .all) { activations in
                if activations.firstExample == 0 { reached.mark(activations.tap.order, StoreBench.now()) }
            }
            let end = StoreBench.now()
            shareRuns.append(reached.values.map { ($0 - start) / (end - start) })
        }
        for t in 0..<taps.count { shares[t] = StoreBench.median(shareRuns.map { $0[t] }) }
        table.add(["full forward pass (to the logits)", StoreBench.fmt(fullTime, 3), StoreBench.fmt(Double(count) / fullTime, 0), "1.00×",
                   String(format: "%.1f M", macs.last! / 1e6), "1.00×", "1.00×"])
        for deepest in [taps.count / 4, taps.count / 2, 3 * taps.count / 4] {
            let orders = [1, deepest / 3, 2 * deepest / 3, deepest]
            let head = try registry.register(headDraft(manifest: manifest, writer: writer, orders: orders, rng: &rng, task: "exit\(deepest)"))
            let predictor = try ImagePredictor(head: head, registry: registry, network: network)
            var times: [Double] = []
            for _ in 0..<3 { times.append(try StoreBench.time { _ = try predictor.selectedFeatures(batchFloats, count: count) }) }
            let t = StoreBench.median(times)
            table.add(["head up to tap \(deepest) '\(taps[deepest].name)' (\(StoreBench.fmt(100 * Double(deepest + 1) / Double(taps.count), 0))% of taps)",
                       StoreBench.fmt(t, 3), StoreBench.fmt(Double(count) / t, 0), "\(StoreBench.fmt(fullTime / t, 2))× faster",
                       String(format: "%.1f M (%.0f%%)", macs[deepest] / 1e6, 100 * macs[deepest] / macs.last!), "\(StoreBench.fmt(macs.last! / macs[deepest], 2))×",
                       "\(StoreBench.fmt(1 / shares[deepest], 2))× (\(StoreBench.fmt(100 * shares[deepest], 0))% of the pass)"])
        }
        say("")
        table.print()
    }

    static func headDraft(manifest: FeatureSetManifest, writer: FeatureSetWriter, orders: [Int], rng: inout StoreBench.SplitMix, task: String) -> HeadDraft {
        let selection = Array(Set(orders)).sorted().map { order -> TapIndices in
            let tap = manifest.taps[order]
            return TapIndices(tap: tap.name, order: order, offset: tap.offset, width: tap.width,
                              indices: Array(stride(from: 0, to: tap.width, by: max(1, tap.width / 20))))
        }
        let d = selection.reduce(0) { $0 + $1.indices.count }
        return HeadDraft(task: task, classNames: (0..<10).map { "c\($0)" }, selection: selection,
                         weights: (0..<(d * 10)).map { _ in Float(rng.unitOpen() - 0.5) }, bias: [Float](repeating: 0, count: 10),
                         hyperParameters: HyperParameters(method: .head2toe, targetSize: 8192),
                         metrics: HeadMetrics(head: MethodScore(method: .head2toe, featureSet: writer.featureSetIDs[0], keptFeatures: d, cvAccuracy: 0.5, testAccuracy: nil),
                                              linearProbe: nil, allFeatures: nil),
                         lineage: HeadLineage(featureSet: writer.featureSetIDs[0], backbone: writer.backboneID, architecture: "mobilenet_v2",
                                              dataset: "none", train: SplitLineage(split: "none", digest: "", count: 0), test: nil, seed: 0))
    }
}

/// When each tap was reached during one pass (written by one worker only).
final class TapClock: @unchecked Sendable {
    // @unchecked Sendable: only worker 0 writes, and it is read after the pass returns.
    private(set) var values: [Double]
    init(count: Int) { values = [Double](repeating: 0, count: count) }
    func mark(_ order: Int, _ time: Double) { values[order] = time }
}
