import CLMDB
import Synchronization

/// Fault injection for tests: arm a return code for the next calls of one LMDB function.
///
/// Every LMDB call in this module goes through `lmdbCall`, which consults the armed faults, so a
/// test can make `mdb_put` or `mdb_txn_commit` fail exactly where it wants.
@_spi(Testing) public enum LMDBFaults {
    struct Armed {
        var call: String
        var path: String?
        var code: Int32
        var skip: Int
        var remaining: Int
    }

    static let anyArmed = Atomic<Bool>(false)
    static let armed = Mutex<[Armed]>([])

    /// Makes `call` return `code` `times` times, after letting `skip` calls through; only for the
    /// environment at `path` when given (tests run in parallel).
    public static func arm(_ call: String, path: String? = nil, code: Int32, skip: Int = 0, times: Int = 1) {
        armed.withLock { $0.append(Armed(call: call, path: path, code: code, skip: skip, remaining: times)) }
        anyArmed.store(true, ordering: .releasing)
    }

    /// Removes the faults armed for `path`.
    public static func disarm(path: String) {
        armed.withLock { list in
            list.removeAll { $0.path == path }
            if list.isEmpty { anyArmed.store(false, ordering: .releasing) }
        }
    }

    /// Removes every armed fault.
    public static func disarmAll() {
        armed.withLock { $0.removeAll() }
        anyArmed.store(false, ordering: .releasing)
    }

    static func injected(_ call: String, path: String) -> Int32? {
        guard anyArmed.load(ordering: .acquiring) else { return nil }
        return armed.withLock { list -> Int32? in
            guard let i = list.firstIndex(where: { $0.call == call && ($0.path == nil || $0.path == path) }) else { return nil }
            if list[i].skip > 0 { list[i].skip -= 1; return nil }
            let code = list[i].code
            list[i].remaining -= 1
            if list[i].remaining == 0 { list.remove(at: i) }
            return code
        }
    }
}

/// The single wrapper through which every LMDB call passes: it applies injected faults and turns
/// a non-zero return code into an `LMDBError` naming the call and the path.
///
/// `whenInjected` runs instead of the call when a fault is injected, to leave the same state a
/// real failure would (a failed `mdb_txn_commit` frees its transaction and releases the writer lock).
@inline(__always)
func lmdbCall(_ name: String, path: String, whenInjected: () -> Void = {}, _ body: () -> Int32) throws(LMDBError) {
    if let code = LMDBFaults.injected(name, path: path) {
        whenInjected()
        throw LMDBError(code: code, call: name, path: path)
    }
    let rc = body()
    if rc != 0 { throw LMDBError(code: rc, call: name, path: path) }
}

/// Like `lmdbCall`, but `MDB_NOTFOUND` is an answer, not an error.
@inline(__always)
func lmdbLookup(_ name: String, path: String, _ body: () -> Int32) throws(LMDBError) -> Bool {
    if let code = LMDBFaults.injected(name, path: path) { throw LMDBError(code: code, call: name, path: path) }
    let rc = body()
    if rc == MDB_NOTFOUND { return false }
    if rc != 0 { throw LMDBError(code: rc, call: name, path: path) }
    return true
}
