import CZstd

/// The tile format: a header, a frame table, and frames of byte planes.
///
/// A tile holds `rows × cols` values of one segment of examples and one block of feature columns.
/// Columns are grouped into *frames* of `frameWidth` columns, each stored column-major and split
/// into byte planes (plane 0 = least significant byte); each plane is compressed on its own with
/// zstd (or kept raw when that is not smaller), so reading a few columns decodes only their
/// frames. Layout (little-endian), documented for other readers in `schemas/store-format.md` §5:
///
/// ```
/// 0   "H2TT"            magic
/// 4   u16 version       = 2 (1 is still read)
/// 6   u8  dtype         0 float32, 1 float16, 2 bfloat16
/// 7   u8  compression   0 none, 1 zstd per byte plane
/// 8   u32 rows
/// 12  u32 cols
/// 16  u32 frameWidth    columns per frame (the last frame may be narrower)
/// 20  u32 frameCount
/// 24  u32 headerCRC     CRC-32 (zlib) of bytes 0..<24, the frame table and (version 2) the binding
/// 28  frame table       per frame: u32 offset (from the data start), u32 length per plane, u32 CRC-32 of the frame's bytes
/// ... data              frames in order; in a frame, planes in order
/// ```
/// A plane whose stored length equals its raw length (`rows × frameColumns` bytes) is stored raw.
///
/// Version 2 binds a tile to where it is stored: the header CRC also covers a *binding*, the
/// tile's LMDB key followed by its segment's row count (u32 LE), which is not stored in the tile.
/// A tile written under one key and found under another (a misdirected write, two tiles of equal
/// size swapped) or read against a segment record of another row count fails its header check.
/// The encoder cannot know the key (a segment's first row is assigned inside the commit), so it
/// writes the CRC of the header and table alone and the store calls `bind(_:to:)` when it puts
/// the tile, which continues that CRC over the binding.
public struct TileCodec: Sendable, Hashable, Codable {
    /// Storage type of the values.
    public var dtype: StorageDType
    /// Whether planes are compressed with zstd.
    public var compressed: Bool
    /// zstd level (1–3 are the useful range on activations; higher buys almost nothing).
    public var level: Int
    /// Columns per independently decodable frame.
    public var frameWidth: Int

    /// Creates a codec description.
    public init(dtype: StorageDType = .bfloat16, compressed: Bool = true, level: Int = 1, frameWidth: Int = 4) {
        self.dtype = dtype
        self.compressed = compressed
        self.level = level
        self.frameWidth = frameWidth
    }

    /// The default, chosen by `h2t-bench codec` on realistic activations (see docs/benchmarks.md, "Storage").
    public static let `default` = TileCodec()
    /// Lossless float32 with zstd byte planes.
    public static let lossless = TileCodec(dtype: .float32)

    static let magic: [UInt8] = Array("H2TT".utf8)
    /// The tile format version this build writes.
    public static let formatVersion: UInt16 = 2
    /// The oldest tile format version this build reads (version 1: no binding).
    public static let oldestReadableVersion: UInt16 = 1
    static let fixedHeaderSize = 28

    /// The binding of a tile stored under `key` for a segment of `rows` rows: what a version-2
    /// header CRC covers after the header and the frame table.
    public static func binding(key: [UInt8], rows: Int) -> [UInt8] {
        var w = ByteWriter(key)
        w.u32LE(Int(UInt32(truncatingIfNeeded: rows)))
        return w.bytes
    }

    /// Moves a stored tile to another key or segment: checks its header against `old` (the
    /// binding it was stored with), then binds it to `new`. The header, frame table and frames
    /// are untouched (no decode, no re-encode); a version-1 tile has no binding and is kept as is.
    public static func rebind(_ tile: inout [UInt8], from old: [UInt8], to new: [UInt8]) throws {
        let header = try tile.withUnsafeBytes { bytes in try TileHeader(parsing: bytes, binding: old) }
        guard header.version >= 2 else { return }
        tile.withUnsafeMutableBytes { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            var crc = crc32(UnsafeRawBufferPointer(rebasing: raw[0..<24]))
            crc = crc32(continuing: crc, UnsafeRawBufferPointer(rebasing: raw[header.tableOffset..<header.dataOffset]))
            crc = new.withUnsafeBytes { crc32(continuing: crc, $0) }
            storeLE32(bytes.baseAddress!, 24, crc)
        }
    }

    /// Binds a freshly encoded version-2 tile to `binding` (continues its header CRC over it).
    /// Call it exactly once, when the tile's key is known.
    public static func bind(_ tile: inout [UInt8], to binding: [UInt8]) {
        precondition(tile.count >= fixedHeaderSize, "bind(_:to:) needs an encoded tile")
        tile.withUnsafeMutableBytes { bytes in storeBinding(binding, into: bytes) }
    }

    /// Copies a freshly encoded version-2 tile into `destination` (as many bytes as the tile)
    /// bound to `binding`: ``bind(_:to:)`` on the copy, for a tile written straight into the
    /// store's reserved space while the caller keeps the unbound original (no copy-on-write of it).
    public static func copy(_ tile: [UInt8], boundTo binding: [UInt8], into destination: UnsafeMutableRawBufferPointer) {
        precondition(tile.count >= fixedHeaderSize && destination.count == tile.count, "copy(_:boundTo:into:) needs an encoded tile and room for it")
        tile.withUnsafeBytes { destination.copyMemory(from: $0) }
        storeBinding(binding, into: destination)
    }

    /// Continues the unbound header CRC of the tile in `bytes` over `binding`.
    private static func storeBinding(_ binding: [UInt8], into bytes: UnsafeMutableRawBufferPointer) {
        let unbound = loadLE32(UnsafeRawBufferPointer(bytes), 24)
        let bound = binding.withUnsafeBytes { crc32(continuing: unbound, $0) }
        storeLE32(bytes.baseAddress!, 24, bound)
    }
}

/// Errors found while decoding a tile. The store adds the key and feature set to the message.
public enum TileError: Error, CustomStringConvertible, Sendable, Equatable {
    case truncated(String)
    case badMagic
    case unsupportedVersion(UInt16)
    case unknownCodec(dtype: UInt8, compression: UInt8)
    case headerChecksumMismatch
    case frameChecksumMismatch(frame: Int)
    case decompressionFailed(frame: Int, reason: String)

    public var description: String {
        switch self {
        case .truncated(let what): return "tile is truncated (\(what))"
        case .badMagic: return "not a tile (bad magic)"
        case .unsupportedVersion(let v): return "tile format version \(v) is not supported by this h2t-store (reads versions \(TileCodec.oldestReadableVersion)...\(TileCodec.formatVersion)); upgrade h2t-store"
        case .unknownCodec(let d, let c): return "unknown tile codec (dtype code \(d), compression code \(c))"
        case .headerChecksumMismatch: return "tile header checksum mismatch (corrupted, stored under the wrong key, or its segment's row count disagrees)"
        case .frameChecksumMismatch(let f): return "tile frame \(f) checksum mismatch (corrupted)"
        case .decompressionFailed(let f, let reason): return "tile frame \(f) does not decompress: \(reason)"
        }
    }
}

/// A parsed tile header and frame table, pointing into the tile's bytes.
public struct TileHeader: Sendable {
    /// Storage type.
    public let dtype: StorageDType
    /// Whether the planes may be zstd-compressed.
    public let compressed: Bool
    /// Rows (examples) in the tile.
    public let rows: Int
    /// Columns (features) in the tile.
    public let cols: Int
    /// Columns per frame.
    public let frameWidth: Int
    /// Number of frames.
    public let frameCount: Int
    /// Tile format version (1 or 2).
    public let version: UInt16
    let tableOffset: Int
    let dataOffset: Int

    var planes: Int { dtype.byteWidth }
    var entrySize: Int { 4 * (planes + 2) }

    /// Columns in frame `f`.
    func columns(inFrame f: Int) -> Int { min(frameWidth, cols - f * frameWidth) }
}

@inline(__always)
func loadLE32(_ p: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always)
func storeLE32(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt32) {
    p.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
}

@inline(__always)
func crc32(_ p: UnsafeRawBufferPointer) -> UInt32 { CRC32.checksum(p) }

@inline(__always)
func crc32(continuing crc: UInt32, _ p: UnsafeRawBufferPointer) -> UInt32 { CRC32.checksum(p, continuing: crc) }

extension TileHeader {
    /// Parses and checks the header and frame table of `tile`. A version-2 tile must carry the
    /// binding it was stored with (`TileCodec.binding(key:rows:)`); version-1 tiles have none.
    /// With `binding` nil the header CRC is not checked: only for accounting (`du`), never
    /// before decoding values.
    public init(parsing tile: UnsafeRawBufferPointer, binding: [UInt8]?) throws(TileError) {
        guard tile.count >= TileCodec.fixedHeaderSize else { throw .truncated("\(tile.count) bytes, header needs \(TileCodec.fixedHeaderSize)") }
        guard tile[0] == 0x48, tile[1] == 0x32, tile[2] == 0x54, tile[3] == 0x54 else { throw .badMagic }
        let version = UInt16(littleEndian: tile.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        guard (TileCodec.oldestReadableVersion...TileCodec.formatVersion).contains(version) else { throw .unsupportedVersion(version) }
        self.version = version
        guard let dtype = StorageDType(code: tile[6]), tile[7] <= 1 else { throw .unknownCodec(dtype: tile[6], compression: tile[7]) }
        self.dtype = dtype
        compressed = tile[7] == 1
        rows = Int(loadLE32(tile, 8))
        cols = Int(loadLE32(tile, 12))
        frameWidth = Int(loadLE32(tile, 16))
        frameCount = Int(loadLE32(tile, 20))
        tableOffset = TileCodec.fixedHeaderSize
        dataOffset = tableOffset + frameCount * 4 * (dtype.byteWidth + 2)
        guard frameWidth > 0, frameCount == (cols + frameWidth - 1) / frameWidth else { throw .truncated("inconsistent frame count") }
        // Decoding multiplies rows, columns and bytes per value: a header whose product does not
        // fit in an Int is corrupt, and must not trap.
        let (values, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard !overflow, !values.multipliedReportingOverflow(by: dtype.byteWidth).overflow else {
            throw .truncated("\(rows) rows × \(cols) columns")
        }
        guard tile.count >= dataOffset else { throw .truncated("frame table cut short") }
        guard let binding else { return }
        var crc = crc32(UnsafeRawBufferPointer(rebasing: tile[0..<24]))
        crc = crc32(continuing: crc, UnsafeRawBufferPointer(rebasing: tile[tableOffset..<dataOffset]))
        if version >= 2 { crc = binding.withUnsafeBytes { crc32(continuing: crc, $0) } }
        guard crc == loadLE32(tile, 24) else { throw .headerChecksumMismatch }
    }
}

extension TileHeader {
    /// Stored bytes of each frame of `tile` (for disk-usage accounting).
    public func frameByteCounts(_ tile: UnsafeRawBufferPointer) -> [Int] {
        (0..<frameCount).map { storedLength(ofFrame: $0, in: tile) }
    }

    /// The byte ranges of `tile` (from its first byte) that hold the stored bytes of `frames`
    /// (ascending; frames past the last are ignored), as its frame table says, clamped to the
    /// tile; ranges at most `gap` bytes apart are merged (touching ones always). Where to read
    /// ahead for a read of those frames: the table is not checked here (the decoder checks it).
    public func storedRanges(ofFrames frames: [Int], in tile: UnsafeRawBufferPointer, mergingWithin gap: Int = 0) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        for f in frames where (0..<frameCount).contains(f) {
            let start = min(tile.count, dataOffset + Int(loadLE32(tile, tableOffset + f * entrySize)))
            let range = start..<min(tile.count, start + storedLength(ofFrame: f, in: tile))
            if let last = ranges.last, range.lowerBound >= last.lowerBound, range.lowerBound - last.upperBound <= gap {
                ranges[ranges.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                ranges.append(range)
            }
        }
        return ranges
    }

    /// Bytes of `tile` before its first frame: the header and the frame table.
    public var headerByteCount: Int { dataOffset }

    private func storedLength(ofFrame f: Int, in tile: UnsafeRawBufferPointer) -> Int {
        let entry = tableOffset + f * entrySize
        return (0..<planes).reduce(0) { $0 + Int(loadLE32(tile, entry + 4 + 4 * $1)) }
    }
}
