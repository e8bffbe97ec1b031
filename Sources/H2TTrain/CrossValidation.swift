import Foundation
import H2TCore
import Synchronization

extension Head2ToeFit {
    /// The fold (`0..<folds`) of each row. Stratified: for each class in order, its rows are
    /// shuffled by the seeded generator and dealt round-robin, the deal continuing across classes
    /// so fold sizes differ by at most one. Plain: all rows shuffled once and dealt round-robin.
    public static func foldAssignment(labels: [Int], classCount: Int, folds: Int, stratified: Bool, seed: UInt64) -> [Int] {
        var rng = SplitMix64(seed: seed)
        var assignment = [Int](repeating: 0, count: labels.count)
        var dealt = 0
        let groups: [[Int]] = stratified
            ? (0..<classCount).map { c in labels.indices.filter { labels[$0] == c } }
            : [Array(labels.indices)]
        for var group in groups {
            rng.shuffle(&group)
            for row in group {
                assignment[row] = dealt % folds
                dealt += 1
            }
        }
        return assignment
    }
}

/// One unit of the cross-validation sweep, run by one worker: a (feature set, solver, fold) runs
/// the whole λ path, every fraction and every ridge; an all-features (feature set, fold) and a
/// probe fold run every ridge of their baseline.
enum CVTask: Sendable {
    case head2toe(set: Int, solver: Int, fold: Int)
    case allFeatures(set: Int, fold: Int)
    case probe(fold: Int)

    /// The method whose CV rows the task scores.
    var method: FitMethod {
        switch self {
        case .head2toe: .head2toe
        case .allFeatures: .allFeatures
        case .probe: .linearProbe
        }
    }
}

/// One item of the sweep's schedule: a task (an index into `CVContext.tasks`) or a method's
/// final (an index into the methods' order).
private enum SweepItem { case task(Int), final(Int) }

/// Correct counts of one task, `correct[λ][fraction][ridge]` (grid indices) for Head2Toe and
/// `correct[0][0][ridge]` for the baselines; kept columns per (λ, fraction).
struct CVTaskResult: Sendable {
    var correct: [[[Int]]]
    var validated: Int
    var kept: [[Int]]
}

/// Everything a cross-validation task reads; immutable and shared by the workers.
struct CVContext: Sendable {
    let sets: [FeatureSetInput]
    /// Per-row tap norms of each set's training rows (`FeatureMatrix.normalizeTaps`).
    let norms: [[Float]]
    /// `X Xᵀ` of each set's (normalised) training rows.
    let grams: [[Float]]
    let labels: [Int]
    let classCount: Int
    let folds: [Int]
    let settings: FitSettings
    let probeTap: String
    /// The buffers `evaluate` builds its inputs in (training and validation rows), handed from task to task.
    let scratch = FloatBufferPool(), validationScratch = FloatBufferPool()

    /// Every task of the sweep, in the order the table pools them.
    var tasks: [CVTask] {
        var tasks: [CVTask] = []
        for s in sets.indices { for v in settings.solvers.indices { for f in 0..<settings.folds { tasks.append(.head2toe(set: s, solver: v, fold: f)) } } }
        for s in sets.indices { for f in 0..<settings.folds { tasks.append(.allFeatures(set: s, fold: f)) } }
        for f in 0..<settings.folds { tasks.append(.probe(fold: f)) }
        return tasks
    }

    /// Runs every task on `parallelism`'s threads (each with single-threaded BLAS), and each
    /// method's `final` on the same threads as soon as that method's tasks are done, with its
    /// rows of the CV table: Head2Toe's final head, the longest, overlaps the baselines' tasks
    /// instead of running alone after them. Workers claim the longest work first: Head2Toe's
    /// tasks and final, then the probe's tasks (a head on the probe tap per fold), then all
    /// features' (kernel form on the Gram matrix, the shortest), then the two baselines' finals.
    /// Every item computes the same whichever worker runs it and when, so the results do not
    /// depend on the thread count. `progress` counts the tasks as they finish.
    ///
    /// - Returns: the CV table (Head2Toe's rows, then all features', then the probe's), each
    ///   method's final, and when the last task finished.
    func sweep<Final>(parallelism: Parallelism, progress: ProgressReporter? = nil,
                      final: (FitMethod, [CVRow]) throws -> Final) throws
        -> (table: [CVRow], finals: [FitMethod: Final], crossValidated: ContinuousClock.Instant) {
        let tasks = self.tasks
        let methods: [FitMethod] = [.head2toe, .linearProbe, .allFeatures]
        // Head2Toe's tasks and final, then the baselines' tasks, then their finals (the longer
        // first), each final depending on its method's tasks: the two baseline finals, the
        // longest items left at the end, can run side by side.
        var items: [SweepItem] = [], dependencies: [[Int]] = []
        var taskItems: [FitMethod: [Int]] = [:]
        func schedule(_ item: SweepItem, after: [Int] = []) {
            if case .task(let t) = item { taskItems[tasks[t].method, default: []].append(items.count) }
            items.append(item)
            dependencies.append(after)
        }
        for t in tasks.indices where tasks[t].method == .head2toe { schedule(.task(t)) }
        schedule(.final(0), after: taskItems[.head2toe, default: []])
        for method in methods.dropFirst() { for t in tasks.indices where tasks[t].method == method { schedule(.task(t)) } }
        for m in methods.indices.dropFirst() { schedule(.final(m), after: taskItems[methods[m], default: []]) }
        progress?.setTotal(tasks.count)
        let results = WorkerSlots<CVTaskResult>(count: tasks.count), finals = WorkerSlots<Final>(count: methods.count)
        let clock = ContinuousClock()
        let lastTask = Mutex<(left: Int, finished: ContinuousClock.Instant?)>((tasks.count, nil))
        try Parallel.forEachWhenReady(count: items.count, dependencies: dependencies, parallelism: parallelism,
                                      singleThreadedBLAS: true) { item in
            switch items[item] {
            case .task(let t):
                results.set(t, try run(tasks[t]))
                progress?.advance(by: 1)
                lastTask.withLock { state in
                    state.left -= 1
                    if state.left == 0 { state.finished = clock.now }
                }
            case .final(let m):
                finals.set(m, try final(methods[m], self.table(tasks: tasks, results: results, method: methods[m])))
            }
        }
        progress?.finish()
        let table = [FitMethod.head2toe, .allFeatures, .linearProbe].flatMap { self.table(tasks: tasks, results: results, method: $0) }
        let byMethod = Dictionary(uniqueKeysWithValues: methods.indices.map { (methods[$0], finals[$0]!) })
        return (table, byMethod, lastTask.withLock { $0.finished } ?? clock.now)
    }

    /// The training and validation rows of fold `fold`.
    func rows(fold: Int) -> (train: [Int], validation: [Int]) {
        (folds.indices.filter { folds[$0] != fold }, folds.indices.filter { folds[$0] == fold })
    }

    /// The group-lasso path (descending λ, as given in the grid) on `rows` of feature set `set`.
    func selectionPath(set: Int, solver: Int, rows: [Int], lambdas: [Double]) throws -> [(ratio: Double, solution: GroupLassoSolution)] {
        let features = sets[set].train
        let ordered = lambdas.sorted(by: >)
        let scale = settings.lambdaScale == .relativeToMax
            ? GroupLasso.lambdaMax(features: features, rows: rows, labels: labels, classCount: classCount) : 1
        switch settings.solvers[solver] {
        case let .proximal(gl):
            let path = try GroupLasso.path(features: features, rows: rows, labels: labels, classCount: classCount,
                                           lambdas: ordered.map { $0 * scale }, settings: gl)
            return zip(ordered, path).map { ($0, $1) }
        case let .adam(adam):
            return try ordered.map { ratio in
                (ratio, try GroupLasso.adam(features: features, rows: rows, labels: labels, classCount: classCount,
                                            lambda: ratio * scale, settings: adam, seed: settings.seed))
            }
        }
    }

    /// Trains one head per ridge on `train` rows of `columns`, scaled per `scaling` with
    /// statistics from the fold's training rows only, and counts correct validation predictions of each.
    func evaluate(set: Int, columns: [Int], scaling: KeptTapScaling, train: [Int], validation: [Int]) throws -> [Int] {
        // The inputs of the training and validation rows are built in a buffer an earlier task
        // handed back; the training rows stay where they are, the validation rows are copied out.
        var (matrix, _) = sets[set].train.keptInputs(norms: norms[set], rows: train + validation, columns: columns,
                                                     scaling: scaling, statisticsRows: train, storage: scratch.take())
        let d = columns.count
        var validationValues = validationScratch.take()
        validationValues.append(contentsOf: matrix.values[(train.count * d)...])
        let validationPart = try FeatureMatrix(rowCount: validation.count, columnCount: d, values: consume validationValues, taps: matrix.taps)
        var values: [Float] = []
        swap(&values, &matrix.values)
        values.removeLast(validation.count * d)
        let trainPart = try FeatureMatrix(rowCount: train.count, columnCount: d, values: consume values, taps: matrix.taps)
        defer {
            scratch.give(trainPart.values)
            validationScratch.give(validationPart.values)
        }
        let heads = try FinalHead.fit(features: trainPart, labels: train.map { labels[$0] }, classCount: classCount,
                                      solver: settings.headSolver, ridges: settings.ridges)
        return heads.map { head, _ in
            zip(head.predict(validationPart), validation).filter { $0 == labels[$1] }.count
        }
    }

    /// Runs one task: correct validation predictions at each of its grid points.
    func run(_ task: CVTask) throws -> CVTaskResult {
        switch task {
        case let .head2toe(set, solver, fold):
            let (train, validation) = rows(fold: fold)
            let path = try selectionPath(set: set, solver: solver, rows: train, lambdas: settings.lambdas)
            // Results are indexed by the grid's λ order, not the path's descending order.
            var correct = [[[Int]]](repeating: [], count: settings.lambdas.count)
            var kept = [[Int]](repeating: [], count: settings.lambdas.count)
            for (ratio, solution) in path {
                let ranking = solution.ranking()
                let li = settings.lambdas.firstIndex(of: ratio)!
                for fraction in settings.fractions {
                    let columns = solution.selection(fraction: fraction, ranking: ranking)
                    correct[li].append(try evaluate(set: set, columns: columns, scaling: settings.keptTapScaling,
                                                    train: train, validation: validation))
                    kept[li].append(columns.count)
                }
            }
            return CVTaskResult(correct: correct, validated: validation.count, kept: kept)
        case let .allFeatures(set, fold):
            // Kernel form on the shared Gram matrix: the fold's training block for the fit, the
            // validation × training block for the predictions; no pass over the features at all.
            let (train, validation) = rows(fold: fold)
            let n = sets[set].train.rowCount, m = train.count
            let gram = grams[set]
            var block = [Float](repeating: 0, count: m * m)
            for (i, ri) in train.enumerated() { for (j, rj) in train.enumerated() { block[i * m + j] = gram[ri * n + rj] } }
            var cross = [Float](repeating: 0, count: validation.count * m)
            for (i, ri) in validation.enumerated() { for (j, rj) in train.enumerated() { cross[i * m + j] = gram[ri * n + rj] } }
            let correct = settings.ridges.map { ridge in
                let (a, bias, _) = FinalHead.fitKernel(gram: block, labels: train.map { Int32(labels[$0]) }, classCount: classCount,
                                                      settings: HeadSettings(solver: settings.headSolver, l2: ridge))
                let z = KernelModel(gram: [], rowCount: 0, classCount: classCount, mu: 0)
                    .crossForward(cross: cross, rows: validation.count, coef: a, bias: bias)
                let predictions = SoftmaxCrossEntropy.predictions(logits: z, rowCount: validation.count, classCount: classCount)
                return zip(predictions, validation).filter { $0 == labels[$1] }.count
            }
            return CVTaskResult(correct: [[correct]], validated: validation.count, kept: [[sets[set].train.columnCount]])
        case let .probe(fold):
            let (train, validation) = rows(fold: fold)
            let columns = Array(sets[0].train.columns(ofTap: probeTap)!)
            let correct = try evaluate(set: 0, columns: columns, scaling: .unit, train: train, validation: validation)
            return CVTaskResult(correct: [[correct]], validated: validation.count, kept: [[columns.count]])
        }
    }

    /// Pools the results of `method`'s tasks (all finished) into its rows of the CV table.
    func table(tasks: [CVTask], results: WorkerSlots<CVTaskResult>, method: FitMethod) -> [CVRow] {
        var rows: [CVRow] = []
        func pooled(_ indices: [Int], li: Int, fi: Int, ri: Int) -> (Double, [Double], Int) {
            let correct = indices.map { results[$0]!.correct[li][fi][ri] }
            let total = indices.map { results[$0]!.validated }
            let folds = zip(correct, total).map { Double($0) / Double(max($1, 1)) }
            return (Double(correct.reduce(0, +)) / Double(max(total.reduce(0, +), 1)), folds, results[indices[0]]!.kept[li][fi])
        }
        /// A baseline's rows (one per ridge) pooled from the tasks `belongs` picks.
        func baselineRows(featureSet: String, _ belongs: (CVTask) -> Bool) {
            let indices = tasks.indices.filter { belongs(tasks[$0]) }
            for (ri, ridge) in settings.ridges.enumerated() {
                let (accuracy, folds, kept) = pooled(indices, li: 0, fi: 0, ri: ri)
                rows.append(CVRow(method: method, featureSet: featureSet, solver: nil, lambda: nil, fraction: nil,
                                  ridge: ridge, keptFeatures: kept, cvAccuracy: accuracy, foldAccuracies: folds))
            }
        }
        switch method {
        case .head2toe:
            for s in sets.indices {
                for v in settings.solvers.indices {
                    let indices = tasks.indices.filter {
                        if case let .head2toe(ts, tv, _) = tasks[$0] { return ts == s && tv == v }
                        return false
                    }
                    for (li, lambda) in settings.lambdas.enumerated() {
                        for (fi, fraction) in settings.fractions.enumerated() {
                            for (ri, ridge) in settings.ridges.enumerated() {
                                let (accuracy, folds, kept) = pooled(indices, li: li, fi: fi, ri: ri)
                                rows.append(CVRow(method: .head2toe, featureSet: sets[s].name, solver: v, lambda: lambda,
                                                  fraction: fraction, ridge: ridge, keptFeatures: kept, cvAccuracy: accuracy,
                                                  foldAccuracies: folds))
                            }
                        }
                    }
                }
            }
        case .allFeatures:
            for s in sets.indices {
                baselineRows(featureSet: sets[s].name) {
                    if case let .allFeatures(ts, _) = $0 { return ts == s }
                    return false
                }
            }
        case .linearProbe:
            baselineRows(featureSet: sets[0].name) {
                if case .probe = $0 { return true }
                return false
            }
        }
        return rows
    }
}
