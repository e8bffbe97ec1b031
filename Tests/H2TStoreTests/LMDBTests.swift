import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@_spi(Testing) import H2TStore
import Testing

@Suite("LMDB layer", .serialized)
struct LMDBTests {
    @Test func writeCommitsAndThrowAborts() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let t = env.table("t")
        try env.write { txn in try txn.put(t, [1], [42]) }
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try env.write { txn in
                try txn.put(t, [2], [7])
                throw Boom()
            }
        }
        let values = try env.read { txn in (try txn.bytes(t, [1]), try txn.bytes(t, [2])) }
        #expect(values.0 == [42])
        #expect(values.1 == nil)
    }

    @Test func tinyMapGrowsByItselfAndKeepsData() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(mapSize: 64 * 1024, tables: ["t"]))
        let t = env.table("t")
        let value = [UInt8](repeating: 0xAB, count: 100_000)
        for i in 0..<40 {
            try env.write { txn in try txn.put(t, [UInt8(i)], value) }
        }
        #expect(env.mapStatistics.growths > 0)
        let count = try env.read { txn in try txn.count(t) }
        #expect(count == 40)
        let sample = try env.read { txn in try txn.bytes(t, [39]) }
        #expect(sample == value)
    }

    /// Releasing the mapped pages empties the data file mapping's resident set (read from
    /// `/proc/self/smaps`), and every value reads back unchanged, inside a transaction that was
    /// open across the release too.
    @Test func releasedMappedPagesLeaveTheResidentSetAndReadBackUnchanged() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let t = env.table("t")
        let values = (0..<32).map { i in [UInt8](repeating: UInt8(i), count: 200_000) }
        for (i, value) in values.enumerated() { try env.write { txn in try txn.put(t, [UInt8(i)], value) } }
        let dataFile = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path + "/data.mdb"
        // Resident kilobytes of this process's mappings of the data file.
        func residentKB() throws -> Int {
            let smaps = LMDBEnvironment.readProcFile("/proc/self/smaps")
            var inMap = false, total = 0
            for line in smaps.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if let first = fields.first, first.contains("-"), first.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
                    inMap = fields.count >= 6 && fields[5...].joined(separator: " ") == dataFile
                } else if inMap, fields.first == "Rss:", fields.count >= 2 {
                    total += Int(fields[1]) ?? 0
                }
            }
            return total
        }
        try env.read { txn in
            for (i, value) in values.enumerated() { #expect(try txn.bytes(t, [UInt8(i)]) == value) }
            #if os(Linux)
            let before = try residentKB()
            #expect(before >= 32 * 200_000 / 1024, "resident \(before) kB of \(dataFile) after reading every value")
            try env.releaseMappedPages()
            let after = try residentKB()
            #expect(after < 64, "resident \(after) kB of \(dataFile) after the release")
            #endif
            for (i, value) in values.enumerated() { #expect(try txn.bytes(t, [UInt8(i)]) == value) }
        }
        try env.releaseMappedPages()
        let again = try env.read { txn in try values.indices.map { try txn.bytes(t, [UInt8($0)]) } }
        #expect(again == values.map { Optional($0) })
    }

    @Test func secondOpenOfSamePathIsRefused() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        #expect(throws: LMDBError(code: LMDBError.alreadyOpen, call: "mdb_env_open", path: dir.path)) {
            _ = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        }
        withExtendedLifetime(env) {}
    }

    /// A failed `mdb_env_open` (a file where the store's folder should be, a damaged data file)
    /// is an error naming the path, and the path can be opened again once it is mended; the
    /// failed open used to close its handle twice and abort the process.
    @Test func failedOpenIsAnErrorAndReleasesThePath() throws {
        let dir = TemporaryDirectory()
        let file = dir.path + "/a-file"
        try Data("not a folder".utf8).write(to: URL(fileURLWithPath: file))
        #expect(throws: LMDBError.self) { _ = try LMDBEnvironment(path: file, options: .init(tables: ["t"])) }
        let damaged = dir.path + "/damaged"
        try FileManager.default.createDirectory(atPath: damaged, withIntermediateDirectories: true)
        try Data(repeating: 0xA5, count: 65_536).write(to: URL(fileURLWithPath: damaged + "/data.mdb"))
        for _ in 0..<2 {
            #expect(throws: LMDBError.self) { _ = try LMDBEnvironment(path: damaged, options: .init(tables: ["t"])) }
        }
        try FileManager.default.removeItem(atPath: damaged + "/data.mdb")
        let env = try LMDBEnvironment(path: damaged, options: .init(tables: ["t"]))
        withExtendedLifetime(env) {}
    }

    @Test func injectedCommitFailureLosesNothingCommitted() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let t = env.table("t")
        try env.write { txn in try txn.put(t, [1], [1]) }
        LMDBFaults.arm("mdb_txn_commit", path: dir.path, code: EIO)
        defer { LMDBFaults.disarm(path: dir.path) }
        #expect(throws: LMDBError.self) { try env.write { txn in try txn.put(t, [2], [2]) } }
        let values = try env.read { txn in (try txn.bytes(t, [1]), try txn.bytes(t, [2])) }
        #expect(values.0 == [1])
        #expect(values.1 == nil)
    }

    @Test func errorsNameCallPathAndHint() {
        let error = LMDBError(code: LMDBError.mapFull, call: "mdb_put", path: "/tmp/x")
        #expect(error.description.contains("mdb_put failed on /tmp/x"))
        #expect(error.description.contains("MDB_MAP_FULL"))
        #expect(error.hint != nil)
    }

    /// A full disk says so, where, and how much is free (LMDB reports a short write as EIO, so an
    /// EIO with almost no free space is read as a full disk too).
    @Test func diskFullSaysSoWithTheFreeSpace() throws {
        let dir = TemporaryDirectory()
        let full = LMDBError(code: 28, call: "mdb_txn_commit", path: dir.path).description
        #expect(full.hasPrefix("mdb_txn_commit failed on \(dir.path): No space left on device"))
        #expect(full.contains("the disk holding the store is full, "))
        #expect(full.contains(" free: free some space and re-run"))
        // Plenty of space here: an EIO is an I/O error, with the free space for context.
        let io = LMDBError(code: 5, call: "mdb_txn_commit", path: dir.path).description
        #expect(io.contains("Input/output error"))
        #expect(io.contains("free on the disk holding the store"))
        #expect(!io.contains("is full"))
    }

    @Test func childAfterForkIsRefused() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let pid = fork()
        if pid == 0 {
            // Child: every transaction must be refused; exit code tells the parent.
            do {
                _ = try env.read { _ in 0 }
                _exit(1)
            } catch let error as LMDBError where error.code == LMDBError.usedAcrossFork {
                _exit(0)
            } catch {
                _exit(2)
            }
        }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect((status >> 8) & 0xFF == 0)
        // The parent's environment still works.
        #expect(try env.read { txn in try txn.count(env.table("t")) } == 0)
    }

    @Test func concurrentWritersAreSerialised() async throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let t = env.table("t")
        try env.write { txn in try txn.put(t, [0], [0, 0, 0, 0, 0, 0, 0, 0]) }
        // Read-modify-write of one counter from two threads: a lost update would show as < 200.
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    for _ in 0..<100 {
                        try! env.write { txn in
                            let bytes = try txn.bytes(t, [0])!
                            let value = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } + 1
                            try txn.put(t, [0], withUnsafeBytes(of: value) { Array($0) })
                        }
                    }
                }
            }
        }
        let final = try env.read { txn in try txn.bytes(t, [0])!.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
        #expect(final == 200)
    }

    @Test func scanVisitsPrefixInOrder() throws {
        let dir = TemporaryDirectory()
        let env = try LMDBEnvironment(path: dir.path, options: .init(tables: ["t"]))
        let t = env.table("t")
        try env.write { txn in
            for k: [UInt8] in [[1, 3], [1, 1], [2, 0], [1, 2], [0, 9]] { try txn.put(t, k, k) }
        }
        var seen: [[UInt8]] = []
        try env.read { txn in
            try txn.scan(t, prefix: [1]) { key, _ in seen.append(Array(key)); return true }
        }
        #expect(seen == [[1, 1], [1, 2], [1, 3]])
        let last = try env.read { txn in try txn.lastKey(t, prefix: [1]) }
        #expect(last == [1, 3])
    }
}
