import CLMDB
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// An open LMDB environment: the one owner of the `MDB_env` handle.
///
/// - Opened with `MDB_NOTLS`, so read transactions are tied to the transaction, not the thread,
///   and many can run on a thread pool.
/// - Stale reader slots left by crashed processes are cleared on open (`mdb_reader_check`).
/// - The map grows by itself. The initial map is a large *sparse* reservation (64 GiB by default):
///   on 64-bit Linux it costs address space only, the file grows with the data, and writers never
///   pay a retry. If it does fill, `write` aborts, doubles the map with no transaction open in this
///   process, and re-runs the transaction body; if another process grew it, the new size is
///   adopted (`MDB_MAP_RESIZED`). Transaction bodies must therefore have no side effects outside
///   the transaction.
/// - A path can be open only once per process (LMDB forbids a second open: its locks would be
///   released when either handle closes); the second open throws `LMDBError.alreadyOpen`.
/// - `fork()`: an environment must not be used in a child process. The child gets
///   `LMDBError.usedAcrossFork` from every transaction; it must open the store afresh.
public final class LMDBEnvironment: @unchecked Sendable {
    // @unchecked Sendable: MDB_env is thread-safe under MDB_NOTLS; our mutable state (map size,
    // database handles) is set at open or changed under `resizeLock` held exclusively.

    /// Options for opening an environment.
    public struct Options: Sendable {
        /// Initial map size in bytes (a sparse reservation, not disk usage).
        public var mapSize: Int = 64 << 30
        /// Names of the tables (LMDB named databases) to open or create.
        public var tables: [String] = []
        /// Open read-only: no writes, no table creation.
        public var readOnly = false
        /// Skip `fsync` at commit (faster, loses the last commits on a power cut; never corrupts).
        public var noSync = false
        /// Maximum number of concurrent read transactions across processes.
        public var maxReaders: UInt32 = 252
        /// How many tables may be open at once, counting those opened later with `openTables`
        /// (`nil`: the tables named here plus 4).
        public var maxTables: Int?

        /// Creates options with defaults.
        public init(mapSize: Int = 64 << 30, tables: [String] = [], readOnly: Bool = false, noSync: Bool = false) {
            self.mapSize = mapSize
            self.tables = tables
            self.readOnly = readOnly
            self.noSync = noSync
        }

        /// Options with room for `maxTables` tables in all.
        public init(mapSize: Int = 64 << 30, tables: [String] = [], readOnly: Bool = false, noSync: Bool = false, maxTables: Int) {
            self.init(mapSize: mapSize, tables: tables, readOnly: readOnly, noSync: noSync)
            self.maxTables = maxTables
        }
    }

    /// The environment directory.
    public let path: String
    /// Whether writes are refused.
    public let readOnly: Bool

    let handle: OpaquePointer
    private let openedByPID: pid_t
    private let tableHandles = Mutex<[String: MDB_dbi]>([:])
    /// Serialises `mdb_dbi_open` (LMDB allows one transaction at a time to open handles).
    private let openingTables = Mutex<Void>(())
    private let resizeLock = ReadWriteLock()
    private let canonicalPath: String
    private let stats = Mutex<(growths: Int, currentMapSize: Int)>((0, 0))

    private static let openPaths = Mutex<Set<String>>([])

    /// Opens (creating if needed, unless read-only) the environment at `path`, a directory.
    public init(path: String, options: Options = Options()) throws(LMDBError) {
        self.path = path
        self.readOnly = options.readOnly
        if !options.readOnly {
            // Parents too: `--store /new/dir/h2t.store` should just work.
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        guard let resolved = realpath(path, nil) else {
            throw LMDBError(code: errno, call: "realpath", path: path)
        }
        let canonical = String(cString: resolved)
        free(resolved)
        canonicalPath = canonical
        let inserted = Self.openPaths.withLock { $0.insert(canonical).inserted }
        guard inserted else { throw LMDBError(code: LMDBError.alreadyOpen, call: "mdb_env_open", path: path) }

        var env: OpaquePointer?
        do {
            try lmdbCall("mdb_env_create", path: path) { mdb_env_create(&env) }
        } catch {
            Self.openPaths.withLock { _ = $0.remove(canonical) }
            throw error
        }
        handle = env!
        openedByPID = getpid()
        do {
            try lmdbCall("mdb_env_set_maxdbs", path: path) { mdb_env_set_maxdbs(handle, MDB_dbi(options.maxTables ?? (max(options.tables.count, 1) + 4))) }
            try lmdbCall("mdb_env_set_maxreaders", path: path) { mdb_env_set_maxreaders(handle, options.maxReaders) }
            try lmdbCall("mdb_env_set_mapsize", path: path) { mdb_env_set_mapsize(handle, options.mapSize) }
            var flags = UInt32(MDB_NOTLS)
            if options.readOnly { flags |= UInt32(MDB_RDONLY) }
            if options.noSync { flags |= UInt32(MDB_NOSYNC) }
            try lmdbCall("mdb_env_open", path: path) { mdb_env_open(handle, path, flags, 0o644) }
            var dead: Int32 = 0
            try lmdbCall("mdb_reader_check", path: path) { mdb_reader_check(handle, &dead) }
            var info = MDB_envinfo()
            try lmdbCall("mdb_env_info", path: path) { mdb_env_info(handle, &info) }
            stats.withLock { $0.currentMapSize = info.me_mapsize }
            try openHandles(options.tables)
        } catch {
            // Every stored property is set by now, so a throw runs `deinit`, which closes the
            // environment and releases the path: closing here too freed the handle twice.
            throw error
        }
    }

    deinit {
        mdb_env_close(handle)
        _ = Self.openPaths.withLock { $0.remove(canonicalPath) }
    }

    private func openHandles(_ names: [String]) throws(LMDBError) {
        guard !names.isEmpty else { return }
        var txn: OpaquePointer?
        let flags = readOnly ? UInt32(MDB_RDONLY) : 0
        try lmdbCall("mdb_txn_begin", path: path) { mdb_txn_begin(handle, nil, flags, &txn) }
        var opened: [String: MDB_dbi] = [:]
        for name in names {
            var dbi: MDB_dbi = 0
            do {
                try lmdbCall("mdb_dbi_open", path: path) {
                    mdb_dbi_open(txn, name, readOnly ? 0 : UInt32(MDB_CREATE), &dbi)
                }
            } catch {
                mdb_txn_abort(txn)
                // A read-only open of a store that lacks a table is a store of another format.
                throw LMDBError(code: error.code, call: "mdb_dbi_open(\(name))", path: path)
            }
            opened[name] = dbi
        }
        try lmdbCall("mdb_txn_commit", path: path, whenInjected: { mdb_txn_abort(txn) }) { mdb_txn_commit(txn) }
        tableHandles.withLock { $0.merge(opened) { old, _ in old } }
    }

    /// Opens (creating them unless read-only) tables that were not named when opening, e.g. those
    /// of a layer that keeps its records beside another's. Tables already open are returned as
    /// they are. Call it before the transactions that use the tables begin.
    public func openTables(_ names: [String]) throws -> [LMDBTable] {
        try checkProcess()
        try openingTables.withLock { (_: inout Void) throws(LMDBError) -> Void in
            let missing = tableHandles.withLock { handles in names.filter { handles[$0] == nil } }
            guard !missing.isEmpty else { return }
            // No map resize may run while the opening transaction is live.
            resizeLock.lockShared()
            defer { resizeLock.unlock() }
            try openHandles(missing)
        }
        return names.map(table)
    }

    /// The handle of an open table.
    public func table(_ name: String) -> LMDBTable {
        guard let dbi = tableHandles.withLock({ $0[name] }) else { preconditionFailure("table \(name) was not opened in \(path)") }
        return LMDBTable(name: name, dbi: dbi)
    }

    /// How many times this environment grew its map, and the current map size in bytes.
    public var mapStatistics: (growths: Int, mapSize: Int) {
        stats.withLock { ($0.growths, $0.currentMapSize) }
    }

    /// Bytes used by the data file (pages in use times page size).
    public func usedBytes() throws(LMDBError) -> Int {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        try lmdbCall("mdb_env_info", path: path) { mdb_env_info(handle, &info) }
        try lmdbCall("mdb_env_stat", path: path) { mdb_env_stat(handle, &stat) }
        return (info.me_last_pgno + 1) * Int(stat.ms_psize)
    }

    /// Drops this process's mapping of the data file's pages (`madvise(MADV_DONTNEED)`), so that
    /// a long read of more data than memory does not keep every page it touched resident.
    ///
    /// Why it is safe: the map is a shared, read-only file mapping (the environment never uses
    /// `MDB_WRITEMAP`; writes go through `pwrite`), so dropped pages stay in the page cache and
    /// fault back in unchanged when next touched, even under a transaction that is still reading
    /// them. Held under the shared side of `resizeLock`, so the map is not replaced meanwhile.
    /// LMDB does not tell where its map is (`me_mapaddr` is set only for `MDB_FIXEDMAP`), so the
    /// mapping of the data file is looked up in `/proc/self/maps`; elsewhere this does nothing.
    public func releaseMappedPages() throws(LMDBError) {
        #if os(Linux)
        resizeLock.lockShared()
        defer { resizeLock.unlock() }
        let used = try usedBytes()
        for region in Self.mappings(of: canonicalPath + "/data.mdb") {
            let length = min(region.count, used)
            guard length > 0, let address = UnsafeMutableRawPointer(bitPattern: region.lowerBound) else { continue }
            if madvise(address, length, MADV_DONTNEED) != 0 { throw LMDBError(code: errno, call: "madvise", path: path) }
        }
        #endif
    }

    /// Address ranges at which this process maps `file` (from `/proc/self/maps`).
    static func mappings(of file: String) -> [Range<Int>] {
        return readProcFile("/proc/self/maps").split(separator: "\n").compactMap { line -> Range<Int>? in
            // "start-end perms offset dev inode path"
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[5].trimmingCharacters(in: .whitespaces) == file else { return nil }
            let bounds = fields[0].split(separator: "-").compactMap { Int($0, radix: 16) }
            guard bounds.count == 2, bounds[0] < bounds[1] else { return nil }
            return bounds[0]..<bounds[1]
        }
    }

    /// The whole text of a `/proc` file. Read to the end with `fread`: such files report a size
    /// of 0, and a read sized by it stops after the first page.
    @_spi(Testing) public static func readProcFile(_ path: String) -> String {
        guard let file = fopen(path, "r") else { return "" }
        defer { fclose(file) }
        var text = [UInt8](), buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            guard count > 0 else { break }
            text += buffer[0..<count]
        }
        return String(decoding: text, as: UTF8.self)
    }

    private func checkProcess() throws(LMDBError) {
        if getpid() != openedByPID { throw LMDBError(code: LMDBError.usedAcrossFork, call: "mdb_txn_begin", path: path) }
    }

    /// Runs `body` in a read-only transaction. The transaction cannot escape the closure.
    public func read<R>(_ body: (borrowing LMDBTransaction) throws -> R) throws -> R {
        try checkProcess()
        while true {
            resizeLock.lockShared()
            var txn: OpaquePointer?
            do {
                try lmdbCall("mdb_txn_begin", path: path) { mdb_txn_begin(handle, nil, UInt32(MDB_RDONLY), &txn) }
            } catch {
                resizeLock.unlock()
                if error.code == LMDBError.mapResized { try adoptForeignMapSize(); continue }
                throw error
            }
            defer {
                mdb_txn_abort(txn)
                resizeLock.unlock()
            }
            // Bound to a local first: passing the temporary straight to `body` crashes the Swift 6.3
            // optimiser when it specialises this generic (GenericSpecializer, forwardToInit) in -O builds.
            let transaction = LMDBTransaction(handle: txn!, environment: self, writable: false)
            return try body(transaction)
        }
    }

    /// Runs `body` in the write transaction: commits when it returns, aborts when it throws.
    ///
    /// Writers are serialised by LMDB across threads and processes: a second writer waits.
    /// If the map fills, the transaction is aborted, the map grows, and `body` runs again.
    public func write<R>(_ body: (borrowing LMDBTransaction) throws -> R) throws -> R {
        try checkProcess()
        if readOnly { throw LMDBError(code: EACCES, call: "mdb_txn_begin(write)", path: path) }
        while true {
            do {
                return try attemptWrite(body)
            } catch let error as LMDBError where error.code == LMDBError.mapFull {
                try grow()
            } catch let error as LMDBError where error.code == LMDBError.mapResized {
                try adoptForeignMapSize()
            }
        }
    }

    private func attemptWrite<R>(_ body: (borrowing LMDBTransaction) throws -> R) throws -> R {
        resizeLock.lockShared()
        defer { resizeLock.unlock() }
        var txn: OpaquePointer?
        try lmdbCall("mdb_txn_begin", path: path) { mdb_txn_begin(handle, nil, 0, &txn) }
        let result: R
        do {
            // A local for the same reason as in `read` (Swift 6.3 -O specialiser crash).
            let transaction = LMDBTransaction(handle: txn!, environment: self, writable: true)
            result = try body(transaction)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        // mdb_txn_commit frees the transaction even when it fails.
        try lmdbCall("mdb_txn_commit", path: path, whenInjected: { mdb_txn_abort(txn) }) { mdb_txn_commit(txn) }
        return result
    }

    /// Doubles the map with no transaction of this process open (exclusive `resizeLock`).
    private func grow() throws(LMDBError) {
        resizeLock.lockExclusive()
        defer { resizeLock.unlock() }
        var info = MDB_envinfo()
        try lmdbCall("mdb_env_info", path: path) { mdb_env_info(handle, &info) }
        let newSize = info.me_mapsize * 2
        try lmdbCall("mdb_env_set_mapsize", path: path) { mdb_env_set_mapsize(handle, newSize) }
        stats.withLock { $0.growths += 1; $0.currentMapSize = newSize }
    }

    /// Adopts the map size another process set (`mdb_env_set_mapsize(0)`).
    private func adoptForeignMapSize() throws(LMDBError) {
        resizeLock.lockExclusive()
        defer { resizeLock.unlock() }
        try lmdbCall("mdb_env_set_mapsize", path: path) { mdb_env_set_mapsize(handle, 0) }
        var info = MDB_envinfo()
        try lmdbCall("mdb_env_info", path: path) { mdb_env_info(handle, &info) }
        stats.withLock { $0.currentMapSize = info.me_mapsize }
    }

    /// Flushes the data file to disk (for stores opened with `noSync`).
    public func sync() throws(LMDBError) {
        try lmdbCall("mdb_env_sync", path: path) { mdb_env_sync(handle, 1) }
    }
}

/// A table (LMDB named database) handle, valid for the environment that opened it.
public struct LMDBTable: Sendable, Hashable {
    /// The table's name.
    public let name: String
    let dbi: MDB_dbi
}

/// A pthread read-write lock: transactions hold it shared; growing the map holds it exclusively.
final class ReadWriteLock: @unchecked Sendable {
    // @unchecked Sendable: pthread_rwlock_t is designed for concurrent use; it lives at a fixed address.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        pthread_rwlock_init(lock, nil)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func lockShared() { pthread_rwlock_rdlock(lock) }
    func lockExclusive() { pthread_rwlock_wrlock(lock) }
    func unlock() { pthread_rwlock_unlock(lock) }
}
