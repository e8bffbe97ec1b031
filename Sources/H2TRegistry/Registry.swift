import Dispatch
import Foundation
import H2TCore
import H2TStore

/// The current target of an alias.
public struct AliasState: Sendable, Hashable, Codable {
    /// Schema tag of the stored value.
    public var schema = "h2t.alias/1"
    /// Task name.
    public var task: String
    /// Alias name.
    public var alias: String
    /// Version it points to.
    public var version: Int
    /// Sequence number of the move that set it (its history entry).
    public var seq: Int
    /// When it was set, ISO 8601 UTC.
    public var updatedAt: String
}

/// One entry of an alias's append-only history.
public struct AliasEvent: Sendable, Hashable, Codable {
    /// Schema tag of the stored value.
    public var schema = "h2t.alias-event/1"
    /// Task name.
    public var task: String
    /// Alias name.
    public var alias: String
    /// Position in the history (1, 2, ...).
    public var seq: Int
    /// Version before the move (`nil`: the alias did not exist).
    public var from: Int?
    /// Version after the move (`nil`: the alias was deleted).
    public var to: Int?
    /// When, ISO 8601 UTC.
    public var at: String
    /// Who: user, host and process id.
    public var actor: String
}

/// A head as listed: its listing entry, tags and the aliases pointing to it (the full summary is
/// one `summary(_:)` call away).
public struct HeadListing: Sendable, Hashable, Codable {
    /// The listing entry.
    public var entry: HeadEntry
    /// Tags.
    public var tags: [String: String]
    /// Aliases of its task that point to this version.
    public var aliases: [String]
}

/// Which heads `list` returns and in what order.
public struct HeadFilter: Sendable, Hashable {
    /// Only this task.
    public var task: String?
    /// Only heads carrying these tags (`key` alone: any value).
    public var tags: [(key: String, value: String?)]
    /// Only heads an alias of this name points to.
    public var alias: String?
    /// Sort key (see `HeadFilter.sortKeys`); `nil` sorts by task then version.
    public var sort: String?
    /// Only the latest live version of each task.
    public var latestOnly: Bool

    /// Sort keys: metrics sort best first, `created` newest first.
    public static let sortKeys = ["test_accuracy", "cv_accuracy", "gain_vs_probe", "kept_features", "created", "version", "task"]

    /// Creates a filter.
    public init(task: String? = nil, tags: [(key: String, value: String?)] = [], alias: String? = nil, sort: String? = nil, latestOnly: Bool = false) {
        self.task = task
        self.tags = tags
        self.alias = alias
        self.sort = sort
        self.latestOnly = latestOnly
    }

    public static func == (a: HeadFilter, b: HeadFilter) -> Bool {
        a.task == b.task && a.alias == b.alias && a.sort == b.sort && a.latestOnly == b.latestOnly
            && a.tags.map(\.key) == b.tags.map(\.key) && a.tags.map(\.value) == b.tags.map(\.value)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(task); hasher.combine(alias); hasher.combine(sort); hasher.combine(latestOnly)
    }
}

/// The model registry: numbered immutable head versions per task, movable aliases with history,
/// tags, removal and garbage collection, kept in the store's LMDB environment in tables of its own
/// (`RegistryTables`; layout in `schemas/registry-format.md`).
///
/// Every change is one LMDB write transaction, so concurrent writers (threads or processes) are
/// serialised and none of their updates is lost.
public final class Registry: Sendable {
    /// The store holding the registry.
    public let store: FeatureStore
    /// Names of the registry's tables (`schemas/registry-format.md`).
    public static var tableNames: [String] { RegistryTables.names }
    let heads: Table<HeadPartKey, RawBytes>
    let aliasTable: Table<AliasKey, RawBytes>
    let tagTable: Table<TagKey, RawBytes>

    /// Opens the registry of `store`, creating its tables when the store is writable and has none.
    public init(store: FeatureStore) throws {
        self.store = store
        let tables = try RegistryTables(store: store)
        heads = tables.heads
        aliasTable = tables.aliases
        tagTable = tables.tags
    }

    static func now(_ date: Date = Date()) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    static let actor: String = {
        let env = ProcessInfo.processInfo.environment
        return "\(env["USER"] ?? env["LOGNAME"] ?? "unknown")@\(ProcessInfo.processInfo.hostName) pid \(getpid())"
    }()

    // MARK: Register

    /// Registers `draft` as the next version of its task, atomically: the version number is taken
    /// inside the write transaction, so two concurrent registrations get distinct numbers. With
    /// `alias`, the alias moves to the new version in the same transaction: a kill can leave
    /// neither or both, never a new version without its alias.
    public func register(_ draft: HeadDraft, alias: String? = nil, createdAt: Date = Date()) throws -> HeadRecord {
        try draft.validate()
        if let alias { try Naming.checkAlias(alias) }
        for (key, value) in draft.tags {
            try Naming.checkTagKey(key)
            try Naming.checkTagValue(value)
        }
        let created = Self.now(createdAt)
        let body = try CanonicalJSON.encode(HeadBody(draft.model))
        return try store.write { txn in
            let version = try txn.lastKey(heads, prefix: HeadPartKey.prefix(task: draft.task)).map { $0.version + 1 } ?? 1
            let record = HeadRecord(draft.model, version: version, createdAt: created)
            try txn.put(heads, (draft.task, version, .summary), try CanonicalJSON.encode(record.summary))
            try txn.put(heads, (draft.task, version, .entry), try CanonicalJSON.encode(HeadEntry(record.summary)))
            try txn.put(heads, (draft.task, version, .body), body)
            for (key, value) in draft.tags { try putTag(txn, draft.task, version, key, value) }
            if let alias { _ = try moveAlias(txn, task: draft.task, alias: alias, to: version) }
            return record
        }
    }

    // MARK: Resolve and read

    /// Every task name with at least one version (live or removed), sorted.
    public func tasks() throws -> [String] {
        try store.read { txn in try taskNames(txn) }
    }

    func taskNames(_ txn: borrowing LMDBTransaction) throws -> [String] {
        var names: [String] = []
        var start: [UInt8]? = nil
        // Skip from one task to the next: position after "task\0\xFF..." with a range seek.
        while true {
            var found: String?
            try txn.scanKeys(heads, from: start) { key in
                found = key.task
                return false
            }
            guard let name = found else { break }
            names.append(name)
            start = HeadPartKey.after(task: name)
        }
        return names
    }

    /// Live versions of `task`, ascending, and removed ones.
    func versions(_ txn: borrowing LMDBTransaction, _ task: String) throws -> (live: [Int], removed: [Int]) {
        var live: [Int] = [], removed: [Int] = []
        try txn.scan(heads, prefix: HeadPartKey.prefix(task: task)) { key, value in
            guard key.part == .summary else { return true }
            if Self.isTombstone(value) { removed.append(key.version) } else { live.append(key.version) }
            return true
        }
        return (live, removed)
    }

    /// Whether a summary-part value is a tombstone. Canonical JSON sorts keys, and `removedAt` is
    /// the first key of a tombstone while a summary starts with `classNames`.
    static func isTombstone(_ value: UnsafeRawBufferPointer) -> Bool {
        let marker = tombstoneMarker
        return value.count >= marker.count && zip(value, marker).allSatisfy { $0 == $1 }
    }

    static let tombstoneMarker = Array("{\"removedAt\"".utf8)

    /// The version `reference` selects (throws with a suggestion when it selects nothing).
    public func resolve(_ reference: HeadReference) throws -> Int {
        try store.read { txn in try resolve(txn, reference) }
    }

    func resolve(_ txn: borrowing LMDBTransaction, _ reference: HeadReference) throws -> Int {
        let (live, removed) = try versions(txn, reference.task)
        if live.isEmpty && removed.isEmpty {
            throw RegistryError.unknownTask(reference.task, suggestion: Text.nearest(reference.task, in: try taskNames(txn)))
        }
        switch reference.selector {
        case .latest:
            guard let last = live.last else { throw RegistryError.noVersions(task: reference.task) }
            return last
        case .version(let v):
            if live.contains(v) { return v }
            if removed.contains(v) { throw RegistryError.removedVersion(task: reference.task, version: v, available: live) }
            throw RegistryError.unknownVersion(task: reference.task, version: v, available: live)
        case .alias(let name):
            guard let state = try aliasState(txn, reference.task, name) else {
                let known = try aliasStates(txn, task: reference.task).map(\.alias)
                throw RegistryError.unknownAlias(task: reference.task, alias: name, suggestion: Text.nearest(name, in: known), known: known)
            }
            if !live.contains(state.version) {
                throw RegistryError.removedVersion(task: reference.task, version: state.version, available: live)
            }
            return state.version
        }
    }

    /// The summary of the head `reference` selects.
    public func summary(_ reference: HeadReference) throws -> HeadSummary {
        try store.read { txn in
            let version = try resolve(txn, reference)
            return try readSummary(txn, reference.task, version)
        }
    }

    /// One line for a record that does not decode: what is wrong, and where in the record.
    static func describe(_ error: DecodingError) -> String {
        let (context, what): (DecodingError.Context, String) = switch error {
        case let .dataCorrupted(c): (c, "not valid JSON")
        case let .keyNotFound(key, c): (c, "no '\(key.stringValue)'")
        case let .typeMismatch(_, c): (c, "a value of the wrong type")
        case let .valueNotFound(_, c): (c, "a missing value")
        @unknown default: (DecodingError.Context(codingPath: [], debugDescription: ""), "undecodable")
        }
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return path.isEmpty ? what : "\(what) at \(path)"
    }

    func readSummary(_ txn: borrowing LMDBTransaction, _ task: String, _ version: Int) throws -> HeadSummary {
        guard let value = try txn.get(heads, (task, version, .summary)) else { throw RegistryError.unknownVersion(task: task, version: version, available: []) }
        let summary: HeadSummary
        do { summary = try CanonicalJSON.decode(HeadSummary.self, from: value) } catch let error as DecodingError {
            throw RegistryError.invalidHead("registry/\(task)@v\(version) is damaged: \(Self.describe(error))")
        }
        guard summary.schema == "h2t.head/1" else { throw RegistryError.unsupportedRecord(key: "registry/\(task)@v\(version)", schema: summary.schema) }
        return summary
    }

    /// The full record (weights, indices, curves) of the head `reference` selects.
    public func head(_ reference: HeadReference) throws -> HeadRecord {
        try store.read { txn in
            let version = try resolve(txn, reference)
            let summary = try readSummary(txn, reference.task, version)
            guard let value = try txn.get(heads, (reference.task, version, .body)) else {
                throw RegistryError.invalidHead("registry/\(reference.task)@v\(version) has no body")
            }
            let body: HeadBody
            do { body = try HeadBody.decode(value) } catch let error as DecodingError {
                throw RegistryError.invalidHead("registry/\(reference.task)@v\(version)/body is damaged: \(Self.describe(error))")
            }
            guard body.schema == "h2t.head-body/1" else {
                throw RegistryError.unsupportedRecord(key: "registry/\(reference.task)@v\(version)/body", schema: body.schema)
            }
            return HeadRecord(HeadModel(summary: summary, body: body), version: summary.version, createdAt: summary.createdAt)
        }
    }

    /// The full record of the head `text` (`NAME`, `NAME@vN`, `NAME@alias`) selects.
    public func head(_ text: String) throws -> HeadRecord { try head(try HeadReference(parsing: text)) }

    // MARK: List

    /// Heads matching `filter`, with their tags and aliases, sorted as asked.
    public func list(_ filter: HeadFilter = HeadFilter()) throws -> [HeadListing] {
        if let sort = filter.sort, !HeadFilter.sortKeys.contains(sort) {
            throw RegistryError.invalidName(kind: "sort key", name: sort, reason: "use one of \(HeadFilter.sortKeys.joined(separator: ", "))")
        }
        var listings: [HeadListing] = try store.read { txn in
            // Candidate heads from the tag index when a tag filter is given (no full scan).
            var allowed: Set<HeadKey>? = nil
            for (key, value) in filter.tags {
                var hits = Set<HeadKey>()
                try txn.scanKeys(tagTable, prefix: TagKey.indexPrefix(key: key, value: value)) { k in
                    if case .index(_, _, let task, let version) = k { hits.insert(HeadKey(task: task, version: version)) }
                    return true
                }
                allowed = allowed.map { $0.intersection(hits) } ?? hits
            }
            var aliasesByHead: [String: [String]] = [:]
            let states = try aliasStates(txn, task: filter.task)
            for state in states { aliasesByHead["\(state.task)@v\(state.version)", default: []].append(state.alias) }
            if let alias = filter.alias {
                let hits = Set(states.filter { $0.alias == alias }.map { HeadKey(task: $0.task, version: $0.version) })
                allowed = allowed.map { $0.intersection(hits) } ?? hits
            }
            // Copy the candidate entries out of the map; they are decoded after the transaction,
            // on every core (decoding dominates a listing).
            var raw: [(ref: String, bytes: Data)] = []
            let prefix = filter.task.map { HeadPartKey.prefix(task: $0) } ?? []
            if let allowed {
                // Filtered: point lookups of the candidates, in key order (task bytes, then version).
                let ordered = allowed.filter { filter.task == nil || $0.task == filter.task }.sorted {
                    $0.task != $1.task ? Array($0.task.utf8).lexicographicallyPrecedes(Array($1.task.utf8)) : $0.version < $1.version
                }
                for head in ordered {
                    if let value = try txn.get(heads, (head.task, head.version, .entry)) { raw.append(("", Data(value))) }
                }
            } else {
                try txn.scan(heads, prefix: prefix) { key, value in
                    guard key.part == .entry else { return true }
                    raw.append(("", Data(value)))
                    return true
                }
            }
            let decoded = try Self.decodeEntries(raw.map(\.bytes), parallelism: store.parallelism)
            var out = decoded.map { entry in
                HeadListing(entry: entry, tags: [:], aliases: (aliasesByHead[entry.reference] ?? []).sorted())
            }
            let decoder = JSONDecoder()
            // Tags of the listed heads.
            var tagsByHead: [String: [String: String]] = [:]
            if !out.isEmpty {
                try txn.scan(tagTable, prefix: TagKey.headPrefix(task: filter.task)) { _, value in
                    let tag = try decoder.decode(StoredTag.self, from: Data(value))
                    tagsByHead["\(tag.task)@v\(tag.version)", default: [:]][tag.key] = tag.value
                    return true
                }
            }
            for i in out.indices { out[i].tags = tagsByHead[out[i].entry.reference] ?? [:] }
            return out
        }
        if filter.latestOnly { listings = Self.latestVersions(listings) }
        return Self.sorted(listings, by: filter.sort)
    }

    /// The latest version of each task among `listings`, in the order of their first listing.
    static func latestVersions(_ listings: [HeadListing]) -> [HeadListing] {
        var latest: [String: Int] = [:]
        for (i, l) in listings.enumerated() where (latest[l.entry.task].map { listings[$0].entry.version < l.entry.version } ?? true) {
            latest[l.entry.task] = i
        }
        return latest.values.sorted().map { listings[$0] }
    }

    /// `listings` sorted by `key` (one of `HeadFilter.sortKeys`; `nil` or `task` keeps key order):
    /// best first, ties in listing order.
    static func sorted(_ listings: [HeadListing], by key: String?) -> [HeadListing] {
        func metric(_ l: HeadListing) -> Double {
            let e = l.entry
            switch key {
            case "test_accuracy": return e.testAccuracy ?? -1
            case "cv_accuracy": return e.cvAccuracy
            case "gain_vs_probe":
                if let t = e.testAccuracy, let p = e.probeTestAccuracy { return t - p }
                return e.probeCvAccuracy.map { e.cvAccuracy - $0 } ?? -1
            case "kept_features": return -Double(e.inputCount)
            case "version": return Double(e.version)
            default: return 0
            }
        }
        switch key {
        case nil, "task": return listings
        case "created": return listings.sorted { $0.entry.createdAt > $1.entry.createdAt }
        default:
            let keys = listings.map(metric)
            return zip(keys, listings).enumerated().sorted { a, b in
                a.element.0 != b.element.0 ? a.element.0 > b.element.0 : a.offset < b.offset
            }.map(\.element.1)
        }
    }

    /// Decodes listing entries on `parallelism`'s threads (one for short lists, where starting
    /// threads costs more than it saves), in order.
    static func decodeEntries(_ values: [Data], parallelism: Parallelism) throws -> [HeadEntry] {
        let entries = WorkerSlots<HeadEntry>(count: values.count)
        try Parallel.forEachWorker(itemCount: values.count, parallelism: values.count < 256 ? .serial : parallelism) { _, next in
            let decoder = JSONDecoder()
            while let i = next() { entries.set(i, try decoder.decode(HeadEntry.self, from: values[i])) }
        }
        return entries.values.map { $0! }
    }

    // MARK: Aliases

    func aliasState(_ txn: borrowing LMDBTransaction, _ task: String, _ alias: String) throws -> AliasState? {
        try txn.get(aliasTable, .current(task: task, alias: alias)).map { try CanonicalJSON.decode(AliasState.self, from: $0) }
    }

    func aliasStates(_ txn: borrowing LMDBTransaction, task: String?) throws -> [AliasState] {
        var out: [AliasState] = []
        try txn.scan(aliasTable, prefix: AliasKey.currentPrefix(task: task)) { _, value in
            out.append(try CanonicalJSON.decode(AliasState.self, from: value))
            return true
        }
        return out
    }

    /// Current aliases (of one task, or all), sorted by task and name.
    public func aliases(task: String? = nil) throws -> [AliasState] {
        try store.read { txn in try aliasStates(txn, task: task) }
    }

    /// The history of `task@alias`, oldest first.
    public func aliasHistory(task: String, alias: String) throws -> [AliasEvent] {
        try store.read { txn in
            var out: [AliasEvent] = []
            try txn.scan(aliasTable, prefix: AliasKey.historyPrefix(task: task, alias: alias)) { _, value in
                out.append(try CanonicalJSON.decode(AliasEvent.self, from: value))
                return true
            }
            return out
        }
    }

    /// Points `alias` of `target.task` at the version `target` selects (it must be live), in one
    /// write transaction that also appends the move to the alias's history.
    @discardableResult
    public func setAlias(_ alias: String, to target: HeadReference) throws -> AliasEvent {
        try Naming.checkAlias(alias)
        return try store.write { txn in
            let version = try resolve(txn, target)
            return try moveAlias(txn, task: target.task, alias: alias, to: version)
        }
    }

    /// Deletes `alias` of `task` (the deletion is recorded in its history).
    @discardableResult
    public func deleteAlias(_ alias: String, task: String) throws -> AliasEvent {
        try Naming.checkAlias(alias)
        return try store.write { txn in
            guard try aliasState(txn, task, alias) != nil else {
                _ = try resolve(txn, HeadReference(task: task)) // unknown task: say so first
                let known = try aliasStates(txn, task: task).map(\.alias)
                throw RegistryError.unknownAlias(task: task, alias: alias, suggestion: Text.nearest(alias, in: known), known: known)
            }
            return try moveAlias(txn, task: task, alias: alias, to: nil)
        }
    }

    private func moveAlias(_ txn: borrowing LMDBTransaction, task: String, alias: String, to version: Int?) throws -> AliasEvent {
        let previous = try aliasState(txn, task, alias)
        let last = try txn.lastKey(aliasTable, prefix: AliasKey.historyPrefix(task: task, alias: alias))
        var seq = 1
        if case .history(_, _, let lastSeq) = last { seq = lastSeq + 1 }
        let at = Self.now()
        let event = AliasEvent(task: task, alias: alias, seq: seq, from: previous?.version, to: version, at: at, actor: Self.actor)
        try txn.put(aliasTable, .history(task: task, alias: alias, seq: seq), try CanonicalJSON.encode(event))
        if let version {
            try txn.put(aliasTable, .current(task: task, alias: alias),
                        try CanonicalJSON.encode(AliasState(task: task, alias: alias, version: version, seq: seq, updatedAt: at)))
        } else {
            try txn.delete(aliasTable, .current(task: task, alias: alias))
        }
        return event
    }

    // MARK: Tags

    struct StoredTag: Codable {
        var schema = "h2t.tag/1"
        var task: String
        var version: Int
        var key: String
        var value: String
    }

    private func putTag(_ txn: borrowing LMDBTransaction, _ task: String, _ version: Int, _ key: String, _ value: String) throws {
        let headKey = TagKey.Item.ofHead(task: task, version: version, key: key)
        if let old = try txn.get(tagTable, headKey) {
            let previous = try CanonicalJSON.decode(StoredTag.self, from: old)
            try txn.delete(tagTable, .index(key: key, value: previous.value, task: task, version: version))
        }
        try txn.put(tagTable, headKey, try CanonicalJSON.encode(StoredTag(task: task, version: version, key: key, value: value)))
        try txn.put(tagTable, .index(key: key, value: value, task: task, version: version), [])
    }

    private func deleteTag(_ txn: borrowing LMDBTransaction, _ task: String, _ version: Int, _ key: String) throws -> Bool {
        let headKey = TagKey.Item.ofHead(task: task, version: version, key: key)
        guard let old = try txn.get(tagTable, headKey) else { return false }
        let previous = try CanonicalJSON.decode(StoredTag.self, from: old)
        try txn.delete(tagTable, .index(key: key, value: previous.value, task: task, version: version))
        try txn.delete(tagTable, headKey)
        return true
    }

    private func tagsOf(_ txn: borrowing LMDBTransaction, _ task: String, _ version: Int) throws -> [String: String] {
        var out: [String: String] = [:]
        try txn.scan(tagTable, prefix: TagKey.headPrefix(task: task, version: version)) { _, value in
            let tag = try CanonicalJSON.decode(StoredTag.self, from: value)
            out[tag.key] = tag.value
            return true
        }
        return out
    }

    /// Sets tags on a head (replacing values of existing keys) and removes `remove` keys; returns
    /// the head's version and its tags afterwards.
    @discardableResult
    public func tag(_ reference: HeadReference, set: [String: String] = [:], remove: [String] = []) throws -> (version: Int, tags: [String: String]) {
        for (key, value) in set {
            try Naming.checkTagKey(key)
            try Naming.checkTagValue(value)
        }
        return try store.write { txn in
            let version = try resolve(txn, reference)
            for key in remove { _ = try deleteTag(txn, reference.task, version, key) }
            for (key, value) in set.sorted(by: { $0.key < $1.key }) { try putTag(txn, reference.task, version, key, value) }
            return (version, try tagsOf(txn, reference.task, version))
        }
    }

    /// Tags of the head `reference` selects.
    public func tags(_ reference: HeadReference) throws -> [String: String] {
        try store.read { txn in
            let version = try resolve(txn, reference)
            return try tagsOf(txn, reference.task, version)
        }
    }

    // MARK: Remove

    /// Removes one version: its weights go, a tombstone keeps its number from being reused.
    /// Refuses when an alias points to it (the alias would be orphaned).
    @discardableResult
    public func remove(_ reference: HeadReference) throws -> HeadSummary {
        try store.write { txn in
            let version = try resolve(txn, reference)
            let pointing = try aliasStates(txn, task: reference.task).filter { $0.version == version }.map(\.alias)
            guard pointing.isEmpty else { throw RegistryError.aliasedVersion(task: reference.task, version: version, aliases: pointing) }
            let summary = try readSummary(txn, reference.task, version)
            for key in try tagsOf(txn, reference.task, version).keys { _ = try deleteTag(txn, reference.task, version, key) }
            try txn.delete(heads, (reference.task, version, .body))
            try txn.delete(heads, (reference.task, version, .entry))
            try txn.put(heads, (reference.task, version, .summary),
                        try CanonicalJSON.encode(RemovedHead(task: reference.task, version: version, removedAt: Self.now())))
            return summary
        }
    }
}

/// A head's task and version, as a set element.
struct HeadKey: Hashable {
    var task: String
    var version: Int
}

