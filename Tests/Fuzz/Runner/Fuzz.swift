// h2t-fuzz: the fuzz harnesses of Tests/Fuzz/Harness, two ways.
//
// Built with `-sanitize=fuzzer,address -D H2T_LIBFUZZER` (tools/fuzz), it is a libFuzzer binary:
// libFuzzer's driver calls `LLVMFuzzerTestOneInput` with each input, for the target named by the
// environment variable H2T_FUZZ_TARGET. Built normally, it replays files or folders
// through a target (`h2t-fuzz NAME PATH...`), which is how a crash found by the fuzzer is
// re-run under a debugger or a plain build.
import Foundation
import H2TFuzzHarness

#if H2T_LIBFUZZER
/// The runner for H2T_FUZZ_TARGET, created on the first input (libFuzzer runs inputs on one thread).
nonisolated(unsafe) private var fuzzRunner: FuzzRunner?

/// libFuzzer's entry point: one input. Findings other than crashes stop the process the way a
/// crash does, so that libFuzzer saves the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if fuzzRunner == nil {
        let name = ProcessInfo.processInfo.environment["H2T_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            fatalError("H2T_FUZZ_TARGET='\(name)' is not one of \(FuzzTarget.allCases.map(\.rawValue))")
        }
        do { fuzzRunner = try FuzzRunner(target) } catch { fatalError("cannot create the scratch file: \(error)") }
    }
    let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    do {
        _ = try fuzzRunner!.run(bytes)
    } catch {
        fatalError(error.description)
    }
    return 0
}

/// libFuzzer's driver, which its own `main` would call (compiler-rt's FuzzerInterface.h).
@_silgen_name("LLVMFuzzerRunDriver")
private func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The entry point. SwiftPM links every executable with `main` defined as `<module>_main` (so
/// that tests can link the executable's module), which shadows libFuzzer's `main`; this is what
/// libFuzzer's `main` does.
@_cdecl("h2t_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc, argv = argv
    return runFuzzerDriver(&argc, &argv, fuzzOneInput)
}
#else
/// Replays inputs through a harness: `h2t-fuzz NAME FILE-OR-FOLDER...`.
@main
struct FuzzReplay {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count >= 2 else {
            FileHandle.standardError.write(Data("""
                usage: h2t-fuzz NAME FILE-OR-FOLDER...   (NAME: \(FuzzTarget.allCases.map { $0.rawValue }.joined(separator: ", ")))
                replays every file through the harness NAME; exits 1 on a finding, crashes on a crash.

                """.utf8))
            exit(2)
        }
        let runner = try FuzzRunner(target)
        var accepted = 0, rejected = 0, findings = 0
        for file in arguments.dropFirst().flatMap(inputFiles) {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: file)))
            do {
                switch try runner.run(bytes) {
                case .accepted: accepted += 1
                case .rejected(let message):
                    rejected += 1
                    if ProcessInfo.processInfo.environment["H2T_FUZZ_VERBOSE"] != nil { print("\(file): \(message)") }
                }
            } catch {
                findings += 1
                print("\(file): FINDING: \(error.description)")
            }
        }
        print("\(target.rawValue): \(accepted + rejected + findings) inputs, \(accepted) accepted, \(rejected) rejected, \(findings) findings")
        exit(findings == 0 ? 0 : 1)
    }

    /// The files at `path`: itself, or every regular file below it.
    static func inputFiles(_ path: String) -> [String] {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder), isFolder.boolValue else { return [path] }
        let files = FileManager.default.enumerator(atPath: path)?.compactMap { $0 as? String } ?? []
        return files.sorted().map { "\(path)/\($0)" }.filter {
            var sub: ObjCBool = false
            return FileManager.default.fileExists(atPath: $0, isDirectory: &sub) && !sub.boolValue
        }
    }
}
#endif
