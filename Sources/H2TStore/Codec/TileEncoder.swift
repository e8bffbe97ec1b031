import CH2TKernels
import CZstd
import H2TCore
import Synchronization

/// Encodes blocks of a row-major float matrix into tiles. Holds a reused zstd context and
/// scratch buffers: one encoder per thread.
public final class TileEncoder {
    /// The codec this encoder writes.
    public let codec: TileCodec
    private let context: OpaquePointer
    private var planes: [UInt8] = []

    private let isa: InstructionSet

    /// Creates an encoder for `codec`; bfloat16 planes are split on `isa`'s kernel (the bytes are
    /// the same at every instruction set).
    public init(codec: TileCodec, isa: InstructionSet = .selected) {
        self.codec = codec
        self.isa = isa
        context = ZSTD_createCCtx()
        // The level is set once and sticks: `ZSTD_compress2` then skips re-deriving the
        // parameters for every plane (planes are a few KB, so that was a fifth of the encode).
        // The frames are byte for byte those of `ZSTD_compressCCtx` at the same level.
        if codec.compressed {
            ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, Int32(codec.level))
            ZSTD_CCtx_setParameter(context, ZSTD_c_minMatch, Self.minimumMatch)
        }
    }

    /// zstd's shortest match. The high byte plane (sign and exponent) is a few distinct values
    /// that its entropy coder packs; matches of 4-6 bytes there cost more to find and to code
    /// than they save. Seven made level 1 about 10% faster on that plane and its frames about 5%
    /// smaller, on MobileNetV2's pooled taps at 64×64 and 224×224 (docs/benchmarks.md, "Cheaper zstd,
    /// global averages, and fewer fresh pages").
    static let minimumMatch: Int32 = 7

    /// Whether zstd may shrink the `count` bytes at `bytes` enough to be tried on a byte plane other
    /// than the most significant one: their collision entropy `-log2(Σ c_v² / count²)` (`c_v` the
    /// count of byte value `v`) is at most 6.5 bits per byte, tested in integers (`2^6.5 ≈ 181/2`)
    /// so that every machine makes the same choice.
    ///
    /// A mantissa's low byte is close to 8 bits of noise: zstd saved about 6% on it while taking
    /// a third of the encode's compression time. The planes it still compresses are those with
    /// zeros (ReLU6's) or a few repeated values, whose histogram is skewed. With this test the
    /// store came out smaller than when every plane was tried (with the match length above), in
    /// three-quarters of the zstd time (docs/benchmarks.md, "Cheaper zstd, global averages, and
    /// fewer fresh pages").
    static func worthCompressing(_ bytes: UnsafeRawPointer, count: Int) -> Bool {
        guard count > 0 else { return false }
        let collisions = h2t_byte_collisions(bytes.assumingMemoryBound(to: UInt8.self), count)
        let n = UInt64(count)
        return collisions.multipliedFullWidth(by: 181) >= (2 * n * n).multipliedFullWidth(by: 1)
    }

    deinit { ZSTD_freeCCtx(context) }

    /// Encodes `rows × cols` values read from `source` (row `r`, column `c` at
    /// `source[r * rowStride + c]`) and returns the tile's bytes.
    public func encode(_ source: UnsafePointer<Float>, rowStride: Int, rows: Int, cols: Int) -> [UInt8] {
        preparePlanes(rows: rows, cols: cols) { splitPlanes(source, rowStride: rowStride, rows: rows, cols: cols, into: $0) }
        return frames(rows: rows, cols: cols)
    }

    /// ``encode(_:rowStride:rows:cols:)`` on `parallelism`'s threads: the same bytes, for one
    /// large tile such as a cached selected matrix (10,000 rows × 29,447 columns took one encoder
    /// 5.3 s of `fit`'s test pass).
    ///
    /// Frames are independent (each is its columns' planes, compressed alone, with its own
    /// checksum), so runs of `framesPerRun` consecutive frames are encoded as tiles of their own
    /// on the workers, one encoder each, and their frames are then stitched behind one header
    /// and frame table: byte for byte the tile of one encoder, whatever the thread count.
    public static func encode(_ source: UnsafePointer<Float>, rowStride: Int, rows: Int, cols: Int, codec: TileCodec,
                              parallelism: Parallelism, framesPerRun: Int = 64) -> [UInt8] {
        precondition(framesPerRun > 0, "runs need at least one frame")
        let frameWidth = codec.frameWidth, width = codec.dtype.byteWidth
        let frameCount = (cols + frameWidth - 1) / frameWidth
        let runs = (frameCount + framesPerRun - 1) / framesPerRun
        guard runs > 1, parallelism.threads > 1 else { return TileEncoder(codec: codec).encode(source, rowStride: rowStride, rows: rows, cols: cols) }
        let runColumns = framesPerRun * frameWidth
        let parts = Mutex([[UInt8]](repeating: [], count: runs))
        try! Parallel.forEachWorker(itemCount: runs, parallelism: parallelism) { _, next in
            // One encoder per worker: its zstd context and plane buffer serve all of its runs.
            let encoder = TileEncoder(codec: codec)
            while let run = next() {
                let first = run * runColumns
                let part = encoder.encode(source + first, rowStride: rowStride, rows: rows, cols: min(runColumns, cols - first))
                parts.withLock { $0[run] = part }
            }
        }
        return stitch(parts.withLock { $0 }, cols: cols, frameCount: frameCount, framesPerRun: framesPerRun, entrySize: 4 * (width + 2))
    }

    /// One tile from `parts`, the tiles of consecutive runs of `framesPerRun` frames of it: the
    /// first part's header with the whole tile's shape, every frame's table entry with its offset
    /// moved, the frames in order, and the header checksum over the whole table.
    private static func stitch(_ parts: [[UInt8]], cols: Int, frameCount: Int, framesPerRun: Int, entrySize: Int) -> [UInt8] {
        // Each part: header, its frames' table entries (offset, plane lengths, checksum), frames.
        let header = TileCodec.fixedHeaderSize
        let dataOffset = header + frameCount * entrySize
        var total = dataOffset
        for (run, part) in parts.enumerated() { total += part.count - header - Self.frames(inRun: run, of: frameCount, framesPerRun: framesPerRun) * entrySize }
        return [UInt8](unsafeUninitializedCapacity: total) { out, initialized in
            let base = UnsafeMutableRawPointer(out.baseAddress!)
            var cursor = dataOffset
            for (run, part) in parts.enumerated() {
                part.withUnsafeBytes { bytes in
                    let frames = Self.frames(inRun: run, of: frameCount, framesPerRun: framesPerRun)
                    let partData = header + frames * entrySize
                    if run == 0 { base.copyMemory(from: bytes.baseAddress!, byteCount: header) }
                    for f in 0..<frames {
                        let from = header + f * entrySize, to = header + (run * framesPerRun + f) * entrySize
                        (base + to).copyMemory(from: bytes.baseAddress! + from, byteCount: entrySize)
                        storeLE32(base, to, UInt32(Int(loadLE32(bytes, from)) + cursor - dataOffset))
                    }
                    (base + cursor).copyMemory(from: bytes.baseAddress! + partData, byteCount: bytes.count - partData)
                    cursor += bytes.count - partData
                }
            }
            // The whole tile's shape and header checksum (the first part's header described its columns only).
            storeLE32(base, 12, UInt32(cols))
            storeLE32(base, 20, UInt32(frameCount))
            var crc = crc32(UnsafeRawBufferPointer(start: base, count: 24))
            crc = crc32(continuing: crc, UnsafeRawBufferPointer(start: base + header, count: dataOffset - header))
            storeLE32(base, 24, crc)
            initialized = cursor
        }
    }

    /// The number of frames in run `run` of a tile of `frameCount` frames cut into runs of `framesPerRun`.
    private static func frames(inRun run: Int, of frameCount: Int, framesPerRun: Int) -> Int {
        min(framesPerRun, frameCount - run * framesPerRun)
    }

    /// Encodes `rows × cols` values already in the codec's 16-bit storage type (their bit
    /// patterns, laid out as `encode(_:rowStride:rows:cols:)` reads floats): the tile is the one
    /// the floats these bits stand for would give, with no conversion on the way.
    public func encode(bits source: UnsafePointer<UInt16>, rowStride: Int, rows: Int, cols: Int) -> [UInt8] {
        precondition(codec.dtype.byteWidth == 2, "16-bit values for a \(codec.dtype) codec")
        preparePlanes(rows: rows, cols: cols) { planes in
            let lo = planes, hi = planes + rows * cols
            if isa != .baseline {
                h2t_split_u16(Int32(isa.rawValue), source, rowStride, rows, cols, lo, hi)
            } else {
                Self.scatter16(rows: rows, cols: cols, into: planes) { r, c in source[r * rowStride + c] }
            }
        }
        return frames(rows: rows, cols: cols)
    }

    /// Sizes the plane buffer for a `rows × cols` tile and lets `split` fill it.
    private func preparePlanes(rows: Int, cols: Int, _ split: (UnsafeMutablePointer<UInt8>) -> Void) {
        let needed = rows * cols * codec.dtype.byteWidth
        if planes.count < needed { planes = [UInt8](repeating: 0, count: needed) }
        planes.withUnsafeMutableBufferPointer { split($0.baseAddress!) }
    }

    /// The tile of the `rows × cols` values in the plane buffer: header, frame table and frames.
    private func frames(rows: Int, cols: Int) -> [UInt8] {
        let width = codec.dtype.byteWidth
        let planeSize = rows * cols
        let frameWidth = codec.frameWidth
        let frameCount = (cols + frameWidth - 1) / frameWidth
        let entrySize = 4 * (width + 2)
        let dataOffset = TileCodec.fixedHeaderSize + frameCount * entrySize
        var bound = dataOffset
        for f in 0..<frameCount {
            let n = min(frameWidth, cols - f * frameWidth) * rows
            bound += width * (codec.compressed ? ZSTD_compressBound(n) : n)
        }
        // Not zero-filled: every byte up to `used` is written below (header, table, frames).
        return [UInt8](unsafeUninitializedCapacity: bound) { outBytes, initialized in
            let base = UnsafeMutableRawPointer(outBytes.baseAddress!)
            TileCodec.magic.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: 4) }
            base.storeBytes(of: TileCodec.formatVersion.littleEndian, toByteOffset: 4, as: UInt16.self)
            base.storeBytes(of: codec.dtype.code, toByteOffset: 6, as: UInt8.self)
            base.storeBytes(of: UInt8(codec.compressed ? 1 : 0), toByteOffset: 7, as: UInt8.self)
            storeLE32(base, 8, UInt32(rows))
            storeLE32(base, 12, UInt32(cols))
            storeLE32(base, 16, UInt32(frameWidth))
            storeLE32(base, 20, UInt32(frameCount))
            var cursor = dataOffset
            planes.withUnsafeBytes { planeBytes in
                for f in 0..<frameCount {
                    let entry = TileCodec.fixedHeaderSize + f * entrySize
                    let frameStart = cursor
                    storeLE32(base, entry, UInt32(frameStart - dataOffset))
                    let firstValue = f * frameWidth * rows
                    let n = min(frameWidth, cols - f * frameWidth) * rows
                    for p in 0..<width {
                        let src = planeBytes.baseAddress! + p * planeSize + firstValue
                        var length = n
                        // The top plane (sign and exponent) is always worth trying.
                        if codec.compressed && (p == width - 1 || Self.worthCompressing(src, count: n)) {
                            let written = ZSTD_compress2(context, base + cursor, ZSTD_compressBound(n), src, n)
                            if ZSTD_isError(written) == 0 && written < n { length = written }
                        }
                        if length == n { (base + cursor).copyMemory(from: src, byteCount: n) }
                        storeLE32(base, entry + 4 + 4 * p, UInt32(length))
                        cursor += length
                    }
                    let frameCRC = crc32(UnsafeRawBufferPointer(start: base + frameStart, count: cursor - frameStart))
                    storeLE32(base, entry + 4 + 4 * width, frameCRC)
                }
            }
            var crc = crc32(UnsafeRawBufferPointer(start: base, count: 24))
            crc = crc32(continuing: crc, UnsafeRawBufferPointer(start: base + TileCodec.fixedHeaderSize, count: dataOffset - TileCodec.fixedHeaderSize))
            storeLE32(base, 24, crc)
            initialized = cursor
        }
    }

    /// Scatters 16-bit values (`value(r, c)`) into the low and high byte planes, column-major,
    /// 16 rows at a time so that both the reads (rows) and the writes (16 bytes per column) stay
    /// sequential: the portable loop behind both 16-bit encodes.
    @inline(__always)
    private static func scatter16(rows: Int, cols: Int, into planes: UnsafeMutablePointer<UInt8>, _ value: (Int, Int) -> UInt16) {
        let lo = planes, hi = planes + rows * cols
        var r0 = 0
        while r0 < rows {
            let r1 = min(r0 + 16, rows)
            for r in r0..<r1 {
                for c in 0..<cols {
                    let bits = value(r, c)
                    lo[c * rows + r] = UInt8(truncatingIfNeeded: bits)
                    hi[c * rows + r] = UInt8(truncatingIfNeeded: bits >> 8)
                }
            }
            r0 = r1
        }
    }

    /// Converts to the storage type and scatters bytes into column-major planes, 16 rows at a
    /// time so that both the reads (rows) and the writes (16 bytes per column) stay sequential.
    private func splitPlanes(_ source: UnsafePointer<Float>, rowStride: Int, rows: Int, cols: Int,
                             into planes: UnsafeMutablePointer<UInt8>) {
        let planeSize = rows * cols
        let block = 16
        var r0 = 0
        if codec.dtype == .bfloat16, isa != .baseline {
            h2t_split_bf16(Int32(isa.rawValue), source, rowStride, rows, cols, planes, planes + planeSize)
            return
        }
        switch codec.dtype {
        case .bfloat16, .float16:
            let isBF = codec.dtype == .bfloat16
            Self.scatter16(rows: rows, cols: cols, into: planes) { r, c in
                let value = source[r * rowStride + c]
                return isBF ? HalfBits.bfloat16(value) : HalfBits.float16(value)
            }
        case .float32:
            while r0 < rows {
                let r1 = min(r0 + block, rows)
                for r in r0..<r1 {
                    let row = source + r * rowStride
                    for c in 0..<cols {
                        let bits = row[c].bitPattern
                        let at = c * rows + r
                        planes[at] = UInt8(truncatingIfNeeded: bits)
                        planes[planeSize + at] = UInt8(truncatingIfNeeded: bits >> 8)
                        planes[2 * planeSize + at] = UInt8(truncatingIfNeeded: bits >> 16)
                        planes[3 * planeSize + at] = UInt8(truncatingIfNeeded: bits >> 24)
                    }
                }
                r0 = r1
            }
        }
    }
}
