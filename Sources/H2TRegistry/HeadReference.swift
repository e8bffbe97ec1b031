/// A reference to a head as users type it: `NAME` (the latest version), `NAME@vN` or `NAME@alias`.
public struct HeadReference: Sendable, Hashable, CustomStringConvertible {
    /// Which version of the task the reference selects.
    public enum Selector: Sendable, Hashable {
        /// The highest live version.
        case latest
        /// An explicit version number (from 1).
        case version(Int)
        /// Whatever the alias points to.
        case alias(String)
    }

    /// The task name.
    public var task: String
    /// The version selector.
    public var selector: Selector

    /// Creates a reference.
    public init(task: String, selector: Selector = .latest) {
        self.task = task
        self.selector = selector
    }

    /// Parses `NAME`, `NAME@vN` (or `NAME@N`) and `NAME@alias`.
    public init(parsing text: String) throws(RegistryError) {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let task = String(parts[0])
        try Naming.checkTask(task)
        self.task = task
        guard parts.count == 2 else {
            selector = .latest
            return
        }
        let tail = String(parts[1])
        if let number = Naming.versionNumber(tail) {
            guard number >= 1 else { throw RegistryError.invalidName(kind: "version", name: tail, reason: "versions start at 1") }
            selector = .version(number)
        } else {
            try Naming.checkAlias(tail)
            selector = .alias(tail)
        }
    }

    public var description: String {
        switch selector {
        case .latest: task
        case .version(let v): "\(task)@v\(v)"
        case .alias(let a): "\(task)@\(a)"
        }
    }
}

/// Rules for task, alias and tag names, shared by every entry point.
enum Naming {
    static let maxLength = 200

    /// `vN` or `N` with decimal digits only.
    static func versionNumber(_ text: String) -> Int? {
        let digits = text.first == "v" || text.first == "V" ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    static func isNameCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == "." || c == "/")
    }

    /// Task names: 1–200 of `A-Z a-z 0-9 - _ . /`, starting with a letter or digit.
    static func checkTask(_ name: String) throws(RegistryError) {
        guard !name.isEmpty else { throw RegistryError.invalidName(kind: "task", name: name, reason: "it is empty") }
        guard name.count <= maxLength else { throw RegistryError.invalidName(kind: "task", name: name, reason: "it is longer than \(maxLength) characters") }
        guard let first = name.first, first.isASCII, first.isLetter || first.isNumber else {
            throw RegistryError.invalidName(kind: "task", name: name, reason: "it must start with a letter or digit")
        }
        guard name.allSatisfy(isNameCharacter) else {
            throw RegistryError.invalidName(kind: "task", name: name, reason: "use only letters, digits, '-', '_', '.', '/'")
        }
    }

    /// Alias names: like task names (no '/'), and not of the form `vN` (that is a version).
    static func checkAlias(_ name: String) throws(RegistryError) {
        guard !name.isEmpty else { throw RegistryError.invalidName(kind: "alias", name: name, reason: "it is empty") }
        guard name.count <= maxLength else { throw RegistryError.invalidName(kind: "alias", name: name, reason: "it is longer than \(maxLength) characters") }
        guard let first = name.first, first.isASCII, first.isLetter else {
            throw RegistryError.invalidName(kind: "alias", name: name, reason: "it must start with a letter")
        }
        guard name.allSatisfy({ isNameCharacter($0) && $0 != "/" }) else {
            throw RegistryError.invalidName(kind: "alias", name: name, reason: "use only letters, digits, '-', '_', '.'")
        }
        guard versionNumber(name) == nil else {
            throw RegistryError.invalidName(kind: "alias", name: name, reason: "'vN' names a version, not an alias")
        }
    }

    /// Tag keys: non-empty, no '=', no NUL, no control characters.
    static func checkTagKey(_ key: String) throws(RegistryError) {
        guard !key.isEmpty, key.count <= maxLength else {
            throw RegistryError.invalidName(kind: "tag key", name: key, reason: "it must have 1 to \(maxLength) characters")
        }
        guard !key.contains("="), !key.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw RegistryError.invalidName(kind: "tag key", name: key, reason: "it must not contain '=' or control characters")
        }
    }

    /// Tag values: no NUL or control characters (may be empty).
    static func checkTagValue(_ value: String) throws(RegistryError) {
        guard value.count <= 1000, !value.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw RegistryError.invalidName(kind: "tag value", name: value, reason: "it must have at most 1000 characters and no control characters")
        }
    }
}
