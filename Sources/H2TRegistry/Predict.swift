import CH2TKernels
import Foundation
import H2TCore
import H2TStore
import H2TTrain

/// Predicted classes and probabilities for a list of inputs.
public struct Predictions: Sendable, Hashable, Codable {
    /// Class names, in logit order.
    public var classNames: [String]
    /// An identifier per input (example id hex, file name or image index).
    public var inputs: [String]
    /// Predicted class index per input.
    public var labels: [Int]
    /// Softmax probabilities, `inputs.count × classNames.count`, row-major.
    public var probabilities: [Float]

    /// Predictions of `inputs` over `classNames` (`probabilities` row-major, one row per input).
    public init(classNames: [String], inputs: [String], labels: [Int], probabilities: [Float]) {
        precondition(labels.count == inputs.count && probabilities.count == inputs.count * classNames.count, "predictions of mismatched sizes")
        self.classNames = classNames
        self.inputs = inputs
        self.labels = labels
        self.probabilities = probabilities
    }

    /// Appends `other`'s inputs after these (the same classes, in the same order).
    public mutating func append(_ other: Predictions) {
        precondition(other.classNames == classNames, "predictions over other classes")
        inputs += other.inputs
        labels += other.labels
        probabilities += other.probabilities
    }

    /// Probabilities of input `i`.
    public func probabilities(of i: Int) -> ArraySlice<Float> {
        probabilities[(i * classNames.count)..<((i + 1) * classNames.count)]
    }

    /// The CSV `h2t-store predict` writes: a header `input,label,p_<class>...`, then one line per
    /// input with its predicted class and its probabilities as `%.6g`. Fields holding a comma, a
    /// quote or a line break are quoted whole (RFC 4180). Blocks of `blockRows` lines are formatted
    /// on `parallelism`'s threads; the text is the same whatever the count.
    public func csv(parallelism: Parallelism = .serial, blockRows: Int = 1024) throws -> String {
        precondition(blockRows > 0)
        let header = "input,label," + classNames.map { Self.csvField("p_" + $0) }.joined(separator: ",") + "\n"
        let k = classNames.count
        let labelFields = classNames.map { "," + Self.csvField($0) }
        let blocks = try Parallel.map(count: (inputs.count + blockRows - 1) / blockRows, parallelism: parallelism) { block in
            var part = ""
            var fields = [CChar](repeating: 0, count: 16 * k + 1)
            for i in (block * blockRows)..<min(inputs.count, (block + 1) * blockRows) {
                part += Self.csvField(inputs[i])
                part += labelFields[labels[i]]
                part += probabilities.withUnsafeBufferPointer { p in p.baseAddress.map { Self.general6Fields($0 + i * k, count: k, into: &fields) } ?? "" }
                part += "\n"
            }
            return part
        }
        return header + blocks.joined()
    }

    /// `,%.6g` (what `String(format: ",%.6g", value)` gives) for each of `count` values, formatted
    /// by C's `snprintf` into `buffer` (at least `16 * count + 1` bytes) in one call per row:
    /// Foundation's format parser took a quarter of a 10,000-row predict, and `vsnprintf` through
    /// `withVaList` still boxed every value.
    static func general6Fields(_ values: UnsafePointer<Float>, count: Int, into buffer: inout [CChar]) -> String {
        let length = h2t_format_g6_fields(values, count, &buffer, buffer.count)
        precondition(length >= 0, "a %.6g field longer than 15 characters")
        return buffer.withUnsafeBytes { String(decoding: UnsafeRawBufferPointer(rebasing: $0[..<length]), as: UTF8.self) }
    }

    /// A CSV field: quoted (quotes doubled) when it holds a comma, a quote or a line break
    /// (`\n` or `\r`, also as the one character `\r\n`). Looked for in the UTF-8 bytes, not the
    /// characters: grapheme breaking each of 10,000 inputs was a tenth of a `predict`'s CSV.
    static func csvField(_ s: String) -> String {
        s.utf8.contains(where: { $0 == 0x2C || $0 == 0x22 || $0 == 0x0A || $0 == 0x0D })
            ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}

/// Accuracy of a head on a labelled split.
public struct Evaluation: Sendable, Hashable, Codable {
    /// The head (`NAME@vN`).
    public var head: String
    /// Dataset and split evaluated.
    public var dataset: String
    public var split: String
    /// `splitDigest` of the split now, and whether it equals the head's test split digest.
    public var splitDigest: String
    public var sameAsRecordedTest: Bool
    /// Metrics (classes in the head's order).
    public var metrics: ClassificationMetrics
    /// Class names.
    public var classNames: [String]
}

/// Applies a registered head to a matrix of its selected features (raw, as stored or pooled):
/// inputs formed by the head's normalisation rule, then `x W + b`, then softmax.
public struct HeadApplier: Sendable {
    /// The head.
    public let head: HeadRecord
    let linear: LinearHead
    let subsetTaps: [TapColumns]
    let inputRule: HeadInputRule

    /// Prepares `head` for application; a normalisation rule this version does not know (a head
    /// written by a newer h2t-store) is refused rather than guessed.
    public init(head: HeadRecord) throws {
        guard let rule = head.normalization.inputRule else {
            throw RegistryError.invalidHead("\(head.task)@v\(head.version) uses normalisation rule '\(head.normalization.rule)', which this h2t-store does not know")
        }
        inputRule = rule
        self.head = head
        linear = LinearHead(inputCount: head.inputCount, classCount: head.classNames.count, weights: head.weights, bias: head.bias)
        var offset = 0
        var taps: [TapColumns] = []
        for tap in head.selection {
            taps.append(TapColumns(name: tap.tap, offset: offset, width: tap.indices.count))
            offset += tap.indices.count
        }
        subsetTaps = taps
    }

    /// Predictions for `rows` rows of `values` (`rows × inputCount`, selected-column order), the
    /// inputs formed on `parallelism`'s threads (the same values whatever the count). Values the
    /// caller hands over (`consume`) are normalised in place rather than copied.
    public func apply(_ values: consuming [Float], rows: Int, inputs: [String], parallelism: Parallelism = .serial) throws -> Predictions {
        let d = head.inputCount, k = head.classNames.count
        guard values.count == rows * d else { throw RegistryError.invalidInput("\(values.count) values for \(rows) rows × \(d) selected features") }
        var labels = [Int](repeating: 0, count: rows)
        var probabilities = [Float](repeating: 0, count: rows * k)
        try score(consume values, rows: rows, parallelism: parallelism) { r, label, p in
            labels[r] = label
            probabilities.replaceSubrange((r * k)..<((r + 1) * k), with: p)
        }
        return Predictions(classNames: head.classNames, inputs: inputs, labels: labels, probabilities: probabilities)
    }

    /// The predicted class and the probabilities (one per class) of each of `rows` rows of
    /// `values` (`rows × inputCount`, normalised in place), handed to `emit` row by row.
    func score(_ values: consuming [Float], rows: Int, parallelism: Parallelism = .serial,
               _ emit: (_ row: Int, _ label: Int, _ probabilities: [Float]) -> Void) throws {
        var matrix = try FeatureMatrix(rowCount: rows, columnCount: head.inputCount, values: consume values, taps: subsetTaps)
        try score(&matrix, parallelism: parallelism, emit)
    }

    /// ``score(_:rows:parallelism:_:)`` of a matrix of the head's selected columns in their tap
    /// layout (as the store reads them), normalised in place.
    func score(_ matrix: inout FeatureMatrix, parallelism: Parallelism = .serial,
               _ emit: (_ row: Int, _ label: Int, _ probabilities: [Float]) -> Void) throws {
        guard matrix.columnCount == head.inputCount, matrix.taps.map(\.columns) == subsetTaps.map(\.columns) else {
            throw RegistryError.invalidInput("a \(matrix.rowCount)×\(matrix.columnCount) matrix in another tap layout than head \(head.reference)'s \(head.inputCount) selected features")
        }
        let k = head.classNames.count, rows = matrix.rowCount
        matrix.applyInputRule(inputRule, parallelism: parallelism)
        let logits = linear.logits(matrix)
        for r in 0..<rows {
            let row = logits[(r * k)..<((r + 1) * k)]
            var best = row.startIndex
            for i in row.indices where row[i] > row[best] { best = i }
            emit(r, best - row.startIndex, Softmax.probabilities(row))
        }
    }
}

extension Registry {
    /// The feature set a head reads, or `missingFeatureSet` naming the backbone it needs.
    public func featureSet(of head: HeadRecord) throws -> FeatureSetInfo {
        do {
            return try store.featureSet(head.lineage.featureSet)
        } catch let error as StoreError {
            guard case .unknownFeatureSet = error else { throw error }
            throw RegistryError.missingFeatureSet(featureSet: head.lineage.featureSet, backbone: head.lineage.backbone,
                                                  backboneDescription: "\(head.lineage.architecture), F_T \(head.hyperParameters.targetSize)")
        }
    }

    /// Checks that the head's selection fits the feature set's layout (same tap names, offsets, widths).
    func checkLayout(_ head: HeadRecord, _ info: FeatureSetInfo) throws {
        for tap in head.selection {
            guard tap.order < info.manifest.taps.count else { throw RegistryError.invalidHead("tap '\(tap.tap)' is beyond the feature set's taps") }
            let stored = info.manifest.taps[tap.order]
            guard stored.name == tap.tap, stored.offset == tap.offset, stored.width == tap.width else {
                throw RegistryError.invalidHead("tap '\(tap.tap)' does not match feature set \(info.id.prefix(12)) (found '\(stored.name)' at \(stored.offset) width \(stored.width))")
            }
        }
    }

    /// Predicts stored examples, reading only the head's selected columns through the query layer
    /// in blocks of at most `batchSize` rows of one segment (``FeatureStore/forEachRowBlock(featureSet:examples:columns:maxRows:_:)``),
    /// each read, normalised, multiplied and turned into probabilities on the worker of the
    /// store's ``FeatureStore/parallelism`` that decoded it: memory holds one block per worker.
    public func predict(_ head: HeadRecord, examples: [ExampleID], batchSize: Int = 65_536) throws -> Predictions {
        try store.parallelism.withBLAS { try predictStored(head, examples: examples, batchSize: batchSize) }
    }

    private func predictStored(_ head: HeadRecord, examples: [ExampleID], batchSize: Int) throws -> Predictions {
        guard batchSize > 0 else { throw RegistryError.invalidInput("batch size must be positive, got \(batchSize)") }
        let info = try featureSet(of: head)
        try checkLayout(head, info)
        let applier = try HeadApplier(head: head)
        let k = head.classNames.count
        var labels = [Int](repeating: 0, count: examples.count)
        var probabilities = [Float](repeating: 0, count: examples.count * k)
        try labels.withUnsafeMutableBufferPointer { labels in
            try probabilities.withUnsafeMutableBufferPointer { probabilities in
                // Blocks hold disjoint positions, so the workers write disjoint cells.
                try store.forEachRowBlock(featureSet: info.id, examples: examples, columns: head.selectedIndices, maxRows: batchSize) { positions, block in
                    // Normalised in place: the worker decodes its next block into the same matrix.
                    try applier.score(&block) { r, label, p in
                        let position = positions[r]
                        labels[position] = label
                        for c in 0..<k { probabilities[position * k + c] = p[c] }
                    }
                }
            }
        }
        return Predictions(classNames: head.classNames, inputs: examples.map(\.hex), labels: labels, probabilities: probabilities)
    }

    /// Predicts every example of a stored split (in split order); also returns the split's labels
    /// mapped to the head's classes by name (`nil` where the dataset's class is not one of the head's).
    public func predict(_ head: HeadRecord, dataset: String, split: String) throws -> (predictions: Predictions, labels: [Int?]) {
        let manifest = try store.dataset(dataset)
        let items = try store.split(dataset: dataset, split: split)
        let index = Dictionary(uniqueKeysWithValues: head.classNames.enumerated().map { ($1, $0) })
        let labels = items.labels.map { index[manifest.classNames[$0]] }
        return (try predict(head, examples: items.examples), labels)
    }

    /// Accuracy, per-class accuracy and confusion matrix of `head` on a labelled split.
    public func evaluate(_ head: HeadRecord, dataset: String, split: String) throws -> Evaluation {
        let manifest = try store.dataset(dataset)
        let (predictions, labels) = try predict(head, dataset: dataset, split: split)
        if let i = labels.firstIndex(of: nil) {
            let items = try store.split(dataset: dataset, split: split)
            throw RegistryError.invalidInput("\(dataset)/\(split) has class '\(manifest.classNames[items.labels[i]])', which head \(head.reference) does not know (its classes: \(head.classNames.joined(separator: ", ")))")
        }
        let digest = try store.splitDigest(dataset: dataset, split: split)
        return Evaluation(head: head.reference, dataset: dataset, split: split, splitDigest: digest,
                          sameAsRecordedTest: head.lineage.test?.digest == digest && head.lineage.dataset == dataset,
                          metrics: ClassificationMetrics(predictions: predictions.labels, labels: labels.map { $0! }, classCount: head.classNames.count),
                          classNames: head.classNames)
    }
}
