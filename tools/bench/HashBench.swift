import Foundation
import H2TCore

/// `h2t-bench hash`: SHA-256 on the data the store hashes (issue 13): example ids of decoded
/// images (8-bit pixels, Fashion-MNIST 28×28 and 64×64×3), the same images as float buffers, and
/// 1 MiB chunks (weights files, manifests of large heads). The hand-written SHA-256 the package
/// carried before (`HandWrittenSHA256`, the baseline) against `H2TCore.SHA256` (swift-crypto), on
/// the same buffers in the same run; median of `--reps` runs of each, in process CPU seconds (the
/// hashing is single-threaded, and CPU time does not stretch with the other load of a shared
/// machine as wall time does; the wall-time speed-up is printed beside it).
enum HashBench {
    static let usage = "usage: h2t-bench hash [--count N] [--megabytes N] [--reps N] [--quick]"

    static func run(arguments: [String]) throws {
        var count = 10_000, megabytes = 256, reps = 5
        var i = 0
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--count": count = max(1, Int(value) ?? count); i += 2
            case "--megabytes": megabytes = max(1, Int(value) ?? megabytes); i += 2
            case "--reps": reps = max(1, Int(value) ?? reps); i += 2
            case "--quick": count = 500; megabytes = 8; reps = 3; i += 1
            default: print(usage); return
            }
        }
        let cases: [(name: String, bytes: Int, buffers: Int)] = [
            ("28×28 u8 (Fashion-MNIST pixels)", 28 * 28, count),
            ("64×64×3 u8 (pixels)", 64 * 64 * 3, count),
            ("28×28 float32", 28 * 28 * 4, count),
            ("64×64×3 float32", 64 * 64 * 3 * 4, count),
            ("1 MiB", 1 << 20, megabytes),
        ]
        var table = StoreBench.Table(
            "SHA-256: hand-written (baseline) vs swift-crypto, median CPU time of \(reps); load \(StoreBench.loadAverage())",
            ["buffers", "count", "hand-written CPU ms", "hand-written MB/s", "swift-crypto CPU ms", "swift-crypto MB/s", "speed-up (CPU)", "speed-up (wall)"])
        for c in cases {
            // Distinct contents per buffer (as distinct images are), from a fixed seed.
            var generator = StoreBench.SplitMix(0x5EED ^ UInt64(c.bytes))
            let pool = (0..<min(c.buffers, 64)).map { _ in (0..<c.bytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
            let prefix = Array("h2t.image:28x28x1:".utf8)
            // Hashes every buffer of the case behind `prefix`; the sample and the first digest.
            func timeHashing(_ digest: (UnsafeRawBufferPointer) -> [UInt8]) -> (StoreBench.Sample, [UInt8]) {
                var first: [UInt8] = []
                let sample = StoreBench.measure {
                    for n in 0..<c.buffers {
                        pool[n % pool.count].withUnsafeBytes { bytes in
                            let d = digest(bytes)
                            if n == 0 { first = d }
                        }
                    }
                }
                return (sample, first)
            }
            var baseline: [StoreBench.Sample] = [], crypto: [StoreBench.Sample] = []
            var check: [UInt8] = [], checkCrypto: [UInt8] = []
            for _ in 0..<reps {
                let hand = timeHashing { bytes in
                    var h = HandWrittenSHA256()
                    h.update(prefix)
                    h.update(bytes)
                    return h.finalize()
                }
                let library = timeHashing { bytes in
                    var h = SHA256()
                    h.update(prefix)
                    h.update(bytes)
                    return h.finalize()
                }
                baseline.append(hand.0); check = hand.1
                crypto.append(library.0); checkCrypto = library.1
            }
            precondition(check == checkCrypto, "the two SHA-256 implementations disagree on \(c.name)")
            let total = Double(c.buffers * (c.bytes + prefix.count)) / 1e6
            let (b, s) = (StoreBench.median(baseline.map(\.cpu)), StoreBench.median(crypto.map(\.cpu)))
            let wallRatio = StoreBench.median(baseline.map(\.wall)) / StoreBench.median(crypto.map(\.wall))
            table.add([c.name, "\(c.buffers)", StoreBench.fmt(b * 1000), StoreBench.fmt(total / b, 0),
                       StoreBench.fmt(s * 1000), StoreBench.fmt(total / s, 0), StoreBench.fmt(b / s, 2) + "×", StoreBench.fmt(wallRatio, 2) + "×"])
        }
        table.print()
    }
}
