import ArgumentParser
import CMalloc
import Foundation
import H2TCore
import H2TStore

@main
struct H2TStoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "h2t-store",
        abstract: "Feature store and model registry for Head2Toe transfer learning.",
        discussion: "Activations from every layer of a frozen backbone are computed once, pooled, and kept in LMDB with zstd; heads train on them in seconds.",
        subcommands: [Ingest.self, Fit.self, Classify.self, List.self, Show.self, DiskUsage.self, Verify.self, Export.self, Merge.self,
                      Heads.self, Head.self, Alias.self, Tag.self, Remove.self, GarbageCollect.self, Predict.self, Eval.self])

    static func main() {
        // Every product the CLI runs is single-threaded inside its own workers (see `Parallelism`):
        // OpenBLAS's pool would only spin on their cores for its first 0.1 s.
        BLAS.stopIdleThreadPool()
        #if os(Linux)
        // A segment's tiles and LMDB's overflow pages are buffers of a few MB, allocated and freed
        // segment after segment. Above glibc's default threshold (128 KB) each is a fresh map
        // whose pages the kernel zeroes on first touch; kept in the heap, freed memory is reused.
        // glibc raises the threshold by itself after freeing a large map, which a command may or
        // may not happen to do early; fixed here, every run allocates alike. The process keeps
        // up to 1 GB of freed memory until it exits (docs/benchmarks.md, "Fewer fresh pages").
        mallopt(M_MMAP_THRESHOLD, 32 << 20)
        mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
        do {
            var command = try parseAsRoot()
            // Their first product would otherwise select OpenBLAS's kernels on the command's
            // critical path (a twentieth of a 0.2 s `predict` on a machine where it re-selects).
            if command is MultipliesMatrices { BLAS.selectKernelsInBackground() }
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

/// A command that runs BLAS products (the backbone, training, applying a head).
protocol MultipliesMatrices {}

extension Ingest: MultipliesMatrices {}
extension Fit: MultipliesMatrices {}
extension Classify: MultipliesMatrices {}
extension Predict: MultipliesMatrices {}
extension Eval: MultipliesMatrices {}

/// Options every command that opens a store shares.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: "Store directory (default: $H2T_STORE or ./h2t.store).")
    var store: String?

    var path: String { store ?? ProcessInfo.processInfo.environment["H2T_STORE"] ?? "h2t.store" }

    /// Opens the store; read-only commands refuse to create one. Its reads decode on
    /// `parallelism`'s threads.
    func open(create: Bool, parallelism: Parallelism = .default) throws -> FeatureStore {
        try FeatureStore(path: path, create: create, readOnly: false, parallelism: parallelism)
    }
}

/// `--threads`, for every command that computes (backbone passes, decoding, training).
struct ThreadOptions: ParsableArguments {
    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
        "Threads to compute with (default: $H2T_THREADS, else every core this process may run on, within a cgroup CPU quota).",
        discussion: "Results are the same whatever the count."))
    var threads: Int?

    /// `--threads`, else `H2T_THREADS`, else every core of the process's CPU affinity within a cgroup CPU quota.
    var parallelism: Parallelism {
        get throws {
            if let threads { return Parallelism(threads: threads) }
            do {
                return try Parallelism.fromEnvironment() ?? .allCores
            } catch let error as ParallelismError {
                throw ValidationError(error.description)
            }
        }
    }

    func validate() throws {
        try checkRange("--threads", threads, .positiveCount)
        _ = try parallelism
    }
}

/// `--json` output.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print machine-readable JSON on stdout (documented in schemas/) and no progress.")
    var json = false
}

/// `--quiet`, for the commands that report progress on stderr (ingest, fit, verify).
struct ProgressOptions: ParsableArguments {
    @Flag(name: .long, help: ArgumentHelp(
        "Print no progress or status lines on stderr (errors still go there); --json implies it.",
        discussion: "On a terminal progress is one redrawn line; on a file or pipe, a plain line every 10 s (H2T_PROGRESS_INTERVAL seconds) and one at the end."))
    var quiet = false

    /// Whether progress and status lines go to stderr, given the command's `--json`.
    func reports(json: Bool) -> Bool { !quiet && !json }
}

/// Prints `value` as pretty, key-sorted JSON with snake_case keys on stdout (every `--json`
/// output; outputs carry no dictionaries keyed by user names, which the key strategy would rewrite).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// A dataset as `--json` outputs show it (splits as a list, not a map keyed by user names).
struct DatasetView: Encodable {
    struct Split: Encodable {
        var name: String
        var count: Int
    }

    var name: String
    var classNames: [String]
    var splits: [Split]

    init(_ manifest: DatasetManifest) {
        name = manifest.name
        classNames = manifest.classNames
        splits = manifest.splits.sorted { $0.key < $1.key }.map { Split(name: $0.key, count: $0.value) }
    }
}

/// Human-readable byte counts.
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}

/// Left-aligned text table.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
            .trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}
