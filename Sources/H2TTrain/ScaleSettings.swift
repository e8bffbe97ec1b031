import Foundation

/// Which training path a fit takes (docs/architecture.md §1, "Training at scale").
public enum SolverChoice: String, Codable, Sendable, Hashable, CaseIterable {
    /// The full-batch solvers on features held in memory: working-set FISTA for selection,
    /// FISTA (kernel form when `D > N`) for the heads. Time grows about as `N²`, memory as `N·D`.
    case exact
    /// Mini-batch proximal SAGA on features streamed in seeded batches: time linear in `N`,
    /// memory bounded by the budget whatever `N` is.
    case stochastic
    /// `exact` up to `ScaleSettings.exactRowLimit` training rows when it fits the budget, else
    /// `stochastic`.
    case auto
}

/// How the grid is validated.
public enum ValidationRule: Codable, Sendable, Hashable, CustomStringConvertible {
    /// `folds`-fold cross-validation: every row is validated once.
    case kFold(folds: Int)
    /// One validation split: the first of `folds` seeded (stratified) folds, so `1/folds` of the rows.
    case holdout(folds: Int)

    /// Folds the rows are dealt into.
    public var folds: Int {
        switch self {
        case let .kFold(folds), let .holdout(folds): folds
        }
    }

    /// The folds that are validated.
    public var validatedFolds: [Int] {
        switch self {
        case let .kFold(folds): Array(0..<folds)
        case .holdout: [0]
        }
    }

    /// `5-fold` or `holdout 1/5`.
    public var description: String {
        switch self {
        case let .kFold(folds): "\(folds)-fold"
        case let .holdout(folds): "holdout 1/\(folds)"
        }
    }
}

/// The stopping rule and step of the stochastic solver (`StochasticTrainer`).
public struct StochasticSettings: Codable, Sendable, Hashable {
    /// Rows per mini-batch.
    public var batchSize: Int
    /// Rows read from the store at once and shuffled together (whole storage segments, so a read
    /// decodes each tile it touches once); at least `batchSize`.
    public var windowRows: Int
    /// Upper bound on epochs (passes over the training rows).
    public var maxEpochs: Int
    /// Stop when the held-out objective has not improved by this relative amount for `patience`
    /// consecutive epochs.
    public var tolerance: Double
    /// See `tolerance`.
    public var patience: Int
    /// Share of the training rows held out for the stopping rule (never trained on), at most
    /// `maxHeldOut` rows.
    public var heldOutFraction: Double
    /// See `heldOutFraction`.
    public var maxHeldOut: Int

    /// Defaults: batch 128 rows (as the reference code) in windows of 1,024 (two stored segments), at most 20 epochs,
    /// stop after 2 epochs without a 1% improvement, 10% of the rows (at most 1,000) held out.
    public init(batchSize: Int = 128, windowRows: Int = 1024, maxEpochs: Int = 20, tolerance: Double = 1e-2,
                patience: Int = 2, heldOutFraction: Double = 0.1, maxHeldOut: Int = 1000) {
        self.batchSize = batchSize
        self.windowRows = windowRows
        self.maxEpochs = maxEpochs
        self.tolerance = tolerance
        self.patience = patience
        self.heldOutFraction = heldOutFraction
        self.maxHeldOut = maxHeldOut
    }

    func validate() throws {
        guard batchSize > 0 else { throw TrainError.invalidSetting("stochastic batch size must be > 0") }
        guard windowRows >= batchSize else { throw TrainError.invalidSetting("stochastic window must hold at least one batch") }
        guard maxEpochs > 0, patience > 0 else { throw TrainError.invalidSetting("stochastic epochs and patience must be > 0") }
        guard tolerance >= 0, tolerance.isFinite else { throw TrainError.invalidSetting("stochastic tolerance must be >= 0") }
        guard heldOutFraction > 0, heldOutFraction < 0.5, maxHeldOut > 0 else {
            throw TrainError.invalidSetting("held-out fraction must be in (0, 0.5) and its cap > 0")
        }
    }

    /// Rows held out for the stopping rule out of `rowCount` training rows.
    public func heldOutCount(rowCount: Int) -> Int {
        min(maxHeldOut, max(1, Int((Double(rowCount) * heldOutFraction).rounded(.down))))
    }
}

/// How a fit scales with the training set: the solver, the memory budget and the validation rule.
public struct ScaleSettings: Codable, Sendable, Hashable {
    /// Requested solver.
    public var solver: SolverChoice
    /// Memory the fit may use, bytes.
    public var memoryBudget: Int
    /// `auto` uses the exact solvers up to this many training rows.
    public var exactRowLimit: Int
    /// K-fold cross-validation up to this many training rows; a single validation split above.
    public var foldRowLimit: Int
    /// The stochastic solver's settings.
    public var stochastic: StochasticSettings

    /// Default budget: half the machine's physical memory.
    public static var defaultMemoryBudget: Int { Int(ProcessInfo.processInfo.physicalMemory / 2) }

    /// Defaults: budget half of RAM; exact up to 2,000 rows (above that the stochastic path is
    /// faster, docs/benchmarks.md "fit at scale"); K-fold up to 10,000 rows.
    public init(solver: SolverChoice = .auto, memoryBudget: Int = ScaleSettings.defaultMemoryBudget, exactRowLimit: Int = 2000,
                foldRowLimit: Int = 10_000, stochastic: StochasticSettings = StochasticSettings()) {
        self.solver = solver
        self.memoryBudget = memoryBudget
        self.exactRowLimit = exactRowLimit
        self.foldRowLimit = foldRowLimit
        self.stochastic = stochastic
    }

    /// The validation rule for `rowCount` training rows and `folds` folds.
    public func validation(rowCount: Int, folds: Int) -> ValidationRule {
        rowCount <= foldRowLimit ? .kFold(folds: folds) : .holdout(folds: folds)
    }

    /// Bytes the exact path needs for `rowCount` rows of feature sets of `widths` columns: about
    /// three float copies of every matrix (the read, the gathered working sets and kept inputs of
    /// the parallel workers) and one `N × N` Gram matrix per feature set (measured peaks:
    /// docs/benchmarks.md).
    public static func exactBytes(rowCount: Int, widths: [Int]) -> Int {
        widths.reduce(0) { $0 + 3 * rowCount * $1 * 4 + rowCount * rowCount * 4 } + (64 << 20)
    }

    /// The solver a fit of `rowCount` rows over feature sets of `widths` columns uses; throws when
    /// `exact` is asked for and does not fit the budget.
    public func resolve(rowCount: Int, widths: [Int]) throws -> SolverChoice {
        let exactNeeds = Self.exactBytes(rowCount: rowCount, widths: widths)
        switch solver {
        case .exact:
            guard exactNeeds <= memoryBudget else {
                throw TrainError.invalidSetting("--solver exact needs about \(Self.describe(bytes: exactNeeds)) for \(rowCount) rows × \(widths.max() ?? 0) features, over the memory budget of \(Self.describe(bytes: memoryBudget)); raise --memory or use --solver stochastic")
            }
            return .exact
        case .stochastic: return .stochastic
        case .auto: return rowCount <= exactRowLimit && exactNeeds <= memoryBudget ? .exact : .stochastic
        }
    }

    /// `1.5 GB`, `300 MB`: a size for messages.
    public static func describe(bytes: Int) -> String {
        bytes >= 1 << 30 ? String(format: "%.1f GB", Double(bytes) / Double(1 << 30))
            : String(format: "%.0f MB", (Double(bytes) / Double(1 << 20)).rounded(.up))
    }

    func validate() throws {
        guard memoryBudget > 0 else { throw TrainError.invalidSetting("memory budget must be > 0") }
        guard exactRowLimit >= 0, foldRowLimit >= 0 else { throw TrainError.invalidSetting("row limits must be >= 0") }
        try stochastic.validate()
    }
}

/// What a fit did about scale, recorded in its report, its `--json` and the head's lineage.
public struct FitPlan: Codable, Sendable, Hashable {
    /// The solver used (`exact` or `stochastic`).
    public var solver: SolverChoice
    /// What was asked for (`auto` resolves to `solver`).
    public var requested: SolverChoice
    /// `5-fold`, or `holdout 1/5` for one validation split.
    public var validation: String
    /// The memory budget, bytes.
    public var memoryBudget: Int
    /// Stochastic path: training rows held out for the stopping rule (in every fold and the final fit).
    public var heldOutRows: Int?
    /// Stochastic path: whether the selected columns were held in memory (else streamed).
    public var selectedInMemory: Bool?
    /// Stochastic path: epochs of the final selection and final head, and whether the stopping rule stopped them.
    public var finalEpochs: [Int]?

    /// Creates a plan.
    public init(solver: SolverChoice, requested: SolverChoice, validation: String, memoryBudget: Int, heldOutRows: Int? = nil,
                selectedInMemory: Bool? = nil, finalEpochs: [Int]? = nil) {
        self.solver = solver
        self.requested = requested
        self.validation = validation
        self.memoryBudget = memoryBudget
        self.heldOutRows = heldOutRows
        self.selectedInMemory = selectedInMemory
        self.finalEpochs = finalEpochs
    }
}
