import Foundation
import H2TBackbone
import H2TCore
import H2TRegistry
import H2TStore

/// One reader of untrusted bytes, as the fuzzer and the corpus replay drive it.
///
/// Each harness hands the bytes to the reader through its ordinary entry point (a file for the
/// readers that only take a path) and then uses what it returned the way the callers do, so a
/// header that parses but lies is exercised too. Every outcome is fine except a crash, which
/// the sanitizers report, and an error that does not name the file it is about.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `SafetensorsFile` (external activations, head files) and `SafetensorsWeights`.
    case safetensors
    /// `NpyFile` (external activations and labels).
    case npy
    /// `IDX.readBytes`, plain or gzip'd (Fashion-MNIST and relatives).
    case idx
    /// `ImageDecoder` on PNG bytes (libpng).
    case png
    /// `ImageDecoder` on JPEG bytes (libjpeg through `CJPEGDecode`).
    case jpeg
    /// `TileDecoder` (stored feature tiles), with the checksums recomputed so that the fuzzer gets past them.
    case tile
    /// `HeadFile.read` (head import).
    case head
    /// `PyTorchCheckpoint` (legacy pickle and zip checkpoints).
    case checkpoint

    /// The file extension the readers see.
    var fileExtension: String {
        switch self {
        case .safetensors, .head: "safetensors"
        case .npy: "npy"
        case .idx: "idx3-ubyte"
        case .png: "png"
        case .jpeg: "jpg"
        case .tile: "tile"
        case .checkpoint: "pth"
        }
    }
}

/// What a reader made of one input.
public enum FuzzOutcome: Sendable, Equatable {
    /// The reader accepted the input.
    case accepted
    /// The reader refused it with an error naming the file (the message).
    case rejected(String)
}

/// A finding that is not a crash: the reader refused an input without naming the file.
public struct FuzzViolation: Error, CustomStringConvertible {
    /// What went wrong.
    public let description: String
}

/// Runs inputs through one `FuzzTarget`. Not thread-safe: one runner per thread.
public final class FuzzRunner {
    /// The target this runner drives.
    public let target: FuzzTarget
    private let path: String

    /// Creates a runner whose path-taking readers read a scratch file in `directory` (a tmpfs
    /// such as /dev/shm keeps that cheap).
    public init(_ target: FuzzTarget, directory: String = FuzzRunner.defaultDirectory) throws {
        self.target = target
        let folder = "\(directory)/h2t-fuzz-\(getpid())-\(target.rawValue)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        path = "\(folder)/input.\(target.fileExtension)"
    }

    deinit { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }

    /// /dev/shm when it is writable, else the temporary directory.
    public static var defaultDirectory: String {
        access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NSTemporaryDirectory()
    }

    /// Feeds `bytes` to the reader.
    /// - Throws: `FuzzViolation` when the reader refuses the input with an error that does not
    ///   name the file.
    public func run(_ bytes: [UInt8]) throws(FuzzViolation) -> FuzzOutcome {
        do {
            try read(bytes)
            return .accepted
        } catch {
            let message = "\(error)"
            if target != .tile && !message.contains(path) && !message.contains("fuzz-input") {
                throw FuzzViolation(description: "\(target.rawValue): error does not name the file: \(message)")
            }
            return .rejected(message)
        }
    }

    private func writeFile(_ bytes: [UInt8]) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    private func read(_ bytes: [UInt8]) throws {
        switch target {
        case .safetensors:
            try writeFile(bytes)
            let file = try SafetensorsFile(path: path)
            for tensor in file.tensors { try Self.consume(tensor) }
            _ = try SafetensorsWeights.read(contentsOfFile: path)
        case .npy:
            try writeFile(bytes)
            try Self.consume(NpyFile(path: path).tensor)
        case .idx:
            try writeFile(bytes)
            let array = try IDX.readBytes(path: path)
            if array.shape.count == 3 {
                let images = try IDX.readImages(path: path)
                for i in 0..<min(images.count, 2) { _ = images.image(i) }
            } else if array.shape.count == 1 {
                _ = try IDX.readLabels(path: path)
            }
        case .png, .jpeg:
            // The in-memory entry point; `file` is what errors must name.
            let image = try ImageDecoder.decode(bytes: bytes, file: "fuzz-input", alpha: .drop)
            _ = image.pixels.count
            _ = try? ImageDecoder.decode(bytes: bytes, file: "fuzz-input", alpha: .reject)
        case .tile:
            try Self.decodeTile(Self.withValidChecksums(bytes))
        case .head:
            try writeFile(bytes)
            _ = try HeadFile.read(path)
        case .checkpoint:
            _ = try PyTorchCheckpoint.read(bytes: bytes, file: "fuzz-input")
        }
    }

    /// Reads a tensor as the ingest and weight loaders do: float rows, or integer labels.
    private static func consume(_ tensor: FileTensor) throws {
        let entry = tensor.entry
        if entry.dtype.isFloat {
            // Only tensors small enough for a test buffer; the bounds were checked against the file.
            let rows = entry.shape.first ?? 1
            let count = entry.shape.reduce(1, *)
            guard count > 0, count <= 1 << 22 else { return }
            var buffer = [Float](repeating: 0, count: count)
            try buffer.withUnsafeMutableBufferPointer { try tensor.readRows(0, count: rows, into: $0.baseAddress!) }
        } else if entry.shape.count <= 1 {
            _ = try tensor.integers()
        }
    }

    // MARK: Tiles

    /// The key every fuzzed tile is bound to (format 2 binds a tile to its key and its segment's
    /// row count); the harness recomputes the header CRC over it.
    static let tileKey = [UInt8](repeating: 0xAB, count: 16) + [0, 0, 2, 0, 0, 0, 0, 1]

    /// Decodes a tile every way the store does: verify, then all columns, then a few columns of a few rows.
    private static func decodeTile(_ bytes: [UInt8]) throws {
        let decoder = TileDecoder()
        try bytes.withUnsafeBytes { tile in
            let unbound = try TileHeader(parsing: tile, binding: nil)
            let binding = TileCodec.binding(key: tileKey, rows: unbound.rows)
            let values = try decoder.verify(tile, binding: binding)
            let header = try TileHeader(parsing: tile, binding: binding)
            // The store sizes its buffers from the segment, not the tile; a tile bigger than a
            // test buffer is only verified.
            guard values <= 1 << 22, header.rows > 0, header.cols > 0 else { return }
            var dest = [Float](repeating: 0, count: header.rows * header.cols)
            try dest.withUnsafeMutableBufferPointer { out in
                try decoder.decodeAll(tile, binding: binding, into: out.baseAddress!, destStride: header.cols)
                let columns = stride(from: 0, to: header.cols, by: 3).map { ColumnPick(local: $0, out: $0) }
                let rows = stride(from: 0, to: header.rows, by: 2).map { RowPick(local: $0, out: $0) }
                try decoder.decode(tile, binding: binding, columns: columns, rows: rows, into: out.baseAddress!, destStride: header.cols)
                try decoder.decode(tile, binding: binding, columns: columns, into: out.baseAddress!, destStride: header.cols)
            }
        }
    }

    /// `bytes` with the header and frame checksums recomputed wherever the layout
    /// (`schemas/store-format.md` §5) lets them be found: random bytes almost never carry a
    /// matching CRC-32, and the interesting code runs after the checks. Version 2 headers are
    /// bound to `tileKey`.
    static func withValidChecksums(_ bytes: [UInt8]) -> [UInt8] {
        var tile = bytes
        guard tile.count >= 28, tile.starts(with: Array("H2TT".utf8)) else { return tile }
        func le32(_ at: Int) -> Int {
            Int(tile[at]) | Int(tile[at + 1]) << 8 | Int(tile[at + 2]) << 16 | Int(tile[at + 3]) << 24
        }
        func store(_ value: UInt32, at: Int) {
            for i in 0..<4 { tile[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
        let planes: Int
        switch tile[6] {
        case 0: planes = 4
        case 1, 2: planes = 2
        default: return tile
        }
        let entrySize = 4 * (planes + 2), frameCount = le32(20)
        let dataOffset = 28 + frameCount * entrySize
        guard frameCount <= 1 << 16, dataOffset <= tile.count else { return tile }
        for frame in 0..<frameCount {
            let entry = 28 + frame * entrySize
            let start = dataOffset + le32(entry)
            let length = (0..<planes).reduce(0) { $0 + le32(entry + 4 + 4 * $1) }
            guard start + length <= tile.count else { continue }
            store(CRC32.checksum(tile[start..<(start + length)]), at: entry + 4 + 4 * planes)
        }
        let version = Int(tile[4]) | Int(tile[5]) << 8
        var covered = Array(tile[0..<24] + tile[28..<dataOffset])
        if version >= 2 { covered += TileCodec.binding(key: tileKey, rows: le32(8)) }
        store(CRC32.checksum(covered), at: 24)
        return tile
    }
}

/// CRC-32 (the zlib polynomial), as the tile format uses; kept here so that the harness does
/// not share the code under test.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
