import ArgumentParser
import H2TRegistry

/// `h2t-store gc`.
struct GarbageCollect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Find feature sets (tiles, rows, segments) and cached matrices that no head or dataset references; remove them with --apply.")

    @Flag(name: .long, help: "Remove what was found (default: dry run).") var apply = false
    @Option(name: .long, help: "heads-or-datasets (default): a feature set stays if a head reads it or a dataset has rows in it; heads-only: only heads keep feature sets.")
    var policy: String = GCPolicy.headsOrDatasets.rawValue

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        guard let chosen = GCPolicy(rawValue: policy) else {
            throw ValidationError("--policy must be \(GCPolicy.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        let report = try openRegistry(storeOptions).collectGarbage(policy: chosen, apply: apply)
        if output.json { return try printJSON(report) }
        let verb = apply ? "removed" : "would remove"
        if report.featureSets.isEmpty && report.matrices.isEmpty { return print("nothing to collect (\(report.keptFeatureSets) feature sets and \(report.keptMatrices) cached matrices are referenced)") }
        if !report.featureSets.isEmpty {
            print(table(["FEATURE SET", "F_T", "ROWS", "BYTES", "REASON"], report.featureSets.map {
                [String($0.id.prefix(12)), $0.targetSize.map(String.init) ?? "-", "\($0.rows)", formatBytes($0.tileBytes), $0.reason]
            }))
        }
        if !report.matrices.isEmpty {
            print(table(["MATRIX", "FEATURE SET", "SPLIT", "BYTES", "REASON"], report.matrices.map {
                [String($0.key.prefix(12)), String($0.featureSet.prefix(12)), "\($0.dataset)/\($0.split)", formatBytes($0.bytes), $0.reason]
            }))
        }
        print("\(verb) \(report.featureSets.count) feature sets, \(report.matrices.count) cached matrices, \(report.backbones.count) backbones: \(formatBytes(report.bytes))"
              + (apply ? "" : " (dry run; add --apply)"))
    }
}
