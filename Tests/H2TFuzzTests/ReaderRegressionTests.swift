import Foundation
import H2TCore
import H2TFuzzHarness
import Testing

/// Inputs that crashed a reader (found by the fuzzer, or by reading the code while writing its
/// harness), each now an error naming the file. Before the fixes each of these trapped or ran
/// out of memory, which would have stopped this test process.
@Suite struct ReaderRegressionTests {
    private static let folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-reader-regressions-\(getpid())")

    private func write(_ bytes: [UInt8], _ name: String) throws -> String {
        try FileManager.default.createDirectory(at: Self.folder, withIntermediateDirectories: true)
        let path = Self.folder.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// A version-1 .npy file with `header` (padded as numpy pads it) and `data`.
    private func npy(_ header: String, data: [UInt8] = []) -> [UInt8] {
        var text = Array(header.utf8)
        while (10 + text.count + 1) % 64 != 0 { text.append(0x20) }
        text.append(0x0A)
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8)] + text + data
    }

    /// A safetensors file with the JSON `header` and `data`.
    private func safetensors(_ header: String, data: [UInt8] = []) -> [UInt8] {
        let text = Array(header.utf8)
        return withUnsafeBytes(of: UInt64(text.count).littleEndian, Array.init) + text + data
    }

    @Test func npyShapeWithTheClosingParenthesisFirstIsMalformed() throws {
        // Found by the fuzzer: ")" before "(" made an inverted range (a trap).
        let path = try write(npy("{'descr': '<f4', 'fortran_order': False, 'shape': ) (3, }"), "paren.npy")
        let error = #expect(throws: TensorFileError.self) { try NpyFile(path: path) }
        #expect(error?.description == "\(path): malformed: bad shape in header")
        // With a ")" after the "(" the same header reads.
        let fine = try write(npy("{'descr': '<f4', 'fortran_order': False, 'shape': ) (1,), }", data: [0, 0, 128, 63]), "paren-ok.npy")
        #expect(try NpyFile(path: fine).tensor.entry.shape == [1])
    }

    @Test func npyShapeWhoseSizeOverflowsIsMalformed() throws {
        let path = try write(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"), "huge.npy")
        let error = #expect(throws: TensorFileError.self) { try NpyFile(path: path) }
        #expect(error?.description == "\(path): malformed: data is 0 bytes, shape [4611686018427387904, 4] needs more than 2^63 (truncated?)")
    }

    @Test func safetensorsShapeWhoseSizeOverflowsIsMalformed() throws {
        let path = try write(safetensors(#"{"t":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#), "huge.safetensors")
        let error = #expect(throws: TensorFileError.self) { try SafetensorsFile(path: path) }
        #expect(error?.description == "\(path): malformed: tensor 't' of shape [4611686018427387904, 4] is larger than the file")
        // A zero dimension does not hide an overflowing row width ([0, 2^62, 4]: 0 bytes, but
        // every reader multiplies the row's elements).
        let zero = try write(safetensors(#"{"t":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}}"#), "zero.safetensors")
        #expect(throws: TensorFileError.self) { try SafetensorsFile(path: zero) }
    }

    @Test func safetensorsOffsetsThatOverflowAreMalformed() throws {
        let path = try write(safetensors(#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775804,9223372036854775807]}}"#, data: [0, 0, 0, 0]),
                             "offsets.safetensors")
        let error = #expect(throws: TensorFileError.self) { try SafetensorsFile(path: path) }
        #expect(error?.description.hasPrefix("\(path): malformed: tensor 't' data_offsets") == true, "\(String(describing: error))")
    }

    /// The committed valid tile seed with its header fields changed (the tile harness repairs the
    /// checksums, as a tile written that way by a buggy or hostile writer would carry them).
    private func tile(rows: UInt32, cols: UInt32? = nil, frameWidth: UInt32? = nil, frameCount: UInt32? = nil) throws -> [UInt8] {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/Corpus/tile/valid-bf16-zstd.tile")
        var bytes = try [UInt8](Data(contentsOf: corpus))
        func put(_ value: UInt32, at offset: Int) { for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
        put(rows, at: 8)
        if let cols { put(cols, at: 12) }
        if let frameWidth { put(frameWidth, at: 16) }
        if let frameCount { put(frameCount, at: 20) }
        return bytes
    }

    @Test func tileWithMoreRowsThanItsDataIsAnErrorNotAnAllocation() throws {
        // Found by the fuzzer: the scratch buffer was sized from the header (5 GB) before any
        // plane was looked at.
        let runner = try FuzzRunner(.tile)
        let outcome = try runner.run(try tile(rows: 0x7FFF_FFFF))
        guard case .rejected(let message) = outcome else { Issue.record("accepted"); return }
        #expect(message == "tile frame 0 does not decompress: plane 0 does not declare \(4 * 0x7FFF_FFFF) bytes", "\(message)")
    }

    @Test func tileWhoseSizeOverflowsIsAnError() throws {
        // rows × columns of one frame did not fit in an Int: a trap while sizing the frame.
        let runner = try FuzzRunner(.tile)
        let outcome = try runner.run(try tile(rows: 0xFFFF_FFFF, cols: 0xFFFF_FFFF, frameWidth: 0xFFFF_FFFF, frameCount: 1))
        #expect(outcome == .rejected("tile is truncated (4294967295 rows × 4294967295 columns)"))
    }
}
