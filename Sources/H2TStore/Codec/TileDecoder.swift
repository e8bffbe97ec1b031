import CH2TKernels
import CZstd
import H2TCore

/// One index of a tile (a column or a row) and where it goes in the output.
public struct IndexPick: Sendable, Hashable {
    /// Index inside the tile.
    public var local: Int
    /// Index in the destination.
    public var out: Int

    /// Creates a pick.
    public init(local: Int, out: Int) {
        self.local = local
        self.out = out
    }
}

/// A column to decode from a tile: its index in the tile and its column in the output row.
public typealias ColumnPick = IndexPick
/// A row to decode from a tile: its index in the tile and its row in the destination.
public typealias RowPick = IndexPick

/// Decodes tiles (or only some of their columns) into float matrices. Holds a reused zstd
/// context and scratch buffers: one decoder per thread.
public final class TileDecoder {
    private let context: OpaquePointer
    private var scratch: [UInt8] = []
    private var framePicks: [ColumnPick] = []

    /// The vector kernels' level (the bits are the same at every level).
    static let vectorISA = InstructionSet.selected

    /// Creates a decoder.
    public init() { context = ZSTD_createDCtx() }
    deinit { ZSTD_freeDCtx(context) }

    /// Decodes the columns `columns` (sorted by `local`) of the rows `rows` (all rows in order
    /// when `nil`) of `tile` into `dest`, writing value (r, c) at `dest[r.out * destStride + c.out]`.
    /// Only the frames holding the picked columns are read, checksummed and decompressed.
    /// `binding` is what the tile was bound to when stored (`TileCodec.binding(key:rows:)`).
    public func decode(_ tile: UnsafeRawBufferPointer, binding: [UInt8], columns: [ColumnPick], rows: [RowPick]? = nil,
                       into dest: UnsafeMutablePointer<Float>, destStride: Int) throws {
        let header = try TileHeader(parsing: tile, binding: binding)
        // Picks outside the tile would read out of bounds: a tile that disagrees with its segment.
        if let bad = columns.first(where: { $0.local < 0 || $0.local >= header.cols }) {
            throw TileError.truncated("column \(bad.local) asked of a tile with \(header.cols) columns")
        }
        if let rows, let bad = rows.first(where: { $0.local < 0 || $0.local >= header.rows }) {
            throw TileError.truncated("row \(bad.local) asked of a tile with \(header.rows) rows")
        }
        var i = 0
        while i < columns.count {
            let frame = columns[i].local / header.frameWidth
            framePicks.removeAll(keepingCapacity: true)
            while i < columns.count, columns[i].local / header.frameWidth == frame {
                framePicks.append(columns[i])
                i += 1
            }
            try decodeFrame(frame, of: tile, header: header, rows: rows, into: dest, destStride: destStride)
        }
    }

    /// Decodes every column of `tile` (stored with `binding`) into `dest` (row-major with
    /// `destStride`), all rows.
    public func decodeAll(_ tile: UnsafeRawBufferPointer, binding: [UInt8], into dest: UnsafeMutablePointer<Float>, destStride: Int) throws {
        let header = try TileHeader(parsing: tile, binding: binding)
        try decodeFrames(0..<header.frameCount, of: tile, header: header, into: dest, destStride: destStride)
    }

    /// ``decodeAll(_:binding:into:destStride:)`` on `parallelism`'s threads, one decoder per
    /// worker, each taking runs of `framesPerRun` consecutive frames (disjoint columns of every
    /// row); the same values whatever the thread count. For one large tile, such as a cached
    /// selected matrix (10,000 rows × 42,068 columns for the main job's head), which one decoder
    /// took seconds to expand.
    public static func decodeAll(_ tile: UnsafeRawBufferPointer, binding: [UInt8], into dest: UnsafeMutablePointer<Float>,
                                 destStride: Int, parallelism: Parallelism, framesPerRun: Int = 64) throws {
        let header = try TileHeader(parsing: tile, binding: binding)
        let runs = (header.frameCount + framesPerRun - 1) / framesPerRun
        try Parallel.forEachWorker(itemCount: runs, parallelism: parallelism) { _, next in
            let decoder = TileDecoder()
            while let run = next() {
                let first = run * framesPerRun
                try decoder.decodeFrames(first..<min(first + framesPerRun, header.frameCount), of: tile, header: header,
                                         into: dest, destStride: destStride)
            }
        }
    }

    private func decodeFrames(_ frames: Range<Int>, of tile: UnsafeRawBufferPointer, header: TileHeader,
                              into dest: UnsafeMutablePointer<Float>, destStride: Int) throws {
        for frame in frames {
            framePicks.removeAll(keepingCapacity: true)
            let first = frame * header.frameWidth
            for c in first..<(first + header.columns(inFrame: frame)) { framePicks.append(ColumnPick(local: c, out: c)) }
            try decodeFrame(frame, of: tile, header: header, rows: nil, into: dest, destStride: destStride)
        }
    }

    /// Checks the header against `binding`, every frame's checksum and that it decompresses to
    /// the right size; returns the number of values in the tile.
    public func verify(_ tile: UnsafeRawBufferPointer, binding: [UInt8]) throws -> Int {
        let header = try TileHeader(parsing: tile, binding: binding)
        for frame in 0..<header.frameCount { try expandFrame(frame, of: tile, header: header) }
        return header.rows * header.cols
    }

    /// Verifies the frame's checksum and decompresses its planes into `scratch`.
    private func expandFrame(_ frame: Int, of tile: UnsafeRawBufferPointer, header: TileHeader) throws {
        let planes = header.planes
        let entry = header.tableOffset + frame * header.entrySize
        let start = header.dataOffset + Int(loadLE32(tile, entry))
        let planeValues = header.columns(inFrame: frame) * header.rows
        // Plane lengths are read straight from the frame table (no per-frame allocation: this
        // runs once per frame of every read).
        @inline(__always) func planeLength(_ p: Int) -> Int { Int(loadLE32(tile, entry + 4 + 4 * p)) }
        var total = 0
        for p in 0..<planes { total += planeLength(p) }
        guard start + total <= tile.count else { throw TileError.truncated("frame \(frame) runs past the end") }
        let stored = loadLE32(tile, entry + 4 + 4 * planes)
        guard crc32(UnsafeRawBufferPointer(rebasing: tile[start..<(start + total)])) == stored else {
            throw TileError.frameChecksumMismatch(frame: frame)
        }
        // The scratch size comes from the header: before allocating it, each compressed plane's
        // zstd frame must declare that it expands to exactly one plane (the encoder's frames
        // always state their size), so a header claiming billions of rows over a few bytes of
        // data is an error, not an out-of-memory crash.
        var planeStart = start
        for p in 0..<planes {
            let length = planeLength(p)
            if length != planeValues {
                guard header.compressed else { throw TileError.truncated("raw plane of frame \(frame) has the wrong length") }
                let declared = ZSTD_getFrameContentSize(tile.baseAddress! + planeStart, length)
                guard declared == UInt64(planeValues) else {
                    throw TileError.decompressionFailed(frame: frame, reason: "plane \(p) does not declare \(planeValues) bytes")
                }
            }
            planeStart += length
        }
        if scratch.count < planeValues * planes { scratch = [UInt8](repeating: 0, count: planeValues * planes) }
        var offset = start
        let context = self.context
        try scratch.withUnsafeMutableBytes { (buffer: UnsafeMutableRawBufferPointer) throws in
            for p in 0..<planes {
                let length = planeLength(p)
                let target = buffer.baseAddress! + p * planeValues
                let source = tile.baseAddress! + offset
                if length == planeValues {
                    target.copyMemory(from: source, byteCount: length)
                } else {
                    guard header.compressed else { throw TileError.truncated("raw plane of frame \(frame) has the wrong length") }
                    let got = ZSTD_decompressDCtx(context, target, planeValues, source, length)
                    if ZSTD_isError(got) != 0 {
                        throw TileError.decompressionFailed(frame: frame, reason: String(cString: ZSTD_getErrorName(got)))
                    }
                    guard got == planeValues else { throw TileError.decompressionFailed(frame: frame, reason: "\(got) bytes instead of \(planeValues)") }
                }
                offset += length
            }
        }
    }

    private func decodeFrame(_ frame: Int, of tile: UnsafeRawBufferPointer, header: TileHeader, rows: [RowPick]?,
                             into dest: UnsafeMutablePointer<Float>, destStride: Int) throws {
        try expandFrame(frame, of: tile, header: header)
        let nRows = header.rows
        let planeValues = header.columns(inFrame: frame) * nRows
        let firstColumn = frame * header.frameWidth
        scratch.withUnsafeBytes { buffer in
            let base = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
            // bfloat16, all rows: rows outer, so each output row gets the frame's columns in one
            // visit. Columns outer would stride down the output once per column, and with a row
            // length that is a multiple of 1024 floats every such write maps to one cache set.
            if header.dtype == .bfloat16, rows == nil {
                // A whole frame of four columns landing side by side (whole rows): eight rows at a time.
                if Self.vectorISA != .baseline, framePicks.count == 4, planeValues == 4 * nRows,
                   framePicks.indices.allSatisfy({ framePicks[$0].local == firstColumn + $0 && framePicks[$0].out == framePicks[0].out + $0 }) {
                    h2t_bf16_rows4(Int32(Self.vectorISA.rawValue), base, base + planeValues, nRows, nRows, dest + framePicks[0].out, destStride)
                    return
                }
                framePicks.withUnsafeBufferPointer { picks in
                    for r in 0..<nRows {
                        let row = dest + r * destStride
                        for pick in picks {
                            let p0 = base + (pick.local - firstColumn) * nRows
                            row[pick.out] = HalfBits.float(bfloat16: UInt16(p0[planeValues + r]) << 8 | UInt16(p0[r]))
                        }
                    }
                }
                return
            }
            for pick in framePicks {
                let column = (pick.local - firstColumn) * nRows
                let p0 = base + column
                let p1 = p0 + planeValues
                switch header.dtype {
                case .bfloat16:
                    if let rows {
                        for row in rows {
                            dest[row.out * destStride + pick.out] = HalfBits.float(bfloat16: UInt16(p1[row.local]) << 8 | UInt16(p0[row.local]))
                        }
                    } else {
                        var target = dest + pick.out
                        for r in 0..<nRows {
                            target.pointee = HalfBits.float(bfloat16: UInt16(p1[r]) << 8 | UInt16(p0[r]))
                            target += destStride
                        }
                    }
                case .float16:
                    HalfBits.float16Table.withUnsafeBufferPointer { table in
                        if let rows {
                            for row in rows {
                                dest[row.out * destStride + pick.out] = table[Int(UInt16(p1[row.local]) << 8 | UInt16(p0[row.local]))]
                            }
                        } else {
                            for r in 0..<nRows {
                                dest[r * destStride + pick.out] = table[Int(UInt16(p1[r]) << 8 | UInt16(p0[r]))]
                            }
                        }
                    }
                case .float32:
                    let p2 = p1 + planeValues, p3 = p2 + planeValues
                    @inline(__always) func value(_ r: Int) -> Float {
                        Float(bitPattern: UInt32(p3[r]) << 24 | UInt32(p2[r]) << 16 | UInt32(p1[r]) << 8 | UInt32(p0[r]))
                    }
                    if let rows {
                        for row in rows { dest[row.out * destStride + pick.out] = value(row.local) }
                    } else {
                        for r in 0..<nRows { dest[r * destStride + pick.out] = value(r) }
                    }
                }
            }
        }
    }
}
