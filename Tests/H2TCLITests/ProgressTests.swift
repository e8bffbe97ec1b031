import Foundation
import H2TCore
import Testing

/// Progress when stderr is a pipe (as in CI logs): plain lines, no redraws, nothing on stdout;
/// `--quiet` and `--json` silence it. `H2T_PROGRESS_INTERVAL=0` prints at every step.
@Suite("progress off a terminal")
struct ProgressTests {
    let dir = NSTemporaryDirectory() + "h2t-progress-" + UUID().uuidString
    let everyStep = ["H2T_PROGRESS_INTERVAL": "0"]

    func ingest(_ store: String, _ extra: [String] = []) throws -> CLI.Result {
        try CLI.run(["ingest", "--store", dir + "/" + store, "--external", "toy", "--dataset", "toy", "--target-size", "32",
                     "--column-block", "64", "--segment-rows", "40"] + extra + [dir + "/in.safetensors"], environment: everyStep)
    }

    @Test func plainLinesOnAPipeAndNoneWithQuietOrJSON() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeInput(dir + "/in.safetensors", n: 120, prefix: "p")

        let shown = try ingest("a")
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(!shown.stderr.contains("\r") && !shown.stderr.contains("\u{1B}"), "no terminal redraws in a log: \(shown.stderr)")
        let lines = shown.stderr.split(separator: "\n").map(String.init)
        // Three chunks of 40, one line each, then the final line.
        #expect(lines.count == 4, "\(lines)")
        #expect(lines.first?.hasPrefix("ingest: 40/120 examples, ") == true, "\(lines)")
        #expect(lines.first?.contains(" examples/s, ") == true, "\(lines)")
        #expect(lines.last?.hasPrefix("ingest: done, 120/120 examples in ") == true, "\(lines)")
        #expect(shown.stdout.hasPrefix("ingested 120 examples into toy/train"), "progress stays off stdout: \(shown.stdout)")

        let quiet = try ingest("b", ["--quiet"])
        #expect(quiet.status == 0, "\(quiet.stderr)")
        #expect(quiet.stderr.isEmpty, "--quiet: \(quiet.stderr)")
        #expect(quiet.stdout.hasPrefix("ingested 120 examples into toy/train"))
        #expect(try ingest("c", ["--json"]).stderr.isEmpty)

        // fit: stage lines and cross-validation progress (2 folds × Head2Toe, all features, probe:
        // 6 tasks); --quiet prints nothing.
        let fit = ["fit", "--store", dir + "/a", "--dataset", "toy", "--test-split", "none", "--fractions", "0.5", "--lambdas", "0.5",
                   "--ridges", "0.001", "--folds", "2", "--no-register"]
        let fitShown = try CLI.run(fit, environment: everyStep)
        #expect(fitShown.status == 0, "\(fitShown.stderr)")
        #expect(fitShown.stderr.contains("fit: cross-validation: done, 6/6 tasks in "), "\(fitShown.stderr)")
        let fitQuiet = try CLI.run(fit + ["--quiet"], environment: everyStep)
        #expect(fitQuiet.status == 0)
        #expect(fitQuiet.stderr.isEmpty, "--quiet: \(fitQuiet.stderr)")
        #expect(fitQuiet.stdout.contains("head2toe"))
    }

    /// Slow steps (a CV task takes minutes) show seconds per item, not "0.0 tasks/s".
    @Test func slowRatesShowSecondsPerItem() {
        #expect(ProgressReporter.rateText(12.34, unit: "examples") == "12.3 examples/s")
        #expect(ProgressReporter.rateText(1, unit: "tasks") == "1.0 tasks/s")
        #expect(ProgressReporter.rateText(0.02, unit: "tasks") == "50.0 s/task")
        #expect(ProgressReporter.rateText(0, unit: "tiles") == "0.0 tiles/s")
    }
}
