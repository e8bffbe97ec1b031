import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from the LMDB layer: the failing call, the environment path, and LMDB's return code.
///
/// Match specific conditions with the named constants:
/// `catch let error as LMDBError where error.code == LMDBError.mapFull`.
public struct LMDBError: Error, CustomStringConvertible, Sendable, Equatable {
    /// LMDB's (or the system's) return code; negative codes are LMDB's own.
    public let code: Int32
    /// The LMDB function that failed, e.g. `mdb_put`.
    public let call: String
    /// The environment's path.
    public let path: String

    /// Creates an error for a failed call.
    public init(code: Int32, call: String, path: String) {
        self.code = code
        self.call = call
        self.path = path
    }

    /// The key/data pair already exists (`MDB_KEYEXIST`).
    public static let keyExists: Int32 = MDB_KEYEXIST
    /// The key was not found (`MDB_NOTFOUND`).
    public static let notFound: Int32 = MDB_NOTFOUND
    /// The memory map is full (`MDB_MAP_FULL`); the environment grows and retries by itself.
    public static let mapFull: Int32 = MDB_MAP_FULL
    /// Another process grew the map (`MDB_MAP_RESIZED`); handled by re-reading the map size.
    public static let mapResized: Int32 = MDB_MAP_RESIZED
    /// The reader lock table is full (`MDB_READERS_FULL`).
    public static let readersFull: Int32 = MDB_READERS_FULL
    /// Too many named databases (`MDB_DBS_FULL`).
    public static let databasesFull: Int32 = MDB_DBS_FULL
    /// The file is not an LMDB file or is corrupted.
    public static let invalid: Int32 = MDB_INVALID
    /// The environment was opened before a `fork()` and used in the child: LMDB forbids this.
    public static let usedAcrossFork: Int32 = -31_000
    /// The same path is already open in this process: LMDB forbids opening it twice.
    public static let alreadyOpen: Int32 = -31_001

    /// LMDB's own description of the code, plus ours for the codes we add.
    public var reason: String {
        switch code {
        case Self.usedAcrossFork: return "environment used in a child process after fork()"
        case Self.alreadyOpen: return "this environment is already open in this process"
        default: return String(cString: mdb_strerror(code))
        }
    }

    /// What the user can do about it, for the conditions that have a fix.
    public var hint: String? {
        switch code {
        case Self.mapFull: return "the store could not grow its map; check free disk space"
        case Self.readersFull: return "too many concurrent readers; close idle readers or processes using the store"
        case Self.usedAcrossFork: return "open the store again in the child process instead of inheriting it"
        case Self.alreadyOpen: return "share the one open store object instead of opening the path twice"
        case Self.invalid: return "the path is not an h2t-store (LMDB) directory, or it is damaged"
        case Self.databasesFull: return "the store has more tables than this version of h2t-store knows"
        default:
            if code == 2 /* ENOENT */ { return "the store does not exist; `h2t-store ingest` creates one" }
            if code == 13 /* EACCES */ { return "check the permissions of the store directory" }
            if code == 28 /* ENOSPC */ || code == 5 /* EIO */ { return diskHint }
            return nil
        }
    }

    /// Below this much free space, an I/O error on a write is taken for a full disk: LMDB reports
    /// a short write (what a full disk gives) as EIO, not ENOSPC.
    static let nearlyFull = 256 << 20

    /// For ENOSPC and EIO: whether the disk is full, and how much space is free where the store is.
    var diskHint: String? {
        guard let free = Self.freeBytes(path) else { return code == 28 ? "the disk is full" : nil }
        let amount = Self.formatBytes(free)
        if code == 28 || free < Self.nearlyFull {
            return "the disk holding the store is full, \(amount) free: free some space and re-run; what was committed before is intact"
        }
        return "\(amount) free on the disk holding the store"
    }

    /// Bytes available to this user on the file system holding `path`.
    static func freeBytes(_ path: String) -> Int? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return Int(info.f_bavail) * Int(info.f_frsize)
    }

    static func formatBytes(_ bytes: Int) -> String {
        if bytes < 1 << 20 { return "\(bytes / 1024) KiB" }
        if bytes < 1 << 30 { return "\(bytes >> 20) MiB" }
        let tenths = bytes * 10 >> 30
        return "\(tenths / 10).\(tenths % 10) GiB"
    }

    public var description: String {
        var text = "\(call) failed on \(path): \(reason)"
        if let hint { text += " (\(hint))" }
        return text
    }
}
