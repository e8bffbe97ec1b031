/// Why a weight file (PyTorch checkpoint or safetensors) could not be read. Every case names the file.
public enum WeightFileError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or read.
    case unreadable(file: String, reason: String)
    /// The bytes' SHA-256 differs from the pinned digest.
    case checksumMismatch(file: String, expected: String, actual: String)
    /// The file ends before a structure it announces is complete.
    case truncated(file: String, offset: Int, needed: Int, what: String)
    /// The file is not in a format this reader knows (wrong magic number, tar checkpoint, ...).
    case unknownFormat(file: String, reason: String)
    /// The pickle names a global that is not on the state-dict whitelist. Nothing was executed.
    case refusedGlobal(file: String, global: String, offset: Int)
    /// The pickle uses an opcode the restricted machine does not implement (e.g. object
    /// construction); nothing was executed.
    case refusedOpcode(file: String, opcode: String, offset: Int)
    /// The structure is inconsistent (wrong argument types, bad strides, sizes that disagree, ...).
    case malformed(file: String, reason: String)
    /// A zip feature other than stored (uncompressed) single-disk members.
    case unsupportedZip(file: String, reason: String)

    /// One line naming the file and the problem.
    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            "\(file): cannot read weight file: \(reason)"
        case let .checksumMismatch(file, expected, actual):
            "\(file): sha256 \(actual) does not match the pinned \(expected) (corrupt or wrong file)"
        case let .truncated(file, offset, needed, what):
            "\(file): truncated: \(what) needs \(needed) bytes at offset \(offset)"
        case let .unknownFormat(file, reason):
            "\(file): not a supported weight file: \(reason)"
        case let .refusedGlobal(file, global, offset):
            "\(file): refused pickle global '\(global)' at offset \(offset): only state-dict globals are allowed; nothing was executed"
        case let .refusedOpcode(file, opcode, offset):
            "\(file): refused pickle opcode \(opcode) at offset \(offset): not needed by a state dict; nothing was executed"
        case let .malformed(file, reason):
            "\(file): malformed weight file: \(reason)"
        case let .unsupportedZip(file, reason):
            "\(file): unsupported zip checkpoint: \(reason)"
        }
    }
}
