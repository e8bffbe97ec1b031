import ArgumentParser
import H2TStore

/// `h2t-store ls`: backbones, feature sets and datasets in the store.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List feature sets and datasets.")

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Listing: Encodable {
        struct FeatureSet: Encodable {
            var id: String, backbone: String, architecture: String, targetSize: Int, width: Int, rows: Int, taps: Int, dtype: String
        }
        var featureSets: [FeatureSet]
        var datasets: [DatasetView]
    }

    func run() throws {
        let store = try storeOptions.open(create: false)
        let backbones = Dictionary(try store.allBackbones().map { ($0.id, $0.manifest) }, uniquingKeysWith: { a, _ in a })
        let listing = Listing(
            featureSets: try store.allFeatureSets().map { info in
                .init(id: info.id, backbone: info.manifest.backbone, architecture: backbones[info.manifest.backbone]?.architecture ?? "?",
                      targetSize: info.manifest.targetSize, width: info.manifest.width, rows: info.rowCount,
                      taps: info.manifest.taps.count, dtype: info.manifest.codec.dtype.rawValue)
            },
            datasets: try store.allDatasets().map(DatasetView.init))
        if output.json { return try printJSON(listing) }
        print("Feature sets")
        print(table(["ID", "BACKBONE", "F_T", "FEATURES", "TAPS", "EXAMPLES", "DTYPE"],
                    listing.featureSets.map { [String($0.id.prefix(12)), $0.architecture, "\($0.targetSize)", "\($0.width)", "\($0.taps)", "\($0.rows)", $0.dtype] }))
        print("\nDatasets")
        print(table(["NAME", "CLASSES", "SPLITS"],
                    listing.datasets.map { d in [d.name, "\(d.classNames.count)", d.splits.map { "\($0.name)=\($0.count)" }.joined(separator: " ")] }))
    }
}
