import H2TStore

/// The registry's tables, kept in the store's LMDB environment beside the features and owned
/// here: names, keys and values (`schemas/registry-format.md`; `FormatDocumentTests` checks the
/// document against `names`).
///
/// Keys are big-endian composites, so that a task's versions, an alias's history and a tag's
/// heads sort together and are read with one prefix scan. Names never contain a NUL byte (checked
/// on entry), so `00` terminates them unambiguously. Values are canonical JSON records whose
/// `schema` tag says which kind they are, so they are read as bytes and decoded by kind.
struct RegistryTables: Sendable {
    /// Table names, in the order they are opened.
    static let names = ["registry", "aliases", "tags"]

    /// `task | 00 | version u32 BE | part` → head summary or tombstone, body, listing entry.
    let heads: Table<HeadPartKey, RawBytes>
    /// Current targets and append-only histories of aliases.
    let aliases: Table<AliasKey, RawBytes>
    /// Tags of heads, and the index from tag to heads.
    let tags: Table<TagKey, RawBytes>

    /// Opens (creating them when the store is writable) the registry's tables in `store`.
    init(store: FeatureStore) throws {
        let raw = try store.companionTables(Self.names)
        heads = Table(raw[0])
        aliases = Table(raw[1])
        tags = Table(raw[2])
    }
}

/// The three records of a head version.
enum HeadPart: UInt8, Sendable {
    /// Head summary (`h2t.head/1`), or a tombstone (`h2t.head-removed/1`) once removed.
    case summary = 0
    /// Head body (`h2t.head-body/1`): weights, indices, curves.
    case body = 1
    /// Listing entry (`h2t.head-entry/1`), live heads only.
    case entry = 2
}

/// `registry` keys: `task | 00 | version u32 BE | part`.
enum HeadPartKey: ByteCodec {
    static func encode(_ item: (task: String, version: Int, part: HeadPart)) -> [UInt8] {
        var w = ByteWriter()
        w.name(item.task)
        w.u32BE(item.version)
        w.raw([item.part.rawValue])
        return w.bytes
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> (task: String, version: Int, part: HeadPart) {
        var r = ByteReader(bytes)
        let task = try r.name()
        let version = try r.u32BE()
        guard r.remaining == 1, let part = HeadPart(rawValue: try r.byte()) else { throw ByteLayoutError("a head key with an unknown part") }
        return (task, version, part)
    }

    /// The prefix of every key of `task`.
    static func prefix(task: String) -> [UInt8] {
        var w = ByteWriter()
        w.name(task)
        return w.bytes
    }

    /// The smallest key after every key of `task` (to skip to the next task).
    static func after(task: String) -> [UInt8] { Array(task.utf8) + [1] }
}

/// `aliases` keys.
enum AliasKey: ByteCodec {
    enum Item {
        /// `"c" | task | 00 | alias` → current target (`h2t.alias/1`).
        case current(task: String, alias: String)
        /// `"h" | task | 00 | alias | 00 | seq u32 BE` → one move (`h2t.alias-event/1`).
        case history(task: String, alias: String, seq: Int)
    }

    static let currentTag = UInt8(ascii: "c"), historyTag = UInt8(ascii: "h")

    static func encode(_ item: Item) -> [UInt8] {
        switch item {
        case .current(let task, let alias):
            var w = ByteWriter(currentPrefix(task: task))
            w.text(alias)
            return w.bytes
        case .history(let task, let alias, let seq):
            var w = ByteWriter(historyPrefix(task: task, alias: alias))
            w.u32BE(seq)
            return w.bytes
        }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Item {
        var r = ByteReader(bytes)
        switch try r.byte() {
        case currentTag:
            let task = try r.name()
            return .current(task: task, alias: r.rest())
        case historyTag:
            let task = try r.name(), alias = try r.name()
            return .history(task: task, alias: alias, seq: try r.u32BE())
        default: throw ByteLayoutError("an alias key of an unknown kind")
        }
    }

    /// The prefix of the current targets of `task`'s aliases (every task's when `nil`).
    static func currentPrefix(task: String?) -> [UInt8] {
        var w = ByteWriter([currentTag])
        if let task { w.name(task) }
        return w.bytes
    }

    /// The prefix of the history of `task@alias`.
    static func historyPrefix(task: String, alias: String) -> [UInt8] {
        var w = ByteWriter([historyTag])
        w.name(task)
        w.name(alias)
        return w.bytes
    }
}

/// `tags` keys.
enum TagKey: ByteCodec {
    enum Item {
        /// `"h" | task | 00 | version u32 BE | key` → `h2t.tag/1` (task, version, key, value).
        case ofHead(task: String, version: Int, key: String)
        /// `"k" | key | 00 | value | 00 | task | 00 | version u32 BE` → empty (the search index).
        case index(key: String, value: String, task: String, version: Int)
    }

    static let headTag = UInt8(ascii: "h"), indexTag = UInt8(ascii: "k")

    static func encode(_ item: Item) -> [UInt8] {
        switch item {
        case .ofHead(let task, let version, let key):
            var w = ByteWriter(headPrefix(task: task, version: version))
            w.text(key)
            return w.bytes
        case .index(let key, let value, let task, let version):
            var w = ByteWriter(indexPrefix(key: key, value: value))
            w.name(task)
            w.u32BE(version)
            return w.bytes
        }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Item {
        var r = ByteReader(bytes)
        switch try r.byte() {
        case headTag:
            let task = try r.name(), version = try r.u32BE()
            return .ofHead(task: task, version: version, key: r.rest())
        case indexTag:
            let key = try r.name(), value = try r.name(), task = try r.name()
            return .index(key: key, value: value, task: task, version: try r.u32BE())
        default: throw ByteLayoutError("a tag key of an unknown kind")
        }
    }

    /// The prefix of the tags of `task@v<version>`; of every version of `task` when `version` is
    /// `nil`; of every head when `task` is `nil` too.
    static func headPrefix(task: String?, version: Int? = nil) -> [UInt8] {
        var w = ByteWriter([headTag])
        if let task {
            w.name(task)
            if let version { w.u32BE(version) }
        }
        return w.bytes
    }

    /// The prefix of the index entries of tag `key` (with `value`, when given).
    static func indexPrefix(key: String, value: String?) -> [UInt8] {
        var w = ByteWriter([indexTag])
        w.name(key)
        if let value { w.name(value) }
        return w.bytes
    }
}

/// Small helpers shared by the registry's operations.
enum Text {
    /// Levenshtein distance (for "did you mean" suggestions).
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.lowercased()), y = Array(b.lowercased())
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var previous = Array(0...y.count)
        var current = [Int](repeating: 0, count: y.count + 1)
        for i in 1...x.count {
            current[0] = i
            for j in 1...y.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[y.count]
    }

    /// The candidate nearest to `name`, if it is close enough to be a plausible typo (or `name`
    /// is a prefix or suffix of it).
    static func nearest(_ name: String, in candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(name, $0)) }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }) else { return nil }
        let limit = max(2, name.count / 3)
        if best.1 <= limit { return best.0 }
        return candidates.filter { $0.hasPrefix(name) || $0.hasSuffix(name) || name.hasPrefix($0) }.sorted().first
    }
}
