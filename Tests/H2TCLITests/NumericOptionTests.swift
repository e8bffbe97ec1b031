import Foundation
import Testing

/// A numeric option of one subcommand, the arguments that make its command line otherwise
/// complete, and values outside its range.
struct NumericOptionCase: CustomTestStringConvertible, Sendable {
    var command: [String]
    var option: String
    var badValues: [String]
    /// What the error must say about the allowed range.
    var range: String

    var testDescription: String { (command.prefix(1) + [option]).joined(separator: " ") }

    /// Options read from `@Option` declarations in Sources/h2t-store that hold numbers but are
    /// declared as text (comma-separated lists); the source scan below cannot see them by type.
    static let textOptions: Set<String> = ["--fractions", "--lambdas", "--ridges"]

    static let all: [NumericOptionCase] = {
        // Validation runs before any file or store is opened, so the paths need not exist.
        let images = ["ingest", "--store", "/nonexistent/s", "--backbone", "mobilenet_v2", "--folder", "/nonexistent/f", "--dataset", "d"]
        let external = ["ingest", "--store", "/nonexistent/s", "--external", "x", "--dataset", "d", "/nonexistent/a.safetensors"]
        let fit = ["fit", "--store", "/nonexistent/s", "--dataset", "d"]
        let export = ["export", "--store", "/nonexistent/s", "--feature-set", "f", "--dataset", "d", "--split", "s", "--out", "/nonexistent/x.npy"]
        let classify = ["classify", "/nonexistent/x.png"]
        return [
            .init(command: images, option: "--input-size", badValues: ["-64", "0", "31", "1025"], range: "32...1024"),
            .init(command: images, option: "--limit", badValues: ["-5", "0"], range: "1..."),
            .init(command: images, option: "--batch-size", badValues: ["-1", "0"], range: "1..."),
            .init(command: external, option: "--target-size", badValues: ["-1", "0"], range: "1..."),
            .init(command: external, option: "--zstd-level", badValues: ["-1", "20"], range: "0...19"),
            .init(command: external, option: "--frame-width", badValues: ["-8", "0"], range: "1..."),
            .init(command: external, option: "--column-block", badValues: ["-1", "0"], range: "1..."),
            .init(command: external, option: "--segment-rows", badValues: ["-1", "0"], range: "1..."),
            .init(command: external + ["--shard", "0/2", "--shard-plan", "run"], option: "--shard-total", badValues: ["-1", "0"], range: "1..."),
            .init(command: fit, option: "--train-limit", badValues: ["-3", "0"], range: "1..."),
            .init(command: fit, option: "--folds", badValues: ["-2", "0", "1"], range: "2..."),
            .init(command: fit, option: "--cv-fold-limit", badValues: ["-2", "0"], range: "1..."),
            .init(command: fit, option: "--seed", badValues: ["-1"], range: "0...2^64-1"),
            .init(command: fit, option: "--fractions", badValues: ["-0.5", "0", "1.5", "0.1,-1", "nan"], range: "(0, 1]"),
            .init(command: fit, option: "--lambdas", badValues: ["-1", "0.1,-0.5", "inf"], range: "0..."),
            .init(command: fit, option: "--ridges", badValues: ["-1", "1e-4,-1", "nan"], range: "0..."),
            .init(command: export, option: "--columns", badValues: ["-1"], range: "0..."),
            .init(command: ["heads", "--store", "/nonexistent/s"], option: "--limit", badValues: ["-1", "0"], range: "1..."),
            .init(command: classify, option: "--input-size", badValues: ["-224", "0", "2048"], range: "32...1024"),
            .init(command: classify, option: "--top", badValues: ["-1", "0", "1001"], range: "1...1000"),
            // Every command that computes has it; `ThreadCountTests` checks each of them.
            .init(command: fit, option: "--threads", badValues: ["-1", "0"], range: "1..."),
        ]
    }()
}

@Suite("h2t-store numeric options")
struct NumericOptionTests {
    /// `--opt=-3` and `--opt -3` both parse, and `validate()` refuses the value: exit 64
    /// (`ValidationError`), one message naming the option and its range, never a trap or
    /// "missing value".
    @Test(arguments: NumericOptionCase.all)
    func outOfRangeValuesAreRefusedInBothSpellings(_ option: NumericOptionCase) throws {
        for value in option.badValues {
            for spelling in [["\(option.option)=\(value)"], [option.option, value]] {
                let arguments = option.command + spelling
                let result = try CLI.run(arguments)
                #expect(result.status == 64, "\(arguments): exit \(result.status), \(result.stderr)")
                let error = result.stderr.split(separator: "\n").first.map(String.init) ?? ""
                #expect(error.contains(option.option), "\(arguments): \(result.stderr)")
                #expect(result.stderr.contains(option.range), "\(arguments): \(result.stderr)")
                #expect(!result.stderr.contains("Missing value"), "\(arguments): \(result.stderr)")
            }
        }
    }

    /// The table above covers every numeric option the subcommands declare (so a new one cannot
    /// be added without a range check and a case here).
    @Test func everyNumericOptionHasACase() throws {
        let sources = CLI.packageRoot + "/Sources/h2t-store"
        let declaration = #/@Option\((?<attributes>[^@]*?)\)\s*var\s+(?<name>\w+)\s*:\s*\[?(?:Int|UInt64|Double|Float)\]?\??/#
        var declared: Set<String> = []
        var conditional: [String] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: sources) where file.hasSuffix(".swift") {
            let text = try String(contentsOfFile: sources + "/" + file, encoding: .utf8)
            for match in text.matches(of: declaration) {
                let name = String(match.output.name)
                // `name: .long` spells camelCase as kebab-case; `.customLong("x")` names it.
                let attributes = String(match.output.attributes)
                let long = attributes.firstMatch(of: #/customLong\("(?<n>[^"]+)"\)/#).map { String($0.output.n) }
                    ?? name.replacing(#/[A-Z]/#) { "-" + $0.output.lowercased() }
                declared.insert("--" + long)
                if !attributes.contains("parsing: .unconditional") { conditional.append("\(file): --\(long)") }
            }
        }
        #expect(declared.count >= 10, "the source scan found only \(declared.sorted())")
        #expect(conditional.isEmpty, "numeric options that would read '-3' as a missing value: \(conditional)")
        let covered = Set(NumericOptionCase.all.map(\.option))
        #expect(declared.subtracting(covered).isEmpty, "numeric options without a range case: \(declared.subtracting(covered).sorted())")
        #expect(NumericOptionCase.textOptions.isSubset(of: covered))
    }

    /// Issue 12's crash: without `--feature-set`, `fit` took the training prefix of a negative
    /// count before any check, and trapped (exit 132).
    @Test func fitWithNegativeTrainLimitIsAnErrorNotATrap() throws {
        let dir = NSTemporaryDirectory() + "h2t-cli-limit-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeInput(dir + "/train.safetensors", n: 30, prefix: "tr")
        let ingest = try CLI.run(["ingest", "--store", dir + "/s", "--external", "toy", "--dataset", "d", "--target-size", "32", dir + "/train.safetensors"])
        #expect(ingest.status == 0, "\(ingest.stderr)")
        for spelling in [["--train-limit=-3"], ["--train-limit", "-3"]] {
            let fit = try CLI.run(["fit", "--dataset", "d", "--store", dir + "/s"] + spelling)
            #expect(fit.status == 64, "\(spelling): exit \(fit.status), \(fit.stderr)")
            #expect(fit.stderr.hasPrefix("Error: --train-limit must be in 1... (a positive count), got -3"), "\(fit.stderr)")
        }
    }
}
