import CLMDB

/// A transaction, lent to the closure of `LMDBEnvironment.read` or `.write`.
///
/// It is non-copyable and only ever borrowed, so it cannot escape the closure or cross threads.
/// Buffers handed out by `get` and `scan` point into the memory map and are valid only until the
/// closure returns.
public struct LMDBTransaction: ~Copyable {
    let handle: OpaquePointer
    let environment: LMDBEnvironment
    /// Whether this is a write transaction.
    public let writable: Bool

    init(handle: OpaquePointer, environment: LMDBEnvironment, writable: Bool) {
        self.handle = handle
        self.environment = environment
        self.writable = writable
    }

    private var path: String { environment.path }

    /// The value stored under `key`, as a zero-copy view into the map, or `nil`.
    public func get(_ table: LMDBTable, _ key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        var value = MDB_val()
        let found = try key.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws -> Bool in
            var mkey = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            return try lmdbLookup("mdb_get", path: path) { mdb_get(handle, table.dbi, &mkey, &value) }
        }
        return found ? UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size) : nil
    }

    /// The value stored under `key`, copied out, or `nil`.
    public func bytes(_ table: LMDBTable, _ key: [UInt8]) throws -> [UInt8]? {
        try get(table, key).map { Array($0) }
    }

    /// Stores `value` under `key`. With `append`, keys must arrive in increasing order (faster
    /// for bulk loads); with `noOverwrite`, an existing key throws `LMDBError.keyExists`.
    public func put(_ table: LMDBTable, _ key: [UInt8], _ value: UnsafeRawBufferPointer,
                    append: Bool = false, noOverwrite: Bool = false) throws {
        var flags: UInt32 = 0
        if append { flags |= UInt32(MDB_APPEND) }
        if noOverwrite { flags |= UInt32(MDB_NOOVERWRITE) }
        try key.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws in
            var mkey = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mval = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
            try lmdbCall("mdb_put", path: path) { mdb_put(handle, table.dbi, &mkey, &mval, flags) }
        }
    }

    /// Stores a byte array under `key`.
    public func put(_ table: LMDBTable, _ key: [UInt8], _ value: [UInt8],
                    append: Bool = false, noOverwrite: Bool = false) throws {
        try value.withUnsafeBytes { (v: UnsafeRawBufferPointer) throws in
            try put(table, key, v, append: append, noOverwrite: noOverwrite)
        }
    }

    /// Reserves `count` bytes under `key` and lets `fill` write them in place (no extra copy).
    public func put(_ table: LMDBTable, _ key: [UInt8], reserving count: Int, append: Bool = false,
                    fill: (UnsafeMutableRawBufferPointer) -> Void) throws {
        var flags = UInt32(MDB_RESERVE)
        if append { flags |= UInt32(MDB_APPEND) }
        try key.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws in
            var mkey = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            var mval = MDB_val(mv_size: count, mv_data: nil)
            try lmdbCall("mdb_put", path: path) { mdb_put(handle, table.dbi, &mkey, &mval, flags) }
            fill(UnsafeMutableRawBufferPointer(start: mval.mv_data, count: count))
        }
    }

    /// Deletes `key`; returns whether it existed.
    @discardableResult
    public func delete(_ table: LMDBTable, _ key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws -> Bool in
            var mkey = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            return try lmdbLookup("mdb_del", path: path) { mdb_del(handle, table.dbi, &mkey, nil) }
        }
    }

    /// Visits, in key order, every entry whose key starts with `prefix` (and is `>= start` if
    /// given), until `body` returns `false`.
    public func scan(_ table: LMDBTable, prefix: [UInt8], from start: [UInt8]? = nil,
                     _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try lmdbCall("mdb_cursor_open", path: path) { mdb_cursor_open(handle, table.dbi, &cursor) }
        defer { mdb_cursor_close(cursor) }
        let first = start ?? prefix
        var key = MDB_val()
        var value = MDB_val()
        var found = try first.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws -> Bool in
            key = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
            if k.isEmpty {
                return try lmdbLookup("mdb_cursor_get", path: path) { mdb_cursor_get(cursor, &key, &value, MDB_FIRST) }
            }
            return try lmdbLookup("mdb_cursor_get", path: path) { mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE) }
        }
        while found {
            let k = UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size)
            guard k.count >= prefix.count, zip(k.prefix(prefix.count), prefix).allSatisfy({ $0 == $1 }) else { return }
            guard try body(k, UnsafeRawBufferPointer(start: value.mv_data, count: value.mv_size)) else { return }
            found = try lmdbLookup("mdb_cursor_get", path: path) { mdb_cursor_get(cursor, &key, &value, MDB_NEXT) }
        }
    }

    /// The last key starting with `prefix`, if any.
    public func lastKey(_ table: LMDBTable, prefix: [UInt8]) throws -> [UInt8]? {
        var cursor: OpaquePointer?
        try lmdbCall("mdb_cursor_open", path: path) { mdb_cursor_open(handle, table.dbi, &cursor) }
        defer { mdb_cursor_close(cursor) }
        // Position after the prefix range: the prefix with its last incrementable byte bumped.
        var upper = prefix
        while let last = upper.last, last == 0xFF { upper.removeLast() }
        var key = MDB_val()
        var value = MDB_val()
        var found: Bool
        if upper.isEmpty {
            found = try lmdbLookup("mdb_cursor_get", path: path) { mdb_cursor_get(cursor, &key, &value, MDB_LAST) }
        } else {
            upper[upper.count - 1] += 1
            found = try upper.withUnsafeBytes { (k: UnsafeRawBufferPointer) throws -> Bool in
                key = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
                return try lmdbLookup("mdb_cursor_get", path: path) { mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE) }
            }
            found = try lmdbLookup("mdb_cursor_get", path: path) {
                mdb_cursor_get(cursor, &key, &value, found ? MDB_PREV : MDB_LAST)
            }
        }
        guard found else { return nil }
        let k = Array(UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size))
        return k.starts(with: prefix) ? k : nil
    }

    /// Number of entries in `table`.
    public func count(_ table: LMDBTable) throws -> Int {
        var stat = MDB_stat()
        try lmdbCall("mdb_stat", path: path) { mdb_stat(handle, table.dbi, &stat) }
        return stat.ms_entries
    }
}
