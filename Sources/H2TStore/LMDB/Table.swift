import H2TCore

/// How the keys or the values of a table are stored as bytes (the model is heed's
/// `BytesEncode`/`BytesDecode`): each codec states its byte order and layout, and owns it alone.
public protocol ByteCodec {
    /// What is written.
    associatedtype EncodeItem
    /// What a read gives back. It may borrow from the memory map (`RawBytes`), and is then valid
    /// only inside the transaction that read it.
    associatedtype DecodeItem = EncodeItem

    /// The stored bytes of `item`.
    static func encode(_ item: EncodeItem) throws -> [UInt8]
    /// The item stored as `bytes`; throws `ByteLayoutError` when the bytes do not have the layout.
    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> DecodeItem
}

/// Stored bytes that do not have their codec's layout (a damaged or foreign store).
public struct ByteLayoutError: Error, CustomStringConvertible, Sendable {
    /// What was expected and found, e.g. "4 bytes, found 3".
    public var reason: String
    /// The table, when known.
    public var table: String?

    /// Creates an error.
    public init(_ reason: String, table: String? = nil) {
        self.reason = reason
        self.table = table
    }

    /// Checks that `bytes` has exactly `count` bytes.
    public static func require(_ bytes: UnsafeRawBufferPointer, count: Int, _ what: String) throws(ByteLayoutError) {
        guard bytes.count == count else { throw ByteLayoutError("\(what) of \(bytes.count) bytes, expected \(count)") }
    }

    public var description: String {
        "store is inconsistent: " + (table.map { "table \($0): " } ?? "") + reason + " (run `h2t-store verify`)"
    }
}

/// A table (LMDB named database) whose keys and values are written and read only through their
/// codecs: the one place that knows the table's layout is the type that declares it.
public struct Table<Key: ByteCodec, Value: ByteCodec>: Sendable, Hashable {
    /// The untyped handle.
    let raw: LMDBTable
    /// The table's name.
    public var name: String { raw.name }

    /// Types a table handle.
    public init(_ raw: LMDBTable) { self.raw = raw }
}

extension LMDBTransaction {
    /// The value stored under `key`, or `nil`.
    public func get<K, V>(_ table: Table<K, V>, _ key: K.EncodeItem) throws -> V.DecodeItem? {
        guard let bytes = try get(table.raw, try K.encode(key)) else { return nil }
        return try decoding(table) { try V.decode(bytes) }
    }

    /// Whether `key` is stored.
    public func contains<K, V>(_ table: Table<K, V>, _ key: K.EncodeItem) throws -> Bool {
        try get(table.raw, try K.encode(key)) != nil
    }

    /// Stores `value` under `key` (replacing what was there).
    public func put<K, V>(_ table: Table<K, V>, _ key: K.EncodeItem, _ value: V.EncodeItem) throws {
        try put(table.raw, try K.encode(key), try V.encode(value))
    }

    /// Deletes `key`; returns whether it existed.
    @discardableResult
    public func delete<K, V>(_ table: Table<K, V>, _ key: K.EncodeItem) throws -> Bool {
        try delete(table.raw, try K.encode(key))
    }

    /// Visits, in key order, every entry whose encoded key starts with `prefix` (a prefix the key
    /// codec builds), until `body` returns `false`.
    public func scan<K, V>(_ table: Table<K, V>, prefix: [UInt8] = [], from start: [UInt8]? = nil,
                           _ body: (K.DecodeItem, V.DecodeItem) throws -> Bool) throws {
        try scan(table.raw, prefix: prefix, from: start) { key, value in
            let (k, v) = try decoding(table) { (try K.decode(key), try V.decode(value)) }
            return try body(k, v)
        }
    }

    /// Visits the keys only (values are not decoded), in order, like `scan`.
    public func scanKeys<K, V>(_ table: Table<K, V>, prefix: [UInt8] = [], from start: [UInt8]? = nil,
                               _ body: (K.DecodeItem) throws -> Bool) throws {
        try scan(table.raw, prefix: prefix, from: start) { key, _ in
            try body(try decoding(table) { try K.decode(key) })
        }
    }

    /// Visits the entries' byte sizes (nothing is decoded), in order, like `scan`.
    public func scanSizes<K, V>(_ table: Table<K, V>, prefix: [UInt8] = []) throws -> (entries: Int, bytes: Int) {
        var entries = 0, bytes = 0
        try scan(table.raw, prefix: prefix) { _, value in
            entries += 1
            bytes += value.count
            return true
        }
        return (entries, bytes)
    }

    /// The last key starting with `prefix`, if any.
    public func lastKey<K, V>(_ table: Table<K, V>, prefix: [UInt8]) throws -> K.DecodeItem? {
        guard let key = try lastKey(table.raw, prefix: prefix) else { return nil }
        return try key.withUnsafeBytes { bytes in try decoding(table) { try K.decode(bytes) } }
    }

    /// Deletes up to `limit` entries whose keys start with `prefix`; returns how many it deleted.
    public func deleteAll<K, V>(_ table: Table<K, V>, prefix: [UInt8], limit: Int = .max) throws -> Int {
        var keys: [[UInt8]] = []
        try scan(table.raw, prefix: prefix) { key, _ in
            keys.append(Array(key))
            return keys.count < limit
        }
        for key in keys { try delete(table.raw, key) }
        return keys.count
    }

    /// Number of entries.
    public func count<K, V>(_ table: Table<K, V>) throws -> Int { try count(table.raw) }

    private func decoding<K, V, R>(_ table: Table<K, V>, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch var error as ByteLayoutError {
            error.table = table.name
            throw error
        }
    }
}

// MARK: - Codecs shared by every layer

/// Raw bytes: written from an array, read as a zero-copy view into the map (valid only inside
/// the transaction).
public enum RawBytes: ByteCodec {
    public static func encode(_ item: [UInt8]) -> [UInt8] { item }
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer { bytes }
}

/// Nothing: for tables whose keys alone carry the information (indexes).
public enum NoValue: ByteCodec {
    public static func encode(_ item: Void) -> [UInt8] { [] }
    public static func decode(_ bytes: UnsafeRawBufferPointer) {}
}

/// A string as its UTF-8 bytes (names, ids spelled in hex).
public enum UTF8Text: ByteCodec {
    public static func encode(_ item: String) -> [UInt8] { Array(item.utf8) }
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> String { String(decoding: bytes, as: UTF8.self) }
}

/// An unsigned 32-bit integer, big-endian (so that keys sort numerically).
public enum U32BE: ByteCodec {
    public static func encode(_ item: Int) -> [UInt8] { var w = ByteWriter(); w.u32BE(item); return w.bytes }
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Int {
        try ByteLayoutError.require(bytes, count: 4, "a u32 BE value")
        return ByteReader(bytes).u32BE(at: 0)
    }
}

/// An unsigned 32-bit integer, little-endian.
public enum U32LE: ByteCodec {
    public static func encode(_ item: Int) -> [UInt8] { var w = ByteWriter(); w.u32LE(item); return w.bytes }
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Int {
        try ByteLayoutError.require(bytes, count: 4, "a u32 LE value")
        return ByteReader(bytes).u32LE(at: 0)
    }
}

/// A value as canonical JSON (`CanonicalJSON`), decoded into `T`.
public enum CanonicalJSONRecord<T: Codable>: ByteCodec {
    public static func encode(_ item: T) throws -> [UInt8] { try CanonicalJSON.encode(item) }
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws -> T { try CanonicalJSON.decode(T.self, from: bytes) }
}

// MARK: - Byte helpers

/// Builds keys and small values: fixed-width integers with an explicit byte order and
/// NUL-terminated names. The one place of the package that spells these byte orders.
public struct ByteWriter: Sendable {
    /// The bytes written so far.
    public var bytes: [UInt8]

    /// Starts with `bytes`.
    public init(_ bytes: [UInt8] = []) { self.bytes = bytes }

    /// Appends `value` as a big-endian u32 (it must fit).
    public mutating func u32BE(_ value: Int) {
        let x = UInt32(value)
        bytes.append(contentsOf: [UInt8(x >> 24), UInt8(truncatingIfNeeded: x >> 16), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x)])
    }

    /// Appends `value` as a little-endian u32 (it must fit).
    public mutating func u32LE(_ value: Int) {
        let x = UInt32(value)
        bytes.append(contentsOf: [UInt8(truncatingIfNeeded: x), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x >> 16), UInt8(x >> 24)])
    }

    /// Appends raw bytes.
    public mutating func raw(_ more: some Sequence<UInt8>) { bytes.append(contentsOf: more) }

    /// Appends `name`'s UTF-8 bytes and a terminating `00` (names never contain NUL).
    public mutating func name(_ name: String) {
        bytes.append(contentsOf: name.utf8)
        bytes.append(0)
    }

    /// Appends `text`'s UTF-8 bytes, unterminated (the last field of a key).
    public mutating func text(_ text: String) { bytes.append(contentsOf: text.utf8) }
}

/// Reads what `ByteWriter` wrote.
public struct ByteReader {
    /// The bytes being read.
    public let bytes: UnsafeRawBufferPointer
    /// The read position of the sequential readers.
    public var offset = 0

    /// Reads `bytes` from the start.
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// The big-endian u32 at `at`.
    public func u32BE(at: Int) -> Int {
        Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
    }

    /// The little-endian u32 at `at`.
    public func u32LE(at: Int) -> Int {
        Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
    }

    /// Bytes left to read.
    public var remaining: Int { bytes.count - offset }

    /// The next big-endian u32.
    public mutating func u32BE() throws(ByteLayoutError) -> Int {
        guard remaining >= 4 else { throw ByteLayoutError("a key cut short: \(remaining) bytes left for a u32") }
        defer { offset += 4 }
        return u32BE(at: offset)
    }

    /// The next `count` bytes.
    public mutating func take(_ count: Int) throws(ByteLayoutError) -> [UInt8] {
        guard remaining >= count else { throw ByteLayoutError("a key cut short: \(remaining) bytes left for \(count)") }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// The next byte.
    public mutating func byte() throws(ByteLayoutError) -> UInt8 {
        guard remaining >= 1 else { throw ByteLayoutError("a key cut short") }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// The next NUL-terminated name (the terminator is consumed).
    public mutating func name() throws(ByteLayoutError) -> String {
        guard let end = bytes[offset...].firstIndex(of: 0) else { throw ByteLayoutError("a name without its 00 terminator") }
        defer { offset = end + 1 }
        return String(decoding: bytes[offset..<end], as: UTF8.self)
    }

    /// Everything left, as UTF-8 text.
    public mutating func rest() -> String {
        defer { offset = bytes.count }
        return String(decoding: bytes[offset...], as: UTF8.self)
    }
}
