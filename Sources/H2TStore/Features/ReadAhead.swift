#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Asks the kernel to start reading the tiles a read is about to decode, a few tiles ahead of
/// its decoders (`madvise(MADV_WILLNEED)` on the tiles' pages in LMDB's map), and for a read of
/// some columns only the frames that hold them.
///
/// Why: a tile's bytes are read through LMDB's memory map. On a store whose pages are not in
/// memory (a store larger than memory, a first read after a reboot, pages the system reclaimed
/// after a while unused) every decoder stops on page faults, one synchronous read at a time, and
/// each fault also reads the kernel's read-around window (128 KB) about the page. A predict of a
/// tenth of the columns of 10,000 rows read four fifths of the store that way. Advised ahead, the
/// disk gets the bytes the decoders will touch, in large requests, while they decode the tiles
/// before. Pages already in memory cost a lookup.
///
/// In two steps for a read of some columns: first, well ahead, each tile's header and frame
/// table (where its frames lie); then, nearer, the byte ranges of the frames holding the
/// requested columns. A read of whole tiles advises each whole tile in the first step.
///
/// Finding a tile's address does not touch its pages: LMDB's lookup reads the B-tree leaf and
/// computes where the value's overflow pages are in the map.
final class TileReadAhead: Sendable {
    /// A tile in the order the decoders take them: its segment's first row and the index of its
    /// column block in `blocks`.
    typealias Tile = (start: Int, blockIndex: Int)

    private let tiles: [Tile]
    /// Per column block: its number in the feature set.
    private let blockNumbers: [Int]
    /// Per column block: the frames to read (ascending), or `nil` for every frame.
    private let frames: [[Int]?]
    private let headerBytes: Int
    private let prefix: FeatureSetPrefix
    private let table: Table<TileKey, RawBytes>
    private let near: Int
    /// How many tiles (from the first) have had their first step, and their second.
    private let advised = Mutex((headers: 0, frames: 0))

    /// Tiles ahead of the one being decoded whose frames are advised (enough to keep the disk
    /// busy while each worker decodes one); headers are advised twice as far ahead.
    static func window(workers: Int) -> Int { max(8, 4 * workers) }

    /// A read of `tiles` (in decode order) of feature set `manifest`, picking `blocks`' columns
    /// (`wholeTiles`: every column), decoded by `workers` threads.
    init(tiles: [Tile], blocks: [(block: Int, picks: [ColumnPick])], wholeTiles: Bool, manifest: FeatureSetManifest,
         prefix: FeatureSetPrefix, table: Table<TileKey, RawBytes>, workers: Int) {
        self.tiles = tiles
        blockNumbers = blocks.map(\.block)
        let codec = manifest.codec
        frames = blocks.map { block in
            guard !wholeTiles else { return nil }
            var frames: [Int] = []
            for pick in block.picks where frames.last != pick.local / codec.frameWidth { frames.append(pick.local / codec.frameWidth) }
            return frames
        }
        let framesPerTile = (manifest.columnBlock + codec.frameWidth - 1) / codec.frameWidth
        headerBytes = TileCodec.fixedHeaderSize + framesPerTile * 4 * (codec.dtype.byteWidth + 2)
        self.prefix = prefix
        self.table = table
        near = Self.window(workers: workers)
    }

    /// Tile `index` is about to be decoded: the tiles up to the windows past it are advised. A
    /// worker that finds another one advising goes on decoding instead of waiting for it.
    func decoding(_ index: Int, _ txn: borrowing LMDBTransaction) {
        advised.withLockIfAvailable { advised in
            while advised.headers < min(tiles.count, index + 2 * near) {
                if let tile = tileBytes(advised.headers, txn) {
                    Self.advise(frames[tiles[advised.headers].blockIndex] == nil ? tile : UnsafeRawBufferPointer(rebasing: tile.prefix(headerBytes)))
                }
                advised.headers += 1
            }
            while advised.frames < min(tiles.count, index + near) {
                if let frames = frames[tiles[advised.frames].blockIndex], let tile = tileBytes(advised.frames, txn) {
                    adviseFrames(frames, of: tile)
                }
                advised.frames += 1
            }
        }
    }

    /// The bytes of tile `i` in the map; `nil` if it is missing, which its decoder reports.
    private func tileBytes(_ i: Int, _ txn: borrowing LMDBTransaction) -> UnsafeRawBufferPointer? {
        let tile = tiles[i]
        return try? txn.get(table, (prefix, tile.start, blockNumbers[tile.blockIndex]))
    }

    /// Advises the stored bytes of `frames` of `tile`, neighbours at most a page apart in one
    /// request. A header that does not parse is left to the decoder, which reports it.
    private func adviseFrames(_ frames: [Int], of tile: UnsafeRawBufferPointer) {
        guard let header = try? TileHeader(parsing: tile, binding: nil) else { return }
        for range in header.storedRanges(ofFrames: frames, in: tile, mergingWithin: Self.pageSize) {
            Self.advise(UnsafeRawBufferPointer(rebasing: tile[range]))
        }
    }

    private static let pageSize = Int(getpagesize())

    /// `madvise(MADV_WILLNEED)` on the pages holding `bytes`: only a hint, so a failure changes
    /// nothing but the speed.
    static func advise(_ bytes: UnsafeRawBufferPointer) {
        #if os(Linux)
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        let first = Int(bitPattern: base) & ~(pageSize - 1)
        _ = madvise(UnsafeMutableRawPointer(bitPattern: first), Int(bitPattern: base) + bytes.count - first, MADV_WILLNEED)
        #endif
    }
}
