import Foundation
import H2TFuzzHarness
import Testing

/// The committed fuzz corpora (Tests/Fuzz/Corpus/<target>/) replayed through their harnesses on
/// every test run: the seeds, and every input the fuzzer once crashed on (after its fix).
@Suite struct CorpusReplayTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/Corpus")

    @Test(arguments: FuzzTarget.allCases)
    func corpusReplaysWithoutFindings(target: FuzzTarget) throws {
        let folder = Self.corpus.appendingPathComponent(target.rawValue)
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        #expect(names.contains { $0.hasPrefix("valid-") }, "no valid-* seed for \(target.rawValue)")
        let runner = try FuzzRunner(target)
        for name in names {
            let bytes = try [UInt8](Data(contentsOf: folder.appendingPathComponent(name)))
            let outcome = try runner.run(bytes)
            // valid-*: files the reader must accept; bad-*: files it must refuse; crash-*: inputs
            // the fuzzer once crashed on, which only have to be read without a crash (some are
            // well-formed once the reader is fixed).
            if name.hasPrefix("valid-") {
                #expect(outcome == .accepted, "\(target.rawValue)/\(name): \(outcome)")
            } else if name.hasPrefix("bad-") {
                #expect(outcome != .accepted, "\(target.rawValue)/\(name) was accepted")
            }
        }
    }

    /// A refused input's error names the scratch file the harness handed the reader (what the
    /// harness checks on every input; an error without it is a finding).
    @Test func refusedInputsNameTheScratchFile() throws {
        let runner = try FuzzRunner(.npy)
        guard case .rejected(let message) = try runner.run(Array("not numpy".utf8)) else {
            Issue.record("garbage accepted as .npy")
            return
        }
        #expect(message.contains("/input.npy: malformed: not a .npy file"), "\(message)")
    }

    @Test func tileChecksumsAreRecomputed() throws {
        var tile = try [UInt8](Data(contentsOf: Self.corpus.appendingPathComponent("tile/valid-bf16-zstd.tile")))
        let runner = try FuzzRunner(.tile)
        tile[24] ^= 0xFF  // a wrong header CRC, which the harness repairs so the fuzzer gets past it
        #expect(try runner.run(tile) == .accepted)
    }
}
