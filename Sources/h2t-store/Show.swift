import ArgumentParser
import H2TStore

/// `h2t-store show`: one feature set (manifest, taps) or one dataset.
struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a feature set (by id prefix) or a dataset (by name).")

    @Argument(help: "Feature set id (or a prefix of at least 4 hex digits), or a dataset name.")
    var name: String

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct FeatureSetView: Encodable {
        var id: String
        var rows: Int
        var segments: Int
        var manifest: FeatureSetManifest
        var backbone: BackboneManifest
    }

    func run() throws {
        let store = try storeOptions.open(create: false)
        if let dataset = try? store.dataset(name) {
            if output.json { return try printJSON(DatasetView(dataset)) }
            print("Dataset \(dataset.name)")
            print("  classes: \(dataset.classNames.joined(separator: ", "))")
            for (split, count) in dataset.splits.sorted(by: { $0.key < $1.key }) {
                print("  split \(split): \(count) examples, digest \(try store.splitDigest(dataset: name, split: split).prefix(16))")
            }
            return
        }
        let info: FeatureSetInfo
        do {
            info = try store.featureSet(name)
        } catch StoreError.unknownFeatureSet(_, let known) {
            let datasets = try store.allDatasets().map(\.name)
            throw StoreError.invalidArgument("'\(name)' is neither a feature set (known: \(known.joined(separator: ", "))) nor a dataset (known: \(datasets.joined(separator: ", ")))")
        }
        let view = FeatureSetView(id: info.id, rows: info.rowCount, segments: info.segmentCount, manifest: info.manifest,
                                  backbone: try store.backbone(info.manifest.backbone))
        if output.json { return try printJSON(view) }
        let m = info.manifest
        print("Feature set \(info.id)")
        print("  backbone   \(view.backbone.architecture) (\(m.backbone.prefix(12)))")
        print("  pooling    Head2Toe, target size \(m.targetSize)")
        print("  codec      \(m.codec.dtype.rawValue), \(m.codec.compressed ? "zstd level \(m.codec.level) per byte plane" : "uncompressed"), \(m.codec.frameWidth) columns per frame, \(m.columnBlock) columns per tile")
        print("  examples   \(info.rowCount) in \(info.segmentCount) segments")
        print("  features   \(m.width) from \(m.taps.count) taps\n")
        print(table(["TAP", "SHAPE", "COLUMNS", "WIDTH"], m.taps.map {
            [$0.name, ($0.sourceShape ?? []).map(String.init).joined(separator: "×"), "\($0.offset)..<\($0.offset + $0.width)", "\($0.width)"]
        }))
    }
}
