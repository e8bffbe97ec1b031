import Foundation
import H2TStore

/// `h2t-bench map`: how the LMDB map is sized (issue 2): a large sparse reservation from the
/// start vs a tiny map that grows by doubling (each growth aborts the write transaction, resizes
/// with no transaction open, and re-runs it). Same data, same commits, median of `--reps`.
enum MapBench {
    static let usage = "usage: h2t-bench map [--segments N] [--rows N] [--width N] [--reps N] [--tmp DIR]"

    static func run(arguments: [String]) throws {
        var segments = 24, rows = 512, width = 16_384, reps = 3, tmp = NSTemporaryDirectory()
        var i = 0
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--segments": segments = Int(value) ?? segments
            case "--rows": rows = Int(value) ?? rows
            case "--width": width = Int(value) ?? width
            case "--reps": reps = max(1, Int(value) ?? reps)
            case "--tmp": tmp = value
            default: print(usage); return
            }
            i += 2
        }
        let generator = StoreBench.ActivationGenerator(width: width, seed: 42)
        var batch = [Float](repeating: 0, count: rows * width)
        batch.withUnsafeMutableBufferPointer { b in for r in 0..<rows { generator.fill(row: r, into: b.baseAddress! + r * width) } }
        let backbone = BackboneManifest(architecture: "external:map-bench", weightsSHA256: nil, taps: [TapDescriptor(name: "x", shape: [width])])
        let configurations: [(String, Int)] = [("sparse 64 GiB (default)", 64 << 30), ("1 MiB, grows by doubling", 1 << 20)]
        var table = StoreBench.Table("LMDB map sizing: \(segments) commits of \(rows) × \(width) (bfloat16 tiles), median of \(reps)",
                                     ["initial map", "seconds", "growths", "final map MiB", "vs default"])
        var baseline = 0.0
        for (name, size) in configurations {
            var times: [Double] = []
            var growths = 0, finalMap = 0
            for rep in 0..<reps {
                let path = (tmp as NSString).appendingPathComponent("h2t-map-bench-\(getpid())-\(rep)")
                try? FileManager.default.removeItem(atPath: path)
                defer { try? FileManager.default.removeItem(atPath: path) }
                let seconds: Double = try { () throws -> Double in
                    let store = try FeatureStore(path: path, mapSize: size)
                    let manifest = FeatureSetManifest(backbone: backbone, backboneID: try store.register(backbone: backbone), targetSize: 1)
                    let fs = try store.register(featureSet: manifest)
                    let tiles = batch.withUnsafeBufferPointer { SegmentEncoder(manifest: manifest).encode($0.baseAddress!, rows: rows) }
                    let start = StoreBench.now()
                    for s in 0..<segments {
                        let ids = (0..<rows).map { ExampleID(name: "s\(s)r\($0)") }
                        try store.commit(segments: [SegmentPayload(featureSet: fs, examples: ids, tiles: tiles)],
                                         examples: ids.map { ($0, ExampleRecord(name: "", source: "bench")) }, datasets: [])
                    }
                    let elapsed = StoreBench.now() - start
                    (growths, finalMap) = store.mapStatistics
                    return elapsed
                }()
                times.append(seconds)
            }
            let median = StoreBench.median(times)
            if baseline == 0 { baseline = median }
            table.add([name, StoreBench.fmt(median, 2), "\(growths)", "\(finalMap >> 20)", StoreBench.fmt(median / baseline, 2) + "×"])
        }
        table.print()
    }
}
