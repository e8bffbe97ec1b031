import H2TCore

/// How a stored head's inputs are formed from the raw pooled values of the columns it reads.
public enum HeadInputRule: String, Codable, Sendable, Hashable {
    /// For each example and each tap, the head's columns of that tap scaled to unit L2 norm (a
    /// zero vector stays zero), concatenated in tap order (docs/architecture.md §1 step 6). The baselines
    /// keep whole taps, so for them this is plain per-tap normalisation.
    case perTapUnitL2 = "per_tap_unit_l2_over_kept"
    /// The raw pooled values of the head's columns as stored; any per-tap constants learned on
    /// the training rows are folded into the weights.
    case raw = "raw_selected"
}

extension FeatureMatrix {
    /// Forms a stored head's inputs in place from the raw values of its selected columns (this
    /// matrix's taps being the head's kept subsets), rows split over `parallelism`'s threads.
    public mutating func applyInputRule(_ rule: HeadInputRule, parallelism: Parallelism = .serial) {
        if rule == .perTapUnitL2 { normalizeTaps(parallelism: parallelism) }
    }
}

extension KeptTapScaling {
    /// The input rule of a head trained with this scaling, once its factors are folded in.
    public var inputRule: HeadInputRule {
        self == .trainingConstant ? .raw : .perTapUnitL2
    }
}

extension FeatureMatrix {
    /// Head2Toe's final-head inputs for the kept `columns` (ascending) on `rows` of this per-tap
    /// normalised matrix, weighted per `scaling` with statistics from `statisticsRows` only (the
    /// fold's or the split's training rows); `norms` are the per-row tap norms that
    /// `normalizeTaps` returned. Also returns one factor per kept tap to fold into the head fitted
    /// on these inputs (`LinearHead.foldingTapScales`), after which it applies to inputs formed
    /// by `scaling.inputRule` (`headInputs`).
    public func keptInputs(norms: [Float], rows: [Int], columns: [Int], scaling: KeptTapScaling,
                           statisticsRows: [Int], storage: consuming [Float] = []) -> (inputs: FeatureMatrix, tapScales: [Float]) {
        var inputs = headInputs(norms: norms, rows: rows, columns: columns, rule: scaling.inputRule, storage: consume storage)
        switch scaling {
        case .unit:
            return (inputs, [Float](repeating: 1, count: inputs.taps.count))
        case .trainingShare:
            let shares = keptTapShares(rows: statisticsRows, columns: columns)
            inputs.scaleTaps(by: shares)
            return (inputs, shares)
        case .trainingConstant:
            // Raw values over the RMS, on the statistics rows, of each kept tap's full norm.
            let constants = tapIndicesOfSubset(columns).map { t -> Float in
                var sum = 0.0
                for row in statisticsRows { sum += Double(norms[row * taps.count + t]) * Double(norms[row * taps.count + t]) }
                let rms = (sum / Double(max(statisticsRows.count, 1))).squareRoot()
                return rms > 0 ? Float(rms) : 1
            }
            let inverse = constants.map { 1 / $0 }
            inputs.scaleTaps(by: inverse)
            return (inputs, inverse)
        }
    }

    /// The inputs that a stored head with input `rule` reads for `columns` on `rows` of this
    /// per-tap normalised matrix (`norms` as returned by `normalizeTaps`), in the memory of
    /// `storage` when it has the capacity (see `gathered`).
    public func headInputs(norms: [Float], rows: [Int], columns: [Int], rule: HeadInputRule, storage: consuming [Float] = []) -> FeatureMatrix {
        switch rule {
        case .perTapUnitL2:
            return gathered(rows: rows, columns: columns, renormalize: true, storage: consume storage)
        case .raw:
            let source = tapIndicesOfSubset(columns)
            var inputs = gathered(rows: rows, columns: columns, renormalize: false, storage: consume storage)
            inputs.scaleRowTaps(by: rows.flatMap { row in source.map { norms[row * taps.count + $0] } })
            return inputs
        }
    }
}
