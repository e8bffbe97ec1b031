extension FeatureStore {
    /// The stored segment (its first row) of each example in feature set `featureSet` (id or
    /// prefix). Streaming readers group examples by it: reading all of a segment's examples in one
    /// request decodes each of its tiles once, where scattered rows would decode a tile per row.
    public func storageSegments(featureSet: String, examples: [ExampleID]) throws -> [Int] {
        let info = try self.featureSet(featureSet)
        let fs = FeatureSetPrefix(id: info.id)
        return try environment.read { txn -> [Int] in
            let starts = try segmentList(txn, info.id).map(\.start)
            return try examples.map { example -> Int in
                guard let row = try txn.get(tables.rows, (fs, example)) else {
                    throw StoreError.missingExample(example: example.hex, featureSet: info.id)
                }
                // The last segment starting at or before `row`.
                var lo = 0, hi = max(starts.count - 1, 0)
                while lo < hi {
                    let mid = (lo + hi + 1) / 2
                    if starts[mid] <= row { lo = mid } else { hi = mid - 1 }
                }
                return starts.isEmpty ? 0 : starts[lo]
            }
        }
    }
}
