import H2TCore

/// Result of `verify`: what was checked and every problem found (each naming its key).
public struct VerifyReport: Sendable, Codable {
    /// Tiles re-read and checksummed.
    public var tilesChecked = 0
    /// Values in those tiles.
    public var valuesChecked = 0
    /// Feature sets checked.
    public var featureSets = 0
    /// Dataset splits checked.
    public var splits = 0
    /// Problems, one line each; empty when the store is sound.
    public var problems: [String] = []
    /// Whether no problem was found.
    public var ok: Bool { problems.isEmpty }

    enum CodingKeys: String, CodingKey {
        case tilesChecked, valuesChecked, featureSets, splits, problems, ok
    }

    /// Creates an empty report.
    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tilesChecked = try c.decode(Int.self, forKey: .tilesChecked)
        valuesChecked = try c.decode(Int.self, forKey: .valuesChecked)
        featureSets = try c.decode(Int.self, forKey: .featureSets)
        splits = try c.decode(Int.self, forKey: .splits)
        problems = try c.decode([String].self, forKey: .problems)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(tilesChecked, forKey: .tilesChecked)
        try c.encode(valuesChecked, forKey: .valuesChecked)
        try c.encode(featureSets, forKey: .featureSets)
        try c.encode(splits, forKey: .splits)
        try c.encode(problems, forKey: .problems)
        try c.encode(ok, forKey: .ok)
    }
}

/// Disk usage of the store (`h2t-store du`).
public struct DiskUsageReport: Sendable, Codable {
    /// Usage of one feature set.
    public struct FeatureSetUsage: Sendable, Codable {
        public var id: String
        public var targetSize: Int
        public var rows: Int
        public var width: Int
        public var dtype: String
        /// Stored tile bytes.
        public var bytes: Int
        /// What the same rows would take as raw float32.
        public var float32Bytes: Int
        /// `float32Bytes / bytes`.
        public var ratio: Double
        /// Bytes per tap (frames split across taps are apportioned by columns).
        public var taps: [TapUsage]
    }

    /// Usage of one tap inside a feature set.
    public struct TapUsage: Sendable, Codable {
        public var name: String
        public var width: Int
        public var bytes: Int
        public var ratio: Double
    }

    /// Usage of one dataset: the tile bytes of its examples' rows, per feature set.
    public struct DatasetUsage: Sendable, Codable {
        public var name: String
        public var examples: Int
        public var byFeatureSet: [FeatureSetShare]
    }

    /// Bytes of a dataset's rows in one feature set.
    public struct FeatureSetShare: Sendable, Codable {
        public var featureSet: String
        public var bytes: Int
    }

    /// Size of the LMDB data in use.
    public var storeBytes: Int
    public var featureSets: [FeatureSetUsage]
    public var datasets: [DatasetUsage]
}

extension FeatureStore {
    /// Re-reads every tile, verifies header and frame checksums and decompression, and checks
    /// row, segment, example and dataset counts against each other.
    public func verify(progress: ProgressReporter? = nil) throws -> VerifyReport {
        var report = VerifyReport()
        let infos = try allFeatureSets()
        progress?.setTotal(infos.reduce(0) { $0 + $1.segmentCount * $1.manifest.columnBlocks })
        try environment.read { txn in
            for info in infos {
                report.featureSets += 1
                let storedRows = try verifyTiles(txn, info, into: &report, progress: progress)
                try verifyRowMaps(txn, info, storedRows: storedRows, into: &report)
            }
            try verifySplits(txn, into: &report)
        }
        progress?.finish()
        return report
    }

    /// One tile's verification: whether it exists, what is wrong with it, how many values it holds.
    struct TileCheck: Sendable {
        var present = true
        var problems: [String] = []
        var values = 0
    }

    /// Verifies every tile of `segments` of a feature set, on the store's threads (one read
    /// transaction and one decoder per worker), in (segment, block) order.
    func checkTiles(_ info: FeatureSetInfo, segments: [Segment], progress: ProgressReporter?) throws -> [TileCheck] {
        let blocks = info.manifest.columnBlocks
        let fs = FeatureSetPrefix(id: info.id)
        let checks = WorkerSlots<TileCheck>(count: segments.count * blocks)
        try Parallel.forEachWorker(itemCount: segments.count * blocks, parallelism: parallelism) { _, next in
            let decoder = TileDecoder()
            try environment.read { txn in
                while let index = next() {
                    let segment = segments[index / blocks], block = index % blocks
                    let key = TileKey.describe(info.id, segment: segment.start, block: block)
                    var check = TileCheck()
                    if let tile = try txn.get(tables.tiles, (fs, segment.start, block)) {
                        do {
                            let binding = TileCodec.binding(key: TileKey.encode((fs, segment.start, block)), rows: segment.count)
                            let header = try TileHeader(parsing: tile, binding: binding)
                            let cols = min(info.manifest.columnBlock, info.manifest.width - block * info.manifest.columnBlock)
                            if header.rows != segment.count || header.cols != cols {
                                check.problems.append("\(key): shape \(header.rows)×\(header.cols), expected \(segment.count)×\(cols)")
                            }
                            check.values = try decoder.verify(tile, binding: binding)
                        } catch {
                            check.problems.append("\(key): \(error)")
                        }
                        progress?.advance(by: 1)
                    } else {
                        check = TileCheck(present: false, problems: ["\(key): missing"])
                    }
                    checks.set(index, check)
                }
            }
        }
        return checks.values.map { $0! }
    }

    /// Checks that the segments of a feature set follow each other without gaps and that every
    /// tile is present, has its segment's shape and decodes (on the store's threads); returns the
    /// rows the segments hold.
    private func verifyTiles(_ txn: borrowing LMDBTransaction, _ info: FeatureSetInfo,
                             into report: inout VerifyReport, progress: ProgressReporter?) throws -> Int {
        var expectedStart = 0
        let segments = try segmentList(txn, info.id)
        for segment in segments {
            if segment.start != expectedStart {
                report.problems.append("segments/\(info.id.prefix(12))/rows@\(segment.start): expected a segment at row \(expectedStart) (gap or overlap)")
            }
            expectedStart = segment.start + segment.count
        }
        for tile in try checkTiles(info, segments: segments, progress: progress) {
            report.problems += tile.problems
            report.valuesChecked += tile.values
            report.tilesChecked += tile.present ? 1 : 0
        }
        return expectedStart
    }

    /// Checks the example-to-row map and its reverse against the rows the segments hold.
    private func verifyRowMaps(_ txn: borrowing LMDBTransaction, _ info: FeatureSetInfo, storedRows: Int,
                               into report: inout VerifyReport) throws {
        let fs = FeatureSetPrefix(id: info.id)
        let short = info.id.prefix(12)
        var rowCount = 0
        do {
            try txn.scan(tables.rows, prefix: RowKey.prefix(fs)) { _, row in
                if row >= storedRows { report.problems.append("rows/\(short): a row number beyond the stored rows") }
                rowCount += 1
                return true
            }
        } catch let error as ByteLayoutError {
            report.problems.append("rows/\(short): \(error.reason)")
        }
        if rowCount != storedRows {
            report.problems.append("rows/\(short): \(rowCount) examples map to rows, but segments hold \(storedRows) rows")
        }
        var reverseCount = 0
        var missingExamples = 0
        do {
            try txn.scan(tables.rowExamples, prefix: FeatureSetRowKey.prefix(fs)) { _, example in
                reverseCount += 1
                if try !txn.contains(tables.examples, example) { missingExamples += 1 }
                return true
            }
        } catch let error as ByteLayoutError {
            report.problems.append("rowexamples/\(short): \(error.reason)")
        }
        if reverseCount != storedRows {
            report.problems.append("rowexamples/\(short): \(reverseCount) entries for \(storedRows) rows")
        }
        if missingExamples > 0 {
            report.problems.append("rowexamples/\(short): \(missingExamples) rows name examples with no record")
        }
    }

    /// Checks every split of every dataset: item count against its manifest, known examples,
    /// labels inside the class list.
    private func verifySplits(_ txn: borrowing LMDBTransaction, into report: inout VerifyReport) throws {
        var manifests: [DatasetManifest] = []
        try txn.scan(tables.datasets) { _, manifest in
            manifests.append(manifest)
            return true
        }
        for manifest in manifests {
            for (split, expected) in manifest.splits.sorted(by: { $0.key < $1.key }) {
                report.splits += 1
                let place = "datasets/\(manifest.name)/\(split)"
                var count = 0, unknown = 0, badLabels = 0
                do {
                    try txn.scan(tables.splitItems, prefix: SplitPrefix(dataset: manifest.name, split: split).bytes) { _, item in
                        count += 1
                        if try !txn.contains(tables.examples, item.example) { unknown += 1 }
                        if item.label >= manifest.classNames.count { badLabels += 1 }
                        return true
                    }
                } catch let error as ByteLayoutError {
                    report.problems.append("\(place): \(error.reason)")
                }
                if count != expected { report.problems.append("\(place): \(count) items, manifest says \(expected)") }
                if unknown > 0 { report.problems.append("\(place): \(unknown) items name unknown examples") }
                if badLabels > 0 { report.problems.append("\(place): \(badLabels) labels outside the class list") }
            }
        }
    }

    /// Bytes per feature set, per tap and per dataset, with the ratio against raw float32.
    public func diskUsage() throws -> DiskUsageReport {
        let infos = try allFeatureSets()
        let datasetList = try allDatasets()
        return try environment.read { txn in
            var usages: [DiskUsageReport.FeatureSetUsage] = []
            var bytesPerRow: [String: Double] = [:]
            for info in infos {
                let m = info.manifest
                let fs = FeatureSetPrefix(id: info.id)
                var total = 0
                var tapBytes = [Double](repeating: 0, count: m.taps.count)
                try txn.scan(tables.tiles, prefix: TileKey.prefix(fs)) { key, value in
                    total += value.count
                    let block = key.block
                    // Accounting only (no values are decoded): the header is not checked against its key.
                    guard let header = try? TileHeader(parsing: value, binding: nil) else { return true }
                    // Apportion each frame's bytes to the taps whose columns it holds.
                    for (f, bytes) in header.frameByteCounts(value).enumerated() {
                        let first = block * m.columnBlock + f * header.frameWidth
                        let last = first + header.columns(inFrame: f)
                        for (t, tap) in m.taps.enumerated() {
                            let overlap = min(last, tap.offset + tap.width) - max(first, tap.offset)
                            if overlap > 0 { tapBytes[t] += Double(bytes) * Double(overlap) / Double(last - first) }
                        }
                    }
                    return true
                }
                let raw = info.rowCount * m.width * 4
                bytesPerRow[info.id] = info.rowCount > 0 ? Double(total) / Double(info.rowCount) : 0
                usages.append(.init(
                    id: info.id, targetSize: m.targetSize, rows: info.rowCount, width: m.width, dtype: m.codec.dtype.rawValue,
                    bytes: total, float32Bytes: raw, ratio: total > 0 ? Double(raw) / Double(total) : 0,
                    taps: zip(m.taps, tapBytes).map { tap, bytes in
                        let rawTap = Double(info.rowCount * tap.width * 4)
                        return .init(name: tap.name, width: tap.width, bytes: Int(bytes.rounded()), ratio: bytes > 0 ? rawTap / bytes : 0)
                    }))
            }
            var datasetUsages: [DiskUsageReport.DatasetUsage] = []
            for manifest in datasetList {
                var members = Set<ExampleID>()
                for split in manifest.splits.keys {
                    try txn.scan(tables.splitItems, prefix: SplitPrefix(dataset: manifest.name, split: split).bytes) { _, item in
                        members.insert(item.example)
                        return true
                    }
                }
                var byFS: [DiskUsageReport.FeatureSetShare] = []
                for info in infos {
                    let fs = FeatureSetPrefix(id: info.id)
                    var present = 0
                    for example in members where try txn.contains(tables.rows, (fs, example)) { present += 1 }
                    if present > 0 { byFS.append(.init(featureSet: info.id, bytes: Int((Double(present) * (bytesPerRow[info.id] ?? 0)).rounded()))) }
                }
                datasetUsages.append(.init(name: manifest.name, examples: members.count, byFeatureSet: byFS))
            }
            return DiskUsageReport(storeBytes: try environment.usedBytes(), featureSets: usages, datasets: datasetUsages)
        }
    }
}
