import CH2TKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors reading tensor files (safetensors, `.npy`), naming the file and what is wrong.
public enum TensorFileError: Error, CustomStringConvertible, Sendable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "\(path): cannot read: \(reason)"
        case .malformed(let path, let reason): return "\(path): malformed: \(reason)"
        case .unsupportedDType(let path, let tensor, let dtype):
            return "\(path): tensor '\(tensor)' has dtype \(dtype); expected a float type (F32, F16, BF16, F64)"
        }
    }
}

/// Element types found in tensor files.
public enum TensorDType: String, Sendable, Hashable {
    case float32 = "F32", float16 = "F16", bfloat16 = "BF16", float64 = "F64"
    case int64 = "I64", int32 = "I32", int16 = "I16", int8 = "I8", uint8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// Whether values convert to Float for features.
    public var isFloat: Bool { self == .float32 || self == .float16 || self == .bfloat16 || self == .float64 }
}

/// The bytes of a tensor file, read where they are needed (`pread`), or held in memory when the
/// whole file is read at once (a file whose digest is checked: what is parsed is what was
/// hashed). Never mapped: a file that another process truncates while it is read is a short
/// read, an error naming the file, where a mapped file's missing pages would kill the process
/// with `SIGBUS`.
public final class TensorFileBytes: @unchecked Sendable {
    // @unchecked Sendable: the file is only read at offsets (`pread`, safe from several threads);
    // its sequential read position is never used.
    /// The file path.
    public let path: String
    /// The file's size when it was opened.
    public let count: Int
    private let storage: Storage

    private enum Storage {
        case memory([UInt8])
        case file(InputFile)
    }

    /// Opens `path` (a regular file) for reads at any offset.
    public init(path: String) throws(TensorFileError) {
        self.path = path
        let file: InputFile
        do { file = try InputFile(path: path) } catch { throw TensorFileError.unreadable(path: path, reason: error.reason) }
        guard let size = file.size else { throw TensorFileError.unreadable(path: path, reason: "not a regular file") }
        count = size
        storage = .file(file)
    }

    /// Reads the whole file at `path` into memory.
    public init(readingWholeFile path: String) throws(TensorFileError) {
        self.path = path
        let bytes: [UInt8]
        do { bytes = try InputFile.contents(of: path) } catch { throw TensorFileError.unreadable(path: path, reason: error.reason) }
        count = bytes.count
        storage = .memory(bytes)
    }

    /// The whole file, when it was read into memory (``init(readingWholeFile:)``).
    public var contents: [UInt8]? {
        if case .memory(let bytes) = storage { return bytes }
        return nil
    }

    /// Copies the `byteCount` bytes at `offset` (inside the file as opened) into `destination`.
    public func read(at offset: Int, byteCount: Int, into destination: UnsafeMutableRawPointer) throws(TensorFileError) {
        precondition(offset >= 0 && byteCount >= 0 && byteCount <= count - offset, "read of \(byteCount) bytes at \(offset) outside a \(count)-byte file")
        switch storage {
        case .memory(let bytes):
            bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress! + offset, byteCount: byteCount) }
        case .file(let file):
            do { try file.read(at: offset, byteCount: byteCount, into: destination) } catch {
                throw TensorFileError.unreadable(path: path, reason: error.reason)
            }
        }
    }

    /// The `byteCount` bytes at `offset`.
    public func bytes(at offset: Int, count byteCount: Int) throws(TensorFileError) -> [UInt8] {
        var failure: TensorFileError?
        let result = [UInt8](unsafeUninitializedCapacity: byteCount) { buffer, initialized in
            do throws(TensorFileError) {
                if byteCount > 0 { try read(at: offset, byteCount: byteCount, into: buffer.baseAddress!) }
                initialized = byteCount
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return result
    }
}

/// One tensor inside a tensor file: name, type, shape and where its bytes are.
public struct TensorEntry: Sendable, Hashable {
    /// Tensor name.
    public var name: String
    /// Element type.
    public var dtype: TensorDType
    /// Shape (first axis = examples for activation files).
    public var shape: [Int]
    /// Byte offset of the data in the file.
    public var offset: Int
    /// Byte length of the data.
    public var byteCount: Int

    /// Elements per index of the first axis.
    public var rowElements: Int { shape.dropFirst().reduce(1, *) }
}

/// A tensor of a tensor file; reads rows of its first axis as Float.
public struct FileTensor: Sendable {
    /// The tensor's description.
    public let entry: TensorEntry
    /// The file holding it.
    public let file: TensorFileBytes

    /// Reads rows `[first, first + count)` of the first axis into `output` (row-major Float).
    /// 16-bit floats are widened on `isa`'s vector kernel (F16C for half precision) from AVX2
    /// up; the values are exact, the same at every level.
    ///
    /// - Throws: `TensorFileError` naming the file when it was cut short since it was opened.
    public func readRows(_ first: Int, count: Int, into output: UnsafeMutablePointer<Float>,
                         isa: InstructionSet = .selected) throws(TensorFileError) {
        let n = entry.rowElements * count
        let offset = entry.offset + first * entry.rowElements * entry.dtype.size
        switch entry.dtype {
        case .float32:
            try file.read(at: offset, byteCount: n * 4, into: output)
        case .float64:
            let raw = try file.bytes(at: offset, count: n * 8)
            raw.withUnsafeBytes { base in for i in 0..<n { output[i] = Float(base.loadUnaligned(fromByteOffset: i * 8, as: Double.self)) } }
        case .float16, .bfloat16:
            // Read into the back half of the output's bytes, then widened where they lie, front
            // to back: each float written ends before the 16-bit values still to be read.
            let bytes = UnsafeMutableRawPointer(output), bits = bytes + 2 * n
            try file.read(at: offset, byteCount: n * 2, into: bits)
            let bfloat = entry.dtype == .bfloat16
            if h2t_widen16(Int32(isa.rawValue), bfloat ? 1 : 0, bits, n, bytes) != 0 { return }
            for i in 0..<n {
                let half = bits.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                let value = bfloat ? Float(bitPattern: UInt32(half) << 16) : Float(Float16(bitPattern: half))
                bytes.storeBytes(of: value, toByteOffset: 4 * i, as: Float.self)
            }
        default:
            preconditionFailure("readRows on non-float tensor \(entry.name)")
        }
    }

    /// Reads rows `[first, first + count)` as their 16-bit patterns, for a float16 or bfloat16
    /// tensor, into `output`.
    public func readBits(_ first: Int, count: Int, into output: UnsafeMutablePointer<UInt16>) throws(TensorFileError) {
        precondition(entry.dtype.size == 2 && entry.dtype.isFloat, "16-bit rows of a \(entry.dtype) tensor")
        let n = entry.rowElements * count
        try file.read(at: entry.offset + first * entry.rowElements * 2, byteCount: n * 2, into: output)
    }

    /// The integer values of a 1-D integer tensor (labels).
    public func integers() throws(TensorFileError) -> [Int] {
        let n = entry.shape.reduce(1, *)
        let raw = try file.bytes(at: entry.offset, count: n * entry.dtype.size)
        return raw.withUnsafeBytes { base in
            switch entry.dtype {
            case .int64: return (0..<n).map { Int(base.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
            case .int32: return (0..<n).map { Int(base.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
            case .int16: return (0..<n).map { Int(base.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self)) }
            case .int8: return (0..<n).map { Int(base.load(fromByteOffset: $0, as: Int8.self)) }
            case .uint8: return (0..<n).map { Int(base.load(fromByteOffset: $0, as: UInt8.self)) }
            default: return []
            }
        }
    }
}

/// A safetensors file: an 8-byte little-endian header length, a JSON header, then the data.
public struct SafetensorsFile: Sendable {
    /// The file's bytes.
    public let file: TensorFileBytes
    /// Tensors in data order (the order the writer laid them out).
    public let tensors: [FileTensor]
    /// The `__metadata__` string map.
    public let metadata: [String: String]

    /// Opens and validates `path`: header bounds, dtypes, shapes and data offsets. Tensors are
    /// read from the file when asked for, or from memory with `readingWholeFile`.
    public init(path: String, readingWholeFile: Bool = false) throws {
        file = readingWholeFile ? try TensorFileBytes(readingWholeFile: path) : try TensorFileBytes(path: path)
        let size = file.count
        guard size >= 8 else { throw TensorFileError.malformed(path: path, reason: "file is \(size) bytes, shorter than the 8-byte header length") }
        // Compared as read (unsigned): as an Int, a length of 2^63 or more would be negative (or trap).
        let declaredLength = UInt64(littleEndian: try file.bytes(at: 0, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        guard declaredLength > 1, declaredLength <= UInt64(size - 8), declaredLength < 100_000_000 else {
            throw TensorFileError.malformed(path: path, reason: "header length \(declaredLength) does not fit in a \(size)-byte file (truncated?)")
        }
        let headerLength = Int(declaredLength)
        let header = Data(try file.bytes(at: 8, count: headerLength))
        guard let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else {
            throw TensorFileError.malformed(path: path, reason: "header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        var metadata: [String: String] = [:]
        var entries: [TensorEntry] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let map = value as? [String: String] else { throw TensorFileError.malformed(path: path, reason: "__metadata__ is not a string map") }
                metadata = map
                continue
            }
            guard let spec = value as? [String: Any], let dtypeName = spec["dtype"] as? String,
                  let shape = spec["shape"] as? [Int], let offsets = spec["data_offsets"] as? [Int], offsets.count == 2 else {
                throw TensorFileError.malformed(path: path, reason: "tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let dtype = TensorDType(rawValue: dtypeName) else { throw TensorFileError.unsupportedDType(path: path, tensor: name, dtype: dtypeName) }
            guard shape.allSatisfy({ $0 >= 0 }) else { throw TensorFileError.malformed(path: path, reason: "tensor '\(name)' has a negative dimension") }
            // Sizes and offsets come from the file: checked arithmetic, so a lie is an error, not a trap.
            guard let count = byteCount(shape: shape, elementSize: dtype.size), count <= size else {
                throw TensorFileError.malformed(path: path, reason: "tensor '\(name)' of shape \(shape) is larger than the file")
            }
            guard offsets[0] >= 0, offsets[1] >= offsets[0], offsets[1] - offsets[0] == count else {
                throw TensorFileError.malformed(path: path, reason: "tensor '\(name)' data_offsets \(offsets) do not match shape \(shape) × \(dtype.size) bytes")
            }
            guard offsets[1] <= size - dataStart else {
                throw TensorFileError.malformed(path: path, reason: "tensor '\(name)' runs past the end of the file (truncated?)")
            }
            entries.append(TensorEntry(name: name, dtype: dtype, shape: shape, offset: dataStart + offsets[0], byteCount: count))
        }
        entries.sort { $0.offset < $1.offset }
        for (a, b) in zip(entries, entries.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw TensorFileError.malformed(path: path, reason: "tensors '\(a.name)' and '\(b.name)' overlap")
        }
        let bytes = file
        tensors = entries.map { FileTensor(entry: $0, file: bytes) }
        self.metadata = metadata
    }
}

/// A NumPy `.npy` file (format versions 1–3, C order, little-endian or single-byte types).
public struct NpyFile: Sendable {
    /// The tensor (named after the file, without `.npy`).
    public let tensor: FileTensor

    /// Opens and validates `path`; the data is read from the file when asked for.
    public init(path: String) throws {
        let file = try TensorFileBytes(path: path)
        let size = file.count
        // The fixed part of the header: magic, version, header length (2 or 4 bytes).
        let bytes = try file.bytes(at: 0, count: min(size, 12))
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw TensorFileError.malformed(path: path, reason: "not a .npy file (bad magic)") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw TensorFileError.malformed(path: path, reason: "truncated header") }
            headerLength = Int(UInt32(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) }))
            headerStart = 12
        default: throw TensorFileError.malformed(path: path, reason: ".npy format version \(major) is not supported")
        }
        guard headerStart + headerLength <= size else { throw TensorFileError.malformed(path: path, reason: "header runs past the end of the file") }
        let header = String(decoding: try file.bytes(at: headerStart, count: headerLength), as: UTF8.self)
        func field(_ key: String) -> String? {
            guard let range = header.range(of: "'\(key)':") else { return nil }
            return String(header[range.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrField = field("descr"), let fortranField = field("fortran_order"), let shapeField = field("shape") else {
            throw TensorFileError.malformed(path: path, reason: "header lacks descr, fortran_order or shape")
        }
        let descr = descrField.split(separator: "'").first.map(String.init) ?? ""
        guard !fortranField.hasPrefix("True") else { throw TensorFileError.malformed(path: path, reason: "Fortran-order arrays are not supported; save with np.ascontiguousarray") }
        guard let open = shapeField.firstIndex(of: "("), let close = shapeField[open...].firstIndex(of: ")") else {
            throw TensorFileError.malformed(path: path, reason: "bad shape in header")
        }
        let shape = try shapeField[shapeField.index(after: open)..<close].split(separator: ",").map { part -> Int in
            guard let n = Int(part.trimmingCharacters(in: .whitespaces)), n >= 0 else { throw TensorFileError.malformed(path: path, reason: "bad shape in header") }
            return n
        }
        let dtypes: [String: TensorDType] = ["<f4": .float32, "<f2": .float16, "<f8": .float64, "<i8": .int64, "<i4": .int32,
                                             "<i2": .int16, "|i1": .int8, "|u1": .uint8, "|b1": .bool]
        guard let dtype = dtypes[descr] else {
            let name = (path as NSString).lastPathComponent
            throw TensorFileError.unsupportedDType(path: path, tensor: name, dtype: descr)
        }
        let dataStart = headerStart + headerLength
        guard let count = byteCount(shape: shape, elementSize: dtype.size), count <= size - dataStart else {
            let needed = byteCount(shape: shape, elementSize: dtype.size).map { "\($0)" } ?? "more than 2^63"
            throw TensorFileError.malformed(path: path, reason: "data is \(size - dataStart) bytes, shape \(shape) needs \(needed) (truncated?)")
        }
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        tensor = FileTensor(entry: TensorEntry(name: name, dtype: dtype, shape: shape, offset: dataStart, byteCount: count), file: file)
    }
}

/// Bytes of a tensor of `shape`, or nil when that product overflows, or would without its zero
/// dimensions: shapes are read from files, and readers multiply parts of them (elements per row).
func byteCount(shape: [Int], elementSize: Int) -> Int? {
    var bound = elementSize
    for dimension in shape {
        let (product, overflow) = bound.multipliedReportingOverflow(by: max(dimension, 1))
        if overflow { return nil }
        bound = product
    }
    return shape.contains(0) ? 0 : bound
}

/// Writes safetensors files: tensors in the order given, little-endian, with string metadata.
public struct SafetensorsWriter {
    private var header: [String: Any] = [:]
    private var data = Data()
    private var order: [String] = []

    /// Creates an empty file with `metadata` in `__metadata__`.
    public init(metadata: [String: String] = [:]) {
        if !metadata.isEmpty { header["__metadata__"] = metadata }
    }

    /// Appends a float32 tensor.
    public mutating func add(_ name: String, shape: [Int], float32 values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "tensor \(name): \(values.count) values for shape \(shape)")
        values.withUnsafeBytes { append(name, dtype: "F32", shape: shape, bytes: $0) }
    }

    /// Appends an int64 tensor.
    public mutating func add(_ name: String, shape: [Int], int64 values: [Int64]) {
        precondition(values.count == shape.reduce(1, *), "tensor \(name): \(values.count) values for shape \(shape)")
        values.withUnsafeBytes { append(name, dtype: "I64", shape: shape, bytes: $0) }
    }

    /// Appends raw little-endian bytes under any safetensors dtype name.
    public mutating func append(_ name: String, dtype: String, shape: [Int], bytes: UnsafeRawBufferPointer) {
        let start = data.count
        data.append(contentsOf: bytes)
        header[name] = ["dtype": dtype, "shape": shape, "data_offsets": [start, data.count]] as [String: Any]
        order.append(name)
    }

    /// The file's bytes (header padded with spaces to a multiple of 8, as the reference writer does).
    public func bytes() throws -> Data {
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(data)
        return out
    }

    /// Writes the file to `path`.
    public func write(to path: String) throws {
        try bytes().write(to: URL(fileURLWithPath: path))
    }
}
