import Foundation
import H2TCore
import H2TPipeline
import H2TStore
import Testing

/// Messages for malformed activation files: they describe the file as it is.
@Suite("Tensor file messages")
struct TensorFileMessageTests {
    /// A safetensors header length of 2^63 or more is printed as the unsigned number the file
    /// holds (it was read as an Int: negative, or a trap in a checked build).
    @Test(arguments: [UInt64(1) << 63, UInt64.max, UInt64(1) << 40])
    func anImpossibleHeaderLengthIsPrintedAsWritten(length: UInt64) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("huge.safetensors")
        var bytes = Data()
        withUnsafeBytes(of: length.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array("{\"x\":{}}".utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("a header length of \(length) was accepted")
        } catch let error as TensorFileError {
            #expect(error.description == "\(path): malformed: header length \(length) does not fit in a 16-byte file (truncated?)")
        }
    }

    /// Float16 and bfloat16 rows are read as 16-bit values into the back half of the output
    /// and widened in place: every one of the 65,536 bit patterns gives the float that Swift's own
    /// conversion gives (NaNs stay NaN), at every runnable instruction set (F16C, shifts, or the
    /// portable loop), for row widths that leave vector tails and for several rows at once.
    @Test func sixteenBitRowsWidenExactlyInPlace() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("sixteen.safetensors")
        let width = 21_847, rows = 3  // 65,541 values: every pattern, then five zeros
        let patterns = (0..<(rows * width)).map { UInt16(truncatingIfNeeded: $0 < 65_536 ? $0 : 0) }
        var writer = SafetensorsWriter()
        patterns.withUnsafeBytes { writer.append("f16", dtype: "F16", shape: [rows, width], bytes: $0) }
        patterns.withUnsafeBytes { writer.append("bf16", dtype: "BF16", shape: [rows, width], bytes: $0) }
        try writer.write(to: path)
        let file = try SafetensorsFile(path: path)
        let isas = InstructionSet.allCases.filter { $0 <= InstructionSet.detected }
        for tensor in file.tensors {
            let bfloat = tensor.entry.name == "bf16"
            let expected = patterns.map { bfloat ? Float(bitPattern: UInt32($0) << 16) : Float(Float16(bitPattern: $0)) }
            for isa in isas {
                for (first, count) in [(0, 3), (1, 1), (2, 1), (1, 2)] {
                    var got = [Float](repeating: -1, count: count * width + 1)
                    try got.withUnsafeMutableBufferPointer { try tensor.readRows(first, count: count, into: $0.baseAddress!, isa: isa) }
                    let want = expected[(first * width)..<((first + count) * width)]
                    let wrong = zip(got, want).filter { $1.isNaN ? !$0.isNaN : $0.bitPattern != $1.bitPattern }.count
                    #expect(wrong == 0, "\(tensor.entry.name) rows \(first)..<\(first + count) at \(isa): \(wrong) values differ")
                    #expect(got.last == -1, "wrote past the rows at \(isa)")
                }
            }
        }
    }

    /// A file cut short after it was opened (another process truncating it mid-ingest) is an
    /// error naming it when its rows are read, never a `SIGBUS`: the files are read, not mapped.
    /// Safetensors float32 and bfloat16 rows, 16-bit rows read as bits, and a `.npy` file;
    /// a file read whole first (a weight file whose digest is checked) keeps what it read.
    @Test func aFileCutAfterOpeningIsAnErrorNamingIt() throws {
        let dir = TemporaryDirectory()
        let rows = 64, width = 1024
        let values = (0..<(rows * width)).map { Float($0 % 997) / 8 }
        let path = dir.file("cut.safetensors")
        var writer = SafetensorsWriter()
        writer.add("f32", shape: [rows, width], float32: values)
        let bits = values.map { UInt16($0.bitPattern >> 16) }
        bits.withUnsafeBytes { writer.append("bf16", dtype: "BF16", shape: [rows, width], bytes: $0) }
        try writer.write(to: path)
        let file = try SafetensorsFile(path: path), whole = try SafetensorsFile(path: path, readingWholeFile: true)
        let f32 = file.tensors.first { $0.entry.name == "f32" }!, bf16 = file.tensors.first { $0.entry.name == "bf16" }!
        var row = [Float](repeating: 0, count: width), rowBits = [UInt16](repeating: 0, count: width)
        try row.withUnsafeMutableBufferPointer { try f32.readRows(3, count: 1, into: $0.baseAddress!) }
        #expect(row == Array(values[(3 * width)..<(4 * width)]))
        try rowBits.withUnsafeMutableBufferPointer { try bf16.readBits(5, count: 1, into: $0.baseAddress!) }
        #expect(rowBits == Array(bits[(5 * width)..<(6 * width)]))

        #expect(truncate(path, off_t(f32.entry.offset + 10 * width * 4)) == 0)
        try row.withUnsafeMutableBufferPointer { try f32.readRows(9, count: 1, into: $0.baseAddress!) }  // still there
        for read in [{ try row.withUnsafeMutableBufferPointer { try f32.readRows(40, count: 1, into: $0.baseAddress!) } },
                     { try row.withUnsafeMutableBufferPointer { try bf16.readRows(0, count: 1, into: $0.baseAddress!) } },
                     { try rowBits.withUnsafeMutableBufferPointer { try bf16.readBits(7, count: 1, into: $0.baseAddress!) } }] {
            do {
                try read()
                Issue.record("a row past the cut was read")
            } catch let error as TensorFileError {
                #expect(error.description.hasPrefix("\(path): cannot read: the file ends at byte"), "\(error)")
                #expect(error.description.hasSuffix("(truncated while being read?)"))
            }
        }
        let wholeBF16 = whole.tensors.first { $0.entry.name == "bf16" }!
        try rowBits.withUnsafeMutableBufferPointer { try wholeBF16.readBits(rows - 1, count: 1, into: $0.baseAddress!) }
        #expect(rowBits == Array(bits[((rows - 1) * width)...]))

        let npy = dir.file("cut.npy")
        try writeNpy(npy, shape: [rows, width], values: values)
        let tensor = try NpyFile(path: npy).tensor
        #expect(truncate(npy, off_t(tensor.entry.offset + width * 4)) == 0)
        #expect(throws: TensorFileError.self) { try row.withUnsafeMutableBufferPointer { try tensor.readRows(1, count: 1, into: $0.baseAddress!) } }
    }

    /// A tap of shape [] has no first axis of examples: the message says so instead of comparing
    /// example counts of 0.
    @Test(arguments: [true, false])
    func aScalarTapIsNamedAsOne(alone: Bool) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("scalar.safetensors")
        let vector = (name: "v", shape: [3, 2], values: [Float](repeating: 0, count: 6))
        try writeSafetensors(path, tensors: (alone ? [] : [vector]) + [(name: "x", shape: [], values: [1])])
        let store = try FeatureStore(path: dir.file("store"))
        let options = ExternalIngestOptions(backboneName: "toy", dataset: "d", split: "train", targetSizes: [16])
        do {
            _ = try ExternalIngest(store: store, options: options).run(paths: [path])
            Issue.record("a scalar tap was ingested")
        } catch let error as IngestError {
            #expect(error.description == "\(path): tap 'x' is a scalar (shape []); every tap needs a first axis of examples")
        }
    }
}
