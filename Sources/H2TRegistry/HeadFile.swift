import Foundation
import H2TCore
import H2TStore
import H2TTrain

/// A self-contained head file: safetensors with the weights as a PyTorch `nn.Linear` state
/// (`weight` `[K, d]`, `bias` `[K]`), the selected feature indices, and the whole record (lineage,
/// metrics, curves) as JSON in `__metadata__["h2t.head"]` (format `h2t.head-file/1`,
/// `schemas/head-file.schema.json`).
///
/// Tensors:
/// - `weight` F32 `[K, d]`, `bias` F32 `[K]`: `logits = x @ weight.T + bias`;
/// - `selected_indices` I64 `[d]`: global columns of the feature set, ascending (the order of `x`);
/// - `selected_tap` I64 `[d]`: tap order (position in the feature set's tap list) of each input;
///   inputs with the same value form one normalisation group;
/// - `selected_local` I64 `[d]`: index of each input inside its tap.
/// Before `weight`, `x` is formed by the record's normalisation rule: `per_tap_unit_l2_over_kept`
/// scales each group to unit L2 norm per example (zero stays zero); `raw_selected` uses the
/// stored values as they are.
public enum HeadFile {
    /// The metadata format tag.
    public static let format = "h2t.head-file/1"

    /// What the JSON metadata holds: the record without the tensors, and the tags, in one flat
    /// object (`schemas/head-file.schema.json`).
    struct Metadata: Codable {
        var format: String
        var version: Int
        var createdAt: String
        var tags: [String: String]
        /// Weights and bias are empty here: they are the file's tensors.
        var model: HeadModel

        init(_ head: HeadRecord, tags: [String: String]) {
            format = HeadFile.format
            version = head.version
            createdAt = head.createdAt
            self.tags = tags
            model = head.model
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: HeadField.self)
            format = try container.decode(String.self, forKey: HeadField("format"))
            version = try container.decode(Int.self, forKey: HeadField("version"))
            createdAt = try container.decode(String.self, forKey: HeadField("createdAt"))
            tags = try container.decode([String: String].self, forKey: HeadField("tags"))
            model = try HeadModel(fieldsFrom: container, tensors: false)
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: HeadField.self)
            try container.encode(format, forKey: HeadField("format"))
            try container.encode(version, forKey: HeadField("version"))
            try container.encode(createdAt, forKey: HeadField("createdAt"))
            try container.encode(tags, forKey: HeadField("tags"))
            try model.encodeFields(into: &container, tensors: false)
        }
    }

    /// Writes `head` (with `tags`) to `path`.
    public static func write(_ head: HeadRecord, tags: [String: String] = [:], to path: String) throws {
        let d = head.inputCount, k = head.classNames.count
        var transposed = [Float](repeating: 0, count: d * k)
        for i in 0..<d { for c in 0..<k { transposed[c * d + i] = head.weights[i * k + c] } }
        let indices = head.selectedIndices.map(Int64.init)
        let tapOrder = head.selection.flatMap { tap in tap.indices.map { _ in Int64(tap.order) } }
        let local = head.selection.flatMap { $0.indices.map(Int64.init) }
        let json = String(decoding: try CanonicalJSON.encode(Metadata(head, tags: tags)), as: UTF8.self)
        var data: [UInt8] = []
        var entries: [(String, String, [Int], Int, Int)] = []
        func add(_ name: String, _ dtype: String, _ shape: [Int], _ bytes: [UInt8]) {
            entries.append((name, dtype, shape, data.count, data.count + bytes.count))
            data += bytes
        }
        add("weight", "F32", [k, d], transposed.withUnsafeBytes { Array($0) })
        add("bias", "F32", [k], head.bias.withUnsafeBytes { Array($0) })
        add("selected_indices", "I64", [d], indices.withUnsafeBytes { Array($0) })
        add("selected_tap", "I64", [d], tapOrder.withUnsafeBytes { Array($0) })
        add("selected_local", "I64", [d], local.withUnsafeBytes { Array($0) })
        var header: [String: HeaderValue] = ["__metadata__": .metadata(["h2t.head": json, "format": format])]
        for (name, dtype, shape, start, end) in entries { header[name] = .tensor(dtype: dtype, shape: shape, offsets: [start, end]) }
        var headerBytes = try CanonicalJSON.encode(header)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var out = [UInt8]()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out += $0 }
        out += headerBytes
        out += data
        guard FileManager.default.createFile(atPath: path, contents: Data(out)) else {
            throw RegistryError.invalidHeadFile(path: path, reason: "cannot write the file")
        }
    }

    enum HeaderValue: Encodable {
        case tensor(dtype: String, shape: [Int], offsets: [Int])
        case metadata([String: String])

        enum Keys: String, CodingKey { case dtype, shape, data_offsets }

        func encode(to encoder: any Encoder) throws {
            switch self {
            case let .tensor(dtype, shape, offsets):
                var c = encoder.container(keyedBy: Keys.self)
                try c.encode(dtype, forKey: .dtype)
                try c.encode(shape, forKey: .shape)
                try c.encode(offsets, forKey: .data_offsets)
            case let .metadata(map):
                var c = encoder.singleValueContainer()
                try c.encode(map)
            }
        }
    }

    /// Reads a head file back into a record (its version is the exporter's) and its tags; checks
    /// that tensors and metadata agree.
    public static func read(_ path: String) throws -> (head: HeadRecord, tags: [String: String]) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path, readingWholeFile: true) } catch { throw RegistryError.invalidHeadFile(path: path, reason: "\(error)") }
        guard let json = file.metadata["h2t.head"] else {
            throw RegistryError.invalidHeadFile(path: path, reason: "no __metadata__[\"h2t.head\"] (not written by h2t-store export)")
        }
        let meta: Metadata
        do { meta = try CanonicalJSON.decode(Metadata.self, from: Array(json.utf8)) } catch {
            throw RegistryError.invalidHeadFile(path: path, reason: "metadata is not a head record: \(error)")
        }
        guard meta.format == format else { throw RegistryError.invalidHeadFile(path: path, reason: "format '\(meta.format)', this h2t-store reads \(format)") }
        let tensors = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.entry.name, $0) })
        let d = meta.model.inputCount, k = meta.model.classNames.count
        guard let weight = tensors["weight"], weight.entry.dtype.isFloat, weight.entry.shape == [k, d] else {
            throw RegistryError.invalidHeadFile(path: path, reason: "tensor 'weight' must be a float [\(k), \(d)] tensor")
        }
        guard let bias = tensors["bias"], bias.entry.dtype.isFloat, bias.entry.shape == [k] else {
            throw RegistryError.invalidHeadFile(path: path, reason: "tensor 'bias' must be a float [\(k)] tensor")
        }
        var w = [Float](repeating: 0, count: k * d), b = [Float](repeating: 0, count: k)
        try w.withUnsafeMutableBufferPointer { try weight.readRows(0, count: k, into: $0.baseAddress!) }
        try b.withUnsafeMutableBufferPointer { try bias.readRows(0, count: k, into: $0.baseAddress!) }
        var weights = [Float](repeating: 0, count: d * k)
        for c in 0..<k { for i in 0..<d { weights[i * k + c] = w[c * d + i] } }
        try checkSelectionTensors(tensors, selection: meta.model.selection, path: path)
        var model = meta.model
        model.weights = weights
        model.bias = b
        let head = HeadRecord(model, version: meta.version, createdAt: meta.createdAt)
        do { try model.validate() } catch { throw RegistryError.invalidHeadFile(path: path, reason: error.description) }
        return (head, meta.tags)
    }

    /// Checks `selected_indices`, `selected_tap` and `selected_local` position by position against
    /// the metadata's per-tap selection (which import then checks against the feature set's
    /// taps): a PyTorch user reads these tensors, not the metadata, so they must say the same.
    /// The error names the tensor and its first disagreeing position.
    static func checkSelectionTensors(_ tensors: [String: FileTensor], selection: [TapIndices], path: String) throws {
        let positions = selection.flatMap { tap in tap.indices.map { (tap: tap, local: $0) } }
        let d = positions.count
        func check(_ name: String, expected: (TapIndices, Int) -> Int, explain: (Int, TapIndices, Int) -> String) throws {
            guard let tensor = tensors[name], tensor.entry.shape == [d], !tensor.entry.dtype.isFloat, tensor.entry.dtype != .bool else {
                throw RegistryError.invalidHeadFile(path: path, reason: "tensor '\(name)' must be an integer [\(d)] tensor")
            }
            let values = try tensor.integers()
            guard let i = positions.indices.first(where: { values[$0] != expected(positions[$0].tap, positions[$0].local) }) else { return }
            throw RegistryError.invalidHeadFile(path: path, reason: "tensor '\(name)' disagrees with the head's selection at position \(i): "
                                                + explain(values[i], positions[i].tap, positions[i].local))
        }
        try check("selected_indices", expected: { $0.offset + $1 }) { value, tap, local in
            "column \(value), expected \(tap.offset + local) (index \(local) of tap '\(tap.tap)', columns \(tap.offset)..<\(tap.offset + tap.width))"
        }
        try check("selected_tap", expected: { tap, _ in tap.order }) { value, tap, local in
            "tap \(value), but column \(tap.offset + local) is in tap \(tap.order) ('\(tap.tap)')"
        }
        try check("selected_local", expected: { _, local in local }) { value, tap, local in
            "index \(value), but column \(tap.offset + local) is index \(local) of tap '\(tap.tap)' (columns \(tap.offset)..<\(tap.offset + tap.width))"
        }
    }
}

extension Registry {
    /// Exports the head `reference` selects, with its tags, to a head file.
    @discardableResult
    public func export(_ reference: HeadReference, to path: String) throws -> HeadRecord {
        let record = try head(reference)
        try HeadFile.write(record, tags: try tags(reference), to: path)
        return record
    }

    /// Imports a head file as the next version of `task` (default: the file's task). Refuses when
    /// the store lacks the head's feature set, naming the backbone and feature set it needs, or
    /// when the feature set's layout differs from the head's.
    @discardableResult
    public func importHead(from path: String, as task: String? = nil) throws -> HeadRecord {
        let (head, tags) = try HeadFile.read(path)
        let info = try featureSet(of: head)
        try checkLayout(head, info)
        var draft = head.draft
        draft.task = task ?? head.task
        draft.tags = tags
        return try register(draft)
    }
}
