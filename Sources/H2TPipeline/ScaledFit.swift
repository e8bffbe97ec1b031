import Foundation
import H2TCore
import H2TStore
import H2TTrain

/// A split's rows of one feature set, read from the store a window at a time through the query
/// layer (the stochastic path's `RowSource`).
struct StoreRowSource: RowSource {
    let store: FeatureStore
    let featureSet: String
    let examples: [ExampleID]
    let taps: [TapColumns]
    let columnCount: Int
    let rowGroups: [Int]
    let valuesAreBFloat16: Bool
    /// Rows of this source per storage segment.
    let segmentRows: [Int: Int]
    /// At most this many rows' segments are mapped by one store read (see `read`).
    let mappedRowsPerRead: Int

    init(store: FeatureStore, info: FeatureSetInfo, examples: [ExampleID], mappedRowsPerRead: Int) throws {
        self.store = store
        featureSet = info.id
        self.examples = examples
        taps = info.manifest.taps
        columnCount = info.manifest.width
        valuesAreBFloat16 = info.manifest.codec.dtype == .bfloat16
        rowGroups = try store.storageSegments(featureSet: info.id, examples: examples)
        segmentRows = Dictionary(rowGroups.map { ($0, 1) }, uniquingKeysWith: +)
        self.mappedRowsPerRead = mappedRowsPerRead
    }

    var rowCount: Int { examples.count }

    /// Reads `rows` a run of segments at a time and releases the store's mapped pages after each
    /// run, so the resident set holds the segments of about `mappedRowsPerRead` rows, not the
    /// store's size: rows scattered over the store (the held-out and validation rows) touch a
    /// segment each.
    func read(rows: [Int], columns: [Int]?) throws -> FeatureMatrix {
        let runs = self.runs(rows)
        if runs.count == 1 { return try readReleasing(rows, columns: columns) }
        let width = columns?.count ?? columnCount
        var matrix = FeatureMatrix(rowCount: rows.count, columnCount: width, taps: columns.map { taps.subset($0) } ?? taps)
        for run in runs {
            let part = try readReleasing(Array(rows[run]), columns: columns)
            part.values.withUnsafeBufferPointer { source in
                matrix.values.withUnsafeMutableBufferPointer { target in
                    (target.baseAddress! + run.lowerBound * width).update(from: source.baseAddress!, count: part.values.count)
                }
            }
        }
        return matrix
    }

    /// Consecutive runs of `rows` whose distinct segments hold at most `mappedRowsPerRead` rows
    /// (at least one segment per run).
    func runs(_ rows: [Int]) -> [Range<Int>] {
        var runs: [Range<Int>] = [], start = 0, mapped = 0
        var segments = Set<Int>()
        for (i, row) in rows.enumerated() {
            let segment = rowGroups[row]
            guard !segments.contains(segment) else { continue }
            let size = segmentRows[segment] ?? 1
            if !segments.isEmpty, mapped + size > mappedRowsPerRead {
                runs.append(start..<i)
                (start, mapped) = (i, 0)
                segments.removeAll(keepingCapacity: true)
            }
            segments.insert(segment)
            mapped += size
        }
        runs.append(start..<rows.count)
        return runs
    }

    /// One store read, then the store's mapped pages released (the rows are decoded).
    func readReleasing(_ rows: [Int], columns: [Int]?) throws -> FeatureMatrix {
        let matrix = try store.read(featureSet: featureSet, examples: rows.map { examples[$0] }, columns: columns)
        try store.releaseMappedPages()
        try matrix.validate(featureSet: featureSet, split: "training rows")
        return matrix
    }
}

extension FitPipeline {
    /// Trains on the checked request with the solver `request.scale` resolves to: the exact path
    /// on the full matrices read into memory, or the stochastic path streaming them from the store.
    /// Returns the report (its `plan` filled in) and the seconds spent reading features up front.
    static func train(store: FeatureStore, request: FitRequest, checked: CheckedRequest, settings: FitSettings,
                      log: ((String) -> Void)?, progress: ProgressReporter?) throws -> (report: FitReport, readSeconds: Double) {
        let (train, infos) = (checked.train, checked.infos)
        let n = train.examples.count
        let scale = request.scale
        let solver = try scale.resolve(rowCount: n, widths: infos.map(\.manifest.width))
        let clock = ContinuousClock()
        let readStart = clock.now
        if solver == .stochastic {
            let sets = try infos.map { info -> StreamingFeatureSet in
                StreamingFeatureSet(name: info.id, source: try StoreRowSource(store: store, info: info, examples: train.examples,
                                                                                mappedRowsPerRead: 2 * scale.stochastic.windowRows))
            }
            log?("stochastic solver: \(n) rows streamed in windows of \(scale.stochastic.windowRows), memory budget \(ScaleSettings.describe(bytes: scale.memoryBudget))")
            let report = try StreamingFit.run(featureSets: sets, trainLabels: train.labels, classCount: checked.classNames.count,
                                              settings: settings, scale: scale, parallelism: store.parallelism, log: log)
            return (report, 0)
        }
        var inputs: [FeatureSetInput] = []
        for info in infos {
            log?("reading \(n) × \(info.manifest.width) features of \(info.id.prefix(12)) (F_T \(info.manifest.targetSize))")
            // All columns: the matrix carries the feature set's tap layout.
            let features = try store.read(featureSet: info.id, examples: train.examples)
            try features.validate(featureSet: info.id, split: "\(request.dataset)/\(request.trainSplit)")
            inputs.append(FeatureSetInput(name: info.id, train: features))
        }
        let readSeconds = seconds(clock.now - readStart)
        log?("cross-validating \(settings.folds) folds × \(inputs.count) feature sets × \(settings.lambdas.count) λ × \(settings.fractions.count) fractions × \(settings.ridges.count) ridges")
        var report = try Head2ToeFit.run(featureSets: consume inputs, trainLabels: train.labels, classCount: checked.classNames.count,
                                         settings: settings, parallelism: store.parallelism, progress: progress)
        report.plan = FitPlan(solver: .exact, requested: scale.solver, validation: ValidationRule.kFold(folds: settings.folds).description,
                              memoryBudget: scale.memoryBudget)
        return (report, readSeconds)
    }
}
