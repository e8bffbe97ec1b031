import CH2TKernels
import H2TCore

/// Zero padding around a 2-D map: rows added above/below, columns left/right.
public struct Padding2D: Sendable, Hashable, Codable {
    /// Rows of zeros above the map.
    public var top: Int
    /// Columns of zeros left of the map.
    public var left: Int
    /// Rows of zeros below the map.
    public var bottom: Int
    /// Columns of zeros right of the map.
    public var right: Int

    /// Explicit padding.
    public init(top: Int, left: Int, bottom: Int, right: Int) {
        (self.top, self.left, self.bottom, self.right) = (top, left, bottom, right)
    }

    /// PyTorch-style symmetric padding `(k - 1) / 2` on every side.
    public static func symmetric(kernel: Int) -> Padding2D {
        let p = (kernel - 1) / 2
        return Padding2D(top: p, left: p, bottom: p, right: p)
    }

    /// TensorFlow "SAME" padding for a `height × width` input: the output is `ceil(size / stride)`
    /// and the odd leftover row/column goes to the bottom/right.
    public static func same(height: Int, width: Int, kernel: Int, stride: Int) -> Padding2D {
        func split(_ size: Int) -> (Int, Int) {
            let out = (size + stride - 1) / stride
            let total = max((out - 1) * stride + kernel - size, 0)
            return (total / 2, total - total / 2)
        }
        let (t, b) = split(height), (l, r) = split(width)
        return Padding2D(top: t, left: l, bottom: b, right: r)
    }

    /// Output size of a `kernel × kernel` window with `stride` over a padded `height × width` map.
    public func outputSize(height: Int, width: Int, kernel: Int, stride: Int) -> (height: Int, width: Int) {
        ((height + top + bottom - kernel) / stride + 1, (width + left + right - kernel) / stride + 1)
    }
}

/// The convolution kernels the backbones run on.
///
/// The 1×1 and stem convolutions are OpenBLAS GEMMs; the depthwise convolutions, ReLU6 and skip
/// additions run on `CH2TKernels`' AVX2+FMA or AVX-512 variants when the CPU has them, else on the
/// portable Swift loops here (`isa`, default ``InstructionSet/selected``; tests pass each set).
///
/// Activation layout ("channel-major batch", `C × N × H × W`): channel `c` of example `n` is the
/// contiguous plane at `(c * N + n) * H * W`. It makes a 1×1 convolution over the whole batch one
/// GEMM (`[Cout × Cin] · [Cin × N·H·W]`), so OpenBLAS packs each weight matrix once per batch
/// rather than once per image, while every depthwise plane stays contiguous.
public enum NetworkKernels {
    /// Depthwise `k × k` convolution with stride 1 or 2 on `C × N × H × W` activations, plus a
    /// per-channel bias (the folded batch norm).
    ///
    /// - Parameters:
    ///   - weights: `C × k × k`.
    ///   - scratch: at least `depthwiseScratchCount(height:width:padding:)` floats.
    public static func depthwise(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        channels: Int, batch: Int, height: Int, width: Int,
        kernel: Int, stride: Int, padding: Padding2D,
        weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
        scratch: UnsafeMutablePointer<Float>, isa: InstructionSet = .selected
    ) {
        precondition(stride == 1 || stride == 2, "depthwise stride must be 1 or 2")
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        let hp = height + padding.top + padding.bottom
        let wp = width + padding.left + padding.right
        let inPlane = height * width, outPlane = oh * ow
        if ow < 8 {
            depthwiseSmall(input: input, output: output, planesPerChannel: batch, channels: channels,
                           height: height, width: width, outputSize: (oh, ow), kernel: kernel, stride: stride,
                           padding: padding, weights: weights, bias: bias, isa: isa)
            return
        }
        // Zero the padded plane once; only the interior is rewritten per plane.
        scratch.initialize(repeating: 0, count: hp * wp)
        // For stride 2 each padded row is split into its even then odd columns, so that every
        // kernel column reads a contiguous run: column kx of output x is at even[x + kx/2] or
        // odd[x + kx/2].
        let half = (wp + 1) / 2
        // Where tap (ky, kx) of output column 0 sits in the (phase-split) padded plane.
        var tapOffsets = [Int](repeating: 0, count: kernel * kernel)
        for ky in 0..<kernel {
            for kx in 0..<kernel {
                tapOffsets[ky * kernel + kx] = ky * wp + (stride == 1 ? kx : ((kx & 1) == 0 ? kx >> 1 : half + (kx >> 1)))
            }
        }
        tapOffsets.withUnsafeBufferPointer { offsetBuffer in
        let offsets = offsetBuffer.baseAddress!
        for c in 0..<channels {
            let w = weights + c * kernel * kernel
            let b = bias[c]
            for n in 0..<batch {
                let plane = (c * batch + n)
                let src = input + plane * inPlane
                let dst = output + plane * outPlane
                if stride == 1 {
                    for y in 0..<height {
                        (scratch + (y + padding.top) * wp + padding.left).update(from: src + y * width, count: width)
                    }
                } else {
                    // Input column x sits at padded column px = x + left: even px at px/2, odd px
                    // at half + px/2.
                    let firstEven = padding.left & 1  // smallest x with x + left even
                    if isa != .baseline {
                        // Even x go to the even phase when left is even, else to the odd one.
                        let evenX = firstEven == 0 ? padding.left >> 1 : half + (padding.left >> 1)
                        let oddX = firstEven == 0 ? half + ((padding.left + 1) >> 1) : (padding.left + 1) >> 1
                        for y in 0..<height {
                            let row = scratch + (y + padding.top) * wp
                            h2t_deinterleave(Int32(isa.rawValue), src + y * width, width, row + evenX, row + oddX)
                        }
                        h2t_depthwise_rows(Int32(isa.rawValue), dst, ow, oh, scratch, stride * wp, offsets, kernel * kernel, w, b)
                        continue
                    }
                    for y in 0..<height {
                        let row = scratch + (y + padding.top) * wp
                        let line = src + y * width
                        var x = firstEven
                        while x < width {
                            row[(x + padding.left) >> 1] = line[x]
                            x += 2
                        }
                        x = 1 - firstEven
                        let odd = row + half
                        while x < width {
                            odd[(x + padding.left) >> 1] = line[x]
                            x += 2
                        }
                    }
                }
                if isa != .baseline {
                    h2t_depthwise_rows(Int32(isa.rawValue), dst, ow, oh, scratch, stride * wp, offsets, kernel * kernel, w, b)
                    continue
                }
                for oy in 0..<oh {
                    depthwiseRow(out: dst + oy * ow, count: ow, rows: scratch + oy * stride * wp,
                                 offsets: offsets, taps: kernel * kernel, weights: w, bias: b)
                }
            }
        }
        }
    }

    /// Depthwise convolution for maps narrower than one SIMD row (deep layers at small inputs,
    /// where thousands of 2×2 or 4×4 planes make per-plane padding and row loops the cost): one
    /// table of (weight, input) index pairs per output position, shared by every plane.
    static func depthwiseSmall(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, planesPerChannel: Int, channels: Int,
        height: Int, width: Int, outputSize: (Int, Int), kernel: Int, stride: Int, padding: Padding2D,
        weights: UnsafePointer<Float>, bias: UnsafePointer<Float>, isa: InstructionSet
    ) {
        let (oh, ow) = outputSize
        var starts: [Int] = [0]
        var weightIndex: [Int] = [], inputIndex: [Int] = []
        for oy in 0..<oh {
            for ox in 0..<ow {
                for ky in 0..<kernel {
                    let iy = oy * stride + ky - padding.top
                    guard iy >= 0 && iy < height else { continue }
                    for kx in 0..<kernel {
                        let ix = ox * stride + kx - padding.left
                        guard ix >= 0 && ix < width else { continue }
                        weightIndex.append(ky * kernel + kx)
                        inputIndex.append(iy * width + ix)
                    }
                }
                starts.append(weightIndex.count)
            }
        }
        let inPlane = height * width, outPlane = oh * ow
        let n = planesPerChannel
        starts.withUnsafeBufferPointer { starts in
            weightIndex.withUnsafeBufferPointer { wi in
                inputIndex.withUnsafeBufferPointer { ii in
                    if n < 8 && isa != .baseline {
                        // Fewer examples than lanes (a slice of one 224×224 image has one):
                        // each example's channels go in the lanes instead, with the same
                        // operations per value as the examples-in-lanes path below (same bits).
                        let taps = kernel * kernel
                        let tWeights = UnsafeMutablePointer<Float>.allocate(capacity: taps * channels)
                        let tIn = UnsafeMutablePointer<Float>.allocate(capacity: inPlane * channels)
                        let tOut = UnsafeMutablePointer<Float>.allocate(capacity: outPlane * channels)
                        defer { tWeights.deallocate(); tIn.deallocate(); tOut.deallocate() }
                        let level = Int32(isa.rawValue)
                        h2t_transpose(level, weights, channels, taps, taps, tWeights, channels)
                        for m in 0..<n {
                            h2t_transpose(level, input + m * inPlane, channels, inPlane, n * inPlane, tIn, channels)
                            h2t_depthwise_channels(level, tOut, tIn, channels, outPlane, starts.baseAddress!,
                                                   wi.baseAddress!, ii.baseAddress!, tWeights, bias)
                            h2t_transpose(level, tOut, outPlane, channels, channels, output + m * outPlane, n * outPlane)
                        }
                        return
                    }
                    guard n >= 8 else {
                        for c in 0..<channels {
                            let w = weights + c * kernel * kernel
                            let b = bias[c]
                            for m in 0..<n {
                                let plane = c * n + m
                                let src = input + plane * inPlane, dst = output + plane * outPlane
                                for p in 0..<outPlane {
                                    var acc = b
                                    for e in starts[p]..<starts[p + 1] { acc += w[wi[e]] * src[ii[e]] }
                                    dst[p] = acc
                                }
                            }
                        }
                        return
                    }
                    // With a batch, transpose each channel's planes to position-major
                    // (`inPlane × n`) so that one weight multiplies 8 examples at a time.
                    let tIn = UnsafeMutablePointer<Float>.allocate(capacity: inPlane * n)
                    let tOut = UnsafeMutablePointer<Float>.allocate(capacity: outPlane * n)
                    defer { tIn.deallocate(); tOut.deallocate() }
                    for c in 0..<channels {
                        let w = weights + c * kernel * kernel
                        let b = bias[c]
                        let block = input + c * n * inPlane
                        let dstBlock = output + c * n * outPlane
                        if isa != .baseline {
                            h2t_transpose(Int32(isa.rawValue), block, n, inPlane, inPlane, tIn, n)
                        } else {
                            for m in 0..<n {
                                let src = block + m * inPlane
                                for i in 0..<inPlane { tIn[i * n + m] = src[i] }
                            }
                        }
                        depthwisePositions(output: tOut, input: tIn, examples: n, positions: outPlane,
                                           starts: starts.baseAddress!, weightIndex: wi.baseAddress!,
                                           inputIndex: ii.baseAddress!, weights: w, bias: b, isa: isa)
                        if isa != .baseline {
                            h2t_transpose(Int32(isa.rawValue), tOut, outPlane, n, n, dstBlock, outPlane)
                        } else {
                            for m in 0..<n {
                                let dst = dstBlock + m * outPlane
                                for p in 0..<outPlane { dst[p] = tOut[p * n + m] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// One channel of `depthwiseSmall` over position-major examples:
    /// `output[p·n + m] = bias + Σ_e weights[weightIndex[e]] · input[inputIndex[e]·n + m]` for the
    /// entries `e` of position `p` (`starts[p] ..< starts[p + 1]`).
    static func depthwisePositions(
        output: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, examples n: Int, positions: Int,
        starts: UnsafePointer<Int>, weightIndex wi: UnsafePointer<Int>, inputIndex ii: UnsafePointer<Int>,
        weights w: UnsafePointer<Float>, bias b: Float, isa: InstructionSet
    ) {
        if isa != .baseline {
            return h2t_depthwise_positions(Int32(isa.rawValue), output, input, n, positions, starts, wi, ii, w, b)
        }
        let vectorEnd = n & ~7
        for p in 0..<positions {
            let out = output + p * n
            var m = 0
            while m < vectorEnd {
                var acc = SIMD8<Float>(repeating: b)
                for e in starts[p]..<starts[p + 1] {
                    let v = UnsafeRawPointer(input + ii[e] * n + m).loadUnaligned(as: SIMD8<Float>.self)
                    acc = acc + SIMD8(repeating: w[wi[e]]) * v
                }
                UnsafeMutableRawPointer(out + m).storeBytes(of: acc, as: SIMD8<Float>.self)
                m += 8
            }
            while m < n {
                var acc = b
                for e in starts[p]..<starts[p + 1] { acc += w[wi[e]] * input[ii[e] * n + m] }
                out[m] = acc
                m += 1
            }
        }
    }

    /// Floats of scratch that `depthwise` needs.
    public static func depthwiseScratchCount(height: Int, width: Int, padding: Padding2D) -> Int {
        (height + padding.top + padding.bottom) * (width + padding.left + padding.right)
    }

    /// One output row: `out[x] = bias + Σ_t w[t] · rows[offsets[t] + x]`, where `offsets` already
    /// encode the kernel row and the stride-2 phase split.
    @inline(__always)
    static func depthwiseRow(
        out: UnsafeMutablePointer<Float>, count: Int, rows: UnsafePointer<Float>,
        offsets: UnsafePointer<Int>, taps: Int, weights: UnsafePointer<Float>, bias: Float
    ) {
        var x = 0
        // Two vectors per step: each weight broadcast and offset serve 16 outputs.
        while x + 16 <= count {
            var acc0 = SIMD8<Float>(repeating: bias), acc1 = acc0
            for t in 0..<taps {
                let wv = SIMD8<Float>(repeating: weights[t])
                let p = UnsafeRawPointer(rows + offsets[t] + x)
                // Multiply then add: `addProduct` becomes a libm `fmaf` call per lane when the
                // build targets baseline x86-64 (no FMA), ten times slower.
                acc0 = acc0 + wv * p.loadUnaligned(as: SIMD8<Float>.self)
                acc1 = acc1 + wv * p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
            }
            UnsafeMutableRawPointer(out + x).storeBytes(of: acc0, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(out + x + 8).storeBytes(of: acc1, as: SIMD8<Float>.self)
            x += 16
        }
        while x + 8 <= count {
            var acc = SIMD8<Float>(repeating: bias)
            for t in 0..<taps {
                acc = acc + SIMD8(repeating: weights[t]) * UnsafeRawPointer(rows + offsets[t] + x).loadUnaligned(as: SIMD8<Float>.self)
            }
            UnsafeMutableRawPointer(out + x).storeBytes(of: acc, as: SIMD8<Float>.self)
            x += 8
        }
        while x < count {
            var acc = bias
            for t in 0..<taps { acc += weights[t] * rows[offsets[t] + x] }
            out[x] = acc
            x += 1
        }
    }

    /// Dense `k × k` convolution (e.g. the stem) by im2col + one product: input `N × Cin × H × W`
    /// (the preprocessed batch) or, with `inputChannelMajor`, `Cin × N × H × W` (an activation);
    /// output `Cout × N × OH × OW`.
    ///
    /// The columns are the product's right-hand side; from AVX2 up a vector copy fills them (the
    /// same values as the portable loop). The product is `pointwise`'s over `Cin·k·k` input rows:
    /// at AVX-512 with `packed`, its kernel (one fused chain per output from the bias over the
    /// rows in order), otherwise one GEMM. Before, a scalar im2col and the GEMM's packing of the
    /// columns were 11% of a 224×224 ingest's CPU for 4% of its multiply-adds.
    ///
    /// - Parameters:
    ///   - weightsWithBias: `Cout × (Cin·k·k + 1)`, each row the flattened kernel then the bias
    ///     (see `pointwise`).
    ///   - packed: the same weights and biases packed for the AVX-512 kernel.
    ///   - columns: at least `(Cin·k·k + 1) × N·OH·OW` floats.
    public static func convolution(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        batch: Int, inputChannels: Int, height: Int, width: Int,
        outputChannels: Int, kernel: Int, stride: Int, padding: Padding2D,
        weightsWithBias: UnsafePointer<Float>, packed: PointwiseWeights? = nil,
        columns: UnsafeMutablePointer<Float>, inputChannelMajor: Bool = false, isa: InstructionSet = .selected
    ) {
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        if isa != .baseline {
            h2t_im2col(Int32(isa.rawValue), input, inputChannels, batch, height, width, inputChannelMajor ? 1 : 0, kernel, stride,
                       padding.top, padding.left, oh, ow, columns)
        } else {
            im2col(input: input, batch: batch, inputChannels: inputChannels, height: height, width: width, kernel: kernel,
                   stride: stride, padding: padding, columns: columns, inputChannelMajor: inputChannelMajor)
        }
        pointwise(input: columns, output: output, inputChannels: inputChannels * kernel * kernel, outputChannels: outputChannels,
                  count: batch * oh * ow, weightsWithBias: weightsWithBias, packed: packed, isa: isa)
    }

    /// The portable im2col (`h2t_im2col`'s layout): `columns[(ci·k + ky)·k + kx][(b·OH + oy)·OW + ox]`.
    static func im2col(
        input: UnsafePointer<Float>, batch: Int, inputChannels: Int, height: Int, width: Int, kernel: Int, stride: Int,
        padding: Padding2D, columns: UnsafeMutablePointer<Float>, inputChannelMajor: Bool
    ) {
        let (oh, ow) = padding.outputSize(height: height, width: width, kernel: kernel, stride: stride)
        let n = batch * oh * ow
        for ci in 0..<inputChannels {
            for ky in 0..<kernel {
                for kx in 0..<kernel {
                    let row = columns + ((ci * kernel + ky) * kernel + kx) * n
                    for b in 0..<batch {
                        let plane = input + (inputChannelMajor ? ci * batch + b : b * inputChannels + ci) * height * width
                        for oy in 0..<oh {
                            let iy = oy * stride + ky - padding.top
                            let dst = row + (b * oh + oy) * ow
                            if iy < 0 || iy >= height {
                                dst.update(repeating: 0, count: ow)
                                continue
                            }
                            let line = plane + iy * width
                            for ox in 0..<ow {
                                let ix = ox * stride + kx - padding.left
                                dst[ox] = (ix >= 0 && ix < width) ? line[ix] : 0
                            }
                        }
                    }
                }
            }
        }
    }

    /// A 1×1 convolution's (or the stem's, or the classifier's) weights and biases packed for the
    /// vector kernels (`h2t_pointwise_avx512`, `h2t_linear`): the eight weights of each input
    /// channel for a block of eight output channels side by side.
    public struct PointwiseWeights: Sendable {
        let packed: [Float]
        let bias: [Float]
        let inputChannels: Int, outputChannels: Int

        /// Packs `weights` (`Cout × Cin`, row-major) and `bias` (`Cout`).
        public init(weights: [Float], bias: [Float]) {
            let cout = bias.count, cin = weights.count / max(cout, 1)
            precondition(weights.count == cout * cin, "pointwise weights of \(weights.count) values for \(cout) outputs")
            let padded = 8 * ((cout + 7) / 8)
            var packed = [Float](repeating: 0, count: padded * cin), paddedBias = [Float](repeating: 0, count: padded)
            h2t_pointwise_pack(weights, bias, cin, cout, &packed, &paddedBias)
            self.packed = packed
            self.bias = paddedBias
            inputChannels = cin
            outputChannels = cout
        }
    }

    /// 1×1 convolution: `output[Cout × count] = W[Cout × Cin] · input[Cin × count] + bias`.
    ///
    /// At AVX-512 (with `packed`), a vector kernel reads the activations in place and starts
    /// each output's chain of fused multiply-adds from its bias. A GEMM packs its right-hand side,
    /// here the whole activation, on every call: 7-10% of an ingest's time at 224×224. (Its lanes
    /// hold positions, so a 7×7 map's 49 take four vectors; the output channels in the lanes
    /// instead, as `linear` does, measured slower there: 42% of a 224×224 ingest's samples for
    /// both kernels against 37% for this one alone.)
    ///
    /// Otherwise one GEMM, the bias riding as an extra input row of ones (written here, at
    /// `input + Cin·count`, so `input` needs room for `Cin + 1` rows) and an extra weight column:
    /// `weightsWithBias` is `Cout × (Cin + 1)`, each row the weights then the bias. OpenBLAS's
    /// Haswell GEMM stays the AVX2 path: an AVX2 kernel like the AVX-512 one was slower at 64×64.
    public static func pointwise(
        input: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
        inputChannels: Int, outputChannels: Int, count: Int,
        weightsWithBias: UnsafePointer<Float>, packed: PointwiseWeights? = nil, isa: InstructionSet = .selected
    ) {
        if isa == .avx512, let packed {
            precondition(packed.inputChannels == inputChannels && packed.outputChannels == outputChannels, "packed weights of another shape")
            return h2t_pointwise_avx512(input, inputChannels, count, packed.packed, packed.bias, outputChannels, output)
        }
        (input + inputChannels * count).update(repeating: 1, count: count)
        BLAS.sgemm(m: outputChannels, n: count, k: inputChannels + 1, a: weightsWithBias, lda: inputChannels + 1,
                   b: input, ldb: count, c: output, ldc: count)
    }

    /// Fully connected layer on `examples` rows: `output[e × outputs + o] = bias[o] + Σ_i
    /// weight[o × features + i] · input[e × features + i]` (example-major both sides).
    ///
    /// From AVX2 up (with `packed`, the weights and biases packed as for a 1×1 convolution) each
    /// output is one fused chain from its bias, the output channels in the lanes, the same bits at
    /// both levels: a slice of one example at 224×224 made the GEMM repack MobileNetV2's 1,280 ×
    /// 1,000 weights for each image (4% of an ingest's CPU). Otherwise one GEMM onto the
    /// broadcast biases.
    public static func linear(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, examples: Int, features: Int, outputs: Int,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, packed: PointwiseWeights? = nil,
        isa: InstructionSet = .selected
    ) {
        if isa != .baseline, let packed {
            precondition(packed.inputChannels == features && packed.outputChannels == outputs, "packed weights of another shape")
            return h2t_linear(Int32(isa.rawValue), input, features, examples, packed.packed, packed.bias, outputs, output)
        }
        for e in 0..<examples { (output + e * outputs).update(from: bias, count: outputs) }
        BLAS.sgemm(transB: true, m: examples, n: outputs, k: features, a: input, lda: features,
                   b: weight, ldb: features, beta: 1, c: output, ldc: outputs)
    }

    /// Appends each row's bias to the row: `Cout × K` weights → `Cout × (K + 1)`.
    public static func appendingBiasColumn(weights: [Float], bias: [Float]) -> [Float] {
        let rows = bias.count, k = weights.count / max(rows, 1)
        var out = [Float](repeating: 0, count: rows * (k + 1))
        for r in 0..<rows {
            for i in 0..<k { out[r * (k + 1) + i] = weights[r * k + i] }
            out[r * (k + 1) + k] = bias[r]
        }
        return out
    }

    /// `output[i] = min(max(source[i], 0), 6)` (`source` defaults to `output`: in place), in one
    /// pass: a copy then a clamp in place read and wrote the tap twice.
    public static func relu6(_ output: UnsafeMutablePointer<Float>, count: Int, from source: UnsafePointer<Float>? = nil,
                             isa: InstructionSet = .selected) {
        let source = source ?? UnsafePointer(output)
        if isa != .baseline { return h2t_relu6(Int32(isa.rawValue), output, source, count) }
        // A plain select loop: LLVM vectorises it, whereas SIMD8.clamped calls generic
        // (unspecialised) min/max helpers.
        for i in 0..<count {
            let v = source[i]
            output[i] = v < 0 ? 0 : (v > 6 ? 6 : v)
        }
    }

    /// `output[i] = a[i] + b[i]` (`output` may be `a` or `b`), in one pass.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>,
                           count: Int, isa: InstructionSet = .selected) {
        if isa != .baseline { return h2t_add(Int32(isa.rawValue), output, a, b, count) }
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(output + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            output[i] = a[i] + b[i]
            i += 1
        }
    }

    /// `x += y` in place.
    public static func add(_ values: UnsafeMutablePointer<Float>, _ other: UnsafePointer<Float>, count: Int,
                           isa: InstructionSet = .selected) {
        add(values, other, into: values, count: count, isa: isa)
    }

    /// Global average over each plane of `C × N × H × W`, written example-major as `N × C`.
    public static func globalAverage(
        input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
        channels: Int, batch: Int, planeSize: Int
    ) {
        let scale = 1 / Float(planeSize)
        for c in 0..<channels {
            for n in 0..<batch {
                let p = input + (c * batch + n) * planeSize
                var sum: Float = 0
                for i in 0..<planeSize { sum += p[i] }
                output[n * channels + c] = sum * scale
            }
        }
    }
}
