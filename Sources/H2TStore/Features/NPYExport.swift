import Dispatch
import Foundation
import H2TCore

/// What `exportNPY` wrote.
public struct NPYExportSummary: Sendable {
    /// The file.
    public var path: String
    /// Examples (rows) and features (columns) of the float32 matrix.
    public var rows: Int
    public var columns: Int
}

/// An export that could not write its file.
public struct NPYExportError: Error, CustomStringConvertible, Sendable {
    /// The file.
    public var path: String
    /// Why (the system's message).
    public var reason: String

    /// One line naming the file.
    public var description: String { "cannot write \(path): \(reason)" }
}

extension FeatureStore {
    /// Writes a dataset split's features (all columns, or `columns` in the order given) to `path`
    /// as a float32 `.npy` matrix (examples × features, C order), in split order.
    ///
    /// The rows are read `rowsPerChunk` at a time through the query layer and written while the
    /// next chunk decodes (one chunk in flight), so memory holds two chunks whatever the split's
    /// size and the disk is kept busy. On any failure the partial file is removed.
    public func exportNPY(featureSet: String, dataset: String, split: String, columns: [Int]? = nil, to path: String,
                          rowsPerChunk: Int = 512) throws -> NPYExportSummary {
        guard rowsPerChunk > 0 else { throw StoreError.invalidArgument("rows per chunk must be positive, got \(rowsPerChunk)") }
        let info = try self.featureSet(featureSet)
        let items = try self.split(dataset: dataset, split: split)
        if let columns, let bad = columns.first(where: { $0 < 0 || $0 >= info.manifest.width }) {
            throw StoreError.invalidArgument("column \(bad) is outside feature set \(info.id.prefix(12)) (width \(info.manifest.width))")
        }
        let width = columns?.count ?? info.manifest.width
        let rows = items.examples.count
        let file = try NPYFileWriter(path: path)
        do {
            try file.write(Self.npyHeader(rows: rows, columns: width))
            let writer = ChunkWriter(file: file)
            var first = 0
            while first < rows {
                let chunk = Array(items.examples[first..<min(first + rowsPerChunk, rows)])
                let matrix = try read(info, examples: chunk, columns: columns)
                try writer.enqueue(matrix)
                first += chunk.count
            }
            try writer.finish()
            try file.close()
        } catch {
            file.abandon()
            throw error
        }
        return NPYExportSummary(path: path, rows: rows, columns: width)
    }

    /// The `.npy` (version 1.0) header of a little-endian float32 C-order matrix, padded so that
    /// the data starts at a multiple of 64 bytes.
    static func npyHeader(rows: Int, columns: Int) -> [UInt8] {
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(rows), \(columns)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let length = header.utf8.count
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8)
    }
}

/// Writes each chunk on a background queue while the caller decodes the next one; at most one
/// write is in flight, so memory holds two chunks.
private final class ChunkWriter: @unchecked Sendable {
    // @unchecked Sendable: `failure` is written by the queue and read only after waiting for it.
    private let file: NPYFileWriter
    private let queue = DispatchQueue(label: "h2t.export.writer")
    private let inFlight = DispatchSemaphore(value: 1)
    private var failure: (any Error)?

    init(file: NPYFileWriter) { self.file = file }

    func enqueue(_ matrix: FeatureMatrix) throws {
        inFlight.wait()
        if let failure { inFlight.signal(); throw failure }
        let chunk = UnsafeSendable(matrix)
        queue.async { [self] in
            defer { inFlight.signal() }
            do { try chunk.value.values.withUnsafeBytes { try file.write($0) } } catch { failure = error }
        }
    }

    func finish() throws {
        inFlight.wait()
        defer { inFlight.signal() }
        if let failure { throw failure }
    }
}

/// A file written with `write(2)` in large blocks, removed if abandoned.
private final class NPYFileWriter: @unchecked Sendable {
    // @unchecked Sendable: one writer at a time (the caller, then the chunk queue, in turn).
    let path: String
    private var descriptor: Int32

    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw NPYExportError(path: path, reason: String(cString: strerror(errno))) }
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let written = Foundation.write(descriptor, bytes.baseAddress! + offset, min(bytes.count - offset, 1 << 30))
            if written < 0 {
                if errno == EINTR { continue }
                throw NPYExportError(path: path, reason: String(cString: strerror(errno)))
            }
            offset += written
        }
    }

    func close() throws {
        let result = Foundation.close(descriptor)
        descriptor = -1
        if result != 0 { throw NPYExportError(path: path, reason: String(cString: strerror(errno))) }
    }

    func abandon() {
        if descriptor >= 0 { _ = Foundation.close(descriptor); descriptor = -1 }
        unlink(path)
    }
}
