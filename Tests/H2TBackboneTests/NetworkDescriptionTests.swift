import Foundation
import H2TBackbone
import H2TCore
import Synchronization
import Testing

@Suite("Network descriptions")
struct NetworkDescriptionTests {
    /// The weight names and shapes derived from each description are exactly the tensors of the
    /// real checkpoint (listed with their checksums by tools/checkpoint_reference.py), less the
    /// BN counters: the weight-name mapping is right without loading any weights.
    @Test(arguments: [(BackboneArchitecture.mobileNetV2, "mobilenet_v2_checksums.json"),
                      (BackboneArchitecture.efficientNetLite0, "efficientnet_lite0_checksums.json")])
    func expectedWeightsAreTheCheckpointsTensors(architecture: BackboneArchitecture, fixture: String) throws {
        let reference = try #require(Fixtures.json(fixture) as? [String: Any])
        let tensors = try #require(reference["tensors"] as? [String: [String: Any]])
        var shapes: [String: [Int]] = [:]
        for (name, tensor) in tensors where !name.hasSuffix(".num_batches_tracked") {
            shapes[name] = try #require(tensor["shape"] as? [Int])
        }
        let expected = architecture.networkDescription.expectedTensors
        #expect(expected.count == shapes.count)
        #expect(Set(expected.map(\.name)).count == expected.count, "no key listed twice")
        for tensor in expected { #expect(shapes[tensor.name] == tensor.shape, "\(tensor.name)") }
        #expect(Set(expected.map(\.name)) == Set(shapes.keys))
    }

    /// The full tap lists (names, shapes, kinds, modules, aliases) at 64 and 224 are those of the
    /// hand-written tap table that preceded the descriptions (`backbone_taps.json`, written from
    /// it): feature-set identities depend on them.
    @Test(arguments: BackboneArchitecture.allCases)
    func tapsAreUnchanged(architecture: BackboneArchitecture) throws {
        let golden = try JSONDecoder().decode([String: [String: [BackboneTap]]].self,
                                              from: Data(contentsOf: Fixtures.url("backbone_taps.json")))
        for size in [64, 224] {
            let expected = try #require(golden[architecture.rawValue]?["\(size)"])
            let taps = architecture.taps(height: size, width: size)
            #expect(taps.count == expected.count)
            for (got, want) in zip(taps, expected) { #expect(got == want) }
        }
    }

    @Test("the built-in descriptions are what their documentation says")
    func builtInProperties() {
        let mobileNet = BackboneArchitecture.mobileNetV2, lite = BackboneArchitecture.efficientNetLite0
        #expect(mobileNet.paddingRule == "symmetric" && lite.paddingRule == "tf_same")
        #expect(mobileNet.batchNormEpsilon == 1e-5 && lite.batchNormEpsilon == 1e-3)
        #expect(mobileNet.classCount == 1000 && lite.classCount == 1000)
        #expect(mobileNet.normalisation.mean == [0.485, 0.456, 0.406])
        let liteStd: [Float] = Array(repeating: 128.0 / 255, count: 3)
        #expect(lite.normalisation.std == liteStd)
        #expect(mobileNet.weightsArtifact == .mobilenetV2 && lite.weightsArtifact == .efficientnetLite0)
        for architecture in BackboneArchitecture.allCases {
            let ops = architecture.networkDescription.ops
            #expect(ops.filter { if case .activation(.relu6) = $0.operation { true } else { false } }.count
                    == ops.filter { $0.name.hasSuffix(".relu6") }.count)
            #expect(architecture.networkDescription.name == architecture.rawValue)
        }
    }

    // MARK: A network that is not a stack of inverted residuals

    /// A small network that exercises what the built-in ones do not: dense convolutions after the
    /// first (3×3 and 1×1 with stride 2, on channel-major activations), an activation whose input
    /// is read again later (no in-place), residual adds whose result goes into the skip operand's
    /// buffer or into a fresh one, a depthwise 5×5 stride 2, inputs named explicitly.
    static func toyOps(classes: Int = 5) -> [NetworkOp] {
        func conv(_ name: String, _ out: Int, _ kernel: Int, _ stride: Int, groups: Int = 1,
                  input: String? = nil) -> NetworkOp {
            NetworkOp(name, .convolution(.init(outputChannels: out, kernel: kernel, stride: stride, groups: groups,
                                                weights: "\(name).w", batchNorm: "\(name).bn")),
                      input: input, module: name)
        }
        return [
            conv("a", 4, 3, 1),                                                    // 0 im2col on the input
            NetworkOp("a.relu", .activation(.relu6), module: "a"),                 // 1 a is read again by 3
            conv("d", 4, 3, 1, groups: 4),                                         // 2 depthwise, wide rows
            NetworkOp("s1", .add(skip: "a"), module: "s1"),                        // 3 in place on d
            NetworkOp("s2", .add(skip: "s1"), input: "a.relu", module: "s2"),      // 4 in place on s1 (skip)
            NetworkOp("s3", .add(skip: "s2"), input: "a.relu", module: "s3"),      // 5 a fresh buffer
            conv("b", 6, 1, 2, input: "a.relu"),                                   // 6 1×1 stride 2: im2col
            NetworkOp("e", .add(skip: "s2"), input: "s3", module: "e", aliases: ["e.alias"]),  // 7
            conv("f", 6, 3, 2, input: "e.alias"),                                  // 8 3×3 stride 2 on activations
            NetworkOp("g", .add(skip: "b"), module: "g"),                          // 9
            conv("dw", 6, 5, 2, groups: 6),                                        // 10 depthwise 5×5 stride 2
            conv("p", 8, 1, 1),                                                    // 11 pointwise
            NetworkOp("p.relu", .activation(.relu6), module: "p"),                 // 12 in place
            NetworkOp("pool", .globalAveragePool, module: "pool"),                 // 13
            NetworkOp("out", .linear(.init(outputs: classes, weights: "fc")), module: "fc"),  // 14
        ]
    }

    static func toy(_ padding: PaddingRule, ops: [NetworkOp] = toyOps()) throws -> NetworkDescription {
        try NetworkDescription(name: "toy", normalisation: InputNormalisation(mean: [0, 0, 0], std: [1, 1, 1]),
                               padding: padding, batchNormEpsilon: 1e-3, trainingInputSize: 12,
                               minimumInputSize: 8, ops: ops)
    }

    /// Deterministic pseudo-random values in -1...1 (variances in 0.5...1.5).
    static func values(_ count: Int, seed: UInt64, positive: Bool = false) -> [Float] {
        (0..<count).map { i in
            let u = Float(splitmix64(seed &* 1_000_003 &+ UInt64(i)) >> 40) / Float(1 << 24)
            return positive ? 0.5 + u : 2 * u - 1
        }
    }

    static func weights(for network: NetworkDescription) -> StateDict {
        var state = StateDict(source: "toy")
        for (k, tensor) in network.expectedTensors.enumerated() {
            let count = tensor.shape.reduce(1, *)
            let values = values(count, seed: UInt64(k + 1), positive: tensor.name.hasSuffix("running_var"))
            state.insert(WeightTensor(shape: tensor.shape, storedType: .float32, values: .float(values)), named: tensor.name)
        }
        return state
    }

    /// The toy network computed plainly in double precision, one example at a time, batch norm
    /// applied as written (not folded), padding computed here from its definition.
    static func reference(_ input: [Float], height: Int, width: Int, padding: PaddingRule,
                          weights: StateDict, classes: Int = 5) throws -> [String: [Double]] {
        struct Tensor { var c: Int; var h: Int; var w: Int; var v: [Double] }
        func floats(_ name: String) throws -> [Double] { try #require(weights[name]?.floats).map(Double.init) }
        func pads(_ size: Int, _ k: Int, _ s: Int) -> (Int, Int) {
            if padding == .symmetric { return ((k - 1) / 2, (k - 1) / 2) }
            let out = (size + s - 1) / s, total = max(0, (out - 1) * s + k - size)
            return (total / 2, total - total / 2)
        }
        func conv(_ x: Tensor, _ name: String, _ out: Int, _ k: Int, _ s: Int, groups: Int = 1) throws -> Tensor {
            let w = try floats("\(name).w.weight")
            let gamma = try floats("\(name).bn.weight"), beta = try floats("\(name).bn.bias")
            let mean = try floats("\(name).bn.running_mean"), variance = try floats("\(name).bn.running_var")
            let (top, bottom) = pads(x.h, k, s), (left, right) = pads(x.w, k, s)
            let oh = (x.h + top + bottom - k) / s + 1, ow = (x.w + left + right - k) / s + 1
            let perGroup = x.c / groups, outPerGroup = out / groups
            var y = Tensor(c: out, h: oh, w: ow, v: Array(repeating: 0, count: out * oh * ow))
            for o in 0..<out {
                let g = o / outPerGroup
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var acc = 0.0
                        for ci in 0..<perGroup {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = oy * s + ky - top, ix = ox * s + kx - left
                                    guard iy >= 0, iy < x.h, ix >= 0, ix < x.w else { continue }
                                    acc += w[((o * perGroup + ci) * k + ky) * k + kx] * x.v[((g * perGroup + ci) * x.h + iy) * x.w + ix]
                                }
                            }
                        }
                        y.v[(o * oh + oy) * ow + ox] = (acc - mean[o]) / (variance[o] + Double(Float(1e-3))).squareRoot() * gamma[o] + beta[o]
                    }
                }
            }
            return y
        }
        func relu6(_ x: Tensor) -> Tensor { var y = x; y.v = x.v.map { min(max($0, 0), 6) }; return y }
        func add(_ x: Tensor, _ y: Tensor) -> Tensor { var z = x; z.v = zip(x.v, y.v).map(+); return z }
        var t: [String: Tensor] = [:]
        t["a"] = try conv(Tensor(c: 3, h: height, w: width, v: input.map(Double.init)), "a", 4, 3, 1)
        t["a.relu"] = relu6(t["a"]!)
        t["d"] = try conv(t["a.relu"]!, "d", 4, 3, 1, groups: 4)
        t["s1"] = add(t["d"]!, t["a"]!)
        t["s2"] = add(t["a.relu"]!, t["s1"]!)
        t["s3"] = add(t["a.relu"]!, t["s2"]!)
        t["b"] = try conv(t["a.relu"]!, "b", 6, 1, 2)
        t["e"] = add(t["s3"]!, t["s2"]!)
        t["f"] = try conv(t["e"]!, "f", 6, 3, 2)
        t["g"] = add(t["f"]!, t["b"]!)
        t["dw"] = try conv(t["g"]!, "dw", 6, 5, 2, groups: 6)
        t["p"] = try conv(t["dw"]!, "p", 8, 1, 1)
        t["p.relu"] = relu6(t["p"]!)
        var out = t.mapValues(\.v)
        let last = t["p.relu"]!
        let plane = last.h * last.w
        var pooled = [Double](repeating: 0, count: last.c)
        for c in 0..<last.c {
            for i in 0..<plane { pooled[c] += last.v[c * plane + i] }
            pooled[c] /= Double(plane)
        }
        out["pool"] = pooled
        let fcW = try floats("fc.weight"), fcB = try floats("fc.bias")
        var logits = fcB
        for o in 0..<classes {
            for c in 0..<last.c { logits[o] += fcW[o * last.c + c] * pooled[c] }
        }
        out["out"] = logits
        return out
    }

    @Test("a hand-made network runs: every tap as computed plainly in double precision",
          arguments: [PaddingRule.symmetric, .tfSame], [9, 12])
    func toyNetworkMatchesPlainComputation(padding: PaddingRule, size: Int) throws {
        let network = try Self.toy(padding)
        let weights = Self.weights(for: network)
        let interpreter = try NetworkInterpreter(network, weights: weights)
        // Three activation buffers are not enough here: s2, s3 and a.relu are alive together.
        #expect(interpreter.activationBuffers == 4)
        let count = 3
        let batch = Self.values(count * 3 * size * size, seed: 99)
        let taps = network.taps(height: size, width: size)
        #expect(taps.map(\.name) == Self.toyOps().map(\.name))
        let kinds: [BackboneTap.Kind] = [.convBN, .relu6, .convBN, .residualAdd, .residualAdd, .residualAdd, .convBN,
                                         .residualAdd, .convBN, .residualAdd, .convBN, .convBN, .relu6, .globalPool, .logits]
        #expect(taps.map(\.kind) == kinds)
        for threads in [1, 2] {
            let got = Mutex<[String: [[Float]]]>([:])
            try interpreter.run(batch, count: count, height: size, width: size, taps: .all, parallelism: Parallelism(threads: threads)) { a in
                for i in 0..<a.count {
                    a.withExample(i) { v in
                        got.withLock { $0[a.tap.name, default: Array(repeating: [], count: count)][a.firstExample + i] = Array(v) }
                    }
                }
            }
            let results = got.withLock { $0 }
            #expect(results.count == taps.count)
            for example in 0..<count {
                let image = Array(batch[(example * 3 * size * size)..<((example + 1) * 3 * size * size)])
                let expected = try Self.reference(image, height: size, width: size, padding: padding, weights: weights)
                for tap in taps {
                    let want = try #require(expected[tap.name], "\(tap.name)")
                    let values = try #require(results[tap.name]?[example])
                    #expect(values.count == tap.elementCount && want.count == tap.elementCount, "\(tap.name)")
                    let scale = max(want.map(abs).max() ?? 0, 1e-6)
                    let worst = zip(values, want).map { abs(Double($0) - $1) }.max() ?? .infinity
                    #expect(worst <= 1e-5 * scale, "\(padding) \(size) threads \(threads) example \(example) \(tap.name): \(worst)")
                }
            }
        }
    }

    @Test("each inverted-residual backbone runs in three activation buffers",
          .enabled(if: NetworkTestSupport.hasAllWeights(), "run tools/fetch-artifacts first"),
          arguments: BackboneArchitecture.allCases)
    func threeBuffers(architecture: BackboneArchitecture) throws {
        let state = try PyTorchCheckpoint.read(architecture.weightsArtifact, from: NetworkTestSupport.cache)
        let interpreter = try NetworkInterpreter(architecture.networkDescription, weights: state)
        #expect(interpreter.activationBuffers == 3)
    }

    @Test("a batch's slices keep the largest activation within 4 MB: 8 examples at 64×64, 1 at 224×224",
          arguments: BackboneArchitecture.allCases)
    func slicesShrinkAsInputsGrow(architecture: BackboneArchitecture) throws {
        func slice(_ size: Int) -> Int { NetworkInterpreter.sliceExamples(taps: architecture.taps(height: size, width: size)) }
        #expect(slice(64) == 8)
        #expect(slice(224) == 1)
        if architecture == .mobileNetV2 { #expect(slice(97) == 4) }
        var previous = NetworkInterpreter.sliceExamples
        for size in [32, 64, 97, 128, 160, 224, 512] {
            let examples = slice(size)
            let largest = try #require(architecture.taps(height: size, width: size).map(\.elementCount).max())
            // The most examples that fit, never fewer than one nor more than the cap.
            #expect((1...NetworkInterpreter.sliceExamples).contains(examples))
            #expect(examples == 1 || examples * largest <= 1 << 20, "\(size)")
            #expect(examples == NetworkInterpreter.sliceExamples || (examples + 1) * largest > 1 << 20, "\(size)")
            #expect(examples <= previous, "\(size)")
            previous = examples
        }
    }

    @Test("malformed descriptions are refused, naming the operation")
    func invalidDescriptions() throws {
        func refused(_ ops: [NetworkOp], _ fragment: String) {
            do {
                _ = try Self.toy(.symmetric, ops: ops)
                Issue.record("accepted: \(fragment)")
            } catch let error as NetworkError {
                guard case .invalidDescription(let network, let detail) = error else {
                    Issue.record("wrong error \(error)")
                    return
                }
                #expect(network == "toy")
                #expect(detail.contains(fragment), "\(detail)")
            } catch {
                Issue.record("wrong error \(error)")
            }
        }
        var ops = Self.toyOps()
        refused([], "no operations")
        ops[3] = NetworkOp("s1", .add(skip: "nowhere"), module: "s1")
        refused(ops, "'nowhere'")
        ops = Self.toyOps()
        ops[4] = NetworkOp("s2", .add(skip: "s2"), input: "a.relu", module: "s2")
        refused(ops, "'s2'")  // itself: not an earlier operation
        ops = Self.toyOps()
        ops[5].name = "s1"
        refused(ops, "'s1' is empty or used twice")
        ops = Self.toyOps()
        ops[9] = NetworkOp("g", .add(skip: "a"), module: "g")  // 6 channels + 4 channels
        refused(ops, "cannot add 'a'")
        ops = Self.toyOps()
        ops[2] = NetworkOp("d", .convolution(.init(outputChannels: 4, kernel: 3, stride: 1, groups: 3, weights: "d.w", batchNorm: "d.bn")), module: "d")
        refused(ops, "3 groups do not divide 4")
        ops = Self.toyOps()
        ops.remove(at: 13)  // linear straight on a spatial map
        refused(ops, "linear layer needs a pooled")
        ops = Self.toyOps()
        ops.append(NetworkOp("again", .globalAveragePool, module: "x"))
        refused(ops, "global pooling of a tensor without spatial")
    }

    @Test("operations the kernels cannot run are refused when the interpreter is built")
    func unsupportedByKernels() throws {
        func refused(_ ops: [NetworkOp], _ fragment: String) throws {
            let network = try Self.toy(.symmetric, ops: ops)
            let error = #expect(throws: NetworkError.self) {
                _ = try NetworkInterpreter(network, weights: Self.weights(for: network))
            }
            guard case .unsupported(let name, let detail) = error else {
                Issue.record("expected unsupported, got \(String(describing: error))")
                return
            }
            #expect(name == "toy")
            #expect(detail.contains(fragment), "\(detail)")
        }
        var ops = Self.toyOps()
        ops[2] = NetworkOp("d", .convolution(.init(outputChannels: 4, kernel: 3, stride: 1, groups: 2, weights: "d.w", batchNorm: "d.bn")), module: "d")
        try refused(ops, "not depthwise")
        ops = Self.toyOps()
        ops[10] = NetworkOp("dw", .convolution(.init(outputChannels: 6, kernel: 5, stride: 3, groups: 6, weights: "dw.w", batchNorm: "dw.bn")), module: "dw")
        try refused(ops, "depthwise stride 3")
        ops = Self.toyOps()
        ops.insert(NetworkOp("early", .activation(.relu6), module: "x"), at: 0)
        try refused(ops, "activation of the network input")
    }

    @Test("wrong weights for a description are named in one error")
    func wrongWeights() throws {
        let network = try Self.toy(.tfSame)
        var state = Self.weights(for: network)
        state.insert(WeightTensor(shape: [4, 2, 3, 3], storedType: .float32, values: .float(Array(repeating: 0, count: 72))),
                     named: "a.w.weight")
        state.insert(WeightTensor(shape: [1], storedType: .float32, values: .float([0])), named: "extra")
        let error = #expect(throws: StateDictMismatch.self) { _ = try NetworkInterpreter(network, weights: state) }
        #expect(error?.wrongShapes.map(\.name) == ["a.w.weight"])
        #expect(error?.unexpected == ["extra"])
    }
}
