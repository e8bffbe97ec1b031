import Foundation
import H2TBackbone
import H2TCore
import Testing

/// Damaged JPEGs that used to reach libjpeg's fatal-error handler (a `fatalError`, or a crash
/// had the structural pre-check missed them) are ordinary `ImageInputError`s naming the file.
@Suite struct JPEGErrorTests {
    /// Writes `bytes` to a fresh file named `name` and decodes it; returns the error's text.
    private func decodeError(_ bytes: [UInt8], name: String) throws -> (path: String, message: String) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-jpeg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: ImageInputError.self) { try ImageDecoder.decode(contentsOfFile: path) }
        return (path, error?.description ?? "no error")
    }

    /// Offset of the first byte after the marker `0xFF code` (its segment length).
    private func segment(_ code: UInt8, in bytes: [UInt8]) throws -> Int {
        try #require((0..<(bytes.count - 1)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == code }) + 2
    }

    @Test func truncatedJPEGIsAnErrorNamingTheFile() throws {
        let bytes = try Fixtures.bytes("images/rgb.jpg")
        let (path, message) = try decodeError(Array(bytes.prefix(bytes.count / 2)), name: "half.jpg")
        // libjpeg's "premature end of data" warning refuses the image, as before.
        #expect(message.hasPrefix("\(path): not a decodable PNG/JPEG image: corrupt JPEG data: "), "\(message)")
        #expect(message.contains("Premature end of JPEG file"), "\(message)")
    }

    @Test func corruptHuffmanTableIsAnErrorNamingTheFile() throws {
        var bytes = try Fixtures.bytes("images/rgb.jpg")
        // Three more codes of length 1 (at most two fit), as many fewer of the longest used length:
        // the table's size is unchanged, its code lengths overflow.
        let counts = try segment(0xC4, in: bytes) + 3
        let longest = try #require((0..<16).last { bytes[counts + $0] >= 3 })
        bytes[counts] += 3
        bytes[counts + longest] -= 3
        let (path, message) = try decodeError(bytes, name: "huffman.jpg")
        #expect(message == "\(path): not a decodable PNG/JPEG image: libjpeg: Bogus Huffman table definition", "\(message)")
    }

    @Test func hugeDimensionsAreRefusedBeforeDecoding() throws {
        var bytes = try Fixtures.bytes("images/rgb.jpg")
        let sof = try segment(0xC0, in: bytes)
        bytes.replaceSubrange((sof + 3)..<(sof + 7), with: [0xFF, 0xDC, 0xFF, 0xDC])  // 65500 × 65500
        let (path, message) = try decodeError(bytes, name: "huge.jpg")
        #expect(message == "\(path): not a decodable PNG/JPEG image: 65500x65500 exceeds \(ImageDecoder.maximumPixelCount) pixels",
                "\(message)")
        // Zero rows is libjpeg's own fatal error, now an error too.
        bytes.replaceSubrange((sof + 3)..<(sof + 5), with: [0, 0])
        let (emptyPath, empty) = try decodeError(bytes, name: "empty.jpg")
        #expect(empty == "\(emptyPath): not a decodable PNG/JPEG image: libjpeg: Empty JPEG image (DNL not supported)", "\(empty)")
    }

    @Test func garbageAfterSOIIsAnErrorNamingTheFile() throws {
        var generator = SplitMix64(seed: 12)
        for trial in 0..<20 {
            let garbage = (0..<(64 + trial * 16)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let (path, message) = try decodeError([0xFF, 0xD8, 0xFF] + garbage, name: "garbage-\(trial).jpg")
            #expect(message.hasPrefix("\(path): not a decodable PNG/JPEG image: "), "\(message)")
        }
    }

    /// A second SOI marker is one of libjpeg's fatal errors.
    @Test func secondSOIIsAnErrorNamingTheFile() throws {
        var bytes = try Fixtures.bytes("images/gray.jpg")
        let sof = try segment(0xC0, in: bytes) - 2
        bytes.insert(contentsOf: [0xFF, 0xD8], at: sof)
        let (path, message) = try decodeError(bytes, name: "two-soi.jpg")
        #expect(message.hasPrefix("\(path): not a decodable PNG/JPEG image: libjpeg: "), "\(message)")
    }
}

/// Decoding a list of files on several threads reports the first failing file of the list,
/// whichever thread met its failure first.
@Suite struct ParallelDecodeTests {
    @Test func severalFilesDecodeInOrderAndTheFirstFailureIsReported() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-decode-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let good = ["rgb.jpg", "gray.png", "rgb.png", "gray.jpg", "palette.png", "rgb_progressive.jpg"]
        let paths = try good.map { name in
            let path = folder.appendingPathComponent(name).path
            try Data(Fixtures.bytes("images/" + name)).write(to: URL(fileURLWithPath: path))
            return path
        }
        let one = try paths.map { try ImageDecoder.decode(contentsOfFile: $0) }
        let bad = try ["first-bad.jpg": "truncated.jpg", "second-bad.png": "corrupt.png"].mapValues { fixture in
            try Fixtures.bytes("images/" + fixture)
        }
        for (name, bytes) in bad { try Data(bytes).write(to: folder.appendingPathComponent(name)) }
        let firstBad = folder.appendingPathComponent("first-bad.jpg").path
        let secondBad = folder.appendingPathComponent("second-bad.png").path
        for threads in 1...4 {
            let parallelism = Parallelism(threads: threads)
            #expect(try ImageDecoder.decode(files: paths, parallelism: parallelism) == one, "\(threads) threads")
            // The second bad file is the cheaper one to fail on, and many workers reach it first.
            let mixed = [paths[0], firstBad] + paths[1...] + [secondBad]
            let error = #expect(throws: ImageInputError.self) { try ImageDecoder.decode(files: mixed, parallelism: parallelism) }
            #expect(error?.description.hasPrefix(firstBad + ": ") == true, "\(threads) threads: \(error.map { "\($0)" } ?? "none")")
        }
    }
}
