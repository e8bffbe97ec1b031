import H2TBackbone
import H2TCore
import Testing

/// Deterministic pseudo-random floats in [-1, 1].
struct NetworkTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 20001 - 10000) / 10000
    }
    mutating func array(_ count: Int) -> [Float] { (0..<count).map { _ in next() } }
}

/// Naive grouped convolution on one example, `C × H × W`, in double precision.
func naiveConvolution(
    input: [Float], channels: Int, height: Int, width: Int, weights: [Float], bias: [Float],
    outputChannels: Int, kernel: Int, stride: Int, padding: Padding2D, depthwise: Bool
) -> [Float] {
    let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
    var out = [Float](repeating: 0, count: outputChannels * oh * ow)
    let perGroup = depthwise ? 1 : channels
    for o in 0..<outputChannels {
        for y in 0..<oh {
            for x in 0..<ow {
                var sum = Double(bias[o])
                for g in 0..<perGroup {
                    let ci = depthwise ? o : g
                    for ky in 0..<kernel {
                        for kx in 0..<kernel {
                            let iy = y * stride + ky - padding.top, ix = x * stride + kx - padding.left
                            guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                            let wv = weights[((o * perGroup + g) * kernel + ky) * kernel + kx]
                            sum += Double(wv) * Double(input[(ci * height + iy) * width + ix])
                        }
                    }
                }
                out[(o * oh + y) * ow + x] = Float(sum)
            }
        }
    }
    return out
}

@Suite("Network kernels")
struct NetworkKernelTests {
    @Test("TF SAME padding puts the odd extra row/column at the bottom/right")
    func samePadding() {
        #expect(Padding2D.same(height: 224, width: 224, kernel: 3, stride: 2) == Padding2D(top: 0, left: 0, bottom: 1, right: 1))
        #expect(Padding2D.same(height: 56, width: 56, kernel: 5, stride: 2) == Padding2D(top: 1, left: 1, bottom: 2, right: 2))
        #expect(Padding2D.same(height: 7, width: 7, kernel: 3, stride: 2) == Padding2D(top: 1, left: 1, bottom: 1, right: 1))
        #expect(Padding2D.same(height: 14, width: 14, kernel: 5, stride: 1) == Padding2D(top: 2, left: 2, bottom: 2, right: 2))
        let p = Padding2D.same(height: 15, width: 9, kernel: 5, stride: 2)
        #expect(p.outputSize(height: 15, width: 9, kernel: 5, stride: 2) == (8, 5))
    }

    // Wide maps take the SIMD row path, narrow ones (output < 8 wide) the index-table path,
    // vectorised over the batch from 8 examples up.
    /// Every instruction set this CPU can run: the Swift loops and each C variant it supports.
    static let runnableSets = InstructionSet.allCases.filter { $0 <= InstructionSet.detected }

    @Test("depthwise kernel matches a naive loop at every runnable instruction set", arguments: [
        (3, 1, false, 9, 13, 3), (3, 2, false, 16, 16, 3), (3, 2, false, 7, 11, 3), (5, 1, true, 12, 10, 3),
        (5, 2, true, 16, 16, 3), (5, 2, true, 15, 9, 3), (3, 2, true, 2, 2, 3), (3, 1, true, 33, 20, 2),
        (3, 1, false, 4, 4, 11), (3, 2, false, 4, 4, 16), (5, 1, true, 2, 2, 9), (5, 2, true, 7, 7, 8),
        // Wide rows (full 32-wide AVX-512 and 16-wide AVX2 steps plus tails); batches past 16.
        (3, 1, false, 5, 45, 2), (3, 2, false, 6, 70, 2), (5, 1, true, 3, 41, 2), (3, 1, false, 4, 4, 19),
        (5, 2, true, 6, 6, 21),
        // Stride 2 on rows of 8 outputs or more, left padding 0 ("same", 3×3) and 2 (symmetric 5×5):
        // the rows' phase split puts even columns in the odd phase or one column in.
        (3, 2, true, 16, 18, 2), (5, 2, false, 16, 20, 2),
    ])
    func depthwise(kernel: Int, stride: Int, same: Bool, height: Int, width: Int, batch: Int) {
        for isa in Self.runnableSets {
            depthwise(kernel: kernel, stride: stride, same: same, height: height, width: width, batch: batch, isa: isa)
        }
    }

    func depthwise(kernel: Int, stride: Int, same: Bool, height: Int, width: Int, batch: Int, isa: InstructionSet) {
        var random = NetworkTestRandom(seed: UInt64(kernel * 1000 + stride * 100 + height * 10 + batch))
        let channels = 5
        let padding = same ? Padding2D.same(height: height, width: width, kernel: kernel, stride: stride)
                           : Padding2D.symmetric(kernel: kernel)
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        // Examples, each C × H × W; the kernel takes C × N × H × W.
        let examples = (0..<batch).map { _ in random.array(channels * height * width) }
        let weights = random.array(channels * kernel * kernel)
        let bias = random.array(channels)
        var input = [Float](repeating: 0, count: channels * batch * height * width)
        for n in 0..<batch {
            for c in 0..<channels {
                for i in 0..<(height * width) {
                    input[(c * batch + n) * height * width + i] = examples[n][c * height * width + i]
                }
            }
        }
        var output = [Float](repeating: .nan, count: channels * batch * oh * ow)
        var scratch = [Float](repeating: .nan,
                              count: NetworkKernels.depthwiseScratchCount(height: height, width: width, padding: padding))
        NetworkKernels.depthwise(input: input, output: &output, channels: channels, batch: batch, height: height,
                                 width: width, kernel: kernel, stride: stride, padding: padding,
                                 weights: weights, bias: bias, scratch: &scratch, isa: isa)
        var worst: Float = 0
        for n in 0..<batch {
            let expected = naiveConvolution(input: examples[n], channels: channels, height: height, width: width,
                                            weights: weights, bias: bias, outputChannels: channels, kernel: kernel,
                                            stride: stride, padding: padding, depthwise: true)
            for c in 0..<channels {
                for i in 0..<(oh * ow) {
                    worst = max(worst, abs(output[(c * batch + n) * oh * ow + i] - expected[c * oh * ow + i]))
                }
            }
        }
        #expect(worst < 1e-5, "depthwise \(kernel)x\(kernel)/\(stride) \(height)x\(width) batch \(batch) at \(isa)")
    }

    /// The vector depthwise kernels block outputs by rows and runs of vectors; whatever the block,
    /// each output is the bias, then one fused multiply-add per tap in kernel order, zeros in the
    /// padding: bit for bit that chain, at AVX2 and AVX-512, for output widths around every block
    /// width (8, 16 to 64 columns) and heights around every row count (1 to 4 rows at a time).
    @Test("depthwise rows: every block shape gives each output's fused chain, bit for bit",
          .enabled(if: InstructionSet.detected >= .avx2, "needs AVX2"),
          arguments: [(1, 8), (2, 9), (3, 15), (5, 16), (1, 17), (4, 24), (7, 31), (2, 33), (3, 48), (6, 63), (1, 64),
                      (5, 65), (3, 97), (2, 112), (9, 130)])
    func depthwiseChains(height: Int, outputWidth: Int) {
        for stride in [1, 2] {
            var random = NetworkTestRandom(seed: UInt64(height * 1000 + outputWidth * 10 + stride))
            let kernel = 3, channels = 2, batch = 1
            let (h, w) = (height * stride, outputWidth * stride)
            let padding = Padding2D.same(height: h, width: w, kernel: kernel, stride: stride)
            let (oh, ow) = padding.outputSize(height: h, width: w, kernel: kernel, stride: stride)
            let input = random.array(channels * batch * h * w)
            let weights = random.array(channels * kernel * kernel), bias = random.array(channels)
            var chain = [Float](repeating: 0, count: channels * oh * ow)
            for c in 0..<channels {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var sum = bias[c]
                        for ky in 0..<kernel {
                            for kx in 0..<kernel {
                                let iy = oy * stride + ky - padding.top, ix = ox * stride + kx - padding.left
                                let v: Float = iy >= 0 && iy < h && ix >= 0 && ix < w ? input[(c * h + iy) * w + ix] : 0
                                sum = sum.addingProduct(weights[c * 9 + ky * kernel + kx], v)
                            }
                        }
                        chain[(c * oh + oy) * ow + ox] = sum
                    }
                }
            }
            for isa in Self.runnableSets where isa != .baseline {
                var output = [Float](repeating: .nan, count: channels * oh * ow + 3)
                var scratch = [Float](repeating: .nan, count: NetworkKernels.depthwiseScratchCount(height: h, width: w, padding: padding))
                NetworkKernels.depthwise(input: input, output: &output, channels: channels, batch: batch, height: h, width: w,
                                         kernel: kernel, stride: stride, padding: padding, weights: weights, bias: bias,
                                         scratch: &scratch, isa: isa)
                #expect(output[..<(channels * oh * ow)].map(\.bitPattern) == chain.map(\.bitPattern),
                        "\(oh)×\(ow) stride \(stride) at \(isa)")
                #expect(output[(channels * oh * ow)...].allSatisfy { $0.isNaN }, "nothing written past the output at \(isa)")
            }
        }
    }

    /// Narrow maps with fewer than 8 examples put channels in the vector lanes, with 8 or more
    /// the examples: both must give the same bits, so a slice's size (1 example at 224×224, 8
    /// at 64×64) never changes a stored feature.
    @Test("narrow depthwise maps: channels in the lanes give the bits of examples in the lanes",
          arguments: [(3, 1, false, 7, 7), (3, 2, true, 14, 14), (5, 1, true, 4, 6), (5, 2, false, 9, 9)])
    func narrowDepthwiseLanes(kernel: Int, stride: Int, same: Bool, height: Int, width: Int) {
        var random = NetworkTestRandom(seed: UInt64(kernel * 100 + stride * 10 + height))
        let channels = 21, batch = 8, plane = height * width
        let padding = same ? Padding2D.same(height: height, width: width, kernel: kernel, stride: stride)
                           : Padding2D.symmetric(kernel: kernel)
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        #expect(ow < 8)
        let input = random.array(channels * batch * plane)  // C × N × H × W
        let weights = random.array(channels * kernel * kernel), bias = random.array(channels)
        var scratch = [Float](repeating: .nan, count: NetworkKernels.depthwiseScratchCount(height: height, width: width, padding: padding))
        for isa in Self.runnableSets where isa != .baseline {
            var all = [Float](repeating: .nan, count: channels * batch * oh * ow)
            NetworkKernels.depthwise(input: input, output: &all, channels: channels, batch: batch, height: height, width: width,
                                     kernel: kernel, stride: stride, padding: padding, weights: weights, bias: bias,
                                     scratch: &scratch, isa: isa)
            // The same examples one, then three, at a time.
            let cells = oh * ow
            for group in [1, 3] {
                for first in Swift.stride(from: 0, to: batch, by: group) {
                    let n = min(group, batch - first)
                    var part = [Float](repeating: 0, count: channels * n * plane)
                    for c in 0..<channels {
                        for m in 0..<n {
                            let from = (c * batch + first + m) * plane, to = (c * n + m) * plane
                            part[to..<(to + plane)] = input[from..<(from + plane)]
                        }
                    }
                    var out = [Float](repeating: .nan, count: channels * n * cells)
                    NetworkKernels.depthwise(input: part, output: &out, channels: channels, batch: n, height: height, width: width,
                                             kernel: kernel, stride: stride, padding: padding, weights: weights, bias: bias,
                                             scratch: &scratch, isa: isa)
                    for c in 0..<channels {
                        for m in 0..<n {
                            let at = (c * n + m) * cells, was = (c * batch + first + m) * cells
                            let same = out[at..<(at + cells)].elementsEqual(all[was..<(was + cells)]) { $0.bitPattern == $1.bitPattern }
                            #expect(same, "\(isa) \(kernel)x\(kernel)/\(stride) \(height)x\(width) groups of \(group): channel \(c) example \(first + m)")
                        }
                    }
                }
            }
        }
    }

    @Test("stem convolution (im2col + GEMM) matches a naive loop", arguments: [false, true])
    func stem(same: Bool) {
        var random = NetworkTestRandom(seed: same ? 7 : 8)
        let batch = 2, height = 11, width = 14, cout = 6
        let padding = same ? Padding2D.same(height: height, width: width, kernel: 3, stride: 2) : .symmetric(kernel: 3)
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: 3, stride: 2)
        let input = random.array(batch * 3 * height * width)
        let weights = random.array(cout * 27), bias = random.array(cout)
        var output = [Float](repeating: .nan, count: cout * batch * oh * ow)
        var columns = [Float](repeating: .nan, count: 28 * batch * oh * ow)
        NetworkKernels.convolution(input: input, output: &output, batch: batch, inputChannels: 3, height: height,
                                   width: width, outputChannels: cout, kernel: 3, stride: 2, padding: padding,
                                   weightsWithBias: NetworkKernels.appendingBiasColumn(weights: weights, bias: bias),
                                   columns: &columns)
        var worst: Float = 0
        for n in 0..<batch {
            let example = Array(input[(n * 3 * height * width)..<((n + 1) * 3 * height * width)])
            let expected = naiveConvolution(input: example, channels: 3, height: height, width: width, weights: weights,
                                            bias: bias, outputChannels: cout, kernel: 3, stride: 2, padding: padding,
                                            depthwise: false)
            for c in 0..<cout {
                for i in 0..<(oh * ow) {
                    worst = max(worst, abs(output[(c * batch + n) * oh * ow + i] - expected[c * oh * ow + i]))
                }
            }
        }
        #expect(worst < 1e-5)
    }

    /// The vector im2col copies exactly what the portable loop copies (padding, strides 1-3, lines
    /// around its 8-output blocks, both input layouts), so the GEMM gets the same columns; at
    /// AVX-512 with packed weights each output is the chain bias then fused multiply-adds over the
    /// columns' rows in order, bit for bit, and within rounding of the GEMM.
    @Test("stem columns: the vector im2col copies the portable loop's values; AVX-512 convolves them as one fused chain",
          .enabled(if: InstructionSet.detected >= .avx2, "needs AVX2"),
          arguments: [(3, 2, 2, 37, 41, "same", false), (3, 3, 2, 64, 64, "same", false), (3, 2, 1, 29, 35, "same", false), (3, 3, 2, 17, 16, "symmetric", true),
                      (2, 3, 1, 9, 30, "symmetric", false), (4, 5, 3, 23, 26, "same", true), (1, 1, 2, 5, 40, "symmetric", false),
                      (3, 3, 2, 7, 7, "same", true)])
    func stemColumns(cin: Int, kernel: Int, stride: Int, height: Int, width: Int, padding kind: String, channelMajor: Bool) {
        var random = NetworkTestRandom(seed: UInt64(cin * 7919 + kernel * 131 + stride * 17 + height * width))
        let batch = 2, cout = 11
        let padding = kind == "same" ? Padding2D.same(height: height, width: width, kernel: kernel, stride: stride)
            : .symmetric(kernel: kernel)
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        let k = cin * kernel * kernel, n = batch * oh * ow
        var input = random.array(batch * cin * height * width)
        input[3] = -0.0
        let weights = random.array(cout * k), bias = random.array(cout)
        let withBias = NetworkKernels.appendingBiasColumn(weights: weights, bias: bias)
        func run(_ isa: InstructionSet, packed: NetworkKernels.PointwiseWeights? = nil) -> (columns: [Float], output: [Float]) {
            var columns = [Float](repeating: .nan, count: (k + 1) * n)
            var output = [Float](repeating: .nan, count: cout * n + 3)
            NetworkKernels.convolution(input: input, output: &output, batch: batch, inputChannels: cin, height: height, width: width,
                                       outputChannels: cout, kernel: kernel, stride: stride, padding: padding,
                                       weightsWithBias: withBias, packed: packed, columns: &columns,
                                       inputChannelMajor: channelMajor, isa: isa)
            return (Array(columns[..<(k * n)]), output)
        }
        let portable = run(.baseline), vector = run(.avx2)
        #expect(vector.columns.map(\.bitPattern) == portable.columns.map(\.bitPattern), "columns")
        #expect(vector.output.map(\.bitPattern) == portable.output.map(\.bitPattern), "the same GEMM on the same columns")
        guard InstructionSet.detected == .avx512 else { return }
        let fused = run(.avx512, packed: NetworkKernels.PointwiseWeights(weights: weights, bias: bias))
        var chain = [Float](repeating: 0, count: cout * n)
        for o in 0..<cout {
            for j in 0..<n {
                var sum = bias[o]
                for r in 0..<k { sum = sum.addingProduct(weights[o * k + r], portable.columns[r * n + j]) }
                chain[o * n + j] = sum
            }
        }
        #expect(fused.columns.map(\.bitPattern) == portable.columns.map(\.bitPattern))
        #expect(fused.output[..<(cout * n)].map(\.bitPattern) == chain.map(\.bitPattern), "one fused chain per output")
        #expect(fused.output[(cout * n)...].allSatisfy { $0.isNaN }, "nothing written past the output")
        #expect(zip(fused.output[..<(cout * n)], portable.output).map { abs($0 - $1) }.max() ?? 0 < 1e-5)
    }

    /// The AVX-512 1×1 kernel: every output is the chain bias, then fused multiply-adds over the
    /// input channels in order, so it equals that chain computed here one value at a time, bit
    /// for bit, for position counts around its 16/48 blocks (and the last one to four positions,
    /// computed across the channels), output channel counts off its blocks of 8 and 64; and it is
    /// within rounding of the GEMM path.
    @Test("AVX-512 pointwise kernel: the bits of one fused chain per output, at every shape",
          .enabled(if: InstructionSet.detected == .avx512, "needs AVX-512"),
          arguments: [(1, 1, 1), (3, 5, 7), (16, 8, 16), (33, 12, 23), (24, 20, 24), (17, 16, 25), (40, 9, 47), (96, 24, 48),
                      (32, 16, 49), (5, 3, 100), (144, 24, 161), (20, 40, 49), (7, 70, 9), (3, 33, 63),
                      (20, 130, 50), (9, 65, 51), (160, 96, 196), (12, 200, 4), (6, 7, 2)])
    func avx512Pointwise(cin: Int, cout: Int, count: Int) {
        var random = NetworkTestRandom(seed: UInt64(cin * 1000 + cout * 10 + count))
        var input = random.array(cin * count) + [Float](repeating: .nan, count: count)  // room for the GEMM's ones row
        let weights = random.array(cout * cin), bias = random.array(cout)
        var chain = [Float](repeating: 0, count: cout * count)
        for o in 0..<cout {
            for j in 0..<count {
                var sum = bias[o]
                for i in 0..<cin { sum = sum.addingProduct(weights[o * cin + i], input[i * count + j]) }  // fused
                chain[o * count + j] = sum
            }
        }
        var gemm = [Float](repeating: .nan, count: cout * count)
        NetworkKernels.pointwise(input: &input, output: &gemm, inputChannels: cin, outputChannels: cout, count: count,
                                 weightsWithBias: NetworkKernels.appendingBiasColumn(weights: weights, bias: bias), isa: .baseline)
        let packed = NetworkKernels.PointwiseWeights(weights: weights, bias: bias)
        var output = [Float](repeating: .nan, count: cout * count + 5)
        NetworkKernels.pointwise(input: &input, output: &output, inputChannels: cin, outputChannels: cout, count: count,
                                 weightsWithBias: [], packed: packed, isa: .avx512)
        #expect(output[..<(cout * count)].map(\.bitPattern) == chain.map(\.bitPattern), "\(cin)→\(cout) × \(count)")
        #expect(output[(cout * count)...].allSatisfy { $0.isNaN }, "nothing written past the output")
        let worst = zip(output, gemm).map { abs($0 - $1) }.max() ?? 0
        #expect(worst < 1e-5)
    }

    /// The classifier's vector kernel at AVX2 and AVX-512: each output the chain bias, then fused
    /// multiply-adds over the features in order (output channels in the lanes, examples 4 at a
    /// time), bit for bit, nothing written past the rows, and within rounding of the GEMM.
    @Test("classifier kernel: the bits of one fused chain per output, at AVX2 and AVX-512",
          .enabled(if: InstructionSet.detected >= .avx2, "needs AVX2"),
          arguments: [(1, 5, 1), (3, 37, 17), (8, 16, 33), (5, 64, 70), (4, 1280, 40), (2, 9, 8), (6, 20, 24)])
    func linearKernel(examples: Int, features: Int, outputs: Int) {
        var random = NetworkTestRandom(seed: UInt64(examples * 10_000 + features * 100 + outputs))
        let input = random.array(examples * features)
        let weight = random.array(outputs * features), bias = random.array(outputs)
        var chain = [Float](repeating: 0, count: examples * outputs)
        for e in 0..<examples {
            for o in 0..<outputs {
                var sum = bias[o]
                for i in 0..<features { sum = sum.addingProduct(weight[o * features + i], input[e * features + i]) }
                chain[e * outputs + o] = sum
            }
        }
        var gemm = [Float](repeating: .nan, count: examples * outputs)
        NetworkKernels.linear(input: input, output: &gemm, examples: examples, features: features, outputs: outputs,
                              weight: weight, bias: bias, isa: .baseline)
        for isa in Self.runnableSets where isa != .baseline {
            var output = [Float](repeating: .nan, count: examples * outputs + 5)
            NetworkKernels.linear(input: input, output: &output, examples: examples, features: features, outputs: outputs,
                                  weight: weight, bias: bias, packed: NetworkKernels.PointwiseWeights(weights: weight, bias: bias),
                                  isa: isa)
            #expect(output[..<(examples * outputs)].map(\.bitPattern) == chain.map(\.bitPattern), "at \(isa)")
            #expect(output[(examples * outputs)...].allSatisfy { $0.isNaN }, "nothing written past the output at \(isa)")
            #expect(zip(output, gemm).map { abs($0 - $1) }.max() ?? 0 < 1e-4)
        }
    }

    @Test("pointwise convolution, ReLU6, add (every runnable instruction set) and global average match naive loops")
    func pointwiseAndElementwise() {
        var random = NetworkTestRandom(seed: 11)
        let cin = 7, cout = 5, count = 37
        var input = random.array(cin * count) + [Float](repeating: .nan, count: count)  // room for the ones row
        let weights = random.array(cout * cin), bias = random.array(cout)
        var output = [Float](repeating: .nan, count: cout * count)
        NetworkKernels.pointwise(input: &input, output: &output, inputChannels: cin, outputChannels: cout, count: count,
                                 weightsWithBias: NetworkKernels.appendingBiasColumn(weights: weights, bias: bias))
        var worst: Float = 0
        for o in 0..<cout {
            for j in 0..<count {
                var sum = Double(bias[o])
                for i in 0..<cin { sum += Double(weights[o * cin + i]) * Double(input[i * count + j]) }
                worst = max(worst, abs(Float(sum) - output[o * count + j]))
            }
        }
        #expect(worst < 1e-5)

        for isa in Self.runnableSets {
            for n in [5, 21, 45] {
                var values = (0..<n).map { Float($0) * 0.5 - 7.25 }
                NetworkKernels.relu6(&values, count: values.count, isa: isa)
                #expect(values == (0..<n).map { min(max(Float($0) * 0.5 - 7.25, 0), 6) }, "relu6 \(n) at \(isa)")

                var a = random.array(n)
                let b = random.array(n)
                let sum = zip(a, b).map { $0 + $1 }
                NetworkKernels.add(&a, b, count: n, isa: isa)
                #expect(a == sum, "add \(n) at \(isa)")
            }
        }

        // C × N × plane → N × C means.
        let planes = random.array(3 * 2 * 5)
        var means = [Float](repeating: .nan, count: 6)
        NetworkKernels.globalAverage(input: planes, output: &means, channels: 3, batch: 2, planeSize: 5)
        for c in 0..<3 {
            for n in 0..<2 {
                let plane = planes[((c * 2 + n) * 5)..<((c * 2 + n + 1) * 5)]
                #expect(abs(means[n * 3 + c] - plane.reduce(0, +) / 5) < 1e-6)
            }
        }
    }
}

@Suite("BLAS kernel selection")
struct NetworkBLASTests {
    @Test("H2T_ISA below the CPU's width selects the OpenBLAS table of that width")
    func cappedTable() {
        guard InstructionSet.isCapped, ProcessInfo.processInfo.environment["H2T_OPENBLAS_CORETYPE"] == nil else { return }
        #expect(BLAS.configuration.core.lowercased() == InstructionSet.selected.openBLASCore.lowercased(), "\(BLAS.configuration)")
    }


    @Test("the selected OpenBLAS core computes correct products and is recorded")
    func selection() throws {
        let config = BLAS.configuration
        #expect(!config.core.isEmpty && config.core != "unknown")
        // If a core was switched to, its products were verified; otherwise the reason says why.
        if config.core != config.initialCore { #expect(config.verified) }
        // A product through the public entry point against a double-precision loop.
        var random = NetworkTestRandom(seed: 3)
        let m = 33, n = 65, k = 129
        let a = random.array(m * k), b = random.array(k * n)
        var c = [Float](repeating: 0, count: m * n)
        BLAS.sgemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n)
        var worst: Double = 0
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a[i * k + p]) * Double(b[p * n + j]) }
                worst = max(worst, abs(s - Double(c[i * n + j])))
            }
        }
        #expect(worst < 1e-4)
    }

    #if os(Linux) && arch(x86_64)
    @Test("on an AVX-512 CPU the process runs an AVX-512 OpenBLAS core whatever OPENBLAS_CORETYPE says (unless H2T_ISA caps it)")
    func avx512() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let flags = Set(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ").map(String.init) ?? [])
        guard ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(flags.contains),
              ProcessInfo.processInfo.environment["H2T_OPENBLAS_CORETYPE"] == nil, !InstructionSet.isCapped else { return }
        #expect(["skylakex", "cooperlake", "sapphirerapids"].contains(BLAS.configuration.core.lowercased()),
                "\(BLAS.configuration)")
    }
    #endif
}

import Foundation

@Suite("Pooling channel-major taps")
struct ChannelMajorPoolingTests {
    /// `poolChannelMajor` must give exactly what `pool` gives on each example's gathered copy (and
    /// so what a head's features computed from new images are), at every runnable instruction set.
    @Test("bit-identical to pooling each gathered example", arguments: [
        // (channels, side, examples, target size): global, windows 1, 2 and 3 (20 cells a row), 4, 9 (ragged), 14, 28.
        (40, 4, 3, 32), (8, 6, 5, 288), (4, 20, 3, 400), (2, 60, 2, 800), (16, 32, 3, 1024), (3, 37, 2, 48),
        (24, 56, 17, 512), (5, 112, 2, 80),
        // Eight and more examples: planes go eight at a time through the vector lanes (windows 16, 6, 3 ragged).
        (96, 32, 8, 512), (16, 32, 16, 512), (3, 37, 9, 48),
        // Column sums in runs of 128 (AVX-512) and 64 (AVX2) columns, then single vectors, then
        // 4, 11, 6 and 6 columns left over.
        (16, 20, 1, 1024), (8, 27, 2, 648), (8, 150, 1, 32), (16, 133, 1, 1296),
        // Global averages, eight planes to the lanes: planes of 1 to 81 values (runs of eight and
        // what is left), plane counts that are not a multiple of eight, MobileNetV2's deep taps at 64×64.
        (13, 1, 3, 8), (9, 2, 5, 8), (11, 3, 1, 8), (20, 7, 3, 16), (17, 5, 7, 16), (10, 9, 1, 8),
        (576, 4, 2, 512), (960, 2, 8, 512),
    ])
    func matchesPool(channels: Int, side: Int, examples: Int, targetSize: Int) {
        var random = NetworkTestRandom(seed: UInt64(channels * 100 + side))
        let plane = side * side
        let shape = [channels, side, side]
        let input = random.array(channels * examples * plane)  // C × examples × H × W
        let rule = Head2ToePooling(targetSize: targetSize)
        let width = rule.outputWidth(shape: shape)
        var expected = [Float](repeating: .nan, count: examples * width)
        for e in 0..<examples {
            var gathered = [Float](repeating: 0, count: channels * plane)
            for c in 0..<channels {
                for i in 0..<plane { gathered[c * plane + i] = input[(c * examples + e) * plane + i] }
            }
            gathered.withUnsafeBufferPointer { g in
                expected.withUnsafeMutableBufferPointer { rule.pool(g, shape: shape, into: UnsafeMutableBufferPointer(rebasing: $0[(e * width)..<((e + 1) * width)])) }
            }
        }
        for isa in NetworkKernelTests.runnableSets {
            let stride = width + 3
            var output = [Float](repeating: .nan, count: examples * stride)
            input.withUnsafeBufferPointer { i in
                output.withUnsafeMutableBufferPointer {
                    rule.poolChannelMajor(i.baseAddress!, shape: shape, examples: examples, into: $0.baseAddress!, rowStride: stride, isa: isa)
                }
            }
            for e in 0..<examples {
                let got = output[(e * stride)..<(e * stride + width)].map { $0.bitPattern }
                let want = expected[(e * width)..<((e + 1) * width)].map { $0.bitPattern }
                let untouched = output[(e * stride + width)..<((e + 1) * stride)].allSatisfy { $0.isNaN }
                #expect(got == want, "\(shape) F_T \(targetSize) example \(e) at \(isa)")
                #expect(untouched, "wrote past the row at \(isa)")
            }
        }
    }

    /// Several rules at once (the ingest's target sizes, channel by channel) give each rule's
    /// own values: windows of two sizes, and a global rule beside them.
    @Test(arguments: [(16, 32, 9), (24, 56, 8), (96, 7, 3)])
    func severalRulesAtOnce(channels: Int, side: Int, examples: Int) {
        var random = NetworkTestRandom(seed: UInt64(channels + side))
        let plane = side * side, shape = [channels, side, side]
        let input = random.array(channels * examples * plane)
        let rules = [512, 1024, 16].map { Head2ToePooling(targetSize: $0) }
        for isa in NetworkKernelTests.runnableSets {
            let widths = rules.map { $0.outputWidth(shape: shape) }
            var separate = widths.map { [Float](repeating: .nan, count: examples * $0) }
            let together = widths.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: examples * $0) }
            defer { together.forEach { $0.deallocate() } }
            input.withUnsafeBufferPointer { i in
                for r in rules.indices {
                    separate[r].withUnsafeMutableBufferPointer {
                        rules[r].poolChannelMajor(i.baseAddress!, shape: shape, examples: examples, into: $0.baseAddress!, rowStride: widths[r], isa: isa)
                    }
                    together[r].initialize(repeating: .nan)
                }
                Head2ToePooling.poolChannelMajor(rules.indices.map { (rules[$0], together[$0].baseAddress!, widths[$0]) }, i.baseAddress!,
                                                 shape: shape, examples: examples, isa: isa)
            }
            for r in rules.indices {
                #expect(together[r].map(\.bitPattern) == separate[r].map(\.bitPattern), "F_T \(rules[r].targetSize) of \(shape) at \(isa)")
            }
        }
    }
}
