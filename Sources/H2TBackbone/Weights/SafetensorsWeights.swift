import H2TCore

/// Reads model weights stored as safetensors into a `StateDict`.
///
/// Parsing and bounds checks are shared with the external-activation reader
/// (`H2TCore.SafetensorsFile`); this adds the pinned-digest check and the conversion into the
/// same `StateDict` the PyTorch reader produces, so networks do not care where weights came from.
public enum SafetensorsWeights {
    /// Reads `path`, verifying its SHA-256 first when `expectedSHA256` is given.
    ///
    /// Tensors are listed in data order (the order the writer laid them out).
    /// - Throws: `WeightFileError.checksumMismatch`, or `TensorFileError` (naming the file) for a
    ///   missing, truncated or malformed file.
    public static func read(contentsOfFile path: String, expectedSHA256: String? = nil,
                            nonFloatTensors: NonFloatTensorPolicy = .keep) throws -> StateDict {
        // Read whole when its digest is checked: what is parsed is what was hashed.
        let file = try SafetensorsFile(path: path, readingWholeFile: expectedSHA256 != nil)
        if let expectedSHA256, let contents = file.file.contents {
            let actual = SHA256.hexDigest(contents)
            guard actual == expectedSHA256.lowercased() else {
                throw WeightFileError.checksumMismatch(file: path, expected: expectedSHA256, actual: actual)
            }
        }
        var result = StateDict(source: path)
        for tensor in file.tensors {
            let entry = tensor.entry
            let type = elementType(entry.dtype)
            if !type.isFloatingPoint && nonFloatTensors == .skip {
                result.recordSkipped(entry.name)
                continue
            }
            let count = entry.shape.reduce(1, *)
            let values: WeightValues
            if type.isFloatingPoint {
                let rows = entry.shape.first ?? 1
                values = .float(try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    if count > 0 { try tensor.readRows(0, count: rows, into: buffer.baseAddress!) }
                    initialized = count
                })
            } else if entry.dtype == .bool {
                values = .integer(try file.file.bytes(at: entry.offset, count: count).map { $0 != 0 ? 1 : 0 })
            } else {
                values = .integer(try tensor.integers().map(Int64.init))
            }
            result.insert(WeightTensor(shape: entry.shape, storedType: type, values: values), named: entry.name)
        }
        return result
    }

    private static func elementType(_ dtype: TensorDType) -> WeightElementType {
        switch dtype {
        case .float32: .float32
        case .float16: .float16
        case .bfloat16: .bfloat16
        case .float64: .float64
        case .int64: .int64
        case .int32: .int32
        case .int16: .int16
        case .int8: .int8
        case .uint8: .uint8
        case .bool: .bool
        }
    }
}
