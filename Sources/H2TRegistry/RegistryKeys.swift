/// Big-endian composite keys of the registry tables, so that a task's versions, an alias's history
/// and a tag's heads sort together and are read with one prefix scan.
///
/// - `registry`: `task | 00 | version u32 BE | 00` → head summary (`h2t.head/1`) or tombstone
///   (`h2t.head-removed/1`); `task | 00 | version u32 BE | 01` → head body (`h2t.head-body/1`);
///   `task | 00 | version u32 BE | 02` → listing entry (`h2t.head-entry/1`), live heads only.
/// - `aliases`: `"c" | task | 00 | alias` → current target (`h2t.alias/1`);
///   `"h" | task | 00 | alias | 00 | seq u32 BE` → one move (`h2t.alias-event/1`), append-only.
/// - `tags`: `"h" | task | 00 | version u32 BE | key` → `h2t.tag/1` (key and value);
///   `"k" | key | 00 | value | 00 | task | 00 | version u32 BE` → empty (the search index).
/// Names never contain a NUL byte (checked on entry), so `00` terminates them unambiguously.
enum RegistryKeys {
    static let summaryPart: UInt8 = 0
    static let bodyPart: UInt8 = 1
    static let entryPart: UInt8 = 2

    static func u32(_ v: Int) -> [UInt8] {
        let x = UInt32(v)
        return [UInt8(x >> 24), UInt8(truncatingIfNeeded: x >> 16), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x)]
    }

    static func readU32(_ p: UnsafeRawBufferPointer, _ at: Int) -> Int {
        Int(p[at]) << 24 | Int(p[at + 1]) << 16 | Int(p[at + 2]) << 8 | Int(p[at + 3])
    }

    static func task(_ task: String) -> [UInt8] { Array(task.utf8) + [0] }
    static func head(_ task: String, _ version: Int, _ part: UInt8) -> [UInt8] { Self.task(task) + u32(version) + [part] }

    static func aliasCurrentPrefix(_ task: String?) -> [UInt8] { [UInt8(ascii: "c")] + (task.map(Self.task) ?? []) }
    static func aliasCurrent(_ task: String, _ alias: String) -> [UInt8] { aliasCurrentPrefix(task) + Array(alias.utf8) }
    static func aliasHistoryPrefix(_ task: String, _ alias: String) -> [UInt8] { [UInt8(ascii: "h")] + Self.task(task) + Array(alias.utf8) + [0] }
    static func aliasHistory(_ task: String, _ alias: String, seq: Int) -> [UInt8] { aliasHistoryPrefix(task, alias) + u32(seq) }

    static func tagsOfHead(_ task: String, _ version: Int) -> [UInt8] { [UInt8(ascii: "h")] + Self.task(task) + u32(version) }
    static func tag(_ task: String, _ version: Int, _ key: String) -> [UInt8] { tagsOfHead(task, version) + Array(key.utf8) }
    static func tagIndexPrefix(_ key: String, _ value: String?) -> [UInt8] {
        [UInt8(ascii: "k")] + Array(key.utf8) + [0] + (value.map { Array($0.utf8) + [0] } ?? [])
    }
    static func tagIndex(_ key: String, _ value: String, _ task: String, _ version: Int) -> [UInt8] {
        tagIndexPrefix(key, value) + Self.task(task) + u32(version)
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
