import Foundation
import H2TCore
import H2TTrain

/// The `train` section of h2t-bench (run by tools/bench-train.sh, release build).
///
/// Synthetic cached features shaped like the VTAB-1k protocol (N = 1000 training rows, 50 taps of
/// 1000 columns = 50,000 features, K = 10, dense non-negative noise, a class signal planted in 300
/// columns spread over all taps). Measures, in one run so ratios are meaningful on a noisy machine:
/// one fit with fixed hyper-parameters (λ = 0.25 λ_max, 1% kept) and the default CV sweep, each
/// against `tools/h2t_reference.py` (numpy, float64) on the same features.
enum TrainBench {
    static func run(arguments: [String]) throws {
        if arguments.contains("--kernels") { return TrainKernelBench.run(arguments: arguments) }
        let quick = arguments.contains("--quick")
        let blasStudy = arguments.contains("--blas-study")
        let skipReference = arguments.contains("--no-reference")
        let repeats = quick ? 1 : 3
        let rows = quick ? 300 : 1000, testRows = quick ? 100 : 500
        let tapWidths = [Int](repeating: quick ? 100 : 1000, count: 50)
        let data = SyntheticFeatures(rows: rows + testRows, tapWidths: tapWidths, classCount: 10, informativeCount: 300,
                                     signal: 0.3, seed: 7)
        let d = data.features.columnCount
        let train = try FeatureMatrix(rowCount: rows, columnCount: d, values: Array(data.features.values[0..<(rows * d)]),
                                      taps: data.features.taps)
        let test = try FeatureMatrix(rowCount: testRows, columnCount: d, values: Array(data.features.values[(rows * d)...]),
                                     taps: data.features.taps)
        let trainLabels = Array(data.labels[0..<rows]), testLabels = Array(data.labels[rows...])
        say("h2t-bench train: N=\(rows) (+\(testRows) test) D=\(d) K=10, 300 planted columns, \(Parallel.defaultWorkers) cores")

        // One fit with fixed hyper-parameters.
        var fitTimes: [Double] = []
        var recovered = 0, kept: [Int] = []
        var fitCPU: [Double] = []
        for _ in 0..<repeats {
            let start = Date()
            let cpuStart = cpuSeconds()
            var x = train
            x.normalizeTaps()
            let lmax = GroupLasso.lambdaMax(features: x, labels: trainLabels, classCount: 10)
            let solution = try GroupLasso.path(features: x, labels: trainLabels, classCount: 10, lambdas: [0.25 * lmax])[0]
            kept = solution.selection(fraction: 0.01)
            let matrix = x.gathered(rows: Array(0..<rows), columns: kept, renormalize: true)
            let head = try FinalHead.fit(features: matrix, labels: trainLabels, classCount: 10)
            fitTimes.append(Date().timeIntervalSince(start))
            fitCPU.append(cpuSeconds() - cpuStart)
            recovered = Set(kept).intersection(data.informative).count
            say("  fit: \(String(format: "%.3f", fitTimes.last!)) s, group lasso \(solution.report.outerIterations) full passes, \(solution.report.iterations) FISTA iterations, \(solution.report.activeRows) non-zero rows; head \(head.report.iterations) iterations, converged \(head.report.converged)")
        }
        say("  planted columns in the 1% kept: \(recovered) of \(kept.count) kept (300 planted)")

        // The default CV sweep.
        var sweepTimes: [Double] = []
        var report: FitReport?
        var sweepCPU: [Double] = []
        for _ in 0..<(quick ? 1 : 2) {
            let start = Date()
            let cpuStart = cpuSeconds()
            report = try Head2ToeFit.run(featureSets: [FeatureSetInput(name: "synthetic", train: train, test: test)],
                                         trainLabels: trainLabels, testLabels: testLabels, classCount: 10)
            sweepTimes.append(Date().timeIntervalSince(start))
            sweepCPU.append(cpuSeconds() - cpuStart)
            say("  sweep: \(String(format: "%.2f", sweepTimes.last!)) s (cv \(String(format: "%.2f", report!.timings.crossValidation)) s, final \(String(format: "%.2f", report!.timings.final)) s)")
        }
        let r = report!
        say("  accuracy (cv / test): head2toe \(fmt(r.head2toe.cvAccuracy)) / \(fmt(r.head2toe.testAccuracy!)) (fraction \(r.head2toe.fraction!), λ \(r.head2toe.lambda!)·λmax), all features \(fmt(r.allFeatures.cvAccuracy)) / \(fmt(r.allFeatures.testAccuracy!)), probe \(fmt(r.linearProbe.cvAccuracy)) / \(fmt(r.linearProbe.testAccuracy!))")

        var studyRows: [(String, Double)] = []
        if blasStudy {
            let cores = Parallel.defaultWorkers
            for (label, workers, single) in [("sweep, 1 worker, BLAS \(cores) threads", 1, false),
                                             ("sweep, \(cores) workers, BLAS \(cores) threads each", cores, false),
                                             ("sweep, \(cores) workers, BLAS 1 thread each (default)", cores, true)] {
                let start = Date()
                // Off the default: the BLAS count is set here and the fit leaves it alone.
                let parallelism = Parallelism(threads: workers, setsBLASThreads: single)
                _ = try BLAS.withThreadLimit(single ? workers : cores) {
                    try Head2ToeFit.run(featureSets: [FeatureSetInput(name: "synthetic", train: train, test: test)],
                                        trainLabels: trainLabels, testLabels: testLabels, classCount: 10,
                                        parallelism: parallelism)
                }
                studyRows.append((label, Date().timeIntervalSince(start)))
            }
        }

        var referenceFit: Double?, referenceSweep: Double?, referenceOverlap: Int?
        var referenceFitCPU: Double?, referenceSweepCPU: Double?
        if !skipReference {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("h2t-bench-train-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            try writeNpy(directory.appendingPathComponent("x.npy"), floats: train.values, shape: [rows, d])
            try writeNpy(directory.appendingPathComponent("y.npy"), ints: trainLabels, shape: [rows])
            try writeNpy(directory.appendingPathComponent("folds.npy"), ints: r.foldAssignment, shape: [rows])
            let settings = FitSettings()
            let meta: [String: Any] = [
                "taps": train.taps.map { ["name": $0.name, "offset": $0.offset, "width": $0.width] },
                "classCount": 10, "lambdaRatio": 0.25, "fraction": 0.01,
                "fractions": settings.fractions, "lambdas": settings.lambdas, "ridges": settings.ridges, "probeTap": train.taps.last!.name,
            ]
            try JSONSerialization.data(withJSONObject: meta).write(to: directory.appendingPathComponent("meta.json"))
            if let out = try python(["fit", directory.path]) {
                referenceFit = out["seconds"] as? Double
                referenceFitCPU = out["cpu_seconds"] as? Double
                if let selected = out["selected"] as? [Int] { referenceOverlap = Set(selected).intersection(kept).count }
            }
            if let out = try python(["sweep", directory.path]) {
                referenceSweep = out["seconds"] as? Double
                referenceSweepCPU = out["cpu_seconds"] as? Double
                if let cv = out["cv"] as? [String: Double] {
                    say("  numpy sweep cv accuracy: all features \(fmt(cv["all"] ?? -1)), probe \(fmt(cv["probe"] ?? -1)), best head2toe \(fmt(cv.filter { $0.key.hasPrefix("(") }.values.max() ?? -1))")
                }
            }
        }

        say("")
        say("| benchmark | swift median wall (s) | swift median CPU (s) | numpy wall (s) | numpy CPU (s) | numpy / swift (wall) | target |")
        say("|---|---|---|---|---|---|---|")
        let fitMedian = median(fitTimes), sweepMedian = median(sweepTimes)
        func cell(_ v: Double?, _ digits: Int = 2) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "n/a" }
        say("| one fit (λ=0.25·λmax, 1% kept) | \(cell(fitMedian, 3)) | \(cell(median(fitCPU))) | \(cell(referenceFit)) | \(cell(referenceFitCPU)) | \(referenceFit.map { String(format: "%.1fx", $0 / fitMedian) } ?? "n/a") | ≤ 3 s |")
        say("| default CV sweep (5 folds × \(FitSettings().lambdas.count) λ × \(FitSettings().fractions.count) fractions × \(FitSettings().ridges.count) ridges + baselines, final fits) | \(cell(sweepMedian)) | \(cell(median(sweepCPU))) | \(cell(referenceSweep, 1)) | \(cell(referenceSweepCPU, 1)) | \(referenceSweep.map { String(format: "%.1fx", $0 / sweepMedian) } ?? "n/a") | ≤ 120 s |")
        for (label, seconds) in studyRows { say("| \(label) | \(cell(seconds)) | | | | | |") }
        if let overlap = referenceOverlap { say("\nselected-set agreement swift vs numpy (one fit): \(overlap) of \(kept.count)") }
    }

    /// Unbuffered line output, so progress shows while the run goes on even when piped.
    static func say(_ line: String = "") {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// CPU seconds (user + system) of this process so far: with `wall`, shows how much of the
    /// machine the run actually had (it is shared).
    static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
    }

    static func fmt(_ value: Double) -> String { String(format: "%.3f", value) }

    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Runs `python3 tools/h2t_reference.py ARGS` and parses its one-line JSON; nil (with a note)
    /// when python3 or numpy is missing, so the Swift half of the table still prints.
    static func python(_ arguments: [String]) throws -> [String: Any]? {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("h2t_reference.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            say("  numpy reference failed (exit \(process.terminationStatus)); is numpy installed?")
            return nil
        }
        return try JSONSerialization.jsonObject(with: output) as? [String: Any]
    }

    /// A version-1.0 `.npy` file (little-endian, C order).
    static func writeNpy(_ url: URL, floats: [Float]? = nil, ints: [Int]? = nil, shape: [Int]) throws {
        let descr = floats != nil ? "<f4" : "<i8"
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var data = Data([0x93]) + Data("NUMPY".utf8) + Data([1, 0])
        let length = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        data.append(Data(header.utf8))
        if let floats { floats.withUnsafeBufferPointer { data.append(Data(buffer: $0)) } }
        if let ints { ints.map { Int64($0).littleEndian }.withUnsafeBufferPointer { data.append(Data(buffer: $0)) } }
        try data.write(to: url)
    }
}
