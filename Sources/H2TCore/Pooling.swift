import CH2TKernels
import H2TKernels

/// Head2Toe's pooling rule (docs/architecture.md §1 step 2), the one implementation shared by the backbone
/// path and the external-activation ingest.
///
/// A tap is either a flat vector per example (passed through) or a square spatial map stored
/// channel-first, `C × W × W`. For a target size `F_T`:
/// - `C >= F_T`: global average pool, `C` features;
/// - otherwise `n = Int(sqrt(F_T / C))` (integer division first), `p = W / n`; average pool with
///   window and stride `p`, no padding, giving `((W - p) / p + 1)^2 * C` features in
///   channel-major order (`c, i, j`); `p == 0` falls back to global pooling.
public struct Head2ToePooling: Sendable, Hashable, Codable {
    /// The target size `F_T`.
    public let targetSize: Int

    /// Creates the rule for a target size; `targetSize` must be positive.
    public init(targetSize: Int) {
        precondition(targetSize > 0, "target size must be positive")
        self.targetSize = targetSize
    }

    /// The pooling window for a map of `channels × width × width`; `nil` means global pooling.
    public func window(channels: Int, width: Int) -> Int? {
        if channels >= targetSize { return nil }
        let n = Int(Double(targetSize / channels).squareRoot())
        guard n > 0 else { return nil }
        let p = width / n
        return p == 0 ? nil : p
    }

    /// Number of pooled features for a tap of the given shape (`[C]` or `[C, H, W]`).
    public func outputWidth(shape: [Int]) -> Int {
        guard shape.count == 3 else { return shape.reduce(1, *) }
        let (c, h, w) = (shape[0], shape[1], shape[2])
        guard let p = window(channels: c, width: w) else { return c }
        return ((h - p) / p + 1) * ((w - p) / p + 1) * c
    }

    /// Pools one example's activation `input` (`C × H × W`, channel-first, row-major) into `output`,
    /// which must hold `outputWidth(shape:)` values.
    public func pool(_ input: UnsafeBufferPointer<Float>, shape: [Int], into output: UnsafeMutableBufferPointer<Float>) {
        guard shape.count == 3 else {
            precondition(output.count == input.count, "pass-through tap width mismatch")
            _ = output.initialize(from: input)
            return
        }
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let plane = h * w
        precondition(input.count == c * plane, "input does not match shape \(shape)")
        precondition(output.count == outputWidth(shape: shape), "output width mismatch")
        let source = input.baseAddress!
        guard let p = window(channels: c, width: w) else {
            PoolingKernels.globalAverage(source, channels: c, plane: plane, into: output.baseAddress!)
            return
        }
        // The window is chosen from the width (maps are square); a map with fewer rows than the
        // window would have the unchecked kernel read past the plane.
        precondition(p <= h, "spatial map \(shape) has fewer rows than the pooling window \(p)")
        PoolingKernels.windowAverage(source, channels: c, height: h, width: w, window: p, into: output.baseAddress!)
    }

    /// Pools a spatial tap of `examples` examples stored channel-major (`C × examples × H × W`, the
    /// backbone's activation layout) straight from the planes, without gathering each example
    /// into a contiguous `C × H × W` copy first. Example `e`'s features go to
    /// `output + e · rowStride`; every value is computed with exactly the operations of `pool`
    /// (window and global averages on `CH2TKernels`' AVX2/AVX-512 variants when `isa` has one,
    /// which keep the order of the additions, so the values are bit-identical at every
    /// instruction set).
    public func poolChannelMajor(_ input: UnsafePointer<Float>, shape: [Int], examples: Int,
                                 into output: UnsafeMutablePointer<Float>, rowStride: Int,
                                 isa: InstructionSet = .selected) {
        precondition(shape.count == 3, "channel-major pooling needs a spatial tap, got \(shape)")
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let plane = h * w
        precondition(rowStride >= outputWidth(shape: shape), "row stride below the pooled width")
        guard let p = window(channels: c, width: w) else {
            if isa != .baseline {
                // Eight planes per call, each mean straight to its example's row.
                return h2t_global_average(Int32(isa.rawValue), input, c * examples, plane, examples, output, rowStride)
            }
            // One kernel call for every plane (deep taps have thousands of planes of a few values,
            // where a call per plane cost more than its sum), then each mean to its example's row.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: c * examples) { means in
                PoolingKernels.globalAverage(input, channels: c * examples, plane: plane, into: means.baseAddress!)
                for ch in 0..<c {
                    for e in 0..<examples { output[e * rowStride + ch] = means[ch * examples + e] }
                }
            }
            return
        }
        precondition(p <= h, "spatial map \(shape) has fewer rows than the pooling window \(p)")
        let cells = ((h - p) / p + 1) * ((w - p) / p + 1)
        if isa != .baseline {
            return Self.windowAverages([(p, cells, output, rowStride)], input, channels: c, examples: examples, height: h, width: w, isa: isa)
        }
        for ch in 0..<c {
            for e in 0..<examples {
                PoolingKernels.windowAverage(input + (ch * examples + e) * plane, channels: 1, height: h, width: w,
                                             window: p, into: output + e * rowStride + ch * cells)
            }
        }
    }

    /// ``poolChannelMajor(_:shape:examples:into:rowStride:isa:)`` for several rules (target
    /// sizes) at once, with the same values. The rules that average windows take each channel in
    /// turn, every such rule on it before the next channel: a channel's planes (at most a few
    /// hundred KB) are still in the core's cache for the second rule, where a pass of each rule
    /// over the whole tap (megabytes at 224×224) read the tap twice from memory. Window pooling
    /// was a fifth of an ingest's CPU at 224×224 with F_T 512 and 1024.
    public static func poolChannelMajor(_ rules: [(rule: Head2ToePooling, output: UnsafeMutablePointer<Float>, rowStride: Int)],
                                        _ input: UnsafePointer<Float>, shape: [Int], examples: Int,
                                        isa: InstructionSet = .selected) {
        precondition(shape.count == 3, "channel-major pooling needs a spatial tap, got \(shape)")
        let (c, h, w) = (shape[0], shape[1], shape[2])
        // Window rules on the vector kernel go channel by channel; the others as before.
        var windowed: [(window: Int, cells: Int, output: UnsafeMutablePointer<Float>, rowStride: Int)] = []
        for (rule, output, rowStride) in rules {
            if isa != .baseline, let p = rule.window(channels: c, width: w), p <= h {
                precondition(rowStride >= rule.outputWidth(shape: shape), "row stride below the pooled width")
                windowed.append((p, ((h - p) / p + 1) * ((w - p) / p + 1), output, rowStride))
            } else {
                rule.poolChannelMajor(input, shape: shape, examples: examples, into: output, rowStride: rowStride, isa: isa)
            }
        }
        guard !windowed.isEmpty else { return }
        windowAverages(windowed, input, channels: c, examples: examples, height: h, width: w, isa: isa)
    }

    /// The vector kernel's window averages of a channel-major tap for each of `rules`: eight
    /// channels of one example at a time (the kernel's group of planes, whatever the slice's
    /// example count: a slice of one 224×224 image has one plane per channel), every rule on a
    /// group before the next group.
    private static func windowAverages(_ rules: [(window: Int, cells: Int, output: UnsafeMutablePointer<Float>, rowStride: Int)],
                                       _ input: UnsafePointer<Float>, channels c: Int, examples: Int, height h: Int, width w: Int,
                                       isa: InstructionSet) {
        let plane = h * w
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 8 * plane) { columns in
            for e in 0..<examples {
                for first in stride(from: 0, to: c, by: 8) {
                    for rule in rules {
                        h2t_window_average(Int32(isa.rawValue), input + (first * examples + e) * plane, min(8, c - first),
                                           examples * plane, h, w, rule.window,
                                           rule.output + e * rule.rowStride + first * rule.cells, rule.cells, columns.baseAddress!)
                    }
                }
            }
        }
    }
}
