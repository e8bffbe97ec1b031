import Foundation
import H2TRegistry
import H2TStore
import Testing

/// Runs the built `h2t-store` binary.
struct CLI {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("h2t-store").path
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func start(_ arguments: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    static func finish(_ started: (Process, Pipe, Pipe)) -> Result {
        let (process, out, err) = started
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    static func run(_ arguments: [String]) throws -> Result { finish(try start(arguments)) }

    /// Validates `json` against `schemas/<schema>.schema.json` with tools/validate_json.py.
    static func validate(_ json: String, schema: String, in directory: TemporaryDirectory) throws -> Result {
        let path = directory.file("\(schema)-\(UUID().uuidString).json")
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return try python(["tools/validate_json.py", schema, path])
    }

    static func python(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: repository)
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return finish((process, out, err))
    }
}

@Suite("Registry CLI", .serialized)
struct RegistryCLITests {
    func fixture() throws -> RegistryFixture {
        try #require(FileManager.default.isExecutableFile(atPath: CLI.binary), "build h2t-store first (swift build)")
        let fixture = try RegistryFixture()
        let outcome = try fixture.fit()
        try fixture.register("toys", outcome: outcome, tags: ["team": "vision"])
        try fixture.register("toys", outcome: try fixture.fit(seed: 7))
        return fixture
    }

    @Test func everyJSONOutputMatchesItsSchema() throws {
        let f = try fixture()
        let store = ["--store", f.store.path]
        func json(_ args: [String], schema: String) throws -> [String: Any] {
            let result = try CLI.run(args + store + ["--json"])
            #expect(result.status == 0, "\(args): \(result.stderr)")
            let check = try CLI.validate(result.stdout, schema: schema, in: f.directory)
            #expect(check.status == 0, "\(schema): \(check.stderr)")
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
        }
        let heads = try json(["heads", "--sort", "test_accuracy"], schema: "heads-output")
        #expect(heads["count"] as? Int == 2)
        let show = try json(["head", "show", "toys@v1"], schema: "head-show-output")
        #expect(show["reference"] as? String == "toys@v1")
        #expect((show["tags"] as? [[String: String]]) == [["key": "team", "value": "vision"]])
        let diff = try json(["head", "diff", "toys@v1", "toys@v2"], schema: "head-diff-output")
        #expect(diff["a"] as? String == "toys@v1")
        _ = try json(["tag", "toys@v2", "stage=candidate"], schema: "tag-output")
        _ = try json(["alias", "set", "toys@v1", "prod"], schema: "alias-output")
        _ = try json(["alias", "set", "toys@v2", "prod"], schema: "alias-output")
        let history = try json(["alias", "history", "toys", "prod"], schema: "alias-output")
        #expect((history["history"] as? [[String: Any]])?.compactMap { $0["to"] as? Int } == [1, 2])
        _ = try json(["alias", "ls"], schema: "alias-output")
        let filtered = try json(["heads", "--alias", "prod", "--tag", "stage=candidate"], schema: "heads-output")
        #expect(filtered["count"] as? Int == 1)
        let predicted = try json(["predict", "toys@prod", "--dataset", "toys", "--split", "test"], schema: "predict-output")
        #expect(predicted["count"] as? Int == 30)
        let evaluation = try json(["eval", "toys@prod", "--dataset", "toys", "--split", "test"], schema: "eval-output")
        #expect(evaluation["same_as_recorded_test"] as? Bool == true)
        let exported = try json(["head", "export", "toys@v1", "--out", f.directory.file("toys.safetensors")], schema: "head-export-output")
        #expect(exported["input_count"] as? Int == (try f.registry.head("toys@v1").inputCount))
        #expect(try CLI.python(["tools/validate_json.py", "--head-file", f.directory.file("toys.safetensors")]).status == 0)
        let imported = try json(["head", "import", f.directory.file("toys.safetensors"), "--as", "toys-copy"], schema: "head-import-output")
        #expect(imported["head"] as? String == "toys-copy@v1")
        let report = try json(["head", "report", "toys", "--out", f.directory.file("r.html")], schema: "head-report-output")
        #expect((report["bytes"] as? Int ?? 0) > 1000)
        _ = try json(["rm", "toys@v1"], schema: "rm-output")
        _ = try json(["gc"], schema: "gc-output")
        // Every stored registry value matches the record schema.
        let records = try CLI.python(["tools/validate_json.py", "--registry", f.store.path])
        #expect(records.status == 0, "\(records.stderr)")
    }

    @Test func badInputGivesOneLineErrorsWithSuggestions() throws {
        let f = try fixture()
        let store = ["--store", f.store.path]
        let unknown = try CLI.run(["head", "show", "toy"] + store)
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("did you mean 'toys'"))
        #expect(!unknown.stderr.contains("Stack"))
        let version = try CLI.run(["head", "show", "toys@v9"] + store)
        #expect(version.status != 0 && version.stderr.contains("did you mean v2"))
        _ = try CLI.run(["alias", "set", "toys@v1", "staging"] + store)
        let alias = try CLI.run(["predict", "toys@stagng", "--dataset", "toys", "--split", "test"] + store)
        #expect(alias.status != 0 && alias.stderr.contains("did you mean 'toys@staging'"))
        let orphan = try CLI.run(["rm", "toys@v1"] + store)
        #expect(orphan.status != 0 && orphan.stderr.contains("alias 'staging' points to it"))
        let implicit = try CLI.run(["rm", "toys"] + store)
        #expect(implicit.status != 0 && implicit.stderr.contains("explicit version"))
        _ = try CLI.run(["rm", "toys@v2"] + store)
        let removed = try CLI.run(["alias", "set", "toys@v2", "prod"] + store)
        #expect(removed.status != 0 && removed.stderr.contains("v2 of head 'toys' was removed"))
    }

    /// Two processes move the same alias 10 times each, at the same time: all 20 moves are in the
    /// history, numbered 1...20, and each move's `from` is the previous move's `to` (no lost update).
    @Test func twoProcessesMovingTheSameAliasLoseNothing() throws {
        let f = try fixture()
        let script = { (version: Int) in
            "for i in 1 2 3 4 5 6 7 8 9 10; do '\(CLI.binary)' alias set toys@v\(version) prod --store '\(f.store.path)' >/dev/null || exit 1; done"
        }
        func shell(_ command: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", command]
            try p.run()
            return p
        }
        let a = try shell(script(1)), b = try shell(script(2))
        a.waitUntilExit()
        b.waitUntilExit()
        #expect(a.terminationStatus == 0 && b.terminationStatus == 0)
        let history = try f.registry.aliasHistory(task: "toys", alias: "prod")
        #expect(history.count == 20)
        #expect(history.map(\.seq) == Array(1...20))
        #expect(history.filter { $0.to == 1 }.count == 10 && history.filter { $0.to == 2 }.count == 10)
        #expect(history.first?.from == nil)
        for (previous, next) in zip(history, history.dropFirst()) { #expect(next.from == previous.to) }
        #expect(Set(history.map(\.actor)).count == 20, "each process records itself")
        #expect(try f.registry.aliases(task: "toys").first?.version == history.last?.to)
    }
}
