import Foundation
import H2TCore

/// How a model's inputs are formed from the raw columns a pass reads: a subset of them (or all),
/// each tap's slice re-normalised to unit L2 per row if asked, then multiplied by one scale per tap.
/// Per-tap normalisation of whole rows, Head2Toe's kept inputs (`KeptTapScaling`) and the probe's
/// inputs are all of this form.
struct InputForm: Sendable {
    /// Indices into the pass's read columns, ascending; `nil`: all of them.
    var columns: [Int]?
    /// The formed inputs' tap layout.
    var taps: [TapColumns]
    /// Re-normalise each tap's slice to unit L2 (a zero slice stays zero).
    var renormalize: Bool
    /// One factor per tap of `taps`, applied after re-normalisation; `nil`: 1.
    var scales: [Float]?

    var width: Int { taps.last.map { $0.offset + $0.width } ?? 0 }

    /// The formed inputs of `raw`'s rows `range`.
    func form(_ raw: FeatureMatrix, rows range: Range<Int>) -> FeatureMatrix {
        let columns = self.columns ?? Array(0..<raw.columnCount)
        var out = FeatureMatrix(rowCount: range.count, columnCount: columns.count, taps: taps) { buffer in
            raw.values.withUnsafeBufferPointer { source in
                for (r, row) in range.enumerated() {
                    let s = source.baseAddress! + row * raw.columnCount
                    let t = buffer.baseAddress! + r * columns.count
                    if self.columns == nil {
                        t.update(from: s, count: columns.count)
                    } else {
                        for (j, c) in columns.enumerated() { t[j] = s[c] }
                    }
                }
            }
        }
        if renormalize { out.normalizeTaps() }
        if let scales { out.scaleTaps(by: scales) }
        return out
    }
}

/// One linear model trained by a stochastic pass: its inputs, penalty and rows, and the state of
/// proximal SAGA (Defazio, Bach & Lacoste-Julien 2014) in its mini-batch form.
///
/// Why SAGA: for a linear model the stored per-row gradient is the `K`-vector of logit gradients,
/// so the table costs `N × K` floats, and each step still needs one forward and one backward
/// product of the batch, as plain SGD does; but the variance of the step vanishes at the optimum,
/// so a constant step converges (to exact zero rows under the group penalty) instead of
/// wandering, and the stopping rule sees a settled objective.
final class StochasticModel: @unchecked Sendable {
    // @unchecked: a model is mutated by one pass on one thread at a time; passes run in sequence.
    /// Index into the pass's input forms.
    let form: Int
    let penalty: PrimalPenalty
    /// Per source row: 1 trains, 2 is held out for the stopping rule, 0 neither.
    let roles: [UInt8]
    let trainCount: Int
    let featureCount: Int
    let classCount: Int
    var weights: [Float]
    var bias: [Float]
    /// `Σ x_i g_iᵀ` and `Σ g_i` over the rows in the table.
    var gradientSum: [Float]
    var biasGradientSum: [Double]
    /// Last logit gradient of each row (`N × K`), and whether the row has one yet.
    var table: [Float]
    var seen: [Bool]
    var seenCount = 0
    /// Rows first seen in the batch being applied.
    var pendingSeen = 0
    var step: Float = 0
    var initialBias: [Float]
    /// The mean `μ` of the model's inputs (from the first window; empty until then). The model is
    /// trained on centred inputs, `z = W(x − μ) + b`, an exact reparametrisation of `Wx + b` with
    /// the same penalty on `W`: it removes the large curvature along the mean of non-negative
    /// features, which would otherwise bound the step. `effectiveBias` folds `μ` back.
    var center: [Float] = []
    // Stopping rule.
    var best: (weights: [Float], bias: [Float], objective: Double)?
    var strikes = 0
    var epochs = 0
    var stopped = false
    var converged = false
    var restarts = 0
    var baseline = Double.infinity

    init(form: Int, penalty: PrimalPenalty, roles: [UInt8], featureCount d: Int, classCount k: Int, labels: [Int]) {
        self.form = form
        self.penalty = penalty
        self.roles = roles
        self.featureCount = d
        self.classCount = k
        trainCount = roles.reduce(0) { $0 + ($1 == 1 ? 1 : 0) }
        let trainLabels = roles.indices.filter { roles[$0] == 1 }.map { Int32(labels[$0]) }
        initialBias = GroupLasso.priorBias(labels: trainLabels, classCount: k)
        weights = [Float](repeating: 0, count: d * k)
        bias = initialBias
        gradientSum = weights
        biasGradientSum = [Double](repeating: 0, count: k)
        table = [Float](repeating: 0, count: roles.count * k)
        seen = [Bool](repeating: false, count: roles.count)
    }

    /// Starts over from zero weights (after a step that diverged).
    func reset() {
        weights = [Float](repeating: 0, count: featureCount * classCount)
        bias = initialBias
        gradientSum = weights
        biasGradientSum = [Double](repeating: 0, count: classCount)
        table = [Float](repeating: 0, count: table.count)
        seen = [Bool](repeating: false, count: seen.count)
        seenCount = 0
        best = nil
        strikes = 0
    }

    /// The penalty at `w`.
    func penaltyValue(_ w: [Float]) -> Double {
        switch penalty {
        case .none: return 0
        case let .ridge(mu): return 0.5 * mu * Vec.squaredNorm(w)
        case let .groupLasso(lambda): return lambda * GroupSoftThreshold.rowNorms(w, rows: featureCount, columns: classCount).reduce(0, +)
        }
    }

    /// Logits of the formed batch `x` (`rows × d`) at `w`, `b`.
    func logits(_ x: UnsafePointer<Float>, rows: Int, weights w: [Float], bias b: [Float]) -> [Float] {
        let k = classCount, d = featureCount
        var z = [Float](repeating: 0, count: rows * k)
        if d > 0 {
            w.withUnsafeBufferPointer { pw in
                z.withUnsafeMutableBufferPointer { pz in
                    BLAS.sgemm(m: rows, n: k, k: d, a: x, lda: d, b: pw.baseAddress!, ldb: k, c: pz.baseAddress!, ldc: k)
                }
            }
        }
        for r in 0..<rows { for c in 0..<k { z[r * k + c] += b[c] } }
        return z
    }

    /// One proximal SAGA step of every model in `models` (all of one input form) on the batch
    /// `x` whose rows are the source rows `rows`. The models' weights are stacked side by side so
    /// that the forward and the backward product read the batch once for all of them.
    static func step(_ models: [StochasticModel], _ x: UnsafePointer<Float>, rows: ArraySlice<Int>, labels: [Int],
                     parallelism: Parallelism) {
        guard let first = models.first else { return }
        let k = first.classCount, d = first.featureCount, b = rows.count, m = models.count, mk = m * k
        var stacked = [Float](repeating: 0, count: d * mk)
        stacked.withUnsafeMutableBufferPointer { ps in
            // Each model fills its own columns: disjoint writes.
            let target = UnsafeSendable(ps.baseAddress!)
            try? Parallel.forEachWorker(itemCount: m, parallelism: parallelism) { _, next in
                while let i = next() {
                    models[i].weights.withUnsafeBufferPointer { pw in
                        for j in 0..<d { for c in 0..<k { target.value[j * mk + i * k + c] = pw[j * k + c] } }
                    }
                }
            }
        }
        var z = [Float](repeating: 0, count: b * mk)
        var u = [Float](repeating: 0, count: d * mk)
        if d > 0 {
            stacked.withUnsafeBufferPointer { pw in
                z.withUnsafeMutableBufferPointer { pz in
                    SlicedProducts.forward(x, rows: b, depth: d, weights: pw.baseAddress!, columns: mk, into: pz.baseAddress!,
                                           parallelism: parallelism)
                }
            }
        }
        var delta = [Float](repeating: 0, count: b * mk)
        let trained = models.enumerated().map { i, model in model.tableUpdate(z, stride: mk, offset: i * k, rows: rows, labels: labels, delta: &delta) }
        guard trained.contains(where: { $0 > 0 }) else { return }
        if d > 0 {
            delta.withUnsafeBufferPointer { pd in
                u.withUnsafeMutableBufferPointer { pu in
                    SlicedProducts.backward(x, rows: b, depth: d, delta: pd.baseAddress!, columns: mk, into: pu.baseAddress!,
                                            parallelism: parallelism)
                }
            }
        }
        // The models' updates are independent: one per worker at a time.
        let (gradients, changes) = (u, delta)
        try? Parallel.forEachWorker(itemCount: m, parallelism: parallelism) { _, next in
            while let i = next() {
                if trained[i] > 0 { models[i].apply(gradients, delta: changes, stride: mk, offset: i * k, batchRows: b, trained: trained[i]) }
            }
        }
    }

    /// For the batch's logits `z` (this model's columns at `offset` of rows of `stride`), writes the
    /// change of each training row's logit gradient into `delta` (same layout), records the new
    /// gradients in the table, and returns the number of training rows in the batch.
    func tableUpdate(_ z: [Float], stride: Int, offset: Int, rows: ArraySlice<Int>, labels: [Int], delta: inout [Float]) -> Int {
        let k = classCount
        var m = 0, newlySeen = 0
        var p = [Double](repeating: 0, count: k)
        var logits = [Float](repeating: 0, count: k)
        let shifted = effectiveBias(weights, bias)
        for (r, row) in rows.enumerated() where roles[row] == 1 {
            m += 1
            for c in 0..<k { logits[c] = z[r * stride + offset + c] + shifted[c] }
            let (_, sum) = logits.withUnsafeBufferPointer { zb in
                p.withUnsafeMutableBufferPointer { Softmax.exponentials(of: zb.baseAddress!, count: k, into: $0.baseAddress!) }
            }
            let label = labels[row]
            let wasSeen = seen[row]
            if !wasSeen { newlySeen += 1; seen[row] = true }
            for c in 0..<k {
                let g = Float(p[c] / sum - (c == label ? 1 : 0))
                delta[r * stride + offset + c] = wasSeen ? g - table[row * k + c] : g
                table[row * k + c] = g
            }
        }
        pendingSeen = newlySeen
        return m
    }

    /// The proximal step from the batch's `Xᵀ Δ` (`u`, this model's columns at `offset`) over
    /// `trained` training rows: `v = (1/m) Σ Δ + mean of the table`, then the penalty's prox.
    func apply(_ u: [Float], delta: [Float], stride: Int, offset: Int, batchRows: Int, trained m: Int) {
        let k = classCount, d = featureCount
        let inverseM = 1 / Float(m)
        let inverseSeen: Float = seenCount > 0 ? 1 / Float(seenCount) : 0
        let eta = step
        var ub = [Float](repeating: 0, count: k)
        for r in 0..<batchRows { for c in 0..<k { ub[c] += delta[r * stride + offset + c] } }
        let mu = center.isEmpty ? [Float](repeating: 0, count: d) : center
        weights.withUnsafeMutableBufferPointer { pw in
            u.withUnsafeBufferPointer { pu in
                gradientSum.withUnsafeMutableBufferPointer { ps in
                    for j in 0..<d {
                        for c in 0..<k {
                            // The gradient of the centred inputs: Xᵀ Δ − μ (1ᵀ Δ).
                            let i = j * k + c, g = pu[j * stride + offset + c] - mu[j] * ub[c]
                            pw[i] -= eta * (g * inverseM + ps[i] * inverseSeen)
                            ps[i] += g
                        }
                    }
                }
            }
            switch penalty {
            case .none: break
            case let .ridge(mu):
                let shrink = Float(1 / (1 + Double(eta) * mu))
                for i in 0..<pw.count { pw[i] *= shrink }
            case let .groupLasso(lambda):
                GroupSoftThreshold.apply(pw.baseAddress!, rows: d, columns: k, threshold: Double(eta) * lambda)
            }
        }
        for c in 0..<k {
            bias[c] -= eta * Float(Double(ub[c]) * Double(inverseM) + biasGradientSum[c] * Double(inverseSeen))
            biasGradientSum[c] += Double(ub[c])
        }
        seenCount += pendingSeen
    }

    /// Sets the centre and the step from the curvature of the formed first window: `1/L_b`, with
    /// `L_b` the mini-batch smoothness of Gazagnadou et al. 2019 built from the window's
    /// mean-Hessian and per-row bounds over this model's training-row count. Not the theory's
    /// `1/(3 L_b)`: the bounds already carry a margin, a batch of 128 keeps the variance low, and
    /// on ill-conditioned features (a tiny ridge) progress per epoch is proportional to the step;
    /// a step that does diverge is caught by the stopping rule, which halves it and starts over.
    func setStep(_ curvature: WindowCurvature, batchSize: Int) {
        center = curvature.center
        let n = Double(max(trainCount, 2)), b = Double(min(batchSize, max(trainCount, 1)))
        let lBatch = n * (b - 1) / (b * (n - 1)) * curvature.meanBound + (n - b) / (b * (n - 1)) * curvature.rowBound
        step = Float(1 / max(lBatch, 1e-6))
    }

    /// Records the held-out objective of the epoch just finished and applies the stopping rule:
    /// keep the best iterate; stop after `patience` epochs without a relative improvement of
    /// `tolerance`. A non-finite objective, or one far above the start's, halves the step and
    /// starts over (at most 5 times).
    func endEpoch(objective: Double, settings: StochasticSettings) {
        epochs += 1
        if !objective.isFinite || objective > 2 * baseline + 1 {
            if restarts < 5 {
                restarts += 1
                step /= 2
                reset()
                return
            }
            stopped = true
            return
        }
        if let best, objective >= best.objective * (1 - settings.tolerance) {
            strikes += 1
            if objective < best.objective { self.best = (weights, bias, objective) }
        } else {
            strikes = 0
            best = (weights, bias, objective)
        }
        if strikes >= settings.patience {
            stopped = true
            converged = true
        } else if epochs >= settings.maxEpochs {
            stopped = true
        }
    }

    /// The kept iterate (the best held-out objective; the last one when there was no check).
    var result: (weights: [Float], bias: [Float]) {
        let (w, b) = best.map { ($0.weights, $0.bias) } ?? (weights, bias)
        return (w, effectiveBias(w, b))
    }

    /// The bias of uncentred inputs: `b − Wᵀμ`.
    func effectiveBias(_ w: [Float], _ b: [Float]) -> [Float] {
        guard !center.isEmpty else { return b }
        let k = classCount
        var out = b.map(Double.init)
        for j in 0..<featureCount where center[j] != 0 {
            for c in 0..<k { out[c] -= Double(center[j]) * Double(w[j * k + c]) }
        }
        return out.map { Float($0) }
    }

    /// A solver report of the kept iterate.
    var report: SolverReport {
        let result = self.result
        let active = GroupSoftThreshold.rowNorms(result.weights, rows: featureCount, columns: classCount).filter { $0 > 0 }.count
        return SolverReport(iterations: epochs, objective: best?.objective ?? .nan, converged: converged, restarts: restarts,
                            lipschitz: Double(1 / max(step, 1e-30)), activeRows: active)
    }
}

/// The curvature of a linear softmax model's loss on a formed window `x` (`rows × d`), from which
/// each model's step follows (`StochasticModel.setStep`): the inputs' mean `μ` (models train on
/// centred inputs), the mean-Hessian bound `L` (power iteration on the centred window with the
/// bias column) and the per-row bound `L_max` (largest centred row norm); both with a safety
/// margin, since they come from one window.
struct WindowCurvature {
    let center: [Float]
    let meanBound: Double
    let rowBound: Double

    init(_ x: UnsafePointer<Float>, rows w: Int, columns d: Int, seed: UInt64) {
        var mean = [Double](repeating: 0, count: d)
        for r in 0..<w { for j in 0..<d { mean[j] += Double(x[r * d + j]) } }
        let mu = mean.map { Float($0 / Double(max(w, 1))) }
        var rng = SplitMix64(seed: seed)
        var v = (0..<d).map { _ in Float(rng.below(1 << 20)) / Float(1 << 20) + 0.5 }
        var c: Float = 1
        var eigen = 0.0
        var u = [Float](repeating: 0, count: w)
        for _ in 0..<20 {
            let norm = (Vec.squaredNorm(v) + Double(c * c)).squareRoot()
            guard norm > 0 else { break }
            for i in 0..<d { v[i] /= Float(norm) }
            c /= Float(norm)
            v.withUnsafeBufferPointer { pv in
                u.withUnsafeMutableBufferPointer { pu in
                    BLAS.sgemm(m: w, n: 1, k: d, a: x, lda: d, b: pv.baseAddress!, ldb: 1, c: pu.baseAddress!, ldc: 1)
                }
            }
            let shift = c - zip(mu, v).reduce(Float(0)) { $0 + $1.0 * $1.1 }
            for r in 0..<w { u[r] += shift }
            var next = [Float](repeating: 0, count: d)
            u.withUnsafeBufferPointer { pu in
                next.withUnsafeMutableBufferPointer { pn in
                    BLAS.sgemm(transA: true, m: d, n: 1, k: w, a: x, lda: d, b: pu.baseAddress!, ldb: 1, c: pn.baseAddress!, ldc: 1)
                }
            }
            c = u.reduce(0, +)
            for j in 0..<d { next[j] -= mu[j] * c }
            v = next
            eigen = (Vec.squaredNorm(v) + Double(c * c)).squareRoot()
        }
        var rowMax = 0.0
        for r in 0..<w {
            var s = 1.0
            for j in 0..<d { let v = Double(x[r * d + j] - mu[j]); s += v * v }
            rowMax = max(rowMax, s)
        }
        center = mu
        meanBound = 1.2 * eigen / Double(max(w, 1)) / 2
        rowBound = 1.5 * rowMax / 2
    }
}

/// Passes over a `RowSource` that train (and then apply) many `StochasticModel`s at once: each
/// window is read once and serves every model, whatever its rows, inputs or penalty.
struct StochasticPass {
    let source: any RowSource
    /// Columns read from the source (ascending; `nil`: all).
    let readColumns: [Int]?
    let forms: [InputForm]
    /// Labels of every source row.
    let labels: [Int]
    let classCount: Int
    let settings: StochasticSettings
    let seed: UInt64
    /// Threads of the batch products (`SlicedProducts`).
    var parallelism: Parallelism = .default

    /// Reads `rows` in windows (shuffled per `epochSeed`, or in storage order when `nil`) and
    /// calls `body` with each window's raw matrix and row list.
    func forEachWindow(rows: [Int], epochSeed: UInt64?, _ body: (FeatureMatrix, [Int]) throws -> Void) throws {
        let groups = source.rowGroups
        let windows = epochSeed.map { EpochPlan.windows(rows: rows, groups: groups, windowRows: settings.windowRows, seed: $0) }
            ?? EpochPlan.sequential(rows: rows, groups: groups, windowRows: settings.windowRows)
        for window in windows { try body(try source.read(rows: window, columns: readColumns), window) }
    }

    /// Trains `models` until each one's stopping rule stops it (held-out objective on the rows
    /// whose role is 2), or `maxEpochs`; `progress` counts epochs.
    func train(_ models: [StochasticModel], progress: ((Int) -> Void)? = nil) throws {
        guard !models.isEmpty else { return }
        let n = source.rowCount
        let trainRows = (0..<n).filter { row in models.contains { $0.roles[row] == 1 } }
        let checkRows = (0..<n).filter { row in models.contains { $0.roles[row] == 2 } }
        for model in models { model.baseline = priorObjective(model) }
        // The held-out rows are measured after every epoch: read once, not once per epoch (they
        // are scattered over the storage segments, so each read decodes nearly every segment).
        let heldOut = try readInOrder(checkRows)
        var epoch = 0
        var stepsSet = false
        while models.contains(where: { !$0.stopped }) {
            epoch += 1
            let active = models.filter { !$0.stopped }
            try forEachWindow(rows: trainRows, epochSeed: seed &+ UInt64(epoch) &* 0x9E37_79B9) { raw, window in
                for (f, form) in forms.enumerated() {
                    let users = active.filter { $0.form == f }
                    guard !users.isEmpty else { continue }
                    if !stepsSet {
                        // The curvature depends on the window and the form only: one estimate
                        // serves every model of the form.
                        withFormed(raw, form: form, rows: 0..<window.count) { x in
                            let curvature = WindowCurvature(x, rows: window.count, columns: users[0].featureCount, seed: seed)
                            for model in users where model.step == 0 { model.setStep(curvature, batchSize: settings.batchSize) }
                        }
                    }
                    // A form of every column needs no gathering: formed once, batches are slices.
                    let whole = form.columns == nil ? form.form(raw, rows: 0..<window.count) : nil
                    for start in stride(from: 0, to: window.count, by: settings.batchSize) {
                        let range = start..<min(start + settings.batchSize, window.count)
                        let step = { (x: UnsafePointer<Float>) in
                            StochasticModel.step(users, x, rows: window[range], labels: labels, parallelism: parallelism)
                        }
                        if let whole {
                            whole.values.withUnsafeBufferPointer { step($0.baseAddress! + start * whole.columnCount) }
                        } else {
                            withFormed(raw, form: form, rows: range, step)
                        }
                    }
                }
                stepsSet = true
            }
            let objectives = try heldOutObjectives(active, rows: checkRows, cached: heldOut)
            for (model, objective) in zip(active, objectives) { model.endEpoch(objective: objective, settings: settings) }
            progress?(epoch)
        }
    }

    /// The raw rows `rows` (at the pass's read columns), in that order, read in storage order.
    func readInOrder(_ rows: [Int]) throws -> FeatureMatrix {
        let position = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($0.element, $0.offset) })
        let width = readColumns?.count ?? source.columnCount
        var values = [Float](repeating: 0, count: rows.count * width)
        var taps: [TapColumns] = []
        try forEachWindow(rows: rows, epochSeed: nil) { raw, window in
            taps = raw.taps
            raw.values.withUnsafeBufferPointer { source in
                values.withUnsafeMutableBufferPointer { target in
                    for (r, row) in window.enumerated() {
                        (target.baseAddress! + position[row]! * width).update(from: source.baseAddress! + r * width, count: width)
                    }
                }
            }
        }
        return FeatureMatrix(rowCount: rows.count, columnCount: width, wrapping: values, taps: taps)
    }

    /// Calls `body` with the formed inputs of `raw`'s rows `range` (row-major, the form's width).
    func withFormed(_ raw: FeatureMatrix, form: InputForm, rows range: Range<Int>, _ body: (UnsafePointer<Float>) -> Void) {
        let x = form.form(raw, rows: range)
        x.values.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Mean cross-entropy of each model on its held-out rows (role 2) plus its penalty; a model
    /// with no held-out row is measured on its training rows instead.
    /// `cached` holds the raw rows of `checkRows` (in that order, `readInOrder`).
    func heldOutObjectives(_ models: [StochasticModel], rows checkRows: [Int], cached: FeatureMatrix? = nil) throws -> [Double] {
        let roles = models.map { model in checkRows.contains { model.roles[$0] == 2 } ? UInt8(2) : 1 }
        let rows = roles.contains(1) ? (0..<source.rowCount).filter { row in models.indices.contains { models[$0].roles[row] == roles[$0] } }
            : checkRows
        let logits = try self.logits(models, rows: rows, current: true, cached: rows == checkRows ? cached : nil)
        let k = classCount
        return models.indices.map { i in
            let mine = rows.indices.filter { models[i].roles[rows[$0]] == roles[i] }
            guard !mine.isEmpty else { return .nan }
            let z = mine.flatMap { logits[i][($0 * k)..<(($0 + 1) * k)] }
            let loss = SoftmaxCrossEntropy.evaluate(logits: z, labels: mine.map { Int32(labels[rows[$0]]) }, classCount: k)
            return loss + models[i].penaltyValue(models[i].weights)
        }
    }

    /// The objective of the start (`W = 0`, prior bias) on a model's held-out rows: the yardstick
    /// of divergence.
    func priorObjective(_ model: StochasticModel) -> Double {
        var rows = model.roles.indices.filter { model.roles[$0] == 2 }
        if rows.isEmpty { rows = model.roles.indices.filter { model.roles[$0] == 1 } }
        let z = rows.flatMap { _ in model.initialBias }
        return SoftmaxCrossEntropy.evaluate(logits: z, labels: rows.map { Int32(labels[$0]) }, classCount: classCount)
    }

    /// Logits (`rows.count × K`, in `rows` order) of every model on `rows`: at the current
    /// iterate, or at the kept one (`current: false`).
    /// `cached`, when given, holds the raw rows of `rows` in that order: nothing is read.
    func logits(_ models: [StochasticModel], rows: [Int], current: Bool = false, cached: FeatureMatrix? = nil) throws -> [[Float]] {
        let k = classCount
        var out = models.map { _ in [Float](repeating: 0, count: rows.count * k) }
        let position = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($0.element, $0.offset) })
        let parameters = models.map { current ? (weights: $0.weights, bias: $0.effectiveBias($0.weights, $0.bias)) : $0.result }
        func windows(_ body: (FeatureMatrix, [Int]) throws -> Void) throws {
            guard let cached else { return try forEachWindow(rows: rows, epochSeed: nil, body) }
            for start in stride(from: 0, to: rows.count, by: settings.windowRows) {
                let range = start..<min(start + settings.windowRows, rows.count)
                try body(try cached.read(rows: Array(range), columns: nil), Array(rows[range]))
            }
        }
        try windows { raw, window in
            for (f, form) in forms.enumerated() {
                let users = models.indices.filter { models[$0].form == f }
                guard !users.isEmpty else { continue }
                let x = form.form(raw, rows: 0..<window.count)
                x.values.withUnsafeBufferPointer { px in
                    for i in users {
                        let z = models[i].logits(px.baseAddress!, rows: window.count, weights: parameters[i].0, bias: parameters[i].1)
                        for (r, row) in window.enumerated() {
                            let p = position[row]!
                            for c in 0..<k { out[i][p * k + c] = z[r * k + c] }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// One linear model trained by the stochastic pass, for library users and checks: mini-batch
/// proximal SAGA on the rows of a source as they are (no normalisation), with the stopping rule
/// measured on `heldOut` rows (or, with none, on the training rows).
public enum StochasticSolver {
    /// The penalty of the model.
    public enum Penalty: Sendable, Hashable {
        /// `μ/2 ‖W‖²` (bias unpenalised).
        case ridge(Double)
        /// `λ Σ_i ‖W_i‖₂` over feature rows (bias unpenalised).
        case groupLasso(Double)
    }

    /// Trains on `rows` (default: every row not in `heldOut`); returns the kept iterate's
    /// weights (`D × K`, row-major), bias and report (`iterations` counts epochs).
    public static func fit(source: some RowSource, labels: [Int], classCount: Int, penalty: Penalty, rows: [Int]? = nil,
                           heldOut: [Int] = [], settings: StochasticSettings = StochasticSettings(),
                           seed: UInt64 = 0) throws -> (weights: [Float], bias: [Float], report: SolverReport) {
        try settings.validate()
        guard labels.count == source.rowCount else {
            throw TrainError.shapeMismatch(what: "labels", expected: source.rowCount, actual: labels.count)
        }
        var roles = [UInt8](repeating: rows == nil ? 1 : 0, count: source.rowCount)
        for row in rows ?? [] { roles[row] = 1 }
        for row in heldOut { roles[row] = 2 }
        let primal: PrimalPenalty = switch penalty {
        case let .ridge(mu): mu > 0 ? .ridge(mu) : .none
        case let .groupLasso(lambda): .groupLasso(lambda)
        }
        let model = StochasticModel(form: 0, penalty: primal, roles: roles, featureCount: source.columnCount, classCount: classCount,
                                    labels: labels)
        let pass = StochasticPass(source: source, readColumns: nil,
                                  forms: [InputForm(columns: nil, taps: source.taps, renormalize: false, scales: nil)],
                                  labels: labels, classCount: classCount, settings: settings, seed: seed)
        try pass.train([model])
        let (w, b) = model.result
        return (w, b, model.report)
    }
}

/// The two products of a stochastic step, cut into fixed slices run on the fit's threads, each a
/// single-threaded GEMM: the slices' shapes do not depend on the thread count, so neither do the
/// results (docs/architecture.md §5).
enum SlicedProducts {
    /// Rows per slice of the forward product.
    static let rowSlice = 32
    /// Feature columns per slice of the backward product.
    static let depthSlice = 2048

    /// `z (rows × columns) = x (rows × depth) · w (depth × columns)`, in slices of rows.
    static func forward(_ x: UnsafePointer<Float>, rows: Int, depth: Int, weights: UnsafePointer<Float>, columns: Int,
                        into z: UnsafeMutablePointer<Float>, parallelism: Parallelism) {
        let slices = (rows + rowSlice - 1) / rowSlice
        let shared = UnsafeSendable((x, weights, z))
        try? Parallel.forEachWorker(itemCount: slices, parallelism: parallelism) { _, next in
            let (x, w, z) = shared.value
            while let slice = next() {
                let first = slice * rowSlice, count = min(rowSlice, rows - first)
                BLAS.sgemm(m: count, n: columns, k: depth, a: x + first * depth, lda: depth, b: w, ldb: columns,
                           c: z + first * columns, ldc: columns)
            }
        }
    }

    /// `u (depth × columns) = xᵀ · delta (rows × columns)`, in slices of `x`'s columns.
    static func backward(_ x: UnsafePointer<Float>, rows: Int, depth: Int, delta: UnsafePointer<Float>, columns: Int,
                         into u: UnsafeMutablePointer<Float>, parallelism: Parallelism) {
        let slices = (depth + depthSlice - 1) / depthSlice
        let shared = UnsafeSendable((x, delta, u))
        try? Parallel.forEachWorker(itemCount: slices, parallelism: parallelism) { _, next in
            let (x, delta, u) = shared.value
            while let slice = next() {
                let first = slice * depthSlice, count = min(depthSlice, depth - first)
                BLAS.sgemm(transA: true, m: count, n: columns, k: rows, a: x + first, lda: depth, b: delta, ldb: columns,
                           c: u + first * columns, ldc: columns)
            }
        }
    }
}
