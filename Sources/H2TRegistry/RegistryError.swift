/// Errors of the model registry, each naming the task, version, alias or file at fault, with a
/// suggestion where one helps.
public enum RegistryError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A name that breaks the naming rules.
    case invalidName(kind: String, name: String, reason: String)
    /// No head has this task name.
    case unknownTask(String, suggestion: String?)
    /// The task has no such version.
    case unknownVersion(task: String, version: Int, available: [Int])
    /// The version existed and was removed.
    case removedVersion(task: String, version: Int, available: [Int])
    /// The task has no such alias.
    case unknownAlias(task: String, alias: String, suggestion: String?, known: [String])
    /// The task has no live version at all.
    case noVersions(task: String)
    /// Removal would orphan an alias.
    case aliasedVersion(task: String, version: Int, aliases: [String])
    /// The head needs a feature set the store does not have.
    case missingFeatureSet(featureSet: String, backbone: String, backboneDescription: String)
    /// A draft or file that is inconsistent (shapes, indices, class counts).
    case invalidHead(String)
    /// A head file that cannot be read.
    case invalidHeadFile(path: String, reason: String)
    /// Input that does not fit the head (image size, channels, columns).
    case invalidInput(String)
    /// A stored record of a schema this build does not know.
    case unsupportedRecord(key: String, schema: String)

    public var description: String {
        switch self {
        case .invalidName(let kind, let name, let reason):
            return "invalid \(kind) '\(name)': \(reason)"
        case .unknownTask(let name, let suggestion):
            return "unknown head '\(name)'" + (suggestion.map { "; did you mean '\($0)'?" } ?? " (the registry has no head with a similar name; list them with `h2t-store heads`)")
        case .unknownVersion(let task, let version, let available):
            return "head '\(task)' has no version v\(version)" + Self.versions(available, nearTo: version)
        case .removedVersion(let task, let version, let available):
            return "version v\(version) of head '\(task)' was removed" + Self.versions(available, nearTo: version)
        case .unknownAlias(let task, let alias, let suggestion, let known):
            var text = "head '\(task)' has no alias '\(alias)'"
            if let suggestion { text += "; did you mean '\(task)@\(suggestion)'?" }
            else if known.isEmpty { text += " (it has no aliases; set one with `h2t-store alias set \(task) NAME vN`)" }
            else { text += " (aliases: \(known.joined(separator: ", ")))" }
            return text
        case .noVersions(let task):
            return "head '\(task)' has no live version (all were removed)"
        case .aliasedVersion(let task, let version, let aliases):
            return "cannot remove \(task)@v\(version): alias \(aliases.map { "'\($0)'" }.joined(separator: ", ")) points to it; move or delete the alias first (`h2t-store alias`)"
        case .missingFeatureSet(let featureSet, let backbone, let description):
            return "this store lacks feature set \(featureSet.prefix(12)) that the head reads; it needs backbone \(backbone.prefix(12)) (\(description)) pooled as that feature set: ingest the examples with that backbone first, then import again"
        case .invalidHead(let what):
            return "invalid head: \(what)"
        case .invalidHeadFile(let path, let reason):
            return "\(path): not a usable head file: \(reason)"
        case .invalidInput(let what):
            return what
        case .unsupportedRecord(let key, let schema):
            return "registry record \(key) has schema '\(schema)', which this h2t-store does not know (upgrade h2t-store)"
        }
    }

    private static func versions(_ available: [Int], nearTo version: Int) -> String {
        guard !available.isEmpty else { return " (it has no live versions)" }
        let nearest = available.min { abs($0 - version) < abs($1 - version) || (abs($0 - version) == abs($1 - version) && $0 > $1) }!
        return "; did you mean v\(nearest)? (versions: \(available.map { "v\($0)" }.joined(separator: ", ")))"
    }
}
