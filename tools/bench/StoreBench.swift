import CZlib
import CZstd
import Dispatch
import Foundation
import H2TStore

/// The `store` section of h2t-bench: the storage engine's performance targets (issue 2), each
/// against a baseline measured in the same run, medians of `--reps` repetitions.
///
/// Sub-sections: `codec` (ratio and speed per codec), `ingest` (ingest split into conversion,
/// compression and LMDB, then whole-row and selected-column reads of the same store), `layout`
/// (frame width × column block sweep on a smaller store), `rss` (peak memory of ingest in a
/// child process per size). Stores live under `--tmp` (default /tmp) and are deleted.
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
    }

    static let usage = """
        usage: h2t-bench store [all|codec|ingest|layout|rss]... [--examples N] [--width D] [--reps R]
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
            case "all", "codec", "ingest", "layout", "rss", "rss-child": o.sections.append(arguments[i])
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
        if o.sections.isEmpty || o.sections.contains("all") { o.sections = ["codec", "ingest", "layout", "rss"] }
        if o.sections == ["rss-child"] { try rssChild(o); return }

        print("h2t-bench store: \(o.examples) examples × \(o.width) features, segments of \(o.segmentRows) rows, "
              + "codec \(describe(o.codec)), columnBlock \(o.columnBlock), \(o.reps) repetitions (medians)")
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, load average at start \(loadAverage()) "
              + "(shared machine: compare ratios, not absolute times)")
        let generator = ActivationGenerator(width: o.width, seed: o.seed)
        print(realActivationsNote())
        for section in o.sections {
            switch section {
            case "codec": try codecSection(o, generator)
            case "ingest": try ingestSection(o, generator)
            case "layout": try layoutSection(o, generator)
            case "rss": try rssSection(o)
            default: break
            }
        }
        print("\nload average at end \(loadAverage())")
    }

    static func describe(_ c: TileCodec) -> String {
        "\(c.dtype.rawValue)/\(c.compressed ? "zstd\(c.level)" : "raw")/fw\(c.frameWidth)"
    }

    /// Whether real MobileNetV2 activations could be measured in this build.
    static func realActivationsNote() -> String {
        "real activations: not measured: the storage benchmark has no backbone forward pass wired in yet "
            + "(H2TBackbone networks are still being written in this session); all figures use the synthetic generator"
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

    static func codecSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let (sample, cols) = codecSample(o, gen)
        let rows = o.segmentRows
        let blockWidth = 1024
        let blocks = cols / blockWidth
        let rawBytes = Double(sample.count * 4)
        let zeros = sample.lazy.filter { $0 == 0 }.count
        let saturated = sample.lazy.filter { $0 == 6 }.count
        print("\ncodec sample: \(rows) rows × \(cols) columns (\(blocks) tiles of \(blockWidth) columns spread over the width), "
              + "\(fmt(rawBytes / 1e6)) MB float32; exact zeros \(fmt(100 * Double(zeros) / Double(sample.count), 2))%, "
              + "saturated at 6: \(fmt(100 * Double(saturated) / Double(sample.count), 2))%; one thread")
        var decoded = [Float](repeating: 0, count: sample.count)

        // memcpy baseline for the MB/s columns.
        var copy = [Float](repeating: 0, count: sample.count)
        let memcpyTimes = (0..<max(3, o.reps)).map { _ in
            time { copy.withUnsafeMutableBytes { d in sample.withUnsafeBytes { s in d.copyMemory(from: s) } } }
        }
        let memcpyMBs = rawBytes / median(memcpyTimes) / 1e6

        var table = Table("codec: ratio vs raw float32, encode/decode MB/s of float32 (median of \(o.reps)); memcpy = \(fmt(memcpyMBs, 0)) MB/s",
                          ["dtype", "layout", "zstd", "fw", "ratio", "enc MB/s", "dec MB/s", "enc/memcpy", "max rel err"])
        struct Config { var dtype: StorageDType; var planes: Bool; var level: Int; var fw: Int; var compressed = true }
        var configs: [Config] = []
        for dtype in [StorageDType.float32, .float16, .bfloat16] {
            configs.append(Config(dtype: dtype, planes: true, level: 0, fw: 4, compressed: false))
            for planes in [true, false] {
                for level in [1, 2, 3] {
                    for fw in [1, 4, 16] { configs.append(Config(dtype: dtype, planes: planes, level: level, fw: fw)) }
                }
            }
        }
        var best: [(String, Double, Double, Double)] = []
        for config in configs {
            var encodeTimes: [Double] = [], decodeTimes: [Double] = []
            var stored = 0
            if config.planes {
                let codec = TileCodec(dtype: config.dtype, compressed: config.compressed, level: max(1, config.level), frameWidth: config.fw)
                let encoder = TileEncoder(codec: codec)
                let decoder = TileDecoder()
                var tiles: [[UInt8]] = []
                for _ in 0..<o.reps {
                    tiles.removeAll(keepingCapacity: true)
                    encodeTimes.append(time {
                        sample.withUnsafeBufferPointer { s in
                            for b in 0..<blocks {
                                tiles.append(encoder.encode(s.baseAddress! + b * blockWidth, rowStride: cols, rows: rows, cols: blockWidth))
                            }
                        }
                    })
                }
                stored = tiles.reduce(0) { $0 + $1.count }
                for _ in 0..<o.reps {
                    decodeTimes.append(try time {
                        try decoded.withUnsafeMutableBufferPointer { d in
                            for b in 0..<blocks {
                                try tiles[b].withUnsafeBytes { try decoder.decodeAll($0, into: d.baseAddress! + b * blockWidth, destStride: cols) }
                            }
                        }
                    })
                }
            } else {
                let codec = InterleavedCodec(dtype: config.dtype, level: config.level, frameWidth: config.fw)
                var tiles: [InterleavedCodec.Tile] = []
                for _ in 0..<o.reps {
                    tiles.removeAll(keepingCapacity: true)
                    encodeTimes.append(time {
                        sample.withUnsafeBufferPointer { s in
                            for b in 0..<blocks {
                                tiles.append(codec.encode(s.baseAddress! + b * blockWidth, rowStride: cols, rows: rows, cols: blockWidth))
                            }
                        }
                    })
                }
                stored = tiles.reduce(0) { $0 + $1.bytes.count + 8 * $1.frames.count }
                for _ in 0..<o.reps {
                    decodeTimes.append(try time {
                        try decoded.withUnsafeMutableBufferPointer { d in
                            for b in 0..<blocks { try codec.decode(tiles[b], into: d.baseAddress! + b * blockWidth, destStride: cols) }
                        }
                    })
                }
            }
            var maxRel: Float = 0
            for k in 0..<sample.count where sample[k] != 0 {
                maxRel = max(maxRel, abs(decoded[k] - sample[k]) / abs(sample[k]))
            }
            let ratio = rawBytes / Double(stored)
            let enc = rawBytes / median(encodeTimes) / 1e6
            let dec = rawBytes / median(decodeTimes) / 1e6
            let layout = config.planes ? "planes" : "interleaved"
            let zstd = config.compressed ? "\(config.level)" : "off"
            table.add([config.dtype.rawValue, layout, zstd, "\(config.fw)", fmt(ratio, 2), fmt(enc, 0), fmt(dec, 0),
                       fmt(enc / memcpyMBs, 3), maxRel == 0 ? "0" : String(format: "%.1e", Double(maxRel))])
            if config.compressed { best.append(("\(config.dtype.rawValue)/\(layout)/zstd\(config.level)/fw\(config.fw)", ratio, enc, dec)) }
        }
        table.print()
        let top = best.sorted { $0.1 > $1.1 }.prefix(5)
        print("highest ratios: " + top.map { "\($0.0) \(fmt($0.1, 2))× (enc \(fmt($0.2, 0)), dec \(fmt($0.3, 0)) MB/s)" }.joined(separator: "; "))
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
        [UInt8(truncatingIfNeeded: row >> 24), UInt8(truncatingIfNeeded: row >> 16), UInt8(truncatingIfNeeded: row >> 8), UInt8(truncatingIfNeeded: row)]
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
        var generate = 0.0, memcpy = 0.0, encodeRaw = 0.0, encode = 0.0, commitSync = 0.0, commitNoSync = 0.0, rawLMDB = 0.0
        var storedBytes = 0, tileBytes = 0
    }

    struct ReadTimes {
        var whole = 0.0, selected = 0.0, selectedShuffled = 0.0, rawLMDB = 0.0, memcpy = 0.0
    }

    static func ingestSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let n = o.examples, width = o.width, seg = o.segmentRows
        let inputBytes = Double(n * width * 4)
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
                    t.generate += time { batch.withUnsafeMutableBufferPointer { gen.fill(rows: first..<(first + rows), into: $0.baseAddress!) } }
                    t.memcpy += time { copy.withUnsafeMutableBytes { d in batch.withUnsafeBytes { s in d.copyMemory(from: s) } } }
                    var tiles: [[UInt8]] = []
                    batch.withUnsafeBufferPointer { b in
                        t.encodeRaw += time { _ = rawEncoder.encode(b.baseAddress!, rows: rows) }
                        t.encode += time { tiles = encoder.encode(b.baseAddress!, rows: rows) }
                    }
                    t.tileBytes += tiles.reduce(0) { $0 + $1.count }
                    let f = first
                    t.commitSync += try time { try commit(synced, ids: batchIDs, first: f, tiles: tiles) }
                    t.commitNoSync += try time { try commit(unsynced, ids: batchIDs, first: f, tiles: tiles) }
                    t.rawLMDB += try time {
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
                t.storedBytes = try synced.store.environment.usedBytes()

                // Reads of the synced store, warm page cache (it was just written).
                let whole = UnsafeMutablePointer<Float>.allocate(capacity: n * width)
                defer { whole.deallocate() }
                r.whole = try time { _ = try synced.store.read(featureSet: synced.featureSet, examples: ids) }
                r.selected = try time { _ = try synced.store.read(featureSet: synced.featureSet, examples: ids, columns: selected) }
                var shuffled = ids
                var rng = SplitMix(o.seed &+ 2)
                for k in stride(from: shuffled.count - 1, to: 0, by: -1) { shuffled.swapAt(k, Int(rng.next() % UInt64(k + 1))) }
                r.selectedShuffled = try time { _ = try synced.store.read(featureSet: synced.featureSet, examples: shuffled, columns: selected) }
                // Baseline: the same float32 rows copied out of LMDB with no codec.
                r.rawLMDB = try time {
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
                r.memcpy = time { whole.update(from: source, count: n * width) }
                source.deallocate()
                _ = unsynced
            }
            ingest.append(t)
            reads.append(r)
            print("  rep \(rep + 1)/\(o.reps): encode \(fmt(t.encode, 2)) s, commit \(fmt(t.commitSync, 2)) s, whole read \(fmt(r.whole, 2)) s, "
                  + "1% read \(fmt(r.selected, 3)) s (load \(loadAverage()))")
            fflush(nil)
        }

        func m(_ k: KeyPath<IngestTimes, Double>) -> Double { median(ingest.map { $0[keyPath: k] }) }
        let mbs = { (seconds: Double) in inputBytes / seconds / 1e6 }
        let endToEndSync = median(ingest.map { $0.encode + $0.commitSync })
        let endToEndNoSync = median(ingest.map { $0.encode + $0.commitNoSync })
        let stored = Double(ingest.last!.storedBytes)
        var table = Table("ingest of float32 activations (\(n) × \(width), \(fmt(inputBytes / 1e9, 2)) GB): median seconds of \(o.reps), MB/s of float32 input",
                          ["stage", "seconds", "MB/s", "share", "vs memcpy"])
        let memcpy = m(\.memcpy)
        func row(_ name: String, _ s: Double, share: Double?) {
            table.add([name, fmt(s, 2), fmt(mbs(s), 0), share.map { fmt(100 * $0, 0) + "%" } ?? "", fmt(s / memcpy, 1) + "×"])
        }
        let conversion = m(\.encodeRaw)
        let compression = max(0, m(\.encode) - conversion)
        row("baseline: memcpy of the batches", memcpy, share: nil)
        row("baseline: raw float32 rows → LMDB (fsync)", m(\.rawLMDB), share: nil)
        row("conversion + plane split + CRC (encode, zstd off)", conversion, share: conversion / endToEndSync)
        row("compression (encode zstd on − off)", compression, share: compression / endToEndSync)
        row("LMDB commit (fsync)", m(\.commitSync), share: m(\.commitSync) / endToEndSync)
        row("END TO END encode + commit (fsync)", endToEndSync, share: 1)
        row("LMDB commit (noSync)", m(\.commitNoSync), share: nil)
        row("end to end encode + commit (noSync)", endToEndNoSync, share: nil)
        row("(not timed above) data generation", m(\.generate), share: nil)
        table.print()
        print("stored: \(fmt(stored / 1e6, 0)) MB in LMDB (tiles \(fmt(Double(ingest.last!.tileBytes) / 1e6, 0)) MB) → "
              + "\(fmt(inputBytes / stored, 2))× smaller than float32 (target ≥ 2.5×); ingest \(fmt(mbs(endToEndSync), 0)) MB/s "
              + "fsync'd, \(fmt(mbs(endToEndNoSync), 0)) MB/s noSync (target ≥ 300)")

        func rm(_ k: KeyPath<ReadTimes, Double>) -> Double { median(reads.map { $0[keyPath: k] }) }
        let outBytes = inputBytes
        var readTable = Table("reads of \(n) examples, decoded to float32 (warm page cache): median of \(o.reps)",
                              ["read", "seconds", "GB/s float32 out", "vs whole rows"])
        let whole = rm(\.whole)
        func readRow(_ name: String, _ s: Double, bytes: Double) {
            readTable.add([name, fmt(s, 3), fmt(bytes / s / 1e9, 2), fmt(whole / s, 1) + "×"])
        }
        readRow("baseline: memcpy of \(fmt(outBytes / 1e9, 1)) GB", rm(\.memcpy), bytes: outBytes)
        readRow("baseline: raw float32 rows from LMDB (copy out)", rm(\.rawLMDB), bytes: outBytes)
        readRow("whole rows (\(width) columns)", whole, bytes: outBytes)
        let selBytes = Double(n * selected.count * 4)
        readRow("\(selected.count) scattered columns (\(fmt(100 * o.selectedFraction, 0))%), split order", rm(\.selected), bytes: selBytes)
        readRow("\(selected.count) scattered columns, shuffled example order", rm(\.selectedShuffled), bytes: selBytes)
        readTable.print()
        print("whole rows: \(fmt(outBytes / whole / 1e9, 2)) GB/s (target ≥ 1); \(selected.count) columns: \(fmt(whole / rm(\.selected), 1))× faster "
              + "than whole rows of the same examples (target ≥ 20×)")
    }

    // MARK: - layout sweep

    static func layoutSection(_ o: Options, _ gen: ActivationGenerator) throws {
        let n = o.layoutExamples, width = o.width, seg = o.segmentRows
        let inputBytes = Double(n * width * 4)
        let selected = scatteredColumns(count: max(1, Int(Double(width) * o.selectedFraction)), width: width, seed: o.seed &+ 1)
        print("\nlayout sweep: \(n) examples × \(width), \(o.codec.dtype.rawValue) zstd \(o.codec.level), noSync stores; "
              + "reads median of \(o.reps)")
        var table = Table("frame width × column block (ingest = encode + commit noSync; reads decode to float32)",
                          ["fw", "colBlock", "tile KB", "ratio", "ingest MB/s", "whole GB/s", "1% ms", "whole/1%"])
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
                var ingestTime = 0.0, tileBytes = 0, tileCount = 0
                var ids: [ExampleID] = []
                var first = 0
                while first < n {
                    let rows = min(seg, n - first)
                    let batchIDs = exampleIDs(first..<(first + rows), tag: "layout")
                    ids += batchIDs
                    batch.withUnsafeMutableBufferPointer { gen.fill(rows: first..<(first + rows), into: $0.baseAddress!) }
                    let f = first
                    ingestTime += try time {
                        let tiles = batch.withUnsafeBufferPointer { encoder.encode($0.baseAddress!, rows: rows) }
                        tileBytes += tiles.reduce(0) { $0 + $1.count }
                        tileCount += tiles.count
                        try commit(s, ids: batchIDs, first: f, tiles: tiles)
                    }
                    first += rows
                }
                var whole: [Double] = [], sel: [Double] = []
                for _ in 0..<o.reps {
                    whole.append(try time { _ = try s.store.read(featureSet: s.featureSet, examples: ids) })
                    sel.append(try time { _ = try s.store.read(featureSet: s.featureSet, examples: ids, columns: selected) })
                }
                table.add(["\(fw)", "\(block)", fmt(Double(tileBytes) / Double(tileCount) / 1024, 0),
                           fmt(inputBytes / Double(tileBytes), 2), fmt(inputBytes / ingestTime / 1e6, 0),
                           fmt(inputBytes / median(whole) / 1e9, 2), fmt(1000 * median(sel), 1), fmt(median(whole) / median(sel), 1) + "×"])
            }
        }
        table.print()
    }

    // MARK: - peak memory

    static func rssSection(_ o: Options) throws {
        let batchMB = Double(o.segmentRows * o.width * 4) / 1e6
        var table = Table("peak RSS of ingest (one child process per size; VmHWM; fsync'd store; batch of \(o.segmentRows) rows = \(fmt(batchMB, 0)) MB float32)",
                          ["examples", "input GB", "stored GB", "seconds", "MB/s", "RSS before MB", "peak RSS MB"])
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
            // f: beforeKiB peakKiB seconds inputBytes storedBytes
            table.add(["\(size)", fmt(f[3] / 1e9, 2), fmt(f[4] / 1e9, 2), fmt(f[2], 1), fmt(f[3] / f[2] / 1e6, 0),
                       fmt(f[0] / 1024, 0), fmt(f[1] / 1024, 0)])
            print("  \(size) examples done (load \(loadAverage()))")
            fflush(nil)
        }
        table.print()
    }

    /// The child side of `rss`: ingests `examples` rows batch by batch (generate, encode,
    /// commit), then prints `RSS <before KiB> <peak KiB> <seconds> <input bytes> <stored bytes>`.
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
        let stored = try s.store.environment.usedBytes()
        print("RSS \(before) \(procStatusKiB("VmHWM")) \(seconds) \(o.examples * o.width * 4) \(stored)")
    }
}
