import Foundation
import Testing

/// `fit --solver`, `--memory` and `--cv-fold-limit` on a small external store: the plan in
/// `--json`, the stochastic path end to end, and the two budget refusals.
@Suite("h2t-store fit at scale", .serialized)
struct FitScaleTests {
    let dir: String
    var store: [String] { ["--store", dir + "/s"] }

    init() throws {
        dir = NSTemporaryDirectory() + "h2t-cli-scale-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try writeInput(dir + "/train.safetensors", n: 240, prefix: "tr")
        try writeInput(dir + "/test.safetensors", n: 60, prefix: "te", seed: 2)
        for split in ["train", "test"] {
            let ingest = try CLI.run(["ingest", "--external", "toy", "--dataset", "toy", "--split", split, "--target-size", "32",
                                      "--segment-rows", "50", dir + "/\(split).safetensors"] + store)
            #expect(ingest.status == 0, "\(ingest.stderr)")
        }
    }

    @Test func stochasticFitReportsItsPlanAndRegisters() throws {
        let fit = try CLI.run(["fit", "--dataset", "toy", "--fractions", "0.3", "--lambdas", "0.1", "--ridges", "1e-3", "--folds", "3",
                               "--solver", "stochastic", "--cv-fold-limit", "100", "--memory", "256M", "--json"] + store)
        #expect(fit.status == 0, "\(fit.stderr)")
        try CLI.expectValid(fit.stdout, schema: "fit-output")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(fit.stdout.utf8)) as? [String: Any])
        let plan = try #require(json["plan"] as? [String: Any])
        #expect(plan["solver"] as? String == "stochastic")
        #expect(plan["validation"] as? String == "holdout 1/3")
        #expect(plan["memory_budget"] as? Int == 256 << 20)
        #expect(plan["held_out_rows"] as? Int == 24)
        let methods = try #require(json["methods"] as? [[String: Any]])
        let h2t = try #require(methods.first { $0["method"] as? String == "head2toe" })
        // The planted signal (classes shift 16 of the 128 spatial columns) is easy: well above chance.
        #expect((h2t["test_accuracy"] as? Double ?? 0) > 0.8, "\(fit.stdout)")
        let show = try CLI.run(["head", "show", "toy@v1", "--json"] + store)
        #expect(show.stdout.contains("\"holdout 1/3\""), "\(show.stdout)")
    }

    @Test func autoPicksExactForASmallSplit() throws {
        let fit = try CLI.run(["fit", "--dataset", "toy", "--fractions", "0.3", "--lambdas", "0.1", "--ridges", "1e-3", "--folds", "3",
                               "--no-register", "--json"] + store)
        #expect(fit.status == 0, "\(fit.stderr)")
        #expect(fit.stdout.contains("\"solver\" : \"exact\""), "\(fit.stdout)")
        #expect(fit.stdout.contains("\"validation\" : \"3-fold\""), "\(fit.stdout)")
    }

    @Test func budgetRefusals() throws {
        let exact = try CLI.run(["fit", "--dataset", "toy", "--solver", "exact", "--memory", "1M", "--no-register"] + store)
        #expect(exact.status != 0)
        #expect(exact.stderr.contains("--solver exact needs about"), "\(exact.stderr)")
        #expect(exact.stderr.split(separator: "\n").count == 1, "\(exact.stderr)")
        let stochastic = try CLI.run(["fit", "--dataset", "toy", "--solver", "stochastic", "--memory", "1M", "--no-register"] + store)
        #expect(stochastic.status != 0)
        #expect(stochastic.stderr.contains("the smallest that works is"), "\(stochastic.stderr)")
        for bad in ["abc", "0", "-2G"] {
            let result = try CLI.run(["fit", "--dataset", "toy", "--memory", bad] + store)
            #expect(result.status == 64, "\(bad): \(result.stderr)")
            #expect(result.stderr.contains("--memory: '\(bad)' is not a size"), "\(result.stderr)")
        }
        let solver = try CLI.run(["fit", "--dataset", "toy", "--solver", "fast"] + store)
        #expect(solver.status == 64 && solver.stderr.contains("--solver must be exact, stochastic or auto"), "\(solver.stderr)")
    }
}
