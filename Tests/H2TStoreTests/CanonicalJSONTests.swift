import Foundation
import H2TCore
import H2TStore
import Testing

/// The canonical JSON writer: the documented form (`schemas/store-format.md` §3), and on Linux the
/// same bytes as Foundation's `JSONEncoder` with sorted keys, which wrote every existing store.
@Suite("Canonical JSON")
struct CanonicalJSONTests {
    static func text<T: Encodable>(_ value: T) throws -> String { String(decoding: try CanonicalJSON.encode(value), as: UTF8.self) }

    @Test func keysSortByUTF8BytesNotByNumberOrUTF16() throws {
        let keys = ["a2", "a10", "B", "_x", "é", "Z", "\u{FF61}", "😀", "e\u{301}x", "a", "ab", "A", "~", "\u{7F}", "aa", "a\u{0}"]
        let object = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        let expectedOrder = keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        #expect(expectedOrder.prefix(9) == ["A", "B", "Z", "_x", "a", "a\u{0}", "a10", "a2", "aa"])
        let expected = "{" + expectedOrder.map { key in
            var quoted: [UInt8] = []
            CanonicalJSONTests.quote(key, into: &quoted)
            return String(decoding: quoted, as: UTF8.self) + ":\(object[key]!)"
        }.joined(separator: ",") + "}"
        #expect(try Self.text(object) == expected)
        // Code-point order puts U+FF61 before U+1F600 (UTF-16 order would not).
        let text = try Self.text(object)
        #expect(text.range(of: "｡")!.lowerBound < text.range(of: "😀")!.lowerBound)
    }

    /// The documented string escaping, spelled out independently of the writer.
    static func quote(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += Array("\\\"".utf8)
            case "\\": out += Array("\\\\".utf8)
            case "\u{8}": out += Array("\\b".utf8)
            case "\t": out += Array("\\t".utf8)
            case "\n": out += Array("\\n".utf8)
            case "\u{C}": out += Array("\\f".utf8)
            case "\r": out += Array("\\r".utf8)
            case _ where scalar.value < 0x20: out += Array(String(format: "\\u%04x", scalar.value).utf8)
            default: out += Array(String(scalar).utf8)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @Test func stringsEscapeOnlyQuotesBackslashesAndControls() throws {
        var s = ""
        for c in 0..<0x20 { s.unicodeScalars.append(Unicode.Scalar(c)!) }
        s += "\u{7F}\u{80}\u{2028}\u{2029}/\\\"é😀\u{FEFF}"
        #expect(try Self.text([s]) == #"["\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f"# + "\u{7F}\u{80}\u{2028}\u{2029}/\\\\\\\"é😀\u{FEFF}\"]")
    }

    @Test func numbersAreIntegersOrShortestRoundTripDoubles() throws {
        #expect(try Self.text([1e20, 3e-7, 224.0, -0.0, 0.1, 1e16, 1e15, 123456789012.0, 0.485, 9007199254740993.0, 1e-5, 1e-4, 1.8e16])
                == "[1e+20,3e-07,224,-0,0.1,1e+16,1000000000000000,123456789012,0.485,9007199254740992,1e-05,0.0001,1.8e+16]")
        #expect(try Self.text([Float(0.485), Float(1e20), Float(224), Float(3e-7), Float(16777217), Float(33554432)])
                == "[0.485,1e+20,224,3e-07,16777216,3.3554432e+07]")
        #expect(try Self.text([Int64.max, Int64.min]) == "[9223372036854775807,-9223372036854775808]")
        #expect(try Self.text([UInt64.max]) == "[18446744073709551615]")
        #expect(throws: EncodingError.self) { _ = try CanonicalJSON.encode([Double.nan]) }
        #expect(throws: EncodingError.self) { _ = try CanonicalJSON.encode(["x": Float.infinity]) }
    }

    struct Record: Codable, Equatable {
        struct Inner: Codable, Equatable { var z: [Int?]; var y: [String: Double]; var x: Bool }
        var name: String
        var missing: Int?
        var present: Int?
        var inner: Inner
        var list: [Inner]
        var byNumber: [Int: String]
        var nested: [[Float]]
        var data: Data
        var empty: [String: Int]
        var nothing: [Int]
    }

    static let record = Record(
        name: "h/ead \"x\"\n", missing: nil, present: 7,
        inner: .init(z: [1, nil, 3], y: ["b": 0.25, "a": -1e-9, "é": 1e300], x: true),
        list: [.init(z: [], y: [:], x: false)], byNumber: [10: "ten", 2: "two", -1: "minus"],
        nested: [[0.1, 0.2], [], [3.4028235e38]], data: Data([0, 1, 2, 254, 255]), empty: [:], nothing: [])

    @Test func optionalsAbsentAreOmittedAndNestedContainersWork() throws {
        let text = try Self.text(Self.record)
        #expect(!text.contains("missing"))
        #expect(text.hasPrefix(#"{"byNumber":{"-1":"minus","10":"ten","2":"two"},"data":"AAEC/v8=","empty":{},"inner":{"x":true,"y":{"a":-1e-09,"b":0.25,"é":1e+300},"z":[1,null,3]},"list":[{"x":false,"y":{},"z":[]}],"name":"h/ead \"x\"\n","nested":[[0.1,0.2],[],[3.4028235e+38]],"nothing":[],"present":7}"#))
        #expect(try CanonicalJSON.decode(Record.self, from: try CanonicalJSON.encode(Self.record)) == Self.record)
    }

    #if os(Linux)
    /// On Linux, Foundation's sorted-keys encoder wrote every existing store: the writer must give
    /// the same bytes for every kind of value the package stores.
    @Test func sameBytesAsFoundationOnLinux() throws {
        let foundation = JSONEncoder()
        foundation.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func check<T: Encodable>(_ value: T, sourceLocation: SourceLocation = #_sourceLocation) throws {
            #expect(try CanonicalJSON.encode(value) == Array(try foundation.encode(value)), sourceLocation: sourceLocation)
        }
        try check(Self.record)
        for (_, bytes) in try ManifestIdentityTests.fixtures() {
            try check(try CanonicalJSON.decode(JSONValue.self, from: bytes))
        }
        var generator = SystemRandomNumberGenerator()
        var doubles: [Double] = []
        for _ in 0..<2000 {
            doubles.append(Double(bitPattern: generator.next() & 0x7FEF_FFFF_FFFF_FFFF) * (Bool.random() ? 1 : -1))
            doubles.append(Double(Int.random(in: -1_000_000...1_000_000)) / Double([1, 10, 100, 1000, 7].randomElement()!))
        }
        try check(doubles)
        try check(doubles.map { Float($0) }.filter(\.isFinite))
        let words = (0..<300).map { _ in String((0..<Int.random(in: 0...6)).map { _ in Character(Unicode.Scalar([0x41, 0x61, 0x5F, 0x30, 0xE9, 0x1F600, 0x7F, 0x1, 0x2028].randomElement()!)!) }) }
        try check(Dictionary(words.map { ($0, $0) }, uniquingKeysWith: { a, _ in a }))
        try check(FeatureSetManifest(backbone: toyBackbone(), backboneID: String(repeating: "0", count: 64), targetSize: 3,
                                     poolingRule: PoolingRule(name: "other-rule", version: 3)))
    }
    #endif
}

/// `CanonicalJSON.splitTrailingFloats`: the fast path of a head body's weights.
@Suite("Canonical JSON trailing floats")
struct TrailingFloatsTests {
    struct Body: Codable, Equatable {
        var name: String
        var nested: [String: [Float]]
        var weights: [Float]
    }

    static let edgeValues: [Float] = [0, -0.0, 1, -1, 0.1, 1e-5, 3.4028235e38, -3.4028235e38, 1.17549435e-38,
                                      1.4e-45, -1.4e-45, 7.006492e-45, 1.0000001, 0.99999994, 123456.79, 16777217]

    @Test("the values are those JSONDecoder reads, bit for bit, and the rest decodes to the same object")
    func sameAsJSONDecoder() throws {
        var random = SplitMix64(seed: 11)
        var weights = Self.edgeValues
        for _ in 0..<20_000 {
            // Every exponent and mantissa: random bit patterns, finite ones only.
            let bits = UInt32(truncatingIfNeeded: random.next())
            let value = Float(bitPattern: bits)
            if value.isFinite { weights.append(value) }
        }
        let body = Body(name: "a \"weights\":[1,2]}", nested: ["weights": [1, 2]], weights: weights)
        let bytes = try CanonicalJSON.encode(body)
        let (rest, values) = try #require(CanonicalJSON.splitTrailingFloats(bytes, key: "weights"))
        let decoded = try CanonicalJSON.decode(Body.self, from: bytes)
        #expect(values.map(\.bitPattern) == decoded.weights.map(\.bitPattern))
        #expect(values.map(\.bitPattern) == weights.map(\.bitPattern))
        var restDecoded = try CanonicalJSON.decode(Body.self, from: rest)
        #expect(restDecoded.weights.isEmpty)
        restDecoded.weights = values
        #expect(restDecoded == decoded)
    }

    /// The numbers are read without `strtof` where that is certain to give its bits: checked
    /// against `strtof` on decimals of 1 to 19 digits with exponents -30 ... 30 (inside and
    /// outside the exact range), on 16-digit decimals of midpoints between adjacent floats from
    /// about 3e-8 to 3e30 (the case the fast path must leave to `strtof`: it fails without that check),
    /// and on float subnormals and the range's edges.
    @Test func numbersReadAsStrtofReadsThem() throws {
        var random = SplitMix64(seed: 5)
        var texts: [String] = ["0", "-0", "0.0", "-0.0", "1e-45", "1.4e-45", "1.17549435e-38", "1.1754942e-38",
                               "3.4028235e38", "3.4028236e38", "-3.4028235e38", "340282356779733661637539395458142568448",
                               "16777217", "16777216.5", "0.1", "1e22", "1e23", "9007199254740993", "1.0000000000000000001"]
        for _ in 0..<30_000 {
            let digits = Int(random.next() % 19) + 1
            var mantissa = String(random.next() % 9 + 1)
            for _ in 1..<digits { mantissa += String(random.next() % 10) }
            let point = Int(random.next() % UInt64(digits + 1))
            var text = point == digits ? mantissa : String(mantissa.prefix(point).isEmpty ? "0" : mantissa.prefix(point)) + "." + mantissa.dropFirst(point)
            if random.next() % 2 == 0 { text += "e" + String(Int(random.next() % 61) - 30) }
            if random.next() % 2 == 0 { text = "-" + text }
            texts.append(text)
        }
        for _ in 0..<30_000 {
            // The midpoint between a float and the next one up, as 16 significant digits (few
            // enough for the fast path): such a decimal is often not the midpoint but reads as
            // the double that is, where only `strtof` knows the side.
            let float = Float(bitPattern: UInt32(truncatingIfNeeded: random.next() % 0x3F00_0000 + 0x3300_0000))
            let midpoint = (Double(float) + Double(float.nextUp)) / 2
            texts.append(String(format: "%.15e", midpoint))
        }
        let text = "{\"a\":1,\"weights\":[" + texts.joined(separator: ",") + "]}"
        let (_, values) = try #require(CanonicalJSON.splitTrailingFloats(Array(text.utf8), key: "weights"))
        let expected = texts.map { strtof($0, nil) }
        let differing = zip(texts, zip(values, expected)).filter { $1.0.bitPattern != $1.1.bitPattern }.map(\.0)
        #expect(differing.count == 0, "numbers that differ from strtof, e.g. \(differing.prefix(5))")
    }

    @Test("an empty array, and shapes it must leave to JSONDecoder", arguments: [
        (#"{"a":1,"weights":[]}"#, true),
        (#"{"a":1,"weights":[1,-2.5e-3,0]}"#, true),
        (#"{"weights":[1,2]}"#, false),  // the only member: no comma before the key
        (#"{"a":1,"weights":[1,2] }"#, false),
        (#"{"a":1,"weights":[1, 2]}"#, false),
        (#"{"a":{"weights":[1,2]}}"#, false),
        (#"{"a":1,"weights":[1,2],"z":[3]}"#, false),
        (#"{"a":1,"weights":[01]}"#, false),
        (#"{"a":1,"weights":[1.]}"#, false),
        (#"{"a":1,"weights":[.5]}"#, false),
        (#"{"a":1,"weights":[1e]}"#, false),
        (#"{"a":1,"weights":[+1]}"#, false),
        (#"{"a":1,"weights":[1,,2]}"#, false),
        (#"{"a":1,"weights":[1,2,]}"#, false),
        (#"{"a":1,"weights":[-]}"#, false),
        (#"{"a":1,"weights":[1-2]}"#, false),
        (#"{"a":1,"weights":[1e+5,2E-7]}"#, true),
    ])
    func shapes(text: String, fast: Bool) throws {
        let split = CanonicalJSON.splitTrailingFloats(Array(text.utf8), key: "weights")
        #expect((split != nil) == fast, "\(text)")
        if let split {
            struct Weights: Codable { var weights: [Float] }
            #expect(split.values == (try JSONDecoder().decode(Weights.self, from: Data(text.utf8))).weights)
            #expect(String(decoding: split.rest, as: UTF8.self).hasSuffix(#","weights":[]}"#))
        }
    }
}
