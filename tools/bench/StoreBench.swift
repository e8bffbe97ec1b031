import CZlib
import CZstd
import Dispatch
import Foundation
import H2TBackbone
import H2TCore
import H2TPipeline
import H2TStore

/// The `store` section of h2t-bench: the storage engine's performance targets (issue 2), each
/// against a baseline measured in the same run, medians of `--reps` repetitions.
///
/// Sub-sections: `codec` (ratio and speed per codec), `ingest` (ingest split into conversion,
/// compression and LMDB, then whole-row and selected-column reads of the same store), `layout`
/// (frame width × column block sweep on a smaller store), `rss` (peak memory of ingest in a
/// child process per size), `pipeline` (`ExternalIngest` end to end from a safetensors file, each
/// chunk's commit overlapped with the next chunk's work vs sequential). Stores live under
/// `--tmp` (default /tmp) and are deleted.
enum StoreBench {
    struct Options {
        var sections: [String] = []
        var examples = 10_000
        var width = 50_000
        var segmentRows = 512
        var reps = 3
        var codecColumns = 8192
        var rssSizes = [10_000, 50_000]
        var layoutExamples = 2048
        var selectedFraction = 0.01
        var seed: UInt64 = 2022
        var tmp = "/tmp"
        var codec = TileCodec.default
        var columnBlock = 1024
        var pipelineExamples = 4096
    }

    static let usage = """
        usage: h2t-bench store [all|codec|real|ingest|layout|rss|pipeline]... [--examples N] [--width D] [--reps R]
                               [--rss-sizes N,M] [--layout-examples N] [--codec-columns C]
                               [--dtype bfloat16|float16|float32] [--level L] [--frame-width F]
                               [--column-block B] [--tmp DIR] [--quick]
        """

    static func run(arguments: [String]) throws {
        var o = Options()
        var i = 0
        func value() -> String {
            i += 1
            guard i < arguments.count else { fatalError("missing value after \(arguments[i - 1])\n\(usage)") }
            return arguments[i]
        }
        func int() -> Int {
            let v = value()
            guard let n = Int(v.replacingOccurrences(of: "_", with: "")) else { fatalError("not a number: \(v)\n\(usage)") }
            return n
        }
        while i < arguments.count {
            switch arguments[i] {
            case "all", "codec", "real", "ingest", "layout", "rss", "rss-child", "pipeline": o.sections.append(arguments[i])
            case "--pipeline-examples": o.pipelineExamples = int()
            case "--examples": o.examples = int()
            case "--width": o.width = int()
            case "--reps": o.reps = max(1, int())
            case "--rss-sizes": o.rssSizes = value().split(separator: ",").compactMap { Int($0) }
            case "--layout-examples": o.layoutExamples = int()
            case "--codec-columns": o.codecColumns = int()
            case "--dtype":
                guard let d = StorageDType(rawValue: value()) else { fatalError(usage) }
                o.codec.dtype = d
            case "--level": o.codec.level = int()
            case "--frame-width": o.codec.frameWidth = int()
            case "--column-block": o.columnBlock = int()
            case "--tmp": o.tmp = value()
            case "--quick":
                o.examples = 2048; o.width = 10_000; o.rssSizes = [1024, 4096]; o.layoutExamples = 1024
                o.codecColumns = 4096
            case "-h", "--help": print(usage); return
            default: fatalError("unknown argument \(arguments[i])\n\(usage)")
            }
            i += 1
        }
        if o.sections.isEmpty || o.sections.contains("all") { o.sections = ["codec", "real", "ingest", "layout", "rss", "pipeline"] }
        if o.sections == ["rss-child"] { try rssChild(o); return }

        print("h2t-bench store: \(o.examples) examples × \(o.width) features, segments of \(o.segmentRows) rows, "
              + "codec \(describe(o.codec)), columnBlock \(o.columnBlock), \(o.reps) repetitions (medians)")
        print("machine: \(Parallel.defaultWorkers) cores, load average at start \(loadAverage()) "
              + "(shared machine: compare ratios, not absolute times)")
        let generator = ActivationGenerator(width: o.width, seed: o.seed)
        for section in o.sections {
            switch section {
            case "codec": try codecSection(o, generator)
            case "real": try realSection(o)
            case "ingest": try ingestSection(o, generator)
            case "layout": try layoutSection(o, generator)
            case "rss": try rssSection(o)
            case "pipeline": try pipelineSection(o, generator)
            default: break
            }
        }
        print("\nload average at end \(loadAverage())")
    }

    static func describe(_ c: TileCodec) -> String {
        "\(c.dtype.rawValue)/\(c.compressed ? "zstd\(c.level)" : "raw")/fw\(c.frameWidth)"
    }

    // MARK: - codec

    /// Reads `rows × cols` of generated data whose column blocks of 1024 are spread over the
    /// whole width (so every kind of tap is sampled).
    static func codecSample(_ o: Options, _ gen: ActivationGenerator) -> (values: [Float], cols: Int) {
        let blockWidth = 1024
        let blocks = max(1, min(o.codecColumns, gen.width) / blockWidth)
        let cols = blocks * blockWidth
        var full = [Float](repeating: 0, count: o.segmentRows * gen.width)
        full.withUnsafeMutableBufferPointer { gen.fill(rows: 0..<o.segmentRows, into: $0.baseAddress!) }
        var out = [Float](repeating: 0, count: o.segmentRows * cols)
        for b in 0..<blocks {
            let start = min(gen.width - blockWidth, b * (gen.width / blocks))
            for r in 0..<o.segmentRows {
                for c in 0..<blockWidth { out[r * cols + b * blockWidth + c] = full[r * gen.width + start + c] }
            }
        }
        return (out, cols)
    }

    struct CodecConfig { var dtype: StorageDType; var planes: Bool; var level: Int; var fw: Int; var compressed = true }

    static func fullCodecMatrix() -> [CodecConfig] {
        var configs: [CodecConfig] = []
        for dtype in [StorageDType.float32, .float16, .bfloat16] {
            configs.append(CodecConfig(dtype: dtype, planes: true, level: 0, fw: 4, compressed: false))
            for planes in [true, false] {
                for level in [1, 2, 3] {
                    for fw in [1, 4, 16] { configs.append(CodecConfig(dtype: dtype, planes: planes, level: level, fw: fw)) }
                }
            }
        }
        return configs
    }

    static func codecSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let (sample, cols) = codecSample(o, gen)
        let rows = o.segmentRows
        let zeros = sample.lazy.filter { $0 == 0 }.count
        let saturated = sample.lazy.filter { $0 == 6 }.count
        print("\ncodec sample (synthetic): \(rows) rows × \(cols) columns (tiles of 1024 columns spread over the width), "
              + "\(fmt(Double(sample.count * 4) / 1e6)) MB float32; exact zeros \(fmt(100 * Double(zeros) / Double(sample.count), 2))%, "
              + "saturated at 6: \(fmt(100 * Double(saturated) / Double(sample.count), 2))%; one thread")
        try codecMatrix(o, sample: sample, rows: rows, cols: cols, title: "codec on synthetic activations", configs: fullCodecMatrix())
        try decodeStrideExperiment(o, sample: sample, cols: cols)
    }

    static func codecMatrix(_ o: Options, sample: [Float], rows: Int, cols: Int, title: String, configs: [CodecConfig]) throws {
        let blockWidth = 1024
        let blocks = cols / blockWidth
        let rawBytes = Double(rows * blocks * blockWidth * 4)
        // Decoded rows are `pitch` floats apart: a power-of-two pitch (8192) would alias every
        // row of a column onto the same cache set and measure that pathology instead of the codec.
        let pitch = cols + 16
        var decodedPadded = [Float](repeating: 0, count: rows * pitch)

        // memcpy baseline for the MB/s columns.
        var copy = [Float](repeating: 0, count: sample.count)
        let memcpyTimes = (0..<max(3, o.reps)).map { _ in
            time { copy.withUnsafeMutableBytes { d in sample.withUnsafeBytes { s in d.copyMemory(from: s) } } }
        }
        let memcpyMBs = rawBytes / median(memcpyTimes) / 1e6

        var table = Table("\(title): ratio vs raw float32; encode/decode MB/s of float32 by wall clock and by CPU time (median of \(o.reps)); memcpy = \(fmt(memcpyMBs, 0)) MB/s",
                          ["dtype", "layout", "zstd", "fw", "ratio", "enc MB/s", "enc CPU", "dec MB/s", "dec CPU", "max rel err"])
        var best: [(String, Double, Double, Double)] = []
        for config in configs {
            var encodeTimes: [Sample] = [], decodeTimes: [Sample] = []
            var stored = 0
            if config.planes {
                let codec = TileCodec(dtype: config.dtype, compressed: config.compressed, level: max(1, config.level), frameWidth: config.fw)
                let encoder = TileEncoder(codec: codec)
                let decoder = TileDecoder()
                var tiles: [[UInt8]] = []
                for _ in 0..<o.reps {
                    tiles.removeAll(keepingCapacity: true)
                    encodeTimes.append(measure {
                        sample.withUnsafeBufferPointer { s in
                            for b in 0..<blocks {
                                tiles.append(encoder.encode(s.baseAddress! + b * blockWidth, rowStride: cols, rows: rows, cols: blockWidth))
                            }
                        }
                    })
                }
                stored = tiles.reduce(0) { $0 + $1.count }
                for _ in 0..<o.reps {
                    decodeTimes.append(try measure {
                        try decodedPadded.withUnsafeMutableBufferPointer { d in
                            for b in 0..<blocks {
                                try tiles[b].withUnsafeBytes { try decoder.decodeAll($0, binding: [], into: d.baseAddress! + b * blockWidth, destStride: pitch) }
                            }
                        }
                    })
                }
            } else {
                let codec = InterleavedCodec(dtype: config.dtype, level: config.level, frameWidth: config.fw)
                var tiles: [InterleavedCodec.Tile] = []
                for _ in 0..<o.reps {
                    tiles.removeAll(keepingCapacity: true)
                    encodeTimes.append(measure {
                        sample.withUnsafeBufferPointer { s in
                            for b in 0..<blocks {
                                tiles.append(codec.encode(s.baseAddress! + b * blockWidth, rowStride: cols, rows: rows, cols: blockWidth))
                            }
                        }
                    })
                }
                stored = tiles.reduce(0) { $0 + $1.bytes.count + 8 * $1.frames.count }
                for _ in 0..<o.reps {
                    decodeTimes.append(try measure {
                        try decodedPadded.withUnsafeMutableBufferPointer { d in
                            for b in 0..<blocks { try codec.decode(tiles[b], into: d.baseAddress! + b * blockWidth, destStride: pitch) }
                        }
                    })
                }
            }
            var maxRel: Float = 0
            for r in 0..<rows {
                for c in 0..<(blocks * blockWidth) where sample[r * cols + c] != 0 {
                    let x = sample[r * cols + c]
                    maxRel = max(maxRel, abs(decodedPadded[r * pitch + c] - x) / abs(x))
                }
            }
            let ratio = rawBytes / Double(stored)
            let enc = rawBytes / median(encodeTimes.map(\.wall)) / 1e6
            let dec = rawBytes / median(decodeTimes.map(\.wall)) / 1e6
            let encCPU = rawBytes / median(encodeTimes.map(\.cpu)) / 1e6
            let decCPU = rawBytes / median(decodeTimes.map(\.cpu)) / 1e6
            let layout = config.planes ? "planes" : "interleaved"
            let zstd = config.compressed ? "\(config.level)" : "off"
            table.add([config.dtype.rawValue, layout, zstd, "\(config.fw)", fmt(ratio, 2), fmt(enc, 0), fmt(encCPU, 0),
                       fmt(dec, 0), fmt(decCPU, 0), maxRel == 0 ? "0" : String(format: "%.1e", Double(maxRel))])
            if config.compressed { best.append(("\(config.dtype.rawValue)/\(layout)/zstd\(config.level)/fw\(config.fw)", ratio, encCPU, decCPU)) }
        }
        table.print()
        let top = best.sorted { $0.1 > $1.1 }.prefix(5)
        print("highest ratios: " + top.map { "\($0.0) \(fmt($0.1, 2))× (enc \(fmt($0.2, 0)), dec \(fmt($0.3, 0)) MB/s of CPU)" }.joined(separator: "; "))
    }

    /// The codec on real pooled MobileNetV2 activations: Fashion-MNIST test images at 64×64
    /// (the backbone's default size for 28×28 sources), every tap pooled with F_T = 8192.
    static func realSection(_ o: Options) throws {
        let cache = ArtifactCache()
        let network: BackboneNetwork
        let dataset: IDXDataset
        do {
            network = try BackboneNetwork.load(.mobileNetV2, from: cache)
            dataset = try IDX.fashionMNIST(train: false, cache: cache)
        } catch {
            print("\nreal activations: skipped (\(error)); run tools/fetch-artifacts first")
            return
        }
        let rows = o.segmentRows, size = 64
        let input = Preprocessing(architecture: .mobileNetV2, size: size).tensor(dataset.images, range: 0..<rows)
        var pooled: [PooledFeatures] = []
        let seconds = try time {
            pooled = try network.pooledFeatures(input, count: rows, height: size, width: size, targetSizes: [8192], parallelism: .allCores)
        }
        let features = pooled[0]
        let cols = features.width
        let zeros = features.values.lazy.filter { $0 == 0 }.count
        let negative = features.values.lazy.filter { $0 < 0 }.count
        print("\nreal activations: MobileNetV2 (torchvision ImageNet weights), \(rows) Fashion-MNIST test images at \(size)×\(size), "
              + "\(features.taps.count) taps pooled to F_T = 8192 → \(cols) features (\(fmt(seconds, 1)) s to compute); "
              + "exact zeros \(fmt(100 * Double(zeros) / Double(features.values.count), 1))%, negative \(fmt(100 * Double(negative) / Double(features.values.count), 1))%")
        fflush(nil)
        // At most `codecColumns` columns, as tiles of 1024 spread over the width (every depth sampled).
        let blockWidth = 1024
        let blocks = max(1, min(o.codecColumns, cols) / blockWidth)
        let subCols = blocks * blockWidth
        var sub = [Float](repeating: 0, count: rows * subCols)
        for b in 0..<blocks {
            let start = min(cols - blockWidth, b * (cols / blocks))
            for r in 0..<rows {
                for c in 0..<blockWidth { sub[r * subCols + b * blockWidth + c] = features.values[r * cols + start + c] }
            }
        }
        var configs: [CodecConfig] = []
        for dtype in [StorageDType.float32, .float16, .bfloat16] {
            for fw in [1, 4, 16] { configs.append(CodecConfig(dtype: dtype, planes: true, level: 1, fw: fw)) }
            configs.append(CodecConfig(dtype: dtype, planes: false, level: 1, fw: 4))
        }
        configs.append(CodecConfig(dtype: .bfloat16, planes: true, level: 3, fw: 4))
        try codecMatrix(o, sample: sub, rows: rows, cols: subCols,
                        title: "codec on real MobileNetV2 activations (\(rows) rows × \(blocks) tiles of 1024 columns spread over the \(cols))", configs: configs)
    }

    /// Where whole-row decoding spends its time: the default codec's tiles decoded (one thread)
    /// into a destination whose rows are 1024 floats apart (the tile alone) or `width` floats apart
    /// (a row of the real feature set, as `FeatureStore.read` does), and a two-step variant built
    /// on the public API: 16 columns at a time into a 32 KB scratch, then 64-byte row copies.
    static func decodeStrideExperiment(_ o: Options, sample: [Float], cols: Int) throws {
        let rows = o.segmentRows, blockWidth = 1024, blocks = cols / blockWidth
        let encoder = TileEncoder(codec: o.codec)
        let decoder = TileDecoder()
        let tiles = sample.withUnsafeBufferPointer { s in
            (0..<blocks).map { encoder.encode(s.baseAddress! + $0 * blockWidth, rowStride: cols, rows: rows, cols: blockWidth) }
        }
        let rawBytes = Double(rows * cols * 4)
        let wide = max(o.width, cols)
        let narrow = UnsafeMutablePointer<Float>.allocate(capacity: rows * blockWidth)
        narrow.initialize(repeating: 0, count: rows * blockWidth)
        let far = UnsafeMutablePointer<Float>.allocate(capacity: rows * wide)
        far.initialize(repeating: 0, count: rows * wide)
        let group = 16
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: rows * group)
        scratch.initialize(repeating: 0, count: rows * group)
        defer { narrow.deallocate(); far.deallocate(); scratch.deallocate() }
        let groupPicks = (0..<(blockWidth / group)).map { g in (0..<group).map { ColumnPick(local: g * group + $0, out: $0) } }
        var stride1024: [Sample] = [], strideWide: [Sample] = [], twoStep: [Sample] = [], twoStep1024: [Sample] = []
        for _ in 0..<max(3, o.reps) {
            stride1024.append(try measure {
                for t in tiles { try t.withUnsafeBytes { try decoder.decodeAll($0, binding: [], into: narrow, destStride: blockWidth) } }
            })
            strideWide.append(try measure {
                for (b, t) in tiles.enumerated() { try t.withUnsafeBytes { try decoder.decodeAll($0, binding: [], into: far + b * blockWidth, destStride: wide) } }
            })
            twoStep1024.append(try measure {
                for t in tiles {
                    try t.withUnsafeBytes { tile in
                        for (g, picks) in groupPicks.enumerated() {
                            try decoder.decode(tile, binding: [], columns: picks, into: scratch, destStride: group)
                            var d = narrow + g * group
                            var s = UnsafePointer(scratch)
                            for _ in 0..<rows {
                                d.update(from: s, count: group)
                                d += blockWidth
                                s += group
                            }
                        }
                    }
                }
            })
            twoStep.append(try measure {
                for (b, t) in tiles.enumerated() {
                    try t.withUnsafeBytes { tile in
                        for (g, picks) in groupPicks.enumerated() {
                            try decoder.decode(tile, binding: [], columns: picks, into: scratch, destStride: group)
                            var d = far + b * blockWidth + g * group
                            var s = UnsafePointer(scratch)
                            for _ in 0..<rows {
                                d.update(from: s, count: group)
                                d += wide
                                s += group
                            }
                        }
                    }
                }
            })
        }
        var table = Table("whole-tile decode, \(describe(o.codec)), one thread: destination layout (median of \(max(3, o.reps)))",
                          ["destination", "MB/s wall", "MB/s CPU", "vs row stride 1024 (CPU)"])
        let base = median(stride1024.map(\.cpu))
        for (name, xs) in [("decodeAll, row stride 1024 (tile only)", stride1024),
                           ("decodeAll, row stride \(wide) (as FeatureStore.read)", strideWide),
                           ("two-step: 16 columns → 32 KB scratch → row copies, stride 1024", twoStep1024),
                           ("two-step: 16 columns → 32 KB scratch → row copies, stride \(wide)", twoStep)] {
            let cpu = median(xs.map(\.cpu))
            table.add([name, fmt(rawBytes / median(xs.map(\.wall)) / 1e6, 0), fmt(rawBytes / cpu / 1e6, 0), fmt(base / cpu, 2) + "×"])
        }
        table.print()
    }

    /// The not-split baseline: each frame's values converted to the storage type, left
    /// interleaved (all bytes of a value together, frame column-major), zstd on the whole frame,
    /// with a CRC-32 per frame like the real codec so that speeds compare fairly.
    final class InterleavedCodec {
        struct Tile {
            var bytes: [UInt8]
            var frames: [(offset: Int, length: Int, crc: UInt32)]
            var rows: Int
            var cols: Int
        }

        let dtype: StorageDType
        let level: Int
        let frameWidth: Int
        private let cctx = ZSTD_createCCtx()
        private let dctx = ZSTD_createDCtx()
        private var scratch: [UInt8] = []

        init(dtype: StorageDType, level: Int, frameWidth: Int) {
            self.dtype = dtype
            self.level = level
            self.frameWidth = frameWidth
        }

        deinit {
            ZSTD_freeCCtx(cctx)
            ZSTD_freeDCtx(dctx)
        }

        @inline(__always) static func bfloat16(_ v: Float) -> UInt16 {
            let bits = v.bitPattern
            return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        }

        func encode(_ source: UnsafePointer<Float>, rowStride: Int, rows: Int, cols: Int) -> Tile {
            let width = dtype.byteWidth
            let frameCount = (cols + frameWidth - 1) / frameWidth
            if scratch.count < rows * frameWidth * width { scratch = [UInt8](repeating: 0, count: rows * frameWidth * width) }
            var out = [UInt8](repeating: 0, count: frameCount * ZSTD_compressBound(rows * frameWidth * width))
            var frames: [(Int, Int, UInt32)] = []
            var cursor = 0
            out.withUnsafeMutableBytes { o in
                scratch.withUnsafeMutableBytes { s in
                    for f in 0..<frameCount {
                        let first = f * frameWidth
                        let n = min(frameWidth, cols - first)
                        var k = 0
                        for c in first..<(first + n) {
                            for r in 0..<rows {
                                let v = source[r * rowStride + c]
                                switch dtype {
                                case .float32: s.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: k * 4, as: UInt32.self)
                                case .float16: s.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: k * 2, as: UInt16.self)
                                case .bfloat16: s.storeBytes(of: Self.bfloat16(v).littleEndian, toByteOffset: k * 2, as: UInt16.self)
                                }
                                k += 1
                            }
                        }
                        let rawLength = k * width
                        let written = ZSTD_compressCCtx(cctx, o.baseAddress! + cursor, o.count - cursor, s.baseAddress!, rawLength, Int32(level))
                        precondition(ZSTD_isError(written) == 0, "zstd failed")
                        let crc = UInt32(truncatingIfNeeded: CZlib.crc32(0, (o.baseAddress! + cursor).assumingMemoryBound(to: UInt8.self), UInt32(written)))
                        frames.append((cursor, written, crc))
                        cursor += written
                    }
                }
            }
            out.removeLast(out.count - cursor)
            return Tile(bytes: out, frames: frames, rows: rows, cols: cols)
        }

        struct Corrupt: Error {}

        func decode(_ tile: Tile, into dest: UnsafeMutablePointer<Float>, destStride: Int) throws {
            let width = dtype.byteWidth
            let rows = tile.rows
            try tile.bytes.withUnsafeBytes { t in
                try scratch.withUnsafeMutableBytes { s in
                    for (f, frame) in tile.frames.enumerated() {
                        let src = t.baseAddress! + frame.offset
                        let crc = UInt32(truncatingIfNeeded: CZlib.crc32(0, src.assumingMemoryBound(to: UInt8.self), UInt32(frame.length)))
                        guard crc == frame.crc else { throw Corrupt() }
                        let first = f * frameWidth
                        let n = min(frameWidth, tile.cols - first)
                        let got = ZSTD_decompressDCtx(dctx, s.baseAddress!, s.count, src, frame.length)
                        guard ZSTD_isError(got) == 0, got == n * rows * width else { throw Corrupt() }
                        var k = 0
                        for c in first..<(first + n) {
                            var target = dest + c
                            for _ in 0..<rows {
                                switch dtype {
                                case .float32: target.pointee = Float(bitPattern: UInt32(littleEndian: s.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self)))
                                case .float16: target.pointee = Float(Float16(bitPattern: UInt16(littleEndian: s.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self))))
                                case .bfloat16: target.pointee = Float(bitPattern: UInt32(UInt16(littleEndian: s.loadUnaligned(fromByteOffset: k * 2, as: UInt16.self))) << 16)
                                }
                                target += destStride
                                k += 1
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: - ingest and reads

    /// A feature set over one external "backbone" whose taps are flat vectors of `tapWidth`.
    static func benchManifests(width: Int, tapWidth: Int, codec: TileCodec, columnBlock: Int)
        -> (BackboneManifest, (String) -> FeatureSetManifest) {
        var taps: [TapDescriptor] = []
        var left = width, t = 0
        while left > 0 {
            let w = min(tapWidth, left)
            taps.append(TapDescriptor(name: "tap\(t)", shape: [w]))
            left -= w
            t += 1
        }
        let backbone = BackboneManifest(architecture: "external:h2t-bench", weightsSHA256: nil, taps: taps)
        return (backbone, { id in FeatureSetManifest(backbone: backbone, backboneID: id, targetSize: 8192, codec: codec, columnBlock: columnBlock) })
    }

    /// An open store with the bench feature set registered.
    struct BenchStore {
        let store: FeatureStore
        let featureSet: String
        let manifest: FeatureSetManifest
    }

    static func openBenchStore(path: String, noSync: Bool, width: Int, tapWidth: Int, codec: TileCodec, columnBlock: Int) throws -> BenchStore {
        let store = try FeatureStore(path: path, noSync: noSync)
        let (backbone, makeFS) = benchManifests(width: width, tapWidth: tapWidth, codec: codec, columnBlock: columnBlock)
        let backboneID = try store.register(backbone: backbone)
        let manifest = makeFS(backboneID)
        let id = try store.register(featureSet: manifest)
        return BenchStore(store: store, featureSet: id, manifest: manifest)
    }

    static func exampleIDs(_ range: Range<Int>, tag: String) -> [ExampleID] {
        range.map { ExampleID(name: "h2t-bench/\(tag)/\($0)") }
    }

    static func commit(_ s: BenchStore, ids: [ExampleID], first: Int, tiles: [[UInt8]]) throws {
        try s.store.commit(
            segments: [SegmentPayload(featureSet: s.featureSet, examples: ids, tiles: tiles)],
            examples: ids.enumerated().map { ($1, ExampleRecord(name: "example-\(first + $0)", source: "h2t-bench")) },
            datasets: [DatasetAppend(dataset: "bench", classNames: (0..<10).map { "class\($0)" }, split: "train",
                                     items: ids.enumerated().map { ($1, (first + $0) % 10) })])
    }

    static func rawRowKey(_ row: Int) -> [UInt8] {
        U32BE.encode(row)
    }

    static func scatteredColumns(count: Int, width: Int, seed: UInt64) -> [Int] {
        var rng = SplitMix(seed)
        var chosen = Set<Int>()
        var out: [Int] = []
        while out.count < count {
            let c = Int(rng.next() % UInt64(width))
            if chosen.insert(c).inserted { out.append(c) }
        }
        return out
    }

    struct IngestTimes {
        var generate = Sample(), memcpy = Sample(), encodeRaw = Sample(), encode = Sample(), commitSync = Sample()
        var commitNoSync = Sample(), rawLMDB = Sample()
        var storedBytes = 0, tileBytes = 0
    }

    struct ReadTimes {
        var whole = Sample(), selected = Sample(), selectedShuffled = Sample(), rawLMDB = Sample(), memcpy = Sample(), zeroFill = Sample()
        var export = Sample(), sequentialWrite = Sample()
    }

    static func ingestSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let n = o.examples, width = o.width, seg = o.segmentRows
        let inputBytes = Double(n * width * 4)
        let cores = Double(Parallel.defaultWorkers)
        print("\ningest: \(n) examples × \(width) features = \(fmt(inputBytes / 1e9, 2)) GB float32 in segments of \(seg) rows, "
              + "codec \(describe(o.codec)), columnBlock \(o.columnBlock); data generated batch by batch (not timed)")
        var ingest: [IngestTimes] = []
        var reads: [ReadTimes] = []
        let selected = scatteredColumns(count: max(1, Int(Double(width) * o.selectedFraction)), width: width, seed: o.seed &+ 1)
        var rawCodec = o.codec
        rawCodec.compressed = false
        for rep in 0..<o.reps {
            let dir = "\(o.tmp)/h2t-sbench-\(getpid())-ingest\(rep)"
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var t = IngestTimes()
            var r = ReadTimes()
            var ids: [ExampleID] = []
            do {
                let synced = try openBenchStore(path: dir + "/sync", noSync: false, width: width, tapWidth: gen.tapWidth, codec: o.codec, columnBlock: o.columnBlock)
                let unsynced = try openBenchStore(path: dir + "/nosync", noSync: true, width: width, tapWidth: gen.tapWidth, codec: o.codec, columnBlock: o.columnBlock)
                let rawEnv = try LMDBEnvironment(path: dir + "/raw", options: .init(tables: ["rows"]))
                let rawRows = rawEnv.table("rows")
                let encoder = SegmentEncoder(manifest: synced.manifest)
                var rawManifest = synced.manifest
                rawManifest.codec = rawCodec
                let rawEncoder = SegmentEncoder(manifest: rawManifest)
                var batch = [Float](repeating: 0, count: seg * width)
                var copy = [Float](repeating: 0, count: seg * width)
                var first = 0
                while first < n {
                    let rows = min(seg, n - first)
                    let batchIDs = exampleIDs(first..<(first + rows), tag: "r\(rep)")
                    ids += batchIDs
                    t.generate += measure { batch.withUnsafeMutableBufferPointer { gen.fill(rows: first..<(first + rows), into: $0.baseAddress!) } }
                    t.memcpy += measure { copy.withUnsafeMutableBytes { d in batch.withUnsafeBytes { s in d.copyMemory(from: s) } } }
                    var tiles: [[UInt8]] = []
                    batch.withUnsafeBufferPointer { b in
                        t.encodeRaw += measure { _ = rawEncoder.encode(b.baseAddress!, rows: rows) }
                        t.encode += measure { tiles = encoder.encode(b.baseAddress!, rows: rows) }
                    }
                    t.tileBytes += tiles.reduce(0) { $0 + $1.count }
                    let f = first
                    t.commitSync += try measure { try commit(synced, ids: batchIDs, first: f, tiles: tiles) }
                    t.commitNoSync += try measure { try commit(unsynced, ids: batchIDs, first: f, tiles: tiles) }
                    t.rawLMDB += try measure {
                        try rawEnv.write { txn in
                            try batch.withUnsafeBytes { b in
                                for k in 0..<rows {
                                    try txn.put(rawRows, rawRowKey(f + k), UnsafeRawBufferPointer(rebasing: b[(k * width * 4)..<((k + 1) * width * 4)]), append: true)
                                }
                            }
                        }
                    }
                    first += rows
                }
                t.storedBytes = try synced.store.usedBytes()

                // Reads of the synced store, warm page cache (it was just written).
                // What `FeatureMatrix(rowCount:columnCount:)` costs before any decoding: a zero-filled array
                // (measured first, in the same memory state as the read that follows).
                r.zeroFill = measure {
                    let zeros = [Float](repeating: 0, count: n * width)
                    precondition(zeros[n * width / 2] == 0)
                }
                r.whole = try measure { _ = try synced.store.read(featureSet: synced.featureSet, examples: ids) }
                // `h2t-store export` of every row and column to a file in --tmp, and the disk's
                // sequential write speed for the same bytes; both end with fsync, so both are
                // bounded by the disk, not the page cache. The order alternates between
                // repetitions: whichever writes first may pay for page-cache pages the system
                // must provide afresh (on a VM, memory the host reclaimed), the second reuses them.
                let exportPath = dir + "/export.npy", sequentialPath = dir + "/sequential.bin"
                let export = {
                    r.export = try measure {
                        _ = try synced.store.exportNPY(featureSet: synced.featureSet, dataset: "bench", split: "train", to: exportPath)
                        syncFile(exportPath)
                    }
                    try? FileManager.default.removeItem(atPath: exportPath)
                }
                let sequential = {
                    r.sequentialWrite = measure { sequentialWrite(bytes: n * width * 4, path: sequentialPath) }
                    try? FileManager.default.removeItem(atPath: sequentialPath)
                }
                if rep % 2 == 0 { try export(); sequential() } else { sequential(); try export() }
                r.selected = try measure { _ = try synced.store.read(featureSet: synced.featureSet, examples: ids, columns: selected) }
                var shuffled = ids
                var rng = SplitMix(o.seed &+ 2)
                for k in stride(from: shuffled.count - 1, to: 0, by: -1) { shuffled.swapAt(k, Int(rng.next() % UInt64(k + 1))) }
                r.selectedShuffled = try measure { _ = try synced.store.read(featureSet: synced.featureSet, examples: shuffled, columns: selected) }
                let whole = UnsafeMutablePointer<Float>.allocate(capacity: n * width)
                defer { whole.deallocate() }
                // Baseline: the same float32 rows copied out of LMDB with no codec.
                r.rawLMDB = try measure {
                    try rawEnv.read { txn in
                        for k in 0..<n {
                            guard let v = try txn.get(rawRows, rawRowKey(k)) else { fatalError("raw row \(k) missing") }
                            UnsafeMutableRawPointer(whole + k * width).copyMemory(from: v.baseAddress!, byteCount: v.count)
                        }
                    }
                }
                // And a plain memcpy of the same volume (the destination is touched already).
                let source = UnsafeMutablePointer<Float>.allocate(capacity: n * width)
                source.initialize(repeating: 1, count: n * width)
                r.memcpy = measure { whole.update(from: source, count: n * width) }

                source.deallocate()
                _ = unsynced
            }
            ingest.append(t)
            reads.append(r)
            print("  rep \(rep + 1)/\(o.reps): encode \(fmt(t.encode.wall, 2)) s, commit \(fmt(t.commitSync.wall, 2)) s, whole read \(fmt(r.whole.wall, 2)) s, "
                  + "1% read \(fmt(r.selected.wall, 3)) s (load \(loadAverage()))")
            fflush(nil)
        }

        func m(_ k: KeyPath<IngestTimes, Sample>) -> Sample {
            Sample(wall: median(ingest.map { $0[keyPath: k].wall }), cpu: median(ingest.map { $0[keyPath: k].cpu }))
        }
        let mbs = { (seconds: Double) in inputBytes / seconds / 1e6 }
        let endToEndSync = Sample(wall: median(ingest.map { $0.encode.wall + $0.commitSync.wall }),
                                  cpu: median(ingest.map { $0.encode.cpu + $0.commitSync.cpu }))
        let endToEndNoSync = Sample(wall: median(ingest.map { $0.encode.wall + $0.commitNoSync.wall }),
                                    cpu: median(ingest.map { $0.encode.cpu + $0.commitNoSync.cpu }))
        let stored = Double(ingest.last!.storedBytes)
        var table = Table("ingest of float32 activations (\(n) × \(width), \(fmt(inputBytes / 1e9, 2)) GB): median of \(o.reps), MB/s of float32 input",
                          ["stage", "threads", "wall s", "CPU s", "MB/s wall", "MB/s est.", "share", "vs memcpy"])
        let memcpy = m(\.memcpy)
        // est. = input / (CPU seconds / threads the stage runs on): what an idle 2-core machine
        // approaches for CPU-bound work (fsync waits are not CPU time and drop out).
        func row(_ name: String, _ s: Sample, threads: Double, share: Double?) {
            table.add([name, threads == 0 ? "" : fmt(threads, 0), fmt(s.wall, 2), fmt(s.cpu, 2), fmt(mbs(s.wall), 0),
                       threads == 0 ? "" : fmt(mbs(s.cpu / threads), 0), share.map { fmt(100 * $0, 0) + "%" } ?? "",
                       fmt(s.wall / memcpy.wall, 1) + "×"])
        }
        let conversion = m(\.encodeRaw)
        let encode = m(\.encode)
        let compression = Sample(wall: max(0, encode.wall - conversion.wall), cpu: max(0, encode.cpu - conversion.cpu))
        let commitSync = m(\.commitSync)
        row("baseline: memcpy of the batches", memcpy, threads: 1, share: nil)
        row("baseline: raw float32 rows → LMDB (fsync)", m(\.rawLMDB), threads: 1, share: nil)
        row("conversion + plane split + CRC (encode, zstd off)", conversion, threads: cores, share: conversion.wall / endToEndSync.wall)
        row("compression (encode zstd on − off)", compression, threads: cores, share: compression.wall / endToEndSync.wall)
        row("LMDB commit (fsync)", commitSync, threads: 1, share: commitSync.wall / endToEndSync.wall)
        row("END TO END encode + commit (fsync)", endToEndSync, threads: 0, share: 1)
        row("LMDB commit (noSync)", m(\.commitNoSync), threads: 1, share: nil)
        row("end to end encode + commit (noSync)", endToEndNoSync, threads: 0, share: nil)
        row("(not timed above) data generation", m(\.generate), threads: cores, share: nil)
        table.print()
        let estimate = inputBytes / (encode.cpu / 2 + commitSync.cpu) / 1e6
        print("est. = input ÷ (CPU s ÷ threads of the stage): the CPU-bound rate on 2 idle cores; end to end est. "
              + "(encode on 2 cores, then commit on 1) = \(fmt(estimate, 0)) MB/s")
        print("stored: \(fmt(stored / 1e6, 0)) MB in LMDB (tiles \(fmt(Double(ingest.last!.tileBytes) / 1e6, 0)) MB) → "
              + "\(fmt(inputBytes / stored, 2))× smaller than float32 (target ≥ 2.5×); ingest \(fmt(mbs(endToEndSync.wall), 0)) MB/s "
              + "fsync'd, \(fmt(mbs(endToEndNoSync.wall), 0)) MB/s noSync by wall clock (target ≥ 300)")

        func rm(_ k: KeyPath<ReadTimes, Sample>) -> Sample {
            Sample(wall: median(reads.map { $0[keyPath: k].wall }), cpu: median(reads.map { $0[keyPath: k].cpu }))
        }
        let outBytes = inputBytes
        var readTable = Table("reads of \(n) examples, decoded to float32 (warm page cache): median of \(o.reps)",
                              ["read", "threads", "wall s", "CPU s", "GB/s wall", "GB/s est.", "vs whole rows (wall)", "(CPU)"])
        let whole = rm(\.whole)
        func readRow(_ name: String, _ s: Sample, threads: Double, bytes: Double) {
            readTable.add([name, fmt(threads, 0), fmt(s.wall, 3), fmt(s.cpu, 3), fmt(bytes / s.wall / 1e9, 2),
                           fmt(bytes / (s.cpu / threads) / 1e9, 2), fmt(whole.wall / s.wall, 1) + "×", fmt(whole.cpu / s.cpu, 1) + "×"])
        }
        readRow("baseline: memcpy of \(fmt(outBytes / 1e9, 1)) GB", rm(\.memcpy), threads: 1, bytes: outBytes)
        readRow("baseline: raw float32 rows from LMDB (copy out)", rm(\.rawLMDB), threads: 1, bytes: outBytes)
        readRow("part of every read: allocate the zero-filled output", rm(\.zeroFill), threads: 1, bytes: outBytes)
        readRow("whole rows (\(width) columns)", whole, threads: cores, bytes: outBytes)
        let selBytes = Double(n * selected.count * 4)
        let sel = rm(\.selected)
        readRow("\(selected.count) scattered columns (\(fmt(100 * o.selectedFraction, 0))%), split order", sel, threads: cores, bytes: selBytes)
        readRow("\(selected.count) scattered columns, shuffled example order", rm(\.selectedShuffled), threads: cores, bytes: selBytes)
        let export = rm(\.export), sequential = rm(\.sequentialWrite)
        readRow("baseline: sequential write(2) of \(fmt(outBytes / 1e9, 1)) GB to --tmp + fsync", sequential, threads: 1, bytes: outBytes)
        readRow("export of whole rows to a .npy in --tmp + fsync", export, threads: cores, bytes: outBytes)
        readTable.print()
        print("export: \(fmt(outBytes / export.wall / 1e9, 2)) GB/s, \(fmt(100 * sequential.wall / export.wall, 0))% of the disk's sequential "
              + "write speed measured in the same run (\(fmt(outBytes / sequential.wall / 1e9, 2)) GB/s; target ≥ 60%)")
        print("whole rows: \(fmt(outBytes / whole.wall / 1e9, 2)) GB/s wall, \(fmt(outBytes / (whole.cpu / cores) / 1e9, 2)) GB/s est. (target ≥ 1); "
              + "\(selected.count) columns: \(fmt(whole.wall / sel.wall, 1))× (wall) / \(fmt(whole.cpu / sel.cpu, 1))× (CPU) faster "
              + "than whole rows of the same examples (target ≥ 20×)")
    }

    // MARK: - layout sweep

    static func layoutSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let n = o.layoutExamples, width = o.width, seg = o.segmentRows
        let inputBytes = Double(n * width * 4)
        let selected = scatteredColumns(count: max(1, Int(Double(width) * o.selectedFraction)), width: width, seed: o.seed &+ 1)
        print("\nlayout sweep: \(n) examples × \(width), \(o.codec.dtype.rawValue) zstd \(o.codec.level), noSync stores; "
              + "reads median of \(o.reps)")
        var table = Table("frame width × column block (ingest = encode + commit noSync; reads decode to float32; est. = from CPU time, 2 cores)",
                          ["fw", "colBlock", "tile KB", "ratio", "ingest MB/s", "est.", "whole GB/s", "est.", "1% ms", "whole/1% wall", "CPU"])
        var batch = [Float](repeating: 0, count: seg * width)
        for fw in [1, 4, 16] {
            for block in [256, 1024, 4096] {
                var codec = o.codec
                codec.frameWidth = fw
                let dir = "\(o.tmp)/h2t-sbench-\(getpid())-layout"
                try? FileManager.default.removeItem(atPath: dir)
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let s = try openBenchStore(path: dir, noSync: true, width: width, tapWidth: gen.tapWidth, codec: codec, columnBlock: block)
                let encoder = SegmentEncoder(manifest: s.manifest)
                var encodeTime = Sample(), commitTime = Sample(), tileBytes = 0, tileCount = 0
                var ids: [ExampleID] = []
                var first = 0
                while first < n {
                    let rows = min(seg, n - first)
                    let batchIDs = exampleIDs(first..<(first + rows), tag: "layout")
                    ids += batchIDs
                    batch.withUnsafeMutableBufferPointer { gen.fill(rows: first..<(first + rows), into: $0.baseAddress!) }
                    let f = first
                    var tiles: [[UInt8]] = []
                    encodeTime += measure { tiles = batch.withUnsafeBufferPointer { encoder.encode($0.baseAddress!, rows: rows) } }
                    tileBytes += tiles.reduce(0) { $0 + $1.count }
                    tileCount += tiles.count
                    commitTime += try measure { try commit(s, ids: batchIDs, first: f, tiles: tiles) }
                    first += rows
                }
                var whole: [Sample] = [], sel: [Sample] = []
                for _ in 0..<o.reps {
                    whole.append(try measure { _ = try s.store.read(featureSet: s.featureSet, examples: ids) })
                    sel.append(try measure { _ = try s.store.read(featureSet: s.featureSet, examples: ids, columns: selected) })
                }
                let wholeWall = median(whole.map(\.wall)), wholeCPU = median(whole.map(\.cpu))
                let selWall = median(sel.map(\.wall)), selCPU = median(sel.map(\.cpu))
                table.add(["\(fw)", "\(block)", fmt(Double(tileBytes) / Double(tileCount) / 1024, 0),
                           fmt(inputBytes / Double(tileBytes), 2), fmt(inputBytes / (encodeTime.wall + commitTime.wall) / 1e6, 0),
                           fmt(inputBytes / (encodeTime.cpu / 2 + commitTime.cpu) / 1e6, 0),
                           fmt(inputBytes / wholeWall / 1e9, 2), fmt(inputBytes / (wholeCPU / 2) / 1e9, 2), fmt(1000 * selWall, 1),
                           fmt(wholeWall / selWall, 1) + "×", fmt(wholeCPU / selCPU, 1) + "×"])
            }
        }
        table.print()
    }

    // MARK: - peak memory

    static func rssSection(_ o: Options) throws {
        let batchMB = Double(o.segmentRows * o.width * 4) / 1e6
        var table = Table("peak RSS of ingest (one child process per size; VmHWM; fsync'd store; batch of \(o.segmentRows) rows = \(fmt(batchMB, 0)) MB float32)",
                          ["examples", "input GB", "stored GB", "seconds", "MB/s", "RSS before MB", "peak RSS MB",
                           "anon MB at end", "file-mapped MB at end"])
        for size in o.rssSizes {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
            process.arguments = ["store", "rss-child", "--examples", "\(size)", "--width", "\(o.width)", "--tmp", o.tmp,
                                 "--dtype", o.codec.dtype.rawValue, "--level", "\(o.codec.level)",
                                 "--frame-width", "\(o.codec.frameWidth)", "--column-block", "\(o.columnBlock)"]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let text = String(decoding: data, as: UTF8.self)
            guard process.terminationStatus == 0,
                  let line = text.split(separator: "\n").last(where: { $0.hasPrefix("RSS ") }) else {
                print("rss child for \(size) failed (status \(process.terminationStatus)): \(text)")
                continue
            }
            let f = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            // f: beforeKiB peakKiB seconds inputBytes storedBytes anonKiB fileKiB
            table.add(["\(size)", fmt(f[3] / 1e9, 2), fmt(f[4] / 1e9, 2), fmt(f[2], 1), fmt(f[3] / f[2] / 1e6, 0),
                       fmt(f[0] / 1024, 0), fmt(f[1] / 1024, 0), fmt(f[5] / 1024, 0), fmt(f[6] / 1024, 0)])
            print("  \(size) examples done (load \(loadAverage()))")
            fflush(nil)
        }
        table.print()
    }

    /// The child side of `rss`: ingests `examples` rows batch by batch (generate, encode,
    /// commit), then prints `RSS <before KiB> <peak KiB> <seconds> <input bytes> <stored bytes>
    /// <anonymous KiB> <file-mapped KiB>` (the last two at the end: heap vs LMDB pages mapped).
    static func rssChild(_ o: Options) throws {
        let gen = ActivationGenerator(width: o.width, seed: o.seed)
        let dir = "\(o.tmp)/h2t-sbench-\(getpid())-rss"
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = try openBenchStore(path: dir, noSync: false, width: o.width, tapWidth: gen.tapWidth, codec: o.codec, columnBlock: o.columnBlock)
        let encoder = SegmentEncoder(manifest: s.manifest)
        var batch = [Float](repeating: 0, count: o.segmentRows * o.width)
        let before = procStatusKiB("VmHWM")
        let t0 = now()
        var first = 0
        while first < o.examples {
            let rows = min(o.segmentRows, o.examples - first)
            let ids = exampleIDs(first..<(first + rows), tag: "rss")
            batch.withUnsafeMutableBufferPointer { gen.fill(rows: first..<(first + rows), into: $0.baseAddress!) }
            let tiles = batch.withUnsafeBufferPointer { encoder.encode($0.baseAddress!, rows: rows) }
            try commit(s, ids: ids, first: first, tiles: tiles)
            first += rows
        }
        let seconds = now() - t0
        let stored = try s.store.usedBytes()
        print("RSS \(before) \(procStatusKiB("VmHWM")) \(seconds) \(o.examples * o.width * 4) \(stored) "
              + "\(procStatusKiB("RssAnon")) \(procStatusKiB("RssFile"))")
    }

    /// `ExternalIngest` end to end (read, pool, encode, commit with fsync) from one safetensors
    /// file of `--pipeline-examples` rows × `--width` columns in 2-D taps (pooling passes them
    /// through), each chunk's commit overlapped with the next chunk's work vs sequential, in
    /// alternating order; a fresh store per run.
    static func pipelineSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let n = o.pipelineExamples
        let dir = "\(o.tmp)/h2t-sbench-\(getpid())-pipeline"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var values = [Float](repeating: 0, count: n * o.width)
        values.withUnsafeMutableBufferPointer { gen.fill(rows: 0..<n, into: $0.baseAddress!) }
        // Column-major per tap: the file holds one [n, tapWidth] tensor per tap.
        var writer = SafetensorsWriter(metadata: ["example_ids": "[" + (0..<n).map { "\"e\($0)\"" }.joined(separator: ",") + "]"])
        var tap = [Float](repeating: 0, count: n * gen.tapWidth)
        for (t, start) in stride(from: 0, to: o.width, by: gen.tapWidth).enumerated() {
            let w = min(gen.tapWidth, o.width - start)
            for r in 0..<n { for j in 0..<w { tap[r * w + j] = values[r * o.width + start + j] } }
            tap.withUnsafeBytes { writer.append("tap\(t)", dtype: "F32", shape: [n, w], bytes: UnsafeRawBufferPointer(rebasing: $0[0..<(n * w * 4)])) }
        }
        values = []
        let file = dir + "/acts.safetensors"
        try writer.write(to: file)
        let inputBytes = Double(n * o.width * 4)
        var seconds: [Bool: [Double]] = [true: [], false: []]
        for rep in 0..<o.reps {
            for overlap in rep % 2 == 0 ? [false, true] : [true, false] {
                let path = dir + "/store-\(rep)-\(overlap)"
                let store = try FeatureStore(path: path)
                var options = ExternalIngestOptions(backboneName: "bench", dataset: "bench", split: "train", targetSizes: [1 << 30])
                options.codec = o.codec
                options.columnBlock = o.columnBlock
                options.segmentRows = o.segmentRows
                options.overlapCommits = overlap
                let t0 = now()
                let summary = try ExternalIngest(store: store, options: options).run(paths: [file])
                seconds[overlap]!.append(now() - t0)
                precondition(summary.examplesComputed == n)
                try? FileManager.default.removeItem(atPath: path)
                print("  rep \(rep + 1), \(overlap ? "overlapped" : "sequential"): \(fmt(seconds[overlap]!.last!, 2)) s (load \(loadAverage()))")
                fflush(nil)
            }
        }
        let sequential = median(seconds[false]!), overlapped = median(seconds[true]!)
        var table = Table("ExternalIngest end to end, \(n) × \(o.width) float32 (\(fmt(inputBytes / 1e9, 2)) GB) from safetensors, chunks of \(o.segmentRows), fsync'd; medians of \(o.reps)",
                          ["commits", "seconds", "MB/s", "vs sequential"])
        table.add(["sequential (baseline)", fmt(sequential, 2), fmt(inputBytes / sequential / 1e6, 0), "1.00x"])
        table.add(["overlapped with the next chunk (default)", fmt(overlapped, 2), fmt(inputBytes / overlapped / 1e6, 0), fmt(sequential / overlapped, 2) + "x"])
        table.print()
    }

    /// Flushes a written file to the disk.
    static func syncFile(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    /// Writes `bytes` bytes to `path` in 8 MiB blocks with write(2), then fsync: the disk's
    /// sequential write speed, the export's baseline.
    static func sequentialWrite(bytes: Int, path: String) {
        let block = 8 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: block, alignment: 4096)
        defer { buffer.deallocate() }
        for i in 0..<(block / 8) { buffer.storeBytes(of: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, toByteOffset: i * 8, as: UInt64.self) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot create \(path)")
        var left = bytes
        while left > 0 {
            let written = write(fd, buffer, min(block, left))
            precondition(written > 0, "write to \(path) failed")
            left -= written
        }
        fsync(fd)
        close(fd)
    }
}
