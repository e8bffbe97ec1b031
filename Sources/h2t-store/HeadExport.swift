import ArgumentParser
import H2TRegistry

/// `h2t-store head export REF`.
struct HeadExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a self-contained head file (safetensors: weight, bias, selected indices; record as metadata JSON).",
        discussion: "PyTorch: `from safetensors.torch import load_file; t = load_file(path); lin = torch.nn.Linear(t['weight'].shape[1], t['weight'].shape[0]); lin.load_state_dict({'weight': t['weight'], 'bias': t['bias']})`; when the record's normalization rule is per_tap_unit_l2_over_kept, first scale each group of inputs with equal `selected_tap` to unit L2 per example; raw_selected heads take the stored values as they are.")

    @Argument(help: "NAME, NAME@vN or NAME@alias.") var reference: String
    @Option(name: .long, help: "Output file (default: <task>-v<N>.safetensors).") var out: String?

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.head-export-output/1"
        var head: String
        var path: String
        var featureSet: String
        var backbone: String
        var inputCount: Int
        var classCount: Int
    }

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let ref = try parseReference(reference)
        let resolved = try registry.head(ref)
        let path = out ?? "\(resolved.task.replacingOccurrences(of: "/", with: "_"))-v\(resolved.version).safetensors"
        let head = try registry.export(HeadReference(task: resolved.task, selector: .version(resolved.version)), to: path)
        let result = Output(head: head.reference, path: path, featureSet: head.lineage.featureSet, backbone: head.lineage.backbone,
                            inputCount: head.inputCount, classCount: head.classNames.count)
        if output.json { return try printJSON(result) }
        print("wrote \(path): \(head.reference), \(head.inputCount) features × \(head.classNames.count) classes, feature set \(head.lineage.featureSet.prefix(12))")
    }
}
