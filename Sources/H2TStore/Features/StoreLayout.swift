import H2TCore

/// Every table of the feature store, typed by the codecs of its keys and values: the one place
/// that knows the store's layout (documented for other readers in `schemas/store-format.md` §1;
/// `FormatDocumentTests` checks that the document lists exactly these tables).
///
/// Keys are big-endian composites, so that related records sort together and scans are
/// sequential; `fs16` is the first 16 bytes of a feature set's SHA-256 id.
struct StoreTables: Sendable {
    /// Table names, in the order they are opened.
    static let names = ["meta", "backbones", "featuresets", "segments", "tiles", "rows", "rowexamples",
                        "examples", "datasets", "splititems", "splitmembers", "matrices"]

    /// The key of the format record in `meta`.
    static let formatKey = "format"

    /// `"format"` → store format version, u32 LE.
    let meta: Table<UTF8Text, U32LE>
    /// Backbone id (64 hex digits) → canonical JSON manifest.
    let backbones: Table<UTF8Text, CanonicalJSONRecord<BackboneManifest>>
    /// Feature-set id (64 hex digits) → canonical JSON manifest.
    let featureSets: Table<UTF8Text, CanonicalJSONRecord<FeatureSetManifest>>
    /// `fs16 | first row u32 BE` → row count u32 LE.
    let segments: Table<FeatureSetRowKey, U32LE>
    /// `fs16 | segment's first row u32 BE | column block u32 BE` → tile.
    let tiles: Table<TileKey, RawBytes>
    /// `fs16 | example32` → row u32 BE.
    let rows: Table<RowKey, U32BE>
    /// `fs16 | row u32 BE` → `example32`.
    let rowExamples: Table<FeatureSetRowKey, ExampleIDCodec>
    /// `example32` → canonical JSON example record.
    let examples: Table<ExampleIDCodec, CanonicalJSONRecord<ExampleRecord>>
    /// Dataset name → JSON dataset manifest.
    let datasets: Table<UTF8Text, CanonicalJSONRecord<DatasetManifest>>
    /// `dataset | 00 | split | 00 | index u32 BE` → `example32 | label u32 LE`.
    let splitItems: Table<SplitItemKey, SplitItemValue>
    /// `dataset | 00 | split | 00 | example32` → index u32 BE.
    let splitMembers: Table<SplitMemberKey, U32BE>
    /// Matrix key (32-byte SHA-256) → `json length u32 LE | CachedMatrixInfo JSON | tile`.
    let matrices: Table<MatrixKey, MatrixRecord>

    init(_ environment: LMDBEnvironment) {
        func table<K, V>(_ name: String) -> Table<K, V> { Table(environment.table(name)) }
        meta = table("meta"); backbones = table("backbones"); featureSets = table("featuresets")
        segments = table("segments"); tiles = table("tiles"); rows = table("rows"); rowExamples = table("rowexamples")
        examples = table("examples"); datasets = table("datasets"); splitItems = table("splititems")
        splitMembers = table("splitmembers"); matrices = table("matrices")
    }

    /// The tables whose keys start with a feature set's `fs16`, in the order garbage collection
    /// deletes them (tiles first: they hold the bytes).
    var featureSetData: [Table<FeatureSetKeyed, RawBytes>] { [tiles.raw, rowExamples.raw, rows.raw, segments.raw].map(Table.init) }
}

/// The first 16 bytes of a feature set's id: the prefix of its keys in `segments`, `tiles`,
/// `rows` and `rowexamples`.
struct FeatureSetPrefix: Hashable, Sendable {
    /// The 16 bytes.
    let bytes: [UInt8]

    /// The prefix of feature set `id` (64 hex digits; its first 32 are used). Ids come from
    /// stored manifests or were checked by `checked(_:)`: an empty prefix would match every key.
    init(id: String) {
        bytes = Hex.decode(id.prefix(32)) ?? []
        precondition(bytes.count == Self.byteCount, "'\(id)' is not a feature-set id")
    }

    /// The prefix of `idOrKeyPrefix` (a 64-digit id or the 32-digit prefix of one), or an error
    /// for anything else (a caller's input).
    static func checked(_ idOrKeyPrefix: String) throws -> FeatureSetPrefix {
        let digits = idOrKeyPrefix.utf8.count
        guard digits == 2 * byteCount || digits == 64, let bytes = Hex.decode(idOrKeyPrefix) else {
            throw StoreError.invalidArgument("'\(idOrKeyPrefix)' is neither a feature-set id (64 hex digits) nor its key prefix (32)")
        }
        return FeatureSetPrefix(bytes: Array(bytes.prefix(byteCount)))
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// The 32 hex digits of the prefix (how garbage collection names data without a manifest).
    var hex: String { Hex.encode(bytes) }

    static let byteCount = 16
}

/// Any key of a table keyed by `fs16 | ...`, seen only through its prefix (for scans and
/// deletion of a feature set's data).
enum FeatureSetKeyed: ByteCodec {
    static func encode(_ item: FeatureSetPrefix) -> [UInt8] { item.bytes }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> FeatureSetPrefix {
        guard bytes.count >= FeatureSetPrefix.byteCount else { throw ByteLayoutError("a key of \(bytes.count) bytes, shorter than a feature-set prefix") }
        return FeatureSetPrefix(bytes: Array(bytes[0..<FeatureSetPrefix.byteCount]))
    }
}

/// `fs16 | row u32 BE` (20 bytes): a segment's key (its first row) and a row's key in the
/// row-to-example table.
enum FeatureSetRowKey: ByteCodec {
    static func encode(_ item: (fs: FeatureSetPrefix, row: Int)) -> [UInt8] {
        var w = ByteWriter(item.fs.bytes)
        w.u32BE(item.row)
        return w.bytes
    }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (fs: FeatureSetPrefix, row: Int) {
        try ByteLayoutError.require(bytes, count: 20, "a feature-set row key")
        return (FeatureSetPrefix(bytes: Array(bytes[0..<16])), ByteReader(bytes).u32BE(at: 16))
    }
    static func prefix(_ fs: FeatureSetPrefix) -> [UInt8] { fs.bytes }
}

/// `fs16 | segment's first row u32 BE | column block u32 BE` (24 bytes).
enum TileKey: ByteCodec {
    static func encode(_ item: (fs: FeatureSetPrefix, segment: Int, block: Int)) -> [UInt8] {
        var w = ByteWriter(item.fs.bytes)
        w.u32BE(item.segment)
        w.u32BE(item.block)
        return w.bytes
    }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (fs: FeatureSetPrefix, segment: Int, block: Int) {
        try ByteLayoutError.require(bytes, count: 24, "a tile key")
        let r = ByteReader(bytes)
        return (FeatureSetPrefix(bytes: Array(bytes[0..<16])), r.u32BE(at: 16), r.u32BE(at: 20))
    }
    static func prefix(_ fs: FeatureSetPrefix) -> [UInt8] { fs.bytes }

    /// Human-readable form of a tile key for error messages.
    static func describe(_ fsID: String, segment: Int, block: Int) -> String {
        "tiles/\(fsID.prefix(12))/rows@\(segment)/block\(block)"
    }
}

/// `fs16 | example32` (48 bytes).
enum RowKey: ByteCodec {
    static func encode(_ item: (fs: FeatureSetPrefix, example: ExampleID)) -> [UInt8] { item.fs.bytes + item.example.bytes }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (fs: FeatureSetPrefix, example: ExampleID) {
        try ByteLayoutError.require(bytes, count: 48, "a row key")
        return (FeatureSetPrefix(bytes: Array(bytes[0..<16])), ExampleID(digest: Array(bytes[16..<48])))
    }
    static func prefix(_ fs: FeatureSetPrefix) -> [UInt8] { fs.bytes }
}

/// `example32`: the 32 raw bytes of an example id.
enum ExampleIDCodec: ByteCodec {
    static func encode(_ item: ExampleID) -> [UInt8] { item.bytes }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> ExampleID {
        try ByteLayoutError.require(bytes, count: 32, "an example id")
        return ExampleID(digest: Array(bytes))
    }
}

/// The key prefix of one dataset split: `dataset | 00 | split | 00`.
struct SplitPrefix {
    let bytes: [UInt8]

    init(dataset: String, split: String) {
        var w = ByteWriter()
        w.name(dataset)
        w.name(split)
        bytes = w.bytes
    }
}

/// `dataset | 00 | split | 00 | index u32 BE`.
enum SplitItemKey: ByteCodec {
    static func encode(_ item: (split: SplitPrefix, index: Int)) -> [UInt8] {
        var w = ByteWriter(item.split.bytes)
        w.u32BE(item.index)
        return w.bytes
    }
    /// The index (the split is known from the scan's prefix).
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Int {
        guard bytes.count >= 6 else { throw ByteLayoutError("a split item key of \(bytes.count) bytes") }
        return ByteReader(bytes).u32BE(at: bytes.count - 4)
    }
}

/// `example32 | label u32 LE` (36 bytes).
enum SplitItemValue: ByteCodec {
    static func encode(_ item: (example: ExampleID, label: Int)) -> [UInt8] {
        var w = ByteWriter(item.example.bytes)
        w.u32LE(item.label)
        return w.bytes
    }
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (example: ExampleID, label: Int) {
        try ByteLayoutError.require(bytes, count: 36, "a split item")
        return (ExampleID(digest: Array(bytes[0..<32])), ByteReader(bytes).u32LE(at: 32))
    }
}

/// `dataset | 00 | split | 00 | example32`.
enum SplitMemberKey: ByteCodec {
    static func encode(_ item: (split: SplitPrefix, example: ExampleID)) -> [UInt8] { item.split.bytes + item.example.bytes }
    /// The example (the split is known from the scan's prefix).
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> ExampleID {
        guard bytes.count >= 34 else { throw ByteLayoutError("a split member key of \(bytes.count) bytes") }
        return ExampleID(digest: Array(bytes[(bytes.count - 32)...]))
    }
}

/// A cached matrix's key: `sha256(featureSetID ‖ splitDigest ‖ columns as u32 LE)`, 32 bytes.
enum MatrixKey: ByteCodec {
    static func encode(_ item: [UInt8]) -> [UInt8] { item }
    static func decode(_ bytes: UnsafeRawBufferPointer) -> [UInt8] { Array(bytes) }

    /// The key of the selected matrix of `columns` of a split with content hash `splitDigest`.
    static func make(featureSet: String, splitDigest: String, columns: [Int]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(Array(featureSet.utf8))
        hasher.update(Array(splitDigest.utf8))
        var w = ByteWriter()
        for c in columns { w.u32LE(c) }
        hasher.update(w.bytes)
        return hasher.finalize()
    }
}

/// `json length u32 LE | CachedMatrixInfo as canonical JSON | tile` (the tile bound to the
/// matrix key and its row count).
enum MatrixRecord: ByteCodec {
    static func encode(_ item: (info: CachedMatrixInfo, tile: [UInt8])) throws -> [UInt8] {
        let json = try CanonicalJSON.encode(item.info)
        var w = ByteWriter()
        w.u32LE(json.count)
        w.raw(json)
        w.raw(item.tile)
        return w.bytes
    }
    /// The description and a zero-copy view of the tile.
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (info: CachedMatrixInfo, tile: UnsafeRawBufferPointer, bytes: Int) {
        guard bytes.count >= 4 else { throw ByteLayoutError("a matrix record of \(bytes.count) bytes") }
        let jsonLength = ByteReader(bytes).u32LE(at: 0)
        guard bytes.count >= 4 + jsonLength else { throw ByteLayoutError("a matrix record shorter than its description") }
        let info = try CanonicalJSON.decode(CachedMatrixInfo.self, from: bytes[4..<(4 + jsonLength)])
        return (info, UnsafeRawBufferPointer(rebasing: bytes[(4 + jsonLength)...]), bytes.count)
    }
}
