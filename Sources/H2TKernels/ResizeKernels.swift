import CH2TKernels

/// The two passes of the separable image resize that preprocessing runs on every decoded image
/// (`H2TBackbone.Preprocessing`), over raw memory and eight values at a time. Every output is the
/// same sum, of the same products, in the same order as the one-value-at-a-time loops compute it
/// (each lane adds its own products from zero, one tap after another; no fused multiply-add), so
/// the results are bit-identical to them. The caller checks sizes and owns the buffers.
public enum ResizeKernels {
    /// The horizontal pass: for each of `rows` source rows of `width × channels` 8-bit samples
    /// (contiguous), `outWidth × channels` floats at `output + y * outWidth * channels`, where
    /// output `x`, channel `c` is `Σ weights[x * stride + t] * pixel[(starts[x] + t) * channels + c]`
    /// over `t < counts[x]`. Eight rows go at once, one per lane: their samples are first
    /// interleaved into `scratch` (`width * channels` vectors), so each tap is one vector load;
    /// `isa` (an `H2T_ISA_*` level) at AVX2 or above interleaves with `h2t_interleave_rows_u8`.
    public static func horizontal(pixels: UnsafePointer<UInt8>, rows: Int, width: Int, channels: Int, outWidth: Int,
                                  starts: UnsafePointer<Int>, counts: UnsafePointer<Int>, weights: UnsafePointer<Float>,
                                  stride: Int, scratch: UnsafeMutablePointer<SIMD8<Float>>, output: UnsafeMutablePointer<Float>,
                                  isa: Int32) {
        let length = width * channels, outLength = outWidth * channels
        let flat = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: Float.self)
        var y0 = 0
        while y0 < rows {
            let lanes = min(8, rows - y0)
            if lanes == 8, isa >= Int32(H2T_ISA_AVX2) {
                h2t_interleave_rows_u8(isa, pixels + y0 * length, length, length, flat)
            } else {
                if lanes < 8 { scratch.update(repeating: SIMD8<Float>(), count: length) }
                for l in 0..<lanes {
                    let row = pixels + (y0 + l) * length
                    for k in 0..<length { flat[k * 8 + l] = Float(row[k]) }
                }
            }
            for x in 0..<outWidth {
                let taps = counts[x], w = weights + x * stride
                for c in 0..<channels {
                    var sum = SIMD8<Float>()
                    var source = scratch + starts[x] * channels + c
                    for t in 0..<taps {
                        sum += SIMD8(repeating: w[t]) * source.pointee
                        source += channels
                    }
                    let target = output + y0 * outLength + x * channels + c
                    for l in 0..<lanes { target[l * outLength] = sum[l] }
                }
            }
            y0 += 8
        }
    }

    /// The vertical pass for one output row: `line[j] = Σ weights[t] * rows[(first + t) * length + j]`
    /// over `t < taps`, for `j < length` (the horizontal pass's rows, `length` floats each).
    public static func vertical(rows: UnsafePointer<Float>, length: Int, first: Int, taps: Int, weights: UnsafePointer<Float>,
                                line: UnsafeMutablePointer<Float>) {
        let base = rows + first * length
        var j = 0
        while j + 8 <= length {
            var sum = SIMD8<Float>()
            for t in 0..<taps {
                sum += SIMD8(repeating: weights[t]) * UnsafeRawPointer(base + t * length + j).loadUnaligned(as: SIMD8<Float>.self)
            }
            UnsafeMutableRawPointer(line + j).storeBytes(of: sum, as: SIMD8<Float>.self)
            j += 8
        }
        while j < length {
            var sum: Float = 0
            for t in 0..<taps { sum += weights[t] * base[t * length + j] }
            line[j] = sum
            j += 1
        }
    }
}
