import Foundation
import H2TCore
import H2TRegistry
import H2TStore
import Testing

/// A head file's selection tensors (what a PyTorch user reads) must say what its metadata and the
/// feature set say; import refuses a file where they do not, naming the tensor and the position.
@Suite("Head files: selection tensors")
struct HeadFileSelectionTests {
    /// An exported head, and where each of its selection tensors' values start in the file.
    struct Exported {
        let fixture: RegistryFixture
        let head: HeadRecord
        let path: String
        let bytes: Data
        let offsets: [String: Int]

        init() throws {
            fixture = try RegistryFixture()
            head = try fixture.register("toys")
            path = fixture.directory.file("toys.safetensors")
            try fixture.registry.export(HeadReference(task: "toys"), to: path)
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let file = try SafetensorsFile(path: path)
            offsets = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.entry.name, $0.entry.offset) })
        }

        /// The file with int64 `value` at `position` of tensor `name`, written next to the original.
        func tampered(_ name: String, position: Int, value: Int64) throws -> String {
            var copy = bytes
            let at = offsets[name]! + 8 * position
            withUnsafeBytes(of: value.littleEndian) { copy.replaceSubrange(at..<(at + 8), with: $0) }
            let out = path + ".\(name)-\(position).safetensors"
            try copy.write(to: URL(fileURLWithPath: out))
            return out
        }

        /// The position of the last selected input, and the tap and in-tap index it reads.
        var last: (position: Int, tap: TapIndices, local: Int) {
            let tap = head.selection.last!
            return (head.inputCount - 1, tap, tap.indices.last!)
        }

        /// Imports `file`, expecting a refusal with exactly `reason`, and nothing registered.
        func expectRefused(_ file: String, reason: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            #expect(throws: RegistryError.invalidHeadFile(path: file, reason: reason), sourceLocation: sourceLocation) {
                try fixture.registry.importHead(from: file, as: "copy")
            }
            #expect(try fixture.registry.list().map(\.entry.reference) == ["toys@v1"], sourceLocation: sourceLocation)
        }
    }

    @Test func anUntouchedFileImports() throws {
        let exported = try Exported()
        #expect(try exported.fixture.registry.importHead(from: exported.path, as: "copy").reference == "copy@v1")
    }

    @Test func aSelectedTapThatDisagreesIsRefusedNamingThePosition() throws {
        let exported = try Exported()
        let (position, tap, local) = exported.last
        let other = tap.order + 1
        let file = try exported.tampered("selected_tap", position: position, value: Int64(other))
        try exported.expectRefused(file, reason: "tensor 'selected_tap' disagrees with the head's selection at position \(position): "
                                   + "tap \(other), but column \(tap.offset + local) is in tap \(tap.order) ('\(tap.tap)')")
    }

    @Test func aSelectedLocalThatDisagreesIsRefusedNamingThePosition() throws {
        let exported = try Exported()
        // The first input of the last tap, given the next index of its tap.
        let tap = exported.head.selection.last!
        let position = exported.head.inputCount - tap.indices.count
        let local = tap.indices[0]
        let file = try exported.tampered("selected_local", position: position, value: Int64(local + 1))
        try exported.expectRefused(file, reason: "tensor 'selected_local' disagrees with the head's selection at position \(position): "
                                   + "index \(local + 1), but column \(tap.offset + local) is index \(local) of tap '\(tap.tap)' "
                                   + "(columns \(tap.offset)..<\(tap.offset + tap.width))")
        // Out of the tap altogether.
        let negative = try exported.tampered("selected_local", position: 0, value: -1)
        let first = exported.head.selection[0]
        try exported.expectRefused(negative, reason: "tensor 'selected_local' disagrees with the head's selection at position 0: "
                                   + "index -1, but column \(first.offset + first.indices[0]) is index \(first.indices[0]) of tap '\(first.tap)' "
                                   + "(columns \(first.offset)..<\(first.offset + first.width))")
    }

    @Test func aSelectedIndexThatDisagreesIsRefusedNamingThePosition() throws {
        let exported = try Exported()
        let (position, tap, local) = exported.last
        let file = try exported.tampered("selected_indices", position: position, value: 1 << 40)
        try exported.expectRefused(file, reason: "tensor 'selected_indices' disagrees with the head's selection at position \(position): "
                                   + "column \(1 << 40), expected \(tap.offset + local) (index \(local) of tap '\(tap.tap)', "
                                   + "columns \(tap.offset)..<\(tap.offset + tap.width))")
    }

    @Test func aSelectionTensorThatIsNotIntegerIsRefused() throws {
        let exported = try Exported()
        // Same header length: only the dtype of selected_tap changes, I64 to F64.
        let dataStart = exported.offsets.values.min()!
        var header = String(decoding: exported.bytes[8..<dataStart], as: UTF8.self)
        let entry = try #require(header.firstMatch(of: #/"selected_tap":\{[^}]*"dtype":"I64"/#)?.range)
        header.replaceSubrange(entry, with: header[entry].replacingOccurrences(of: "\"I64\"", with: "\"F64\""))
        var copy = exported.bytes
        copy.replaceSubrange(8..<dataStart, with: Data(header.utf8))
        let file = exported.path + ".f64.safetensors"
        try copy.write(to: URL(fileURLWithPath: file))
        try exported.expectRefused(file, reason: "tensor 'selected_tap' must be an integer [\(exported.head.inputCount)] tensor")
    }

    /// The CLI prints the refusal as one line and exits non-zero.
    @Test func headImportPrintsOneLine() throws {
        let exported = try Exported()
        try #require(FileManager.default.isExecutableFile(atPath: CLI.binary), "build h2t-store first (swift build)")
        let file = try exported.tampered("selected_tap", position: 0, value: 99)
        let result = try CLI.run(["head", "import", file, "--store", exported.fixture.store.path])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("Error: ") && lines[0].contains("'selected_tap' disagrees with the head's selection at position 0: tap 99"),
                "\(result.stderr)")
        #expect(try exported.fixture.registry.list().map(\.entry.reference) == ["toys@v1"])
    }
}
