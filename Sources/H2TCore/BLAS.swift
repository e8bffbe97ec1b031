import COpenBLAS
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one door to BLAS for every module (row-major, single precision).
///
/// Kept in one place so that the choice of OpenBLAS kernels is made once for the whole process,
/// before the first product runs, whoever calls first (CLI, library user, test process).
///
/// ## Why the process re-selects OpenBLAS's kernels itself
///
/// Debian's OpenBLAS 0.3.21 is a `DYNAMIC_ARCH` build: at load time it picks one table of
/// kernels ("core") from CPUID, or from `OPENBLAS_CORETYPE` if that variable is set. Both inputs
/// are outside our control: a CPU newer than the 0.3.21 tables can be mapped to an old core, and
/// shells on this project's machines export `OPENBLAS_CORETYPE=Haswell`. On AVX-512 machines the
/// AVX-512 tables are much faster than the Haswell ones (see docs/benchmarks.md).
///
/// The mechanism: the library is linked at build time (pkg-config `-lopenblas`), so its
/// constructor has run before any Swift code, and a `dlopen` of the same soname would return that
/// already-initialised instance; re-executing the process is impossible for library users and the
/// test runner. OpenBLAS itself exports the two entry points its constructor uses,
/// `gotoblas_dynamic_quit` and `gotoblas_dynamic_init`; the second re-reads `OPENBLAS_CORETYPE`
/// and initialises the blocking parameters of the selected table. So on first use we pick the
/// core from the CPU's features (`/proc/cpuinfo` flags: AVX-512 F/DQ/BW/VL → `SkylakeX`,
/// AVX2+FMA → `Haswell`), switch only if the current table is of a lower family, verify a
/// product against a double-precision reference, and switch back if it does not match. Memory
/// buffers and the thread pool are independent of the kernel table, so re-selection is safe
/// before any concurrent BLAS call. `H2T_OPENBLAS_CORETYPE` overrides the choice: a core name, or
/// `keep` to leave OpenBLAS's own selection alone; otherwise `H2T_ISA` below the CPU's width (see
/// ``InstructionSet``) selects the table of that width.
public enum BLAS {
    /// `C = alpha * op(A) * op(B) + beta * C`, row-major; `op(X)` is `X` or its transpose.
    ///
    /// The first call (from any thread) selects OpenBLAS's kernels; see ``BLAS``.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        _ = selectedKernels
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The kernel selection made for this process (computed once, on first use).
    public static var configuration: BLASConfiguration { selectedKernels }

    /// Number of threads OpenBLAS uses inside one call.
    public static var threadCount: Int {
        _ = selectedKernels
        return Int(openblas_get_num_threads())
    }

    /// Runs `body` with OpenBLAS using at most `threads` threads per call: the one place where
    /// h2t-store sets OpenBLAS's thread count, which is process-wide.
    ///
    /// Scopes may nest and overlap across threads (a fit's workers inside its final-head scope,
    /// two ingests in one process): while any is open the count is the smallest limit asked for,
    /// so no scope oversubscribes the cores. When the last one closes, the count the process had
    /// before the first one opened is restored, unless someone else (an embedding caller) set
    /// another count meanwhile: theirs is then left in place. A caller that runs its own BLAS work
    /// concurrently and wants its count untouched throughout passes a ``Parallelism`` with
    /// `setsBLASThreads` off. Results do not depend on the count (`docs/architecture.md` §5).
    public static func withThreadLimit<Result>(_ threads: Int, _ body: () throws -> Result) rethrows -> Result {
        _ = selectedKernels
        let limit = Int32(max(1, threads))
        threadScopes.withLock { $0.open(limit) }
        defer { threadScopes.withLock { $0.close(limit) } }
        return try body()
    }

    /// Stops OpenBLAS's worker threads, for a process that never runs a product on more than
    /// one thread (the CLI: every scope above is single-threaded, and the work is split across
    /// h2t-store's own threads instead).
    ///
    /// OpenBLAS starts its pool when the library loads, and each worker spins (`sched_yield`) for
    /// about 2^28 cycles, roughly 0.1 s, before it sleeps: on two cores that took one core from a
    /// command's own workers during its start (8% of a 0.55 s `predict`'s CPU samples).
    ///
    /// The count is set to one first: `openblas_set_num_threads` restarts a stopped pool (it is
    /// OpenBLAS's re-initialisation after `fork`), so with the count already at one the scopes
    /// above never call it again. A later call that asks for more threads restarts the pool on
    /// demand, so this is safe whatever follows; a library embedder that keeps its own OpenBLAS
    /// threads simply does not call it. Returns whether this OpenBLAS build has the entry point
    /// (`blas_thread_shutdown_`, exported by the pthreads builds).
    @discardableResult
    public static func stopIdleThreadPool() -> Bool {
        #if canImport(Glibc)
        guard let symbol = threadPoolShutdown else { return false }
        typealias Shutdown = @convention(c) () -> Int32
        if openblas_get_num_threads() != 1 { openblas_set_num_threads(1) }
        _ = unsafeBitCast(symbol, to: Shutdown.self)()
        return true
        #else
        return false
        #endif
    }

    /// Starts the kernel selection (see ``BLAS``: a re-selection is verified against a reference,
    /// several milliseconds) on a thread of its own, so that the start of a command that will
    /// multiply matrices (reading a head, opening a store) overlaps it; the first product waits
    /// for it. The process also waits for it when it exits (`atexit`), so OpenBLAS's own exit
    /// never runs during a re-selection. Only for a process that will use BLAS: the CLI calls it
    /// for the commands that compute.
    public static func selectKernelsInBackground() {
        atexit { _ = BLAS.selectedKernels }
        Thread.detachNewThread { _ = BLAS.selectedKernels }
    }

    /// Whether this OpenBLAS can stop its pool (``stopIdleThreadPool()``), without stopping it.
    public static var canStopIdleThreadPool: Bool {
        #if canImport(Glibc)
        return threadPoolShutdown != nil
        #else
        return false
        #endif
    }

    #if canImport(Glibc)
    private static var threadPoolShutdown: UnsafeMutableRawPointer? { dlsym(nil, "blas_thread_shutdown_") }
    #endif

    /// The open ``withThreadLimit(_:_:)`` scopes.
    private static let threadScopes = Mutex(ThreadScopes())

        @usableFromInline
    static let selectedKernels: BLASConfiguration = KernelSelection.run()
}

/// The limits of the open ``BLAS/withThreadLimit(_:_:)`` scopes and what to restore after them.
private struct ThreadScopes {
    /// Open scopes' limits (a multiset: equal limits may be open together).
    var limits: [Int32] = []
    /// OpenBLAS's count before the first open scope.
    var saved: Int32 = 0
    /// The count the scopes last set.
    var applied: Int32 = 0

    mutating func open(_ limit: Int32) {
        if limits.isEmpty { saved = openblas_get_num_threads() }
        limits.append(limit)
        apply()
    }

    mutating func close(_ limit: Int32) {
        if let index = limits.lastIndex(of: limit) { limits.remove(at: index) }
        if !limits.isEmpty { return apply() }
        // Restore only what the scopes themselves changed.
        if openblas_get_num_threads() == applied, applied != saved { openblas_set_num_threads(saved) }
    }

    private mutating func apply() {
        let target = limits.min()!
        if openblas_get_num_threads() != target { openblas_set_num_threads(target) }
        applied = target
    }
}

/// Which OpenBLAS kernel table the process runs on, and why.
public struct BLASConfiguration: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The table OpenBLAS chose at load time (from CPUID or the inherited `OPENBLAS_CORETYPE`).
    public let initialCore: String
    /// The table in use after selection.
    public let core: String
    /// The table the CPU's features call for, if any was derived.
    public let preferredCore: String?
    /// Why `core` is what it is.
    public let reason: String
    /// Whether a product on the selected table was checked against a double-precision reference.
    public let verified: Bool

    /// One line for logs and `--version`-style output.
    public var description: String {
        "OpenBLAS core \(core) (loaded as \(initialCore); \(reason)\(verified ? ", verified" : ""))"
    }
}

/// The one-time kernel selection described on ``BLAS``.
enum KernelSelection {
    /// Ranks OpenBLAS x86-64 core names by vector width; unknown names rank lowest.
    static func family(_ core: String) -> Int {
        switch core.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 3
        case "haswell", "zen", "excavator", "steamroller": return 2
        case "sandybridge", "piledriver", "bulldozer": return 1
        default: return 0
        }
    }

    /// The preferred core for the CPU, from the kernel's view of its features (which already
    /// drops features the OS does not enable, e.g. AVX-512 without ZMM state saving).
    static func preferredCore() -> String? {
        #if os(Linux) && arch(x86_64)
        guard let text = try? readSmallFile("/proc/cpuinfo") else { return nil }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(line.split(separator: " ").map(String.init))
        if ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
        #else
        return nil
        #endif
    }

    static func readSmallFile(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw FileReadError.unreadable }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = fread(&buffer, 1, buffer.count, file)
            if got <= 0 { break }
            bytes.append(contentsOf: buffer[0..<got])
            if bytes.count > 4 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    enum FileReadError: Error { case unreadable }

    static func currentCore() -> String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name).trimmingCharacters()
    }

    /// Re-initialises OpenBLAS's dynamic dispatch with `OPENBLAS_CORETYPE = core`, restoring the
    /// variable afterwards so that child processes inherit the user's environment unchanged.
    static func reinitialise(to core: String) -> Bool {
        #if canImport(Glibc)
        guard let quitSymbol = dlsym(nil, "gotoblas_dynamic_quit"),
              let initSymbol = dlsym(nil, "gotoblas_dynamic_init") else { return false }
        typealias VoidFunction = @convention(c) () -> Void
        let quit = unsafeBitCast(quitSymbol, to: VoidFunction.self)
        let initialise = unsafeBitCast(initSymbol, to: VoidFunction.self)
        let previous = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
        setenv("OPENBLAS_CORETYPE", core, 1)
        quit()
        initialise()
        if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        return true
        #else
        return false
        #endif
    }

    /// Checks a few awkwardly shaped products (all four transpose combinations, odd sizes, with
    /// `beta`) against a double-precision reference.
    static func verify() -> Bool {
        // On the calling thread only: a product on OpenBLAS's pool leaves its idle threads
        // spinning (`sched_yield`) for about 0.1 s, on the cores the command's own workers are
        // about to use (it cost `predict` a core during its parallel read).
        let threads = openblas_get_num_threads()
        if threads != 1 { openblas_set_num_threads(1) }
        defer { if threads != 1 { openblas_set_num_threads(threads) } }
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: seed >> 11) % 2001 - 1000) / 1000
        }
        // Odd sizes across the micro-kernels' edges (M past 16 and 32, N past 256, K odd). The
        // middle one stays above 10^6 multiply-adds: below that, OpenBLAS's SkylakeX table sends
        // products to its small-matrix kernels, and the packed kernels that the backbone's and
        // predict's large products use would go unchecked. Every command on such a machine pays
        // for the reference (about 4 ms).
        for (m, n, k) in [(67, 45, 33), (48, 257, 96), (5, 1000, 17)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = (0..<(m * k)).map { _ in next() }
                let b = (0..<(k * n)).map { _ in next() }
                var c = (0..<(m * n)).map { _ in next() }
                let c0 = c
                let lda = ta ? m : k, ldb = tb ? k : n
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                                        Int32(m), Int32(n), Int32(k), 0.5, pa.baseAddress, Int32(lda),
                                        pb.baseAddress, Int32(ldb), 0.25, pc.baseAddress, Int32(n))
                        }
                    }
                }
                // The reference on contiguous rows of op(A) and columns of op(B), in Double: the
                // strided loop it replaces took about 25 ms, paid by every command that re-selects.
                var rowsA = [Double](repeating: 0, count: m * k), columnsB = [Double](repeating: 0, count: n * k)
                for i in 0..<m { for p in 0..<k { rowsA[i * k + p] = Double(ta ? a[p * lda + i] : a[i * lda + p]) } }
                for j in 0..<n { for p in 0..<k { columnsB[j * k + p] = Double(tb ? b[j * ldb + p] : b[p * ldb + j]) } }
                let fine = rowsA.withUnsafeBufferPointer { ra in
                    columnsB.withUnsafeBufferPointer { cb in
                        for i in 0..<m {
                            for j in 0..<n {
                                var sum = 0.0, magnitude = 0.0
                                let x = ra.baseAddress! + i * k, y = cb.baseAddress! + j * k
                                for p in 0..<k {
                                    sum += x[p] * y[p]
                                    magnitude += abs(x[p] * y[p])
                                }
                                let expected = 0.5 * sum + 0.25 * Double(c0[i * n + j])
                                if abs(Double(c[i * n + j]) - expected) > 1e-5 * (magnitude + 1) { return false }
                            }
                        }
                        return true
                    }
                }
                if !fine { return false }
            }
        }
        return true
    }

    static func run() -> BLASConfiguration {
        let initial = currentCore()
        let override = getenv("H2T_OPENBLAS_CORETYPE").map { String(cString: $0) }
        if let override, override.lowercased() == "keep" {
            return BLASConfiguration(initialCore: initial, core: initial, preferredCore: nil,
                                     reason: "H2T_OPENBLAS_CORETYPE=keep", verified: false)
        }
        // `H2T_ISA` below the CPU's width asks for the table of that width (measuring the narrower path).
        let capped = InstructionSet.isCapped ? InstructionSet.selected.openBLASCore : nil
        let preferred = override ?? capped ?? preferredCore()
        guard let preferred else {
            return BLASConfiguration(initialCore: initial, core: initial, preferredCore: nil,
                                     reason: "no preference derived for this CPU", verified: false)
        }
        if override == nil && capped == nil && family(initial) >= family(preferred) {
            return BLASConfiguration(initialCore: initial, core: initial, preferredCore: preferred,
                                     reason: "load-time choice is already of the preferred family", verified: false)
        }
        guard reinitialise(to: preferred) else {
            return BLASConfiguration(initialCore: initial, core: initial, preferredCore: preferred,
                                     reason: "OpenBLAS build has no dynamic dispatch to re-select", verified: false)
        }
        let selected = currentCore()
        if verify() {
            return BLASConfiguration(initialCore: initial, core: selected, preferredCore: preferred,
                                     reason: override != nil ? "H2T_OPENBLAS_CORETYPE"
                                         : capped != nil ? "\(InstructionSet.environmentVariable)=\(InstructionSet.selected)"
                                         : "selected from CPU features",
                                     verified: true)
        }
        _ = reinitialise(to: initial)
        return BLASConfiguration(initialCore: initial, core: currentCore(), preferredCore: preferred,
                                 reason: "\(selected) failed verification; reverted", verified: false)
    }
}

extension String {
    fileprivate func trimmingCharacters() -> String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\n" || last == "\t" { s.removeLast() }
        while let first = s.first, first == " " || first == "\n" || first == "\t" { s.removeFirst() }
        return String(s)
    }
}
