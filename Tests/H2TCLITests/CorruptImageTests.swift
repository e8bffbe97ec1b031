import Foundation
import Testing

/// Image-folder ingest of corrupt files (real MobileNetV2 weights from the artefact cache):
/// skipped files are warnings on stderr and entries in `--json`, and `--strict` makes them an
/// error before anything is stored.
@Suite("h2t-store ingest of an image folder with corrupt files", .serialized)
struct CorruptImageTests {
    let dir: String
    let folder: String
    /// The files a correct ingest leaves out.
    let bad: [String]

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-cli-corrupt-" + UUID().uuidString
        folder = dir + "/images"
        let fixtures = CLI.packageRoot + "/Tests/H2TBackboneTests/Fixtures/images"
        let fm = FileManager.default
        for label in ["bag", "shoe"] { try fm.createDirectory(atPath: folder + "/" + label, withIntermediateDirectories: true) }
        try fm.copyItem(atPath: fixtures + "/rgb.jpg", toPath: folder + "/bag/good.jpg")
        try fm.copyItem(atPath: fixtures + "/rgb.png", toPath: folder + "/shoe/good.png")
        try fm.copyItem(atPath: fixtures + "/truncated.jpg", toPath: folder + "/bag/truncated.jpg")
        let png = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/rgb.png"))
        try png.prefix(60).write(to: URL(fileURLWithPath: folder + "/shoe/truncated.png"))
        // A JPEG signature over bytes that are no JPEG.
        try Data([0xFF, 0xD8, 0xFF, 0xE0] + (0..<400).map { UInt8(($0 * 37) % 251) }).write(to: URL(fileURLWithPath: folder + "/shoe/garbage.jpg"))
        bad = [folder + "/bag/truncated.jpg", folder + "/shoe/garbage.jpg", folder + "/shoe/truncated.png"]
    }

    func ingest(_ extra: [String]) throws -> CLI.Result {
        try CLI.run(["ingest", "--store", dir + "/store", "--backbone", "mobilenet_v2", "--folder", folder, "--dataset", "d",
                     "--input-size", "32", "--target-size", "64"] + extra)
    }

    @Test func strictFailsBeforeStoringAnythingAndNamesTheFiles() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let strict = try ingest(["--strict"])
        #expect(strict.status == 1, "\(strict.stderr)")
        let error = try #require(strict.stderr.split(separator: "\n").first { $0.hasPrefix("Error: ") }, "\(strict.stderr)")
        #expect(error.hasPrefix("Error: --strict: 3 files cannot be ingested (\(bad[0]): undecodable: "), "\(error)")
        #expect(error.hasSuffix("and 2 more); no example was stored"), "\(error)")
        for path in bad { #expect(strict.stderr.contains("ingest: skipped \(path): "), "\(path): \(strict.stderr)") }
        #expect(strict.stderr.contains("ingest: 3 files skipped\n"), "\(strict.stderr)")
        // Nothing was written: the files are checked before the store is even created.
        #expect(!FileManager.default.fileExists(atPath: dir + "/store"))
    }

    @Test func skippedFilesAreReportedOnStderrAndInJSON() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = try ingest(["--json"])
        #expect(json.status == 0, "\(json.stderr)")
        try CLI.expectValid(json.stdout, schema: "ingest-output")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(summary["examples_computed"] as? Int == 2)
        let skipped = try #require(summary["skipped"] as? [[String: String]])
        #expect(skipped.map { $0["path"] ?? "" } == bad)
        // Reasons read as the scan's do, without the path again.
        #expect(skipped.allSatisfy { $0["reason"]?.hasPrefix("undecodable: ") == true }, "\(skipped)")
        // --json keeps stderr for errors: the skipped files are in the JSON.
        #expect(json.stderr.isEmpty, "\(json.stderr)")

        // Text mode: the table on stdout, one warning per file and the count on stderr, also
        // with --quiet (which silences progress, not warnings).
        for quiet in [[], ["--quiet"]] {
            let text = try ingest(quiet)
            #expect(text.status == 0, "\(text.stderr)")
            #expect(text.stdout.hasPrefix("ingested 2 examples into d/train: 0 computed, 2 already stored"), "\(text.stdout)")
            #expect(!text.stdout.contains("skipped"), "\(text.stdout)")
            let warnings = text.stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("ingest: ") && $0.contains("skipped") }
            #expect(warnings == bad.indices.map { "ingest: skipped \(bad[$0]): \(skipped[$0]["reason"]!)" } + ["ingest: 3 files skipped"], "\(quiet): \(text.stderr)")
        }
    }

    @Test func strictIsRefusedWhereNothingCanBeSkipped() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let idx = try CLI.run(["ingest", "--store", dir + "/store", "--backbone", "mobilenet_v2", "--idx", dir + "/x.idx", "--dataset", "d", "--strict"])
        #expect(idx.status == 64 && idx.stderr.contains("--strict applies to --folder only"), "\(idx.stderr)")
        let external = try CLI.run(["ingest", "--store", dir + "/store", "--external", "x", "--dataset", "d", "--strict", dir + "/a.safetensors"])
        #expect(external.status == 64 && external.stderr.contains("--strict applies to --folder only"), "\(external.stderr)")
    }
}
