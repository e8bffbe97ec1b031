import Foundation

/// How many threads h2t-store computes with: the one parallelism policy of every library API
/// that computes (backbone passes, ingest, reads and decoding, training, prediction).
///
/// The default (``default``) is `H2T_THREADS` when that is set, else every core this process
/// may run on (``Parallel/defaultWorkers``: the `sched_getaffinity` mask, so `taskset`, cgroup
/// cpusets and Slurm's binding are honoured, bounded by a cgroup CPU quota, ``CgroupCPULimit``,
/// so `docker run --cpus` and Kubernetes CPU limits are too). Results never depend on the thread count: work
/// is cut into pieces whose shapes do not depend on it, each on single-threaded BLAS
/// (``withBLAS(_:)``; `docs/architecture.md` §5).
public struct Parallelism: Sendable, Hashable, CustomStringConvertible {
    /// Threads to run on, at least 1.
    public let threads: Int
    /// Whether h2t-store may set OpenBLAS's (process-wide) thread count while it computes, inside
    /// the scopes of ``BLAS/withThreadLimit(_:_:)``. An embedder that runs its own BLAS work
    /// concurrently and wants its own setting left untouched turns this off (h2t-store's products
    /// then run with whatever OpenBLAS is set to; their results are the same).
    public var setsBLASThreads: Bool

    /// `threads` threads (at least 1; bad user input goes through ``parse(_:source:)``).
    public init(threads: Int, setsBLASThreads: Bool = true) {
        precondition(threads >= 1, "Parallelism needs at least one thread, got \(threads)")
        self.threads = threads
        self.setsBLASThreads = setsBLASThreads
    }

    /// One thread.
    public static let serial = Parallelism(threads: 1)

    /// Every core this process may run on.
    public static var allCores: Parallelism { Parallelism(threads: Parallel.defaultWorkers) }

    /// The environment variable embedders set to bound h2t-store's threads.
    public static let environmentVariable = "H2T_THREADS"

    /// `H2T_THREADS` if it is set and valid, else ``allCores``. A malformed `H2T_THREADS` is
    /// reported by ``fromEnvironment(_:)`` (the CLI refuses it before any work); library calls
    /// fall back to every core rather than fail deep inside a computation.
    public static var `default`: Parallelism {
        (try? fromEnvironment()) ?? allCores
    }

    /// The thread count `H2T_THREADS` asks for, `nil` when it is unset or empty.
    ///
    /// - Throws: ``ParallelismError`` when it is not a positive whole number.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Parallelism? {
        guard let text = environment[environmentVariable], !text.isEmpty else { return nil }
        return try parse(text, source: environmentVariable)
    }

    /// Parses a thread count given as text by `source` (an option or variable name, for the message).
    public static func parse(_ text: String, source: String) throws -> Parallelism {
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)), value >= 1 else {
            throw ParallelismError(source: source, value: text)
        }
        return Parallelism(threads: value)
    }

    /// `threads` workers for `items` independent items: never more than the items, at least one.
    public func workers(items: Int) -> Int { max(1, min(threads, items)) }

    /// Runs `body` with OpenBLAS single-threaded, unless ``setsBLASThreads`` is off (see
    /// ``BLAS/withThreadLimit(_:_:)``).
    ///
    /// h2t-store never runs OpenBLAS's own threads: their kernels round differently with the
    /// thread count (a final head trained with 4 OpenBLAS threads differed in its last bits from
    /// one trained with 1). Its threads run independent products instead (slices of a batch,
    /// cross-validation tasks, final heads, tiles), each single-threaded and shaped the same
    /// whatever the thread count, so results are bit-identical.
    public func withBLAS<Result>(_ body: () throws -> Result) rethrows -> Result {
        guard setsBLASThreads else { return try body() }
        return try BLAS.withThreadLimit(1, body)
    }

    /// `"4 threads"`.
    public var description: String { threads == 1 ? "1 thread" : "\(threads) threads" }
}

/// A thread count that is not a positive whole number.
public struct ParallelismError: Error, CustomStringConvertible, Sendable {
    /// Where it came from (`--threads`, `H2T_THREADS`).
    public var source: String
    /// The text given.
    public var value: String

    /// One line naming the source.
    public var description: String { "\(source) must be a positive whole number of threads, got '\(value)'" }
}
