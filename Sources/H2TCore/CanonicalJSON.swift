import Foundation

/// Canonical JSON: the one byte form of a value, so that equal descriptions get equal ids on every
/// platform. Manifests are identified by the SHA-256 of these bytes (`schemas/store-format.md` §3
/// documents the form for readers in other languages).
///
/// Written by the small writer below (`CanonicalJSONEncoder`), not by Foundation's `JSONEncoder`, whose `.sortedKeys`
/// order is not specified and differs between platforms. On Linux the bytes equal what
/// `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]` writes (the stores' ids were made
/// that way), which `CanonicalJSONTests` checks.
public enum CanonicalJSON {
    /// The canonical bytes of `value`.
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let root = try CanonicalJSONEncoder.node(for: value, codingPath: [])
        var out: [UInt8] = []
        out.reserveCapacity(256)
        root.write(into: &out)
        return out
    }

    /// Decodes a value from JSON bytes.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }

    /// For a JSON object whose last member is `key` holding an array of numbers (what
    /// ``encode(_:)`` writes when `key` sorts last): the object with that array emptied, and
    /// the numbers as `Float`s, each read with `strtof` (the conversion JSONDecoder applies to a
    /// `Float`). Nil when the bytes do not end that way or a token is not a JSON number
    /// (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`); the caller then decodes the whole.
    ///
    /// Why: decoding a large `[Float]` through Codable costs about 1 µs per number.
    public static func splitTrailingFloats(_ bytes: [UInt8], key: String) -> (rest: [UInt8], values: [Float])? {
        let marker = Array(",\"\(key)\":[".utf8), end = bytes.count - 2
        guard end > marker.count, bytes[end] == UInt8(ascii: "]"), bytes[end + 1] == UInt8(ascii: "}") else { return nil }
        // Only number bytes and commas between the marker and the last "]}": so the member is the
        // top-level object's last one (nothing quoted or nested can close before the end).
        var open = end - 1
        while open >= 0, bytes[open] != UInt8(ascii: "[") {
            guard bytes[open] == UInt8(ascii: ",") || JSONNumbers.isNumberByte(bytes[open]) else { return nil }
            open -= 1
        }
        let start = open - (marker.count - 1)
        guard start > 0, Array(bytes[start...open]) == marker,
              let values = JSONNumbers.floats(bytes, from: open + 1, to: end) else { return nil }
        return (Array(bytes[..<start]) + marker + Array("]}".utf8), values)
    }

    /// The identity of `value`: lowercase hex SHA-256 of its canonical JSON.
    public static func identity<T: Encodable>(of value: T) throws -> String {
        SHA256.hex(SHA256.hash(try encode(value)))
    }
}

/// A JSON value of any shape, for manifest fields owned by other layers (e.g. preprocessing).
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let n = try? container.decode(Double.self) { self = .number(n) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else if let a = try? container.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let b): try container.encode(b)
        case .number(let n): try container.encode(n)
        case .string(let s): try container.encode(s)
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }

    /// Converts any `Encodable` value into a `JSONValue`.
    public init<T: Encodable>(encoding value: T) throws {
        self = try CanonicalJSON.decode(JSONValue.self, from: try CanonicalJSON.encode(value))
    }
}

// MARK: - The writer

/// A node of the JSON tree being built. Containers are reference types so that nested encoding
/// containers can fill them after they were attached to their parent.
final class CanonicalJSONNode {
    enum Content {
        case null
        case bool(Bool)
        /// A number, already written in its canonical text.
        case number(String)
        case string(String)
        case array([CanonicalJSONNode])
        /// Members by key; written sorted by the keys' UTF-8 bytes. A key encoded twice keeps its
        /// last value (as `JSONEncoder` does).
        case object([String: CanonicalJSONNode])
    }

    var content: Content

    init(_ content: Content) { self.content = content }

    /// The canonical form (documented in `schemas/store-format.md` §3):
    /// - no whitespace; object members sorted by the keys' UTF-8 bytes (= code-point order; a key
    ///   sorts before every longer key it prefixes);
    /// - strings: `"` and `\` escaped, `\b \t \n \f \r` for those controls, `\u00xx` (lowercase hex)
    ///   for the other controls below U+0020; everything else, `/` and non-ASCII included, as UTF-8;
    /// - integers in decimal; floating-point numbers as Swift's `description` (shortest digits that
    ///   round-trip) with a trailing `.0` removed.
    func write(into out: inout [UInt8]) {
        switch content {
        case .null: out.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])
        case .bool(let b): out.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .number(let text): out.append(contentsOf: text.utf8)
        case .string(let s): Self.writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            let sorted = members.map { (key: Array($0.key.utf8), value: $0.value) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }
            for (i, member) in sorted.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(utf8: member.key, into: &out)
                out.append(UInt8(ascii: ":"))
                member.value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        var s = s
        s.withUTF8 { writeString(utf8: $0, into: &out) }
    }

    static func writeString(utf8 bytes: some Collection<UInt8>, into out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The canonical text of a floating-point number; non-finite values have none.
    static func number<F: BinaryFloatingPoint & LosslessStringConvertible>(_ value: F, codingPath: [any CodingKey]) throws -> CanonicalJSONNode {
        guard value.isFinite else {
            throw EncodingError.invalidValue(value, .init(codingPath: codingPath, debugDescription: "\(value) has no JSON form"))
        }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        return CanonicalJSONNode(.number(text))
    }
}

/// The `Encoder` behind `CanonicalJSON.encode`: builds a `CanonicalJSONNode` tree.
final class CanonicalJSONEncoder: Encoder {
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    /// What this encoder produced (`nil` until a container was asked for).
    var root: CanonicalJSONNode?

    init(codingPath: [any CodingKey]) { self.codingPath = codingPath }

    /// The node of one value. Foundation types that `JSONEncoder` writes in a special form are
    /// written the same way (`Data` as base64, `URL` as its absolute string, `Decimal` as a number).
    static func node<T: Encodable>(for value: T, codingPath: [any CodingKey]) throws -> CanonicalJSONNode {
        switch value {
        case let v as String: return CanonicalJSONNode(.string(v))
        case let v as Bool: return CanonicalJSONNode(.bool(v))
        case let v as Double: return try CanonicalJSONNode.number(v, codingPath: codingPath)
        case let v as Float: return try CanonicalJSONNode.number(v, codingPath: codingPath)
        case let v as Data: return CanonicalJSONNode(.string(v.base64EncodedString()))
        case let v as URL: return CanonicalJSONNode(.string(v.absoluteString))
        case let v as Decimal: return CanonicalJSONNode(.number(v.description))
        default: break
        }
        let encoder = CanonicalJSONEncoder(codingPath: codingPath)
        try value.encode(to: encoder)
        // A value that encoded nothing is an empty object, as with `JSONEncoder`.
        return encoder.root ?? CanonicalJSONNode(.object([:]))
    }

    /// The root node as a container of `content`'s kind, created on first use.
    func rootContainer(_ empty: CanonicalJSONNode.Content) -> CanonicalJSONNode {
        if let root { return root }
        let node = CanonicalJSONNode(empty)
        root = node
        return node
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(KeyedContainer<Key>(node: rootContainer(.object([:])), codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        UnkeyedContainer(node: rootContainer(.array([])), codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleValueContainer(encoder: self) }

    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: CanonicalJSONNode
        let codingPath: [any CodingKey]

        func set(_ child: CanonicalJSONNode, _ key: Key) {
            guard case .object(var members) = node.content else { return }
            node.content = .null // release the dictionary's storage so the insert does not copy it
            members[key.stringValue] = child
            node.content = .object(members)
        }

        mutating func encodeNil(forKey key: Key) throws { set(CanonicalJSONNode(.null), key) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { set(CanonicalJSONNode(.bool(value)), key) }
        mutating func encode(_ value: String, forKey key: Key) throws { set(CanonicalJSONNode(.string(value)), key) }
        mutating func encode(_ value: Double, forKey key: Key) throws { set(try .number(value, codingPath: codingPath + [key]), key) }
        mutating func encode(_ value: Float, forKey key: Key) throws { set(try .number(value, codingPath: codingPath + [key]), key) }
        mutating func encode(_ value: Int, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { set(CanonicalJSONNode(.number(String(value))), key) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            set(try CanonicalJSONEncoder.node(for: value, codingPath: codingPath + [key]), key)
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let child = CanonicalJSONNode(.object([:]))
            set(child, key)
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(node: child, codingPath: codingPath + [key]))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let child = CanonicalJSONNode(.array([]))
            set(child, key)
            return UnkeyedContainer(node: child, codingPath: codingPath + [key])
        }

        mutating func superEncoder() -> any Encoder { superEncoder(key: "super") }
        mutating func superEncoder(forKey key: Key) -> any Encoder { superEncoder(key: key.stringValue) }

        private func superEncoder(key: String) -> any Encoder {
            let encoder = CanonicalJSONEncoder(codingPath: codingPath)
            let child = CanonicalJSONNode(.object([:]))
            encoder.root = child
            if case .object(var members) = node.content {
                members[key] = child
                node.content = .object(members)
            }
            return encoder
        }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer, NodeSink {
        let node: CanonicalJSONNode
        let codingPath: [any CodingKey]
        var count: Int {
            if case .array(let items) = node.content { return items.count }
            return 0
        }

        func put(_ child: CanonicalJSONNode) {
            guard case .array(var items) = node.content else { return }
            node.content = .null // release the array's storage so the append does not copy it
            items.append(child)
            node.content = .array(items)
        }


        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let child = CanonicalJSONNode(.object([:]))
            put(child)
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(node: child, codingPath: codingPath))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let child = CanonicalJSONNode(.array([]))
            put(child)
            return UnkeyedContainer(node: child, codingPath: codingPath)
        }

        mutating func superEncoder() -> any Encoder {
            let encoder = CanonicalJSONEncoder(codingPath: codingPath)
            let child = CanonicalJSONNode(.object([:]))
            encoder.root = child
            put(child)
            return encoder
        }
    }

    struct SingleValueContainer: SingleValueEncodingContainer, NodeSink {
        let encoder: CanonicalJSONEncoder
        var codingPath: [any CodingKey] { encoder.codingPath }

        func put(_ node: CanonicalJSONNode) { encoder.root = node }
    }
}

/// A container that takes one node per value: the unkeyed container appends it, the single-value
/// container makes it the root. The scalar `encode` overloads both protocols require are written
/// once here.
private protocol NodeSink {
    var codingPath: [any CodingKey] { get }
    func put(_ node: CanonicalJSONNode)
}

extension NodeSink {
    mutating func encodeNil() throws { put(CanonicalJSONNode(.null)) }
    mutating func encode(_ value: Bool) throws { put(CanonicalJSONNode(.bool(value))) }
    mutating func encode(_ value: String) throws { put(CanonicalJSONNode(.string(value))) }
    mutating func encode(_ value: Double) throws { put(try .number(value, codingPath: codingPath)) }
    mutating func encode(_ value: Float) throws { put(try .number(value, codingPath: codingPath)) }
    mutating func encode(_ value: Int) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: Int8) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: Int16) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: Int32) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: Int64) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: UInt) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: UInt8) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: UInt16) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: UInt32) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode(_ value: UInt64) throws { put(CanonicalJSONNode(.number(String(value)))) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        put(try CanonicalJSONEncoder.node(for: value, codingPath: codingPath))
    }
}

/// Comma-separated JSON numbers read as `Float`s (``CanonicalJSON/splitTrailingFloats(_:key:)``).
enum JSONNumbers {
    static func isNumberByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
    }

    /// The numbers in `bytes[from..<to]` (no brackets or spaces; an empty range gives `[]`), or
    /// nil when a token is not one JSON number.
    static func floats(_ bytes: [UInt8], from: Int, to: Int) -> [Float]? {
        var out: [Float] = []
        guard from < to else { return out }
        out.reserveCapacity((to - from) / 8)
        let ok = bytes.withUnsafeBufferPointer { p -> Bool in
            withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
                var start = from
                while true {
                    var stop = start
                    while stop < to, p[stop] != UInt8(ascii: ",") { stop += 1 }
                    let length = stop - start
                    guard length > 0, length < 64, isNumber(p, start, stop) else { return false }
                    if let value = exactFloat(p, start, stop) {
                        out.append(value)
                        if stop == to { return true }
                        start = stop + 1
                        continue
                    }
                    for i in 0..<length { buffer[i] = CChar(bitPattern: p[start + i]) }
                    buffer[length] = 0
                    var endPointer: UnsafeMutablePointer<CChar>?
                    let value = strtof(buffer.baseAddress!, &endPointer)
                    guard endPointer == buffer.baseAddress! + length else { return false }
                    out.append(value)
                    if stop == to { return true }
                    start = stop + 1
                }
            }
        }
        return ok ? out : nil
    }

    /// Powers of ten that are exact doubles.
    private static let exactPowers: [Double] = (1...22).reduce(into: [1]) { powers, _ in powers.append(powers.last! * 10) }

    /// The float `strtof` reads from the JSON number `p[start..<stop]`, computed without it when
    /// that is certain to give the same bits, else nil (then `strtof` decides). The number is
    /// `±m · 10^e` with `m < 2^53` and `|e| ≤ 22`: one multiplication or division of exact doubles
    /// gives `d`, the double nearest the decimal. Every midpoint between adjacent floats is a
    /// double, and rounding is monotonic, so `d` lies on the decimal's side of each midpoint or
    /// on the midpoint itself: unless `d` is a midpoint (then nil), rounding `d` to a float gives
    /// the float nearest the decimal, which is `strtof`'s answer. Float subnormals and values
    /// near the float range's edge are left to `strtof` too. A head's weights (45,400 numbers,
    /// read at every `predict`) took about 10 ms through `strtof` alone.
    static func exactFloat(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ stop: Int) -> Float? {
        var i = start
        let negative = p[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        var mantissa: UInt64 = 0, digits = 0, exponent = 0
        func digit(_ c: UInt8) -> UInt64? { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") ? UInt64(c - UInt8(ascii: "0")) : nil }
        while i < stop, let d = digit(p[i]) {
            if mantissa > 0 || d > 0 { digits += 1 }
            mantissa = mantissa &* 10 &+ d
            i += 1
        }
        if i < stop, p[i] == UInt8(ascii: ".") {
            i += 1
            while i < stop, let d = digit(p[i]) {
                if mantissa > 0 || d > 0 { digits += 1 }
                mantissa = mantissa &* 10 &+ d
                exponent -= 1
                i += 1
            }
        }
        // Nineteen significant digits cannot overflow the 64-bit accumulation.
        guard digits <= 19 else { return nil }
        if i < stop {  // e or E, the grammar already checked
            i += 1
            var sign = 1
            if p[i] == UInt8(ascii: "+") { i += 1 } else if p[i] == UInt8(ascii: "-") { sign = -1; i += 1 }
            var value = 0
            while i < stop, let d = digit(p[i]) {
                guard value < 10_000 else { return nil }
                value = value * 10 + Int(d)
                i += 1
            }
            exponent += sign * value
        }
        if mantissa == 0 { return negative ? -0.0 : 0 }
        guard mantissa < 1 << 53, exponent >= -22, exponent <= 22 else { return nil }
        let d = exponent >= 0 ? Double(mantissa) * exactPowers[exponent] : Double(mantissa) / exactPowers[-exponent]
        // Normal floats only, below the largest finite one; a double whose 29 bits below the
        // float's precision are exactly one half is a midpoint.
        guard d >= Double(Float.leastNormalMagnitude), d <= Double(Float.greatestFiniteMagnitude),
              d.bitPattern & ((1 << 29) - 1) != 1 << 28 else { return nil }
        return negative ? -Float(d) : Float(d)
    }

    /// Whether `p[start..<stop]` is exactly one JSON number.
    private static func isNumber(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ stop: Int) -> Bool {
        var i = start
        func digits() -> Int {
            let first = i
            while i < stop, p[i] >= UInt8(ascii: "0"), p[i] <= UInt8(ascii: "9") { i += 1 }
            return i - first
        }
        if p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < stop else { return false }
        if p[i] == UInt8(ascii: "0") { i += 1 } else if digits() == 0 { return false }
        if i < stop, p[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return false }
        }
        if i < stop, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            if i < stop, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return false }
        }
        return i == stop
    }
}
