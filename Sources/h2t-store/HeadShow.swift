import ArgumentParser
import H2TRegistry

/// `h2t-store head show REF`.
struct HeadShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a head: scores, baselines, selected features per tap, lineage.")

    @Argument(help: "NAME (latest version), NAME@vN or NAME@alias.") var reference: String
    @Flag(name: .long, help: "Include weights and bias in --json output.") var weights = false

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let ref = try parseReference(reference)
        let head = try registry.head(ref)
        let exact = HeadReference(task: head.task, selector: .version(head.version))
        let tags = try registry.tags(exact)
        let aliases = try registry.aliases(task: head.task).filter { $0.version == head.version }.map(\.alias)
        if output.json { return try printJSON(HeadView(head, tags: tags, aliases: aliases, includeWeights: weights)) }
        let m = head.metrics, l = head.lineage, h = head.hyperParameters
        print("Head \(head.reference)" + (aliases.isEmpty ? "" : "  (aliases: \(aliases.joined(separator: ", ")))"))
        print("  created      \(head.createdAt) by h2t-store \(l.toolVersion)")
        print("  classes      \(head.classNames.count): \(head.classNames.joined(separator: ", "))")
        print("  features     \(head.inputCount) of feature set \(l.featureSet.prefix(12)) (F_T \(h.targetSize)), \(head.selection.count) taps")
        print("  normalise    \(head.normalization.rule)")
        print("  chosen       fraction \(h.fraction.map { "\($0)" } ?? "-"), λ \(h.lambda.map { "\($0)" } ?? "-") (absolute \(h.lambdaAbsolute.map { String(format: "%.3g", $0) } ?? "-")), head ridge \(h.headL2.map { "\($0)" } ?? "-"), \(h.folds.map(String.init) ?? "-") folds")
        print("  backbone     \(l.architecture) (\(l.backbone.prefix(12)))")
        print("  data         \(l.dataset)/\(l.train.split) (\(l.train.count) examples, digest \(l.train.digest.prefix(12)))"
              + (l.test.map { ", tested on \(l.dataset)/\($0.split) (\($0.count), digest \($0.digest.prefix(12)))" } ?? ""))
        print("  seed         \(l.seed)")
        if !tags.isEmpty { print("  tags         \(tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))") }
        print("")
        print(table(["METHOD", "CV", "TEST", "FEATURES"], [m.head, m.linearProbe, m.allFeatures].compactMap { $0 }.map {
            [$0.method.rawValue, percent($0.cvAccuracy), percent($0.testAccuracy), "\($0.keptFeatures)"]
        }))
        print("")
        print(table(["TAP", "ORDER", "KEPT", "OF"], head.selection.map { [$0.tap, "\($0.order)", "\($0.indices.count)", "\($0.width)"] }))
    }
}
