import Foundation
import H2TCore

/// Reads PyTorch `state_dict` checkpoints without Python and without executing anything.
///
/// Two layouts are understood:
/// - **legacy** (torch < 1.6, and both packaged ImageNet models): five consecutive pickles
///   (magic number, protocol version, sys info, the state dict, the sorted storage keys), then
///   each storage in key order as an int64 element count and its raw little-endian bytes;
/// - **zip** (torch ≥ 1.6): stored members `<prefix>/data.pkl` (the state dict) and
///   `<prefix>/data/<key>` (one raw storage each).
///
/// The state-dict pickle runs on a restricted machine that accepts only the globals a state
/// dict needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
/// `torch._utils._rebuild_parameter`, and the `torch.*Storage` element types); anything else is
/// refused with `WeightFileError.refusedGlobal` naming it.
public enum PyTorchCheckpoint {
    /// The magic number torch writes first in a legacy checkpoint, as LONG1 little-endian bytes.
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
    static let legacyProtocolVersion: Int64 = 1001

    /// Reads the checkpoint at `path`, verifying its SHA-256 first when `expectedSHA256` is given.
    public static func read(contentsOfFile path: String, expectedSHA256: String? = nil,
                            nonFloatTensors: NonFloatTensorPolicy = .keep) throws -> StateDict {
        let bytes: [UInt8]
        do throws(FileReadError) {
            bytes = try InputFile.contents(of: path)
        } catch {
            throw WeightFileError.unreadable(file: path, reason: error.reason)
        }
        return try read(bytes: bytes, file: path, expectedSHA256: expectedSHA256, nonFloatTensors: nonFloatTensors)
    }

    /// Reads a pinned checkpoint from the artefact cache (its SHA-256 is verified on load).
    public static func read(_ artifact: Artifact, from cache: ArtifactCache,
                            nonFloatTensors: NonFloatTensorPolicy = .keep) throws -> StateDict {
        let bytes = try cache.verifiedContents(of: artifact)
        return try read(bytes: bytes, file: cache.expectedPath(of: artifact), nonFloatTensors: nonFloatTensors)
    }

    /// Reads a checkpoint held in memory; `file` names it in errors.
    public static func read(bytes: [UInt8], file: String, expectedSHA256: String? = nil,
                            nonFloatTensors: NonFloatTensorPolicy = .keep) throws -> StateDict {
        if let expectedSHA256 {
            let actual = SHA256.hexDigest(bytes)
            guard actual == expectedSHA256.lowercased() else {
                throw WeightFileError.checksumMismatch(file: file, expected: expectedSHA256, actual: actual)
            }
        }
        if StoredZipArchive.looksLikeZip(bytes) {
            return try readZip(bytes: bytes, file: file, policy: nonFloatTensors)
        }
        guard bytes.first == 0x80 else {
            throw WeightFileError.unknownFormat(file: file, reason: "neither a zip nor a legacy (pickle) checkpoint")
        }
        return try readLegacy(bytes: bytes, file: file, policy: nonFloatTensors)
    }

    // MARK: Legacy layout

    private static func readLegacy(bytes: [UInt8], file: String, policy: NonFloatTensorPolicy) throws -> StateDict {
        let noPersistentIDs: (PickleValue) throws -> PickleValue = { _ in
            throw WeightFileError.malformed(file: file, reason: "persistent id outside the state dict")
        }
        var position = 0
        let arena = PickleArena()
        defer { arena.clear() }
        func next(_ load: @escaping (PickleValue) throws -> PickleValue = noPersistentIDs) throws -> PickleValue {
            var machine = RestrictedUnpickler(bytes: bytes, file: file, position: position, arena: arena, persistentLoad: load)
            let value = try machine.load()
            position = machine.position
            return value
        }

        try checkLegacyHeader(file: file) { try next() }

        // Storages announced by persistent ids: key -> (type, element count).
        var storages: [String: (type: WeightElementType, count: Int)] = [:]
        let root = try next { pid in try legacyStorage(pid, file: file, announced: &storages) }
        guard case .list(let keyList) = try next() else {
            throw WeightFileError.malformed(file: file, reason: "legacy storage key list is not a list")
        }

        let storageBytes = try legacyStorageRanges(bytes, from: &position, keys: keyList.items, announced: storages, file: file)
        return try buildStateDict(root: root, file: file, policy: policy) { storage in
            guard let range = storageBytes[storage.key] else {
                throw WeightFileError.malformed(file: file, reason: "storage \(storage.key) is used but not in the key list")
            }
            return bytes[range]
        }
    }

    /// Checks the three pickles that open a legacy checkpoint, read one at a time by `next`:
    /// magic number, protocol version and system info (little-endian only).
    private static func checkLegacyHeader(file: String, next: () throws -> PickleValue) throws {
        guard case .bigInt(let magic) = try next(), magic == legacyMagic else {
            throw WeightFileError.unknownFormat(file: file, reason: "legacy checkpoint magic number missing")
        }
        guard case .int(let version) = try next(), version == legacyProtocolVersion else {
            throw WeightFileError.unknownFormat(file: file, reason: "legacy checkpoint protocol version is not 1001")
        }
        guard case .dict(let sysInfo) = try next() else {
            throw WeightFileError.malformed(file: file, reason: "legacy checkpoint sys info is not a dict")
        }
        if case .bool(false)? = sysInfo.values[.string("little_endian")] {
            throw WeightFileError.unknownFormat(file: file, reason: "big-endian checkpoints are not supported")
        }
    }

    /// The storage a legacy persistent id announces, recorded in `announced` (key → element type
    /// and count; an id repeated with another type or size is malformed).
    private static func legacyStorage(_ pid: PickleValue, file: String,
                                      announced storages: inout [String: (type: WeightElementType, count: Int)]) throws -> PickleValue {
        guard case .tuple(let t) = pid, t.count == 6, case .string("storage") = t[0],
              case .global(.storageType(let type, _)) = t[1], case .string(let key) = t[2],
              case .string = t[3], case .int(let size) = t[4], let count = Int(exactly: size), count >= 0 else {
            throw WeightFileError.malformed(file: file, reason: "unexpected legacy persistent id \(pid.typeName)")
        }
        if let known = storages[key], known.type != type || known.count != count {
            throw WeightFileError.malformed(file: file, reason: "storage \(key) announced twice with different types or sizes")
        }
        storages[key] = (type, count)
        var reference = StorageReference(key: key, elementType: type, rootCount: count, viewCount: count)
        switch t[5] {
        case .none:
            break
        case .tuple(let view):
            // (view_key, offset, view_size): a slice of the root storage.
            guard view.count == 3, case .int(let offset) = view[1], case .int(let viewSize) = view[2],
                  offset >= 0, viewSize >= 0, offset + viewSize <= Int64(count) else {
                throw WeightFileError.malformed(file: file, reason: "bad storage view of \(key)")
            }
            reference.viewOffset = Int(offset)
            reference.viewCount = Int(viewSize)
        default:
            throw WeightFileError.malformed(file: file, reason: "bad storage view metadata of \(key)")
        }
        return .storage(reference)
    }

    /// The byte range of each raw storage, which follow the pickles in key-list order, each as an
    /// int64 element count and its bytes; `position` ends after the last one.
    private static func legacyStorageRanges(_ bytes: [UInt8], from position: inout Int, keys: [PickleValue],
                                            announced storages: [String: (type: WeightElementType, count: Int)],
                                            file: String) throws -> [String: Range<Int>] {
        var storageBytes: [String: Range<Int>] = [:]
        for item in keys {
            guard case .string(let key) = item else {
                throw WeightFileError.malformed(file: file, reason: "storage key is a \(item.typeName)")
            }
            guard let info = storages[key] else {
                throw WeightFileError.malformed(file: file, reason: "storage \(key) is listed but never used")
            }
            guard position + 8 <= bytes.count else {
                throw WeightFileError.truncated(file: file, offset: position, needed: 8, what: "element count of storage \(key)")
            }
            let count = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[position + $1]) << (8 * UInt64($1)) }
            guard count == UInt64(info.count) else {
                throw WeightFileError.malformed(file: file, reason: "storage \(key) holds \(count) elements, its tensors announce \(info.count)")
            }
            position += 8
            let byteCount = info.count * info.type.byteCount
            guard byteCount <= bytes.count - position else {
                throw WeightFileError.truncated(file: file, offset: position, needed: byteCount, what: "data of storage \(key)")
            }
            storageBytes[key] = position..<(position + byteCount)
            position += byteCount
        }
        guard position == bytes.count else {
            throw WeightFileError.malformed(file: file, reason: "\(bytes.count - position) unexpected bytes after the last storage")
        }
        return storageBytes
    }

    // MARK: Zip layout

    private static func readZip(bytes: [UInt8], file: String, policy: NonFloatTensorPolicy) throws -> StateDict {
        let archive = try StoredZipArchive(bytes: bytes, file: file)
        let pickles = archive.entries.filter { $0.name.hasSuffix("/data.pkl") }
        guard pickles.count == 1, let pickle = pickles.first else {
            throw WeightFileError.unknownFormat(file: file, reason: "zip checkpoint needs exactly one <prefix>/data.pkl, found \(pickles.count)")
        }
        let prefix = String(pickle.name.dropLast("data.pkl".count))
        if let order = archive.entry(named: prefix + "byteorder") {
            let text = String(decoding: try archive.contents(of: order), as: UTF8.self)
            guard text.trimmingCharacters(in: .whitespacesAndNewlines) == "little" else {
                throw WeightFileError.unknownFormat(file: file, reason: "byte order '\(text)' is not supported")
            }
        }
        let arena = PickleArena()
        defer { arena.clear() }
        var machine = RestrictedUnpickler(bytes: Array(try archive.contents(of: pickle)), file: "\(file):\(pickle.name)",
                                          arena: arena) { pid in
            // ('storage', storage_type, key, location, numel)
            guard case .tuple(let t) = pid, t.count == 5, case .string("storage") = t[0],
                  case .global(.storageType(let type, _)) = t[1], case .string(let key) = t[2],
                  case .string = t[3], case .int(let numel) = t[4], let count = Int(exactly: numel), count >= 0 else {
                throw WeightFileError.malformed(file: file, reason: "unexpected zip persistent id \(pid.typeName)")
            }
            return .storage(StorageReference(key: key, elementType: type, rootCount: count, viewCount: count))
        }
        let root = try machine.load()
        var checked: [String: ArraySlice<UInt8>] = [:]
        return try buildStateDict(root: root, file: file, policy: policy) { storage in
            if let bytes = checked[storage.key] { return bytes }
            let name = prefix + "data/" + storage.key
            guard let entry = archive.entry(named: name) else {
                throw WeightFileError.malformed(file: file, reason: "zip member \(name) is missing")
            }
            let needed = storage.rootCount * storage.elementType.byteCount
            guard entry.size >= needed else {
                throw WeightFileError.truncated(file: file, offset: entry.dataOffset, needed: needed, what: "zip member \(name)")
            }
            let bytes = try archive.contents(of: entry)
            checked[storage.key] = bytes
            return bytes
        }
    }

    // MARK: Materialisation

    private static func buildStateDict(root: PickleValue, file: String, policy: NonFloatTensorPolicy,
                                       storageBytes: (StorageReference) throws -> ArraySlice<UInt8>) throws -> StateDict {
        guard case .dict(let dict) = root else {
            throw WeightFileError.malformed(file: file, reason: "top-level object is a \(root.typeName), not a state dict")
        }
        var result = StateDict(source: file)
        for key in dict.keys {
            guard case .string(let name) = key else {
                throw WeightFileError.malformed(file: file, reason: "state dict key \(key.text) is not a string")
            }
            guard case .tensor(let tensor)? = dict.values[key] else {
                throw WeightFileError.malformed(
                    file: file, reason: "state dict entry \(name) is a \(dict.values[key]?.typeName ?? "nothing"), not a tensor")
            }
            if !tensor.storage.elementType.isFloatingPoint && policy == .skip {
                result.recordSkipped(name)
                continue
            }
            let bytes = try storageBytes(tensor.storage)
            result.insert(materialise(tensor, bytes: bytes), named: name)
        }
        return result
    }

    /// Gathers a (possibly strided, offset) view of raw little-endian storage bytes into a
    /// contiguous row-major tensor. Bounds were checked when the tensor was rebuilt.
    static func materialise(_ tensor: TensorReference, bytes: ArraySlice<UInt8>) -> WeightTensor {
        let type = tensor.storage.elementType
        let count = tensor.shape.reduce(1, *)
        let base = tensor.storage.viewOffset + tensor.offset
        var contiguous = true
        var expectedStride = 1
        for (size, stride) in zip(tensor.shape, tensor.strides).reversed() where size != 1 {
            if stride != expectedStride { contiguous = false }
            expectedStride *= size
        }
        // Element indices into the root storage, in row-major order of the view (strided case only).
        var indices: [Int] = []
        if !contiguous && count > 0 {
            indices.reserveCapacity(count)
            var position = [Int](repeating: 0, count: tensor.shape.count)
            var offset = base
            for _ in 0..<count {
                indices.append(offset)
                var axis = tensor.shape.count - 1
                while axis >= 0 {
                    position[axis] += 1
                    offset += tensor.strides[axis]
                    if position[axis] < tensor.shape[axis] { break }
                    offset -= tensor.strides[axis] * tensor.shape[axis]
                    position[axis] = 0
                    axis -= 1
                }
            }
        }
        let values: WeightValues = bytes.withUnsafeBytes { raw in
            if contiguous && type == .float32 && UInt32(1).littleEndian == 1 {
                // The common case (every tensor of the packaged models): one copy.
                let floats = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    if count > 0 {
                        UnsafeMutableRawBufferPointer(buffer).copyMemory(
                            from: UnsafeRawBufferPointer(rebasing: raw[(base * 4)..<((base + count) * 4)]))
                    }
                    initialized = count
                }
                return .float(floats)
            }
            func element<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T {
                let index = contiguous ? base + i : indices[i]
                return T(littleEndian: raw.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self))
            }
            switch type {
            case .float32: return .float((0..<count).map { Float(bitPattern: element(UInt32.self, $0)) })
            case .float64: return .float((0..<count).map { Float(Double(bitPattern: element(UInt64.self, $0))) })
            case .float16: return .float((0..<count).map { Float(Float16(bitPattern: element(UInt16.self, $0))) })
            case .bfloat16: return .float((0..<count).map { Float(bitPattern: UInt32(element(UInt16.self, $0)) << 16) })
            case .int64: return .integer((0..<count).map { element(Int64.self, $0) })
            case .int32: return .integer((0..<count).map { Int64(element(Int32.self, $0)) })
            case .int16: return .integer((0..<count).map { Int64(element(Int16.self, $0)) })
            case .int8: return .integer((0..<count).map { Int64(element(Int8.self, $0)) })
            case .uint8: return .integer((0..<count).map { Int64(element(UInt8.self, $0)) })
            case .bool: return .integer((0..<count).map { element(UInt8.self, $0) != 0 ? 1 : 0 })
            }
        }
        return WeightTensor(shape: tensor.shape, storedType: type, values: values)
    }
}
