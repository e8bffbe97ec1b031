import Foundation
import H2TBackbone
import H2TCore
import Synchronization
import Testing

/// The ONNX Runtime reference written by `tools/onnx_reference.py fixtures` (see its docstring
/// for the statistics and why each is bounded by max |Δ|).
struct NetworkReference: Decodable {
    struct Image: Decodable { let name: String; let height: Int; let width: Int; let offset: Int }
    struct TapShape: Decodable { let name: String; let shape: [Int] }
    struct TapStats: Decodable {
        let max_abs: Double
        let argmax: Int
        let mean: Double
        let rms: Double
        let projections: [Double]
        let samples_offset: Int
    }
    struct Full: Decodable { let offset: Int; let count: Int }
    struct Result: Decodable { let image: String; let taps: [TapStats]; let full: [String: Full]; let top5: [Int] }
    struct Network: Decodable { let taps: [String: [TapShape]]; let results: [Result] }

    let samples_per_tap: Int
    let projections: Int
    let images: [Image]
    let networks: [String: Network]

    static func url(_ name: String) throws -> URL {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil), "fixture \(name)")
    }

    static func load() throws -> (NetworkReference, inputs: [UInt8], blob: [Float]) {
        let manifest = try JSONDecoder().decode(NetworkReference.self, from: Data(contentsOf: url("network_reference.json")))
        let inputs = [UInt8](try Data(contentsOf: url("network_inputs.bin")))
        let bytes = try Data(contentsOf: url("network_reference.bin"))
        let blob = bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        return (manifest, inputs, blob)
    }

    /// uint8 H × W × 3 pixels → normalised 3 × H × W floats, the same float32 formula as the script.
    static func normalise(_ pixels: ArraySlice<UInt8>, height: Int, width: Int, _ norm: InputNormalisation) -> [Float] {
        var out = [Float](repeating: 0, count: 3 * height * width)
        let base = pixels.startIndex
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 {
                    let v = Float(pixels[base + (y * width + x) * 3 + c]) / Float(255)
                    out[(c * height + y) * width + x] = (v - norm.mean[c]) / norm.std[c]
                }
            }
        }
        return out
    }
}

/// splitmix64, as in tools/onnx_reference.py.
func splitmix64(_ input: UInt64) -> UInt64 {
    var z = input &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// What the Swift side measures of one tap of one example.
struct MeasuredTap: Sendable {
    var maxAbs = 0.0, atArgmax = 0.0, mean = 0.0, rms = 0.0
    var projections: [Double] = []
    var samples: [Float] = []
    var full: [Float]? = nil
}

enum NetworkTestSupport {
    static let cache = ArtifactCache()
    static func hasWeights(_ architecture: BackboneArchitecture) -> Bool { cache.isPresent(architecture.weightsArtifact) }
    static func hasAllWeights() -> Bool { BackboneArchitecture.allCases.allSatisfy(hasWeights) }

    /// Networks are loaded once per test process.
    static let networks = Mutex<[BackboneArchitecture: BackboneNetwork]>([:])
    static func network(_ architecture: BackboneArchitecture) throws -> BackboneNetwork {
        if let net = networks.withLock({ $0[architecture] }) { return net }
        let net = try BackboneNetwork.load(architecture, from: cache)
        networks.withLock { $0[architecture] = net }
        return net
    }
}

@Suite("Network taps and reference")
struct NetworkReferenceTests {
    @Test("tap names, order, counts and shapes", arguments: BackboneArchitecture.allCases)
    func tapStructure(architecture: BackboneArchitecture) throws {
        let (reference, _, _) = try NetworkReference.load()
        let expectedCount = architecture == .mobileNetV2 ? 99 : 93
        for size in [64, 224] {
            let taps = architecture.taps(height: size, width: size)
            #expect(taps.count == expectedCount)
            #expect(taps.map(\.order) == Array(0..<taps.count))
            let names = taps.map(\.name) + taps.flatMap(\.aliases)
            #expect(Set(names).count == names.count, "names and aliases are unique")
            // The independent ONNX graph lists the same taps with the same shapes.
            let onnx = try #require(reference.networks[architecture.rawValue]?.taps["\(size)"])
            #expect(taps.map(\.name) == onnx.map(\.name))
            #expect(taps.map(\.shape) == onnx.map(\.shape))
        }
        let taps = architecture.taps(height: 224, width: 224)
        #expect(taps.first?.name == "stem.conv_bn" && taps.first?.shape == [32, 112, 112])
        #expect(taps.last?.name == "logits" && taps.last?.shape == [1000])
        #expect(taps[taps.count - 2].aliases == ["pre_logits"])
        #expect(taps.filter { $0.aliases.contains { $0.hasSuffix(".output") } }.count == (architecture == .mobileNetV2 ? 17 : 16))
        // Manifest-friendly: round-trips through JSON.
        let data = try JSONEncoder().encode(taps)
        #expect(try JSONDecoder().decode([BackboneTap].self, from: data) == taps)
    }

    @Test("every tap matches ONNX Runtime within 1e-3 of its max |ref| on 6 real images",
          .enabled(if: NetworkTestSupport.hasAllWeights(), "run tools/fetch-artifacts first"),
          arguments: BackboneArchitecture.allCases)
    func matchesReference(architecture: BackboneArchitecture) throws {
        let (reference, inputs, blob) = try NetworkReference.load()
        let network = try NetworkTestSupport.network(architecture)
        let expected = try #require(reference.networks[architecture.rawValue])
        let tolerance = 1e-3
        var worstRatio = 0.0, worstTap = ""
        var checkedTaps = 0
        for size in Set(reference.images.map(\.height)).sorted() {
            let images = reference.images.enumerated().filter { $0.element.height == size }
            var batch: [Float] = []
            for (_, image) in images {
                let pixels = inputs[image.offset..<(image.offset + size * size * 3)]
                batch += NetworkReference.normalise(pixels, height: size, width: size, architecture.normalisation)
            }
            let fullNames = Set(expected.results[images[0].offset].full.keys)
            let argmaxes = images.map { expected.results[$0.offset].taps.map(\.argmax) }
            let measured = measure(network, batch: batch, count: images.count, size: size, fullNames: fullNames,
                                   argmaxes: argmaxes,
                                   samplesPerTap: reference.samples_per_tap, projections: reference.projections)
            let taps = architecture.taps(height: size, width: size)
            for (slot, (imageIndex, image)) in images.enumerated() {
                let result = expected.results[imageIndex]
                #expect(result.image == image.name)
                for tap in taps {
                    let ref = result.taps[tap.order]
                    let got = try #require(measured[slot][tap.order], "\(tap.name) not delivered")
                    let scale = max(ref.max_abs, 1e-12)
                    var deltas = [abs(got.maxAbs - ref.max_abs), abs(got.atArgmax - ref.max_abs),
                                  abs(got.mean - ref.mean), abs(got.rms - ref.rms)]
                    deltas += zip(got.projections, ref.projections).map { abs($0 - $1) }
                    for j in 0..<reference.samples_per_tap {
                        deltas.append(abs(Double(got.samples[j]) - Double(blob[ref.samples_offset / 4 + j])))
                    }
                    if let full = result.full[tap.name] {
                        let values = try #require(got.full)
                        #expect(values.count == full.count)
                        for i in 0..<min(values.count, full.count) {
                            deltas.append(abs(Double(values[i]) - Double(blob[full.offset / 4 + i])))
                        }
                    }
                    let ratio = deltas.max()! / scale
                    if ratio > worstRatio { (worstRatio, worstTap) = (ratio, "\(image.name) \(tap.name)") }
                    #expect(ratio <= tolerance, "\(architecture.rawValue) \(image.name) \(tap.name): \(ratio)")
                    checkedTaps += 1
                }
            }
        }
        #expect(checkedTaps == reference.images.count * architecture.taps(height: 64, width: 64).count)
        print("\(architecture.rawValue): \(checkedTaps) taps checked, worst max|Δ|/max|ref| = \(worstRatio) at \(worstTap)")
    }

    /// Runs the batch and measures every tap of every example (both workers concurrently).
    func measure(_ network: BackboneNetwork, batch: [Float], count: Int, size: Int, fullNames: Set<String>,
                 argmaxes: [[Int]], samplesPerTap: Int, projections: Int) -> [[Int: MeasuredTap]] {
        let results = Mutex<[[Int: MeasuredTap]]>(Array(repeating: [:], count: count))
        try? network.run(batch, count: count, height: size, width: size, parallelism: Parallelism(threads: 2)) { activations in
            let tap = activations.tap
            for i in 0..<activations.count {
                let m = activations.withExample(i) { values -> MeasuredTap in
                    var m = MeasuredTap()
                    var argmax = 0, sum = 0.0, squares = 0.0
                    var proj = [Double](repeating: 0, count: projections)
                    for (k, v) in values.enumerated() {
                        let d = Double(v)
                        if abs(d) > m.maxAbs { (m.maxAbs, argmax) = (abs(d), k) }
                        sum += d
                        squares += d * d
                        for p in 0..<projections {
                            let bit = splitmix64(UInt64(k) | (UInt64(p + 1) << 40)) & 1
                            proj[p] += bit == 1 ? d : -d
                        }
                    }
                    let n = Double(values.count)
                    m.mean = sum / n
                    m.rms = (squares / n).squareRoot()
                    m.projections = proj.map { $0 / n }
                    _ = argmax
                    let refArgmax = argmaxes[activations.firstExample + i][tap.order]
                    m.atArgmax = refArgmax < values.count ? abs(Double(values[refArgmax])) : .infinity
                    m.samples = (0..<samplesPerTap).map { j in
                        values[Int(splitmix64((UInt64(tap.order) << 32) | UInt64(j)) % UInt64(values.count))]
                    }
                    if fullNames.contains(tap.name) { m.full = Array(values) }
                    return m
                }
                results.withLock { $0[activations.firstExample + i][tap.order] = m }
            }
        }
        return results.withLock { $0 }
    }
}
