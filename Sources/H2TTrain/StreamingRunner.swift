import Foundation
import H2TCore

/// The stochastic path's work on one feature set: the cross-validation sweep and the final fits.
struct Runner {
    let featureSet: StreamingFeatureSet
    let stats: SetStatistics
    let protocolRows: RowPlan
    let labels: [Int]
    let classCount: Int
    let settings: FitSettings
    let scale: ScaleSettings
    let parallelism: Parallelism
    let log: ((String) -> Void)?

    var source: any RowSource { featureSet.source }
    var width: Int { source.columnCount }

    /// Kept columns of one model: which fold it leaves out (`nil`: the final fit) and how its
    /// inputs are scaled.
    struct KeptSpec {
        var fold: Int?
        var columns: [Int]
        var scaling: KeptTapScaling
    }

    /// One pass over every column, per-tap normalised (selection and the all-features baseline).
    func fullPass(seed: UInt64) -> StochasticPass {
        StochasticPass(source: source, readColumns: nil, forms: [InputForm(columns: nil, taps: source.taps, renormalize: true, scales: nil)],
                       labels: labels, classCount: classCount, settings: scale.stochastic, seed: seed, parallelism: parallelism)
    }

    func model(form: Int = 0, penalty: PrimalPenalty, fold: Int?, width: Int) -> StochasticModel {
        StochasticModel(form: form, penalty: penalty, roles: protocolRows.roles(excluding: fold), featureCount: width,
                        classCount: classCount, labels: labels)
    }

    func ridgePenalty(_ ridge: Double) -> PrimalPenalty { ridge > 0 ? .ridge(ridge) : .none }

    func lambdaScale(excluding fold: Int?) -> Double {
        settings.lambdaScale == .relativeToMax ? stats.lambdaMax(excluding: fold) : 1
    }

    /// The group-lasso solution a selection model reached, for ranking: scores from its weights,
    /// ties among zero rows broken by the norm of its averaged gradient table.
    func solution(_ model: StochasticModel, lambda: Double) -> GroupLassoSolution {
        let (w, b) = model.result
        let mean = model.gradientSum.map { $0 / Float(max(model.seenCount, 1)) }
        let norms = GroupSoftThreshold.rowNorms(mean, rows: width, columns: classCount).map { Float($0) }
        return GroupLassoSolution(lambda: lambda, weights: w, bias: b, gradientNorms: norms, classCount: classCount, report: model.report)
    }

    /// Correct predictions of `models` on the validation rows of `fold`.
    func correct(_ pass: StochasticPass, _ models: [StochasticModel], fold: Int) throws -> (correct: [Int], total: Int) {
        let rows = protocolRows.validation(fold)
        let logits = try pass.logits(models, rows: rows)
        let counts = logits.map { z in
            zip(SoftmaxCrossEntropy.predictions(logits: z, rowCount: rows.count, classCount: classCount), rows).filter { $0 == labels[$1] }.count
        }
        return (counts, rows.count)
    }

    /// This feature set's cross-validation rows (Head2Toe and all features; the probe too when
    /// `probe` names its tap), and its final full-width models at every grid point.
    struct CrossValidation {
        var rows: [CVRow]
        /// Final-fit selection models, one per `λ` of the grid (absolute `λ` in their penalty).
        var finalSelectors: [StochasticModel]
        /// Final-fit all-features heads, one per ridge of the grid.
        var finalAll: [StochasticModel]
    }

    /// Runs the cross-validation sweep. The final fit's full-width models (every grid point's,
    /// since the chosen one is not known yet) train in the same stream as the folds' models, so
    /// the full-width data is read once per epoch for both: at large N, decoding the windows costs
    /// more than the extra models' products.
    func crossValidate(probe: String?) throws -> CrossValidation {
        let folds = protocolRows.rule.validatedFolds
        let lambdas = settings.lambdas, ridges = settings.ridges
        var selection: [[StochasticModel]] = [], all: [[StochasticModel]] = []
        var scales: [Double] = []
        for f in folds {
            let lambdaMax = lambdaScale(excluding: f)
            scales.append(lambdaMax)
            selection.append(lambdas.map { model(penalty: .groupLasso($0 * lambdaMax), fold: f, width: width) })
            all.append(ridges.map { model(penalty: ridgePenalty($0), fold: f, width: width) })
        }
        let finalScale = lambdaScale(excluding: nil)
        let finalSelectors = lambdas.map { model(penalty: .groupLasso($0 * finalScale), fold: nil, width: width) }
        let finalAll = ridges.map { model(penalty: ridgePenalty($0), fold: nil, width: width) }
        log?("cross-validation (\(protocolRows.rule)) and final fit: \((folds.count + 1) * (lambdas.count + ridges.count)) full-width models, one stream")
        let pass = fullPass(seed: settings.seed)
        try pass.train(selection.flatMap { $0 } + all.flatMap { $0 } + finalSelectors + finalAll) { self.log?("  full width: epoch \($0)") }
        var allCorrect: [[Int]] = [], validated: [Int] = []
        for (i, f) in folds.enumerated() {
            let (counts, total) = try correct(pass, all[i], fold: f)
            allCorrect.append(counts)
            validated.append(total)
        }

        // Kept columns of every (fold, λ, fraction), then the probe's of every fold.
        var specs: [KeptSpec] = []
        var kept: [[[Int]]] = []
        for (i, f) in folds.enumerated() {
            kept.append(lambdas.indices.map { li in
                let solution = solution(selection[i][li], lambda: lambdas[li] * scales[i])
                let ranking = solution.ranking()
                return settings.fractions.map { fraction in
                    let columns = solution.selection(fraction: fraction, ranking: ranking)
                    specs.append(KeptSpec(fold: f, columns: columns, scaling: settings.keptTapScaling))
                    return columns.count
                }
            })
        }
        let probeColumns = probe.map { name in Array(source.taps.first { $0.name == name }!.columns) }
        if let probeColumns { for f in folds { specs.append(KeptSpec(fold: f, columns: probeColumns, scaling: .unit)) } }
        let (heads, _) = try keptPass(specs)
        var models: [[StochasticModel]] = []
        for (s, spec) in specs.enumerated() {
            models.append(ridges.map { model(form: s, penalty: ridgePenalty($0), fold: spec.fold, width: spec.columns.count) })
        }
        log?("cross-validation: \(models.count * ridges.count) heads on kept columns, one stream")
        try heads.train(models.flatMap { $0 }) { self.log?("  kept columns: epoch \($0)") }
        var keptCorrect: [[Int]] = []
        for (s, spec) in specs.enumerated() { keptCorrect.append(try correct(heads, models[s], fold: spec.fold!).correct) }

        // The table, pooled over the validated folds as the exact path pools them.
        func row(_ method: FitMethod, lambda: Double?, fraction: Double?, ridge: Double, kept: Int, correct: [Int]) -> CVRow {
            let folds = zip(correct, validated).map { Double($0) / Double(max($1, 1)) }
            return CVRow(method: method, featureSet: featureSet.name, solver: method == .head2toe ? 0 : nil, lambda: lambda, fraction: fraction,
                         ridge: ridge, keptFeatures: kept, cvAccuracy: Double(correct.reduce(0, +)) / Double(max(validated.reduce(0, +), 1)),
                         foldAccuracies: folds)
        }
        var rows: [CVRow] = []
        let perFold = lambdas.count * settings.fractions.count
        for (li, lambda) in lambdas.enumerated() {
            for (qi, fraction) in settings.fractions.enumerated() {
                for ri in ridges.indices {
                    let correct = folds.indices.map { keptCorrect[$0 * perFold + li * settings.fractions.count + qi][ri] }
                    rows.append(row(.head2toe, lambda: lambda, fraction: fraction, ridge: ridges[ri], kept: kept[0][li][qi], correct: correct))
                }
            }
        }
        for ri in ridges.indices {
            rows.append(row(.allFeatures, lambda: nil, fraction: nil, ridge: ridges[ri], kept: width, correct: folds.indices.map { allCorrect[$0][ri] }))
        }
        if let probeColumns {
            for ri in ridges.indices {
                let correct = folds.indices.map { keptCorrect[folds.count * perFold + $0][ri] }
                rows.append(row(.linearProbe, lambda: nil, fraction: nil, ridge: ridges[ri], kept: probeColumns.count, correct: correct))
            }
        }
        return CrossValidation(rows: rows, finalSelectors: finalSelectors, finalAll: finalAll)
    }

    /// A pass over the union of the specs' columns, one input form per spec, with each form's tap
    /// scales computed on its training rows. The columns are read once into memory when they fit
    /// what the budget leaves, else streamed from the source.
    func keptPass(_ specs: [KeptSpec]) throws -> (pass: StochasticPass, inMemory: Bool) {
        let union = Array(Set(specs.flatMap(\.columns))).sorted()
        let position = Dictionary(uniqueKeysWithValues: union.enumerated().map { ($0.element, $0.offset) })
        let n = source.rowCount
        let reserved = StreamingFit.minimumBytes(rowCount: n, width: width, classCount: classCount, settings: settings, scale: scale)
            + specs.count * settings.ridges.count * (3 * (union.count / max(specs.count, 1) + 1) * classCount * 4 + n * classCount * 4)
        let inMemory = n * union.count * CachedColumns.bytesPerValue(source) + reserved <= scale.memoryBudget
        let keptSource: any RowSource = try inMemory
            ? CachedColumns(source: source, columns: union, windowRows: scale.stochastic.windowRows) : source
        log?("kept columns: \(union.count) of \(width), \(inMemory ? "held in memory" : "streamed from the store")")
        let shares = try trainingShares(specs, union: union, position: position, source: keptSource, inMemory: inMemory)
        let forms = specs.enumerated().map { s, spec -> InputForm in
            let taps = source.taps.subset(spec.columns)
            let columns = spec.columns.map { position[$0]! }
            switch spec.scaling {
            case .unit: return InputForm(columns: columns, taps: taps, renormalize: true, scales: nil)
            case .trainingShare: return InputForm(columns: columns, taps: taps, renormalize: true, scales: shares[s])
            case .trainingConstant:
                return InputForm(columns: columns, taps: taps, renormalize: false, scales: trainingConstants(spec).map { 1 / $0 })
            }
        }
        let pass = StochasticPass(source: keptSource, readColumns: inMemory ? nil : union, forms: forms, labels: labels,
                                  classCount: classCount, settings: scale.stochastic, seed: settings.seed &+ 1, parallelism: parallelism)
        return (pass, inMemory)
    }

    /// Source tap index of each tap of `columns`' subset.
    func sourceTaps(_ columns: [Int]) -> [Int] {
        let index = Dictionary(uniqueKeysWithValues: source.taps.enumerated().map { ($0.element.name, $0.offset) })
        return source.taps.subset(columns).map { index[$0.name]! }
    }

    /// `KeptTapScaling.trainingConstant`'s constants: per kept tap, the RMS over the spec's
    /// training rows of the tap's full norm (1 where that is 0).
    func trainingConstants(_ spec: KeptSpec) -> [Float] {
        let t = stats.tapCount
        let roles = protocolRows.roles(excluding: spec.fold)
        let rows = roles.indices.filter { roles[$0] == 1 }
        return sourceTaps(spec.columns).map { tap in
            var sum = 0.0
            for row in rows { sum += Double(stats.norms[row * t + tap]) * Double(stats.norms[row * t + tap]) }
            let rms = (sum / Double(max(rows.count, 1))).squareRoot()
            return rms > 0 ? Float(rms) : 1
        }
    }

    /// `KeptTapScaling.trainingShare`'s factors of every spec that uses it (`nil` for the others):
    /// per kept tap, the RMS over the spec's training rows of the kept subset's norm in the
    /// per-tap normalised features. One pass over the kept columns sums each column's squared
    /// normalised value per fold; a spec's share adds the sums of its training folds.
    func trainingShares(_ specs: [KeptSpec], union: [Int], position: [Int: Int], source keptSource: any RowSource,
                        inMemory: Bool) throws -> [[Float]?] {
        guard specs.contains(where: { $0.scaling == .trainingShare }) else { return specs.map { _ in nil } }
        let t = stats.tapCount, folds = protocolRows.rule.folds, u = union.count
        let tapOf = sourceTaps(union).enumerated().flatMap { i, tap in
            [Int](repeating: tap, count: source.taps.subset(union)[i].width)
        }
        var sums = [Double](repeating: 0, count: folds * u)
        var rowsPerFold = [Int](repeating: 0, count: folds)
        let pass = StochasticPass(source: keptSource, readColumns: inMemory ? nil : union, forms: [], labels: labels, classCount: classCount,
                                  settings: scale.stochastic, seed: 0)
        try pass.forEachWindow(rows: protocolRows.finalTrain, epochSeed: nil) { raw, window in
            raw.values.withUnsafeBufferPointer { px in
                sums.withUnsafeMutableBufferPointer { ps in
                    for (r, row) in window.enumerated() {
                        let f = protocolRows.folds[row]
                        rowsPerFold[f] += 1
                        let xr = px.baseAddress! + r * u, target = ps.baseAddress! + f * u
                        for j in 0..<u {
                            let norm = stats.norms[row * t + tapOf[j]]
                            if norm > 0 { let v = Double(xr[j] / norm); target[j] += v * v }
                        }
                    }
                }
            }
        }
        return specs.map { spec -> [Float]? in
            guard spec.scaling == .trainingShare else { return nil }
            let included = (0..<folds).filter { $0 != spec.fold }
            let count = Double(max(included.reduce(0) { $0 + rowsPerFold[$1] }, 1))
            return source.taps.subset(spec.columns).map { tap in
                var sum = 0.0
                for j in tap.offset..<(tap.offset + tap.width) {
                    let column = position[spec.columns[j]]!
                    for f in included { sum += sums[f * u + column] }
                }
                return Float((sum / count).squareRoot())
            }
        }
    }

    /// The columns of `columns` grouped by tap, as indices inside each tap.
    func perTap(_ columns: [Int]) -> [KeptTapIndices] {
        source.taps.subset(columns).map { tap in
            let original = source.taps.first { $0.name == tap.name }!
            return KeptTapIndices(tap: tap.name, indices: columns[tap.offset..<(tap.offset + tap.width)].map { $0 - original.offset })
        }
    }

    /// Head2Toe's final fit at the chosen point from its trained `selector`: the chosen fraction
    /// of its ranking and a head on those columns.
    func finalHead2Toe(best: Head2ToeFit.BestPoint, selector: StochasticModel) throws -> (result: MethodResult, inMemory: Bool) {
        guard case let .groupLasso(lambda) = selector.penalty else { preconditionFailure("a selection model") }
        let columns = solution(selector, lambda: lambda).selection(fraction: best.fraction)
        let head = try finalKept(method: .head2toe, columns: columns, scaling: settings.keptTapScaling, ridge: best.ridge,
                                 cvAccuracy: best.accuracy)
        var result = head.result
        result.fraction = best.fraction
        result.lambda = best.lambda
        result.lambdaAbsolute = lambda
        result.solver = best.solver
        result.selectionReport = selector.report
        return (result, head.inMemory)
    }

    /// The all-features baseline's final head from its trained model.
    func finalAllFeatures(_ head: StochasticModel, ridge: Double, cvAccuracy: Double) -> MethodResult {
        let (w, b) = head.result
        let columns = Array(0..<width)
        return MethodResult(method: .allFeatures, featureSet: featureSet.name, fraction: nil, lambda: nil, lambdaAbsolute: nil, solver: nil,
                            ridge: ridge, inputRule: .perTapUnitL2, cvAccuracy: cvAccuracy, testAccuracy: nil, test: nil,
                            selectedIndices: columns, selectedPerTap: perTap(columns),
                            head: LinearHead(inputCount: width, classCount: classCount, weights: w, bias: b), headReport: head.report,
                            selectionReport: nil)
    }

    /// A final head on kept `columns` (Head2Toe's or the probe's), its tap scales folded into the
    /// weights so that it applies to inputs formed by the scaling's input rule.
    func finalKept(method: FitMethod, columns: [Int], scaling: KeptTapScaling, ridge: Double,
                   cvAccuracy: Double) throws -> (result: MethodResult, inMemory: Bool) {
        let spec = KeptSpec(fold: nil, columns: columns, scaling: scaling)
        let (pass, inMemory) = try keptPass([spec])
        let head = model(penalty: ridgePenalty(ridge), fold: nil, width: columns.count)
        try pass.train([head]) { self.log?("  final \(method) head: epoch \($0)") }
        let (w, b) = head.result
        let form = pass.forms[0]
        var linear = LinearHead(inputCount: columns.count, classCount: classCount, weights: w, bias: b)
        if let scales = form.scales { linear = linear.foldingTapScales(scales, taps: form.taps) }
        return (MethodResult(method: method, featureSet: featureSet.name, fraction: nil, lambda: nil, lambdaAbsolute: nil, solver: nil,
                             ridge: ridge, inputRule: scaling.inputRule, cvAccuracy: cvAccuracy, testAccuracy: nil, test: nil,
                             selectedIndices: columns, selectedPerTap: perTap(columns), head: linear, headReport: head.report,
                             selectionReport: nil), inMemory)
    }
}
