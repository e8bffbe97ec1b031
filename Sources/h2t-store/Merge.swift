import ArgumentParser
import Foundation
import H2TCore
import H2TStore

/// `h2t-store merge`: combines the sealed shards of one sharded ingest into a store.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge the sealed shards of one sharded ingest (--shard K/N) into a store.",
        discussion: """
        Tiles are copied as stored (only their row numbers change); dataset items follow shard order, so the result \
        equals a single-process ingest of all the inputs. Idempotent and resumable: shards already merged are skipped, \
        and a re-run after an interruption completes the merge. Unsealed, missing, foreign or damaged shards, and \
        examples the target holds with other features or labels, are refused before anything is written.
        """)

    @Option(name: .long, help: "The store to merge into (created if absent).")
    var into: String
    @Argument(help: "The shard store directories: every shard 0..N-1 of one run.")
    var shards: [String] = []

    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var progressOptions: ProgressOptions

    func validate() throws {
        guard !shards.isEmpty else { throw ValidationError("give the shard directories to merge (every shard of the run)") }
    }

    func run() throws {
        let store = try FeatureStore(path: into, create: true, parallelism: try threadOptions.parallelism)
        let progress = ProgressReporter(label: "merge", unit: "tiles", enabled: progressOptions.reports(json: output.json))
        let summary = try store.merge(shardPaths: shards, progress: progress)
        if output.json { return try printJSON(summary) }
        let merged = summary.shards.filter { !$0.alreadyMerged }.count
        print("merged \(merged) of \(summary.shards.count) shards of plan \(summary.plan.prefix(12)) into \(summary.target): \(summary.rowsAdded) rows, \(summary.itemsAdded) items, \(summary.tilesCopied) tiles copied (\(formatBytes(summary.tileBytes)), \(String(format: "%.0f", summary.copyMegabytesPerSecond)) MB/s), \(summary.tilesReencoded) re-encoded, \(String(format: "%.1f", summary.seconds)) s")
        print(table(["SHARD", "PATH", "ROWS", "ITEMS", "TILES", "STATE"], summary.shards.map {
            ["\($0.shard)", $0.path, "\($0.rowsAdded)", "\($0.itemsAdded)", "\($0.tilesCopied)", $0.alreadyMerged ? "already merged" : "merged"]
        }))
    }
}
