import Foundation
import H2TBackbone
import H2TCore
import Synchronization
import Testing

@Suite("Network behaviour")
struct NetworkBehaviourTests {
    /// The fixture image `name` normalised for `architecture`.
    static func fixtureInput(_ name: String, _ architecture: BackboneArchitecture) throws -> (values: [Float], size: Int) {
        let (reference, inputs, _) = try NetworkReference.load()
        let image = try #require(reference.images.first { $0.name == name })
        let pixels = inputs[image.offset..<(image.offset + image.height * image.width * 3)]
        return (NetworkReference.normalise(pixels, height: image.height, width: image.width, architecture.normalisation), image.height)
    }

    @Test("ImageNet sanity: chelsea is an Egyptian cat (285), coffee an espresso (967)",
          .enabled(if: NetworkTestSupport.hasAllWeights(), "run tools/fetch-artifacts first"),
          arguments: BackboneArchitecture.allCases)
    func imageNetSanity(architecture: BackboneArchitecture) throws {
        let network = try NetworkTestSupport.network(architecture)
        for (name, expected) in [("chelsea_224", 285), ("coffee_224", 967)] {
            let (input, size) = try Self.fixtureInput(name, architecture)
            let top = try network.classify(input, height: size, width: size, top: 5)
            #expect(top.count == 5)
            #expect(top.first?.classIndex == expected, "\(architecture.rawValue) \(name): \(top)")
            #expect(zip(top, top.dropFirst()).allSatisfy { $0.logit >= $1.logit })
            #expect((top.first?.probability ?? 0) > 0.2)
        }
    }

    @Test("ImageNet sanity from the PNG files through decoding and preprocessing",
          .enabled(if: NetworkTestSupport.hasAllWeights() && NetworkTestSupport.cache.isPresent(.chelsea)
                       && NetworkTestSupport.cache.isPresent(.coffee), "run tools/fetch-artifacts first"),
          arguments: BackboneArchitecture.allCases)
    func imageNetSanityFromFiles(architecture: BackboneArchitecture) throws {
        let network = try NetworkTestSupport.network(architecture)
        for (artifact, expected) in [(Artifact.chelsea, 285), (Artifact.coffee, 967)] {
            let path = try NetworkTestSupport.cache.verifiedPath(of: artifact)
            let top = try network.classify(imageAt: path)
            #expect(top.first?.classIndex == expected, "\(architecture.rawValue) \(path): \(top)")
        }
        #expect(throws: (any Error).self) { try network.classify(imageAt: "/nonexistent/cat.png") }
    }

    @Test("early exit delivers exactly the taps up to the named one, with the same values",
          .enabled(if: NetworkTestSupport.hasWeights(.mobileNetV2), "run tools/fetch-artifacts first"))
    func earlyExit() throws {
        let network = try NetworkTestSupport.network(.mobileNetV2)
        let (input, _) = try Self.fixtureInput("chelsea_64", .mobileNetV2)
        func collect(_ selection: TapSelection) throws -> [String: [Float]] {
            let seen = Mutex<[String: [Float]]>([:])
            try network.run(input, count: 1, height: 64, width: 64, taps: selection, parallelism: .serial) { a in
                a.withExample(0) { values in seen.withLock { $0[a.tap.name] = Array(values) } }
            }
            return seen.withLock { $0 }
        }
        let all = try collect(.all)
        #expect(all.count == 99)
        let upTo = try collect(.upTo("block3.output"))
        let taps = BackboneArchitecture.mobileNetV2.taps(height: 64, width: 64)
        let last = try #require(taps.first { $0.aliases.contains("block3.output") })
        #expect(Set(upTo.keys) == Set(taps.prefix(last.order + 1).map(\.name)))
        // The same values up to float rounding: the runs are bit-identical alone, but other suites
        // of this process change OpenBLAS's (global) thread count while they fit heads in
        // parallel, and a GEMM split over a different number of threads may round differently.
        func same(_ a: [Float]?, _ b: [Float]?) -> Bool {
            guard let a, let b, a.count == b.count else { return false }
            let scale = max(b.map { abs($0) }.max() ?? 0, 1e-6)
            return zip(a, b).allSatisfy { abs($0 - $1) <= 1e-5 * scale }
        }
        for (name, values) in upTo { #expect(same(values, all[name]), "\(name)") }
        let only = try collect(.only(["pre_logits", "block0.depthwise.relu6"]))
        #expect(Set(only.keys) == ["pool", "block0.depthwise.relu6"])
        #expect(same(only["pool"], all["pool"]))
        #expect(same(only["block0.depthwise.relu6"], all["block0.depthwise.relu6"]))
        #expect(throws: NetworkError.self) { try collect(.only(["no.such.tap"])) }
    }

    @Test("pooled features: one pass, several target sizes, same as pooling each tap by hand; threads agree",
          .enabled(if: NetworkTestSupport.hasWeights(.efficientNetLite0), "run tools/fetch-artifacts first"))
    func pooled() throws {
        let network = try NetworkTestSupport.network(.efficientNetLite0)
        var batch: [Float] = []
        for name in ["chelsea_64", "coffee_64", "fashion_train_0_64"] {
            batch += try Self.fixtureInput(name, .efficientNetLite0).values
        }
        let sizes = [512, 8192]
        let two = try network.pooledFeatures(batch, count: 3, height: 64, width: 64, targetSizes: sizes, parallelism: Parallelism(threads: 2))
        let one = try network.pooledFeatures(batch, count: 3, height: 64, width: 64, targetSizes: sizes, parallelism: .serial)
        let taps = BackboneArchitecture.efficientNetLite0.taps(height: 64, width: 64)
        for (r, size) in sizes.enumerated() {
            let rule = Head2ToePooling(targetSize: size)
            #expect(two[r].width == taps.map { rule.outputWidth(shape: $0.shape) }.reduce(0, +))
            #expect(two[r].taps.map(\.name) == taps.map(\.name))
            #expect(two[r].values.count == 3 * two[r].width)
            // The batch's slices, not the thread count, fix every product: bit-identical.
            #expect(one[r].values == two[r].values)
        }
        // By hand for a few taps of example 2, from the raw activations.
        let raw = Mutex<[String: [Float]]>([:])
        let wanted = ["stem.relu6", "block5.expand.conv_bn", "block15.depthwise.relu6", "logits"]
        try network.run(batch, count: 3, height: 64, width: 64, taps: .only(wanted), parallelism: Parallelism(threads: 2)) { a in
            guard a.firstExample + a.count > 2 else { return }
            a.withExample(2 - a.firstExample) { v in raw.withLock { $0[a.tap.name] = Array(v) } }
        }
        for (r, size) in sizes.enumerated() {
            let rule = Head2ToePooling(targetSize: size)
            for name in wanted {
                let column = try #require(two[r].taps.first { $0.name == name })
                let values = try #require(raw.withLock { $0[name] })
                var expected = [Float](repeating: 0, count: column.width)
                values.withUnsafeBufferPointer { v in
                    expected.withUnsafeMutableBufferPointer { rule.pool(v, shape: column.shape, into: $0) }
                }
                let row = two[r].values[(2 * two[r].width + column.offset)..<(2 * two[r].width + column.offset + column.width)]
                #expect(Array(row) == expected, "\(name) F_T=\(size)")
            }
        }
    }

    @Test("bad input and bad weights give clear errors")
    func badInput() throws {
        var state = StateDict(source: "/tmp/empty.pth")
        state.insert(WeightTensor(shape: [2], storedType: .float32, values: .float([1, 2])), named: "surprise")
        do {
            _ = try BackboneNetwork(architecture: .mobileNetV2, weights: state)
            Issue.record("accepted an empty state dict")
        } catch let error as StateDictMismatch {
            #expect(error.description.contains("/tmp/empty.pth"))
            #expect(error.missing.contains("features.0.0.weight"))
            #expect(error.unexpected == ["surprise"])
        }
        guard NetworkTestSupport.hasWeights(.mobileNetV2) else { return }
        let network = try NetworkTestSupport.network(.mobileNetV2)
        #expect(throws: NetworkError.self) { try network.run([Float](repeating: 0, count: 10), count: 1, height: 64, width: 64) { _ in } }
        #expect(throws: NetworkError.self) { try network.run([Float](repeating: 0, count: 3 * 16 * 16), count: 1, height: 16, width: 16) { _ in } }
    }
}
