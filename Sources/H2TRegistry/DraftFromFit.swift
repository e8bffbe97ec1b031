import Foundation
import H2TBackbone
import H2TCore
import H2TStore
import H2TTrain

extension HeadDraft {
    /// The Head2Toe head of a fit report as a draft. The report names feature sets by store id (or
    /// a prefix); the store supplies their taps, target sizes and backbone.
    ///
    /// - Parameters:
    ///   - method: which of the report's heads to register (`head2toe` by default; the baselines can
    ///     be registered too, e.g. as a reference head).
    public init(task: String, report: FitReport, classNames: [String], lineage: FitLineage, store: FeatureStore,
                method: FitMethod = .head2toe, tags: [String: String] = [:]) throws {
        let chosen = report[method]
        var infos: [String: FeatureSetInfo] = [:]
        func info(_ name: String) throws -> FeatureSetInfo {
            if let hit = infos[name] { return hit }
            let found = try store.featureSet(name)
            infos[name] = found
            return found
        }
        let fs = try info(chosen.featureSet)
        let manifest = fs.manifest
        let backbone = try store.backbone(manifest.backbone)
        guard classNames.count == report.classCount else {
            throw RegistryError.invalidHead("\(classNames.count) class names for a report of \(report.classCount) classes")
        }
        // Group the global indices by tap with the feature set's layout (the authority on offsets).
        var selection: [TapIndices] = []
        var t = 0
        for column in chosen.selectedIndices {
            while t < manifest.taps.count, column >= manifest.taps[t].offset + manifest.taps[t].width { t += 1 }
            guard t < manifest.taps.count, column >= manifest.taps[t].offset else {
                throw RegistryError.invalidHead("selected column \(column) is outside feature set \(fs.id.prefix(12)) (width \(manifest.width))")
            }
            let tap = manifest.taps[t]
            if selection.last?.order != t {
                selection.append(TapIndices(tap: tap.name, order: t, offset: tap.offset, width: tap.width, indices: []))
            }
            selection[selection.count - 1].indices.append(column - tap.offset)
        }
        func score(_ m: MethodResult) throws -> MethodScore {
            MethodScore(method: m.method, featureSet: try info(m.featureSet).id, keptFeatures: m.selectedIndices.count,
                        cvAccuracy: m.cvAccuracy, testAccuracy: m.testAccuracy)
        }
        let lambdaScale: String? = method == .head2toe ? report.settings.lambdaScale.rawValue : nil
        let curves = try report.cvTable.map { row in
            let rowInfo = try info(row.featureSet)
            return CVPoint(method: row.method, featureSet: rowInfo.id, targetSize: rowInfo.manifest.targetSize, solver: row.solver,
                           lambda: row.lambda, fraction: row.fraction, ridge: row.ridge, keptFeatures: row.keptFeatures, cvAccuracy: row.cvAccuracy,
                           foldAccuracies: row.foldAccuracies)
        }
        var testMetrics: [String: ClassificationMetrics] = [:]
        for fitMethod in FitMethod.allCases { if let test = report[fitMethod].test { testMetrics[fitMethod.rawValue] = test } }
        self.init(
            task: task, classNames: classNames, selection: selection, normalization: NormalizationRule(chosen.inputRule),
            weights: chosen.head.weights, bias: chosen.head.bias,
            hyperParameters: HyperParameters(method: method, targetSize: manifest.targetSize, fraction: chosen.fraction, lambda: chosen.lambda,
                                             lambdaAbsolute: chosen.lambdaAbsolute, lambdaScale: lambdaScale, solver: chosen.solver,
                                             folds: report.settings.folds, headL2: chosen.ridge,
                                             settings: try JSONValue(encoding: report.settings)),
            metrics: HeadMetrics(head: try score(chosen), linearProbe: try score(report.linearProbe),
                                 allFeatures: try score(report.allFeatures)),
            cvCurves: curves, testMetrics: testMetrics,
            lineage: HeadLineage(featureSet: fs.id, backbone: manifest.backbone, architecture: backbone.architecture, dataset: lineage.dataset,
                                 train: SplitLineage(split: lineage.trainSplit, digest: lineage.trainDigest, count: lineage.trainCount),
                                 test: lineage.testSplit.map { SplitLineage(split: $0, digest: lineage.testDigest ?? "", count: report.testCount) },
                                 seed: report.settings.seed,
                                 sourceImage: Self.probeSourceImage(store: store, dataset: lineage.dataset, split: lineage.trainSplit),
                                 plan: report.plan),
            tags: tags)
        guard chosen.head.inputCount == model.inputCount, chosen.head.classCount == classNames.count else {
            throw RegistryError.invalidHead("the \(method) head has \(chosen.head.inputCount) inputs and \(chosen.head.classCount) classes, the selection \(model.inputCount) and the dataset \(classNames.count)")
        }
    }
}

extension HeadDraft {
    /// The size of the training split's source images, when its first examples were ingested from
    /// image files (an IDX stack, or PNG/JPEG files) that are still readable and all share one size;
    /// otherwise `nil`. Best effort: it only informs the size check of prediction on new images.
    static func probeSourceImage(store: FeatureStore, dataset: String, split: String, sample: Int = 8) -> SourceImageSize? {
        guard let items = try? store.split(dataset: dataset, split: split) else { return nil }
        var sizes = Set<SourceImageSize>()
        var idxSizes: [String: SourceImageSize?] = [:]
        for id in items.examples.prefix(sample) {
            guard let record = try? store.example(id), FileManager.default.fileExists(atPath: record.source) else { return nil }
            if record.name.contains("#") {
                if idxSizes[record.source] == nil {
                    idxSizes[record.source] = .some((try? IDX.readImages(path: record.source)).map { SourceImageSize(height: $0.height, width: $0.width, channels: 1) })
                }
                guard let size = idxSizes[record.source]! else { return nil }
                sizes.insert(size)
            } else {
                guard let image = try? ImageDecoder.decode(contentsOfFile: record.source) else { return nil }
                sizes.insert(SourceImageSize(height: image.height, width: image.width, channels: image.channels))
            }
        }
        return sizes.count == 1 ? sizes.first : nil
    }
}

extension Registry {
    /// Registers the head of a fit: builds the draft from the report and the lineage, then
    /// registers it as the next version of `task` (see `register(_:)`).
    @discardableResult
    public func register(task: String, report: FitReport, classNames: [String], lineage: FitLineage,
                         method: FitMethod = .head2toe, tags: [String: String] = [:]) throws -> HeadRecord {
        try register(try HeadDraft(task: task, report: report, classNames: classNames, lineage: lineage, store: store,
                                   method: method, tags: tags))
    }
}
