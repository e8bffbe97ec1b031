/// Errors of the feature-set store, each naming the store, feature set, dataset, example or key at fault.
public enum StoreError: Error, CustomStringConvertible, Sendable {
    case unsupportedFormat(path: String, found: UInt32)
    case notAStore(path: String)
    case unknownFeatureSet(String, known: [String])
    case ambiguousFeatureSet(String)
    case unknownDataset(String, known: [String])
    case unknownSplit(dataset: String, split: String, known: [String])
    case missingExample(example: String, featureSet: String)
    case unknownExample(String)
    case corruptTile(key: String, reason: String)
    case inconsistent(String)
    case invalidArgument(String)
    case labelConflict(example: String, dataset: String, split: String, stored: String, new: String)
    case classNamesConflict(dataset: String, stored: [String], new: [String])
    case unsupportedPoolingRule(PoolingRule, implemented: [PoolingRule])

    public var description: String {
        switch self {
        case .unsupportedFormat(let path, let found):
            let readable = FeatureStore.readableFormatVersions
            return "store \(path) has format version \(found); this h2t-store reads versions \(readable.lowerBound) to \(readable.upperBound) (upgrade h2t-store, or use a new store path)"
        case .notAStore(let path): return "\(path) is not an h2t-store (no format record)"
        case .unknownFeatureSet(let id, let known):
            return "unknown feature set '\(id)'" + (known.isEmpty ? " (the store has none)" : " (known: \(known.joined(separator: ", ")))")
        case .ambiguousFeatureSet(let id): return "feature set prefix '\(id)' matches several feature sets; give more digits"
        case .unknownDataset(let name, let known):
            return "unknown dataset '\(name)'" + (known.isEmpty ? " (the store has none)" : " (known: \(known.joined(separator: ", ")))")
        case .unknownSplit(let dataset, let split, let known):
            return "dataset '\(dataset)' has no split '\(split)' (splits: \(known.joined(separator: ", ")))"
        case .missingExample(let example, let fs): return "example \(example) has no features in feature set \(fs.prefix(12))"
        case .unknownExample(let name): return "unknown example '\(name)'"
        case .corruptTile(let key, let reason): return "corrupted tile \(key): \(reason)"
        case .inconsistent(let what): return "store is inconsistent: \(what)"
        case .invalidArgument(let what): return what
        case .labelConflict(let example, let dataset, let split, let stored, let new):
            return "example \(example) is already in \(dataset)/\(split) with label '\(stored)', not '\(new)'"
        case .classNamesConflict(let dataset, let stored, let new):
            return "dataset '\(dataset)' has classes \(stored), not \(new)"
        case .unsupportedPoolingRule(let rule, let implemented):
            return "feature set pooled with rule \(rule), which this h2t-store does not implement (it implements \(implemented.map(\.description).joined(separator: ", "))); upgrade h2t-store, or ingest into a new feature set"
        }
    }
}
