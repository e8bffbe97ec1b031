#ifndef H2T_KERNELS_H
#define H2T_KERNELS_H
// The backbone's, the trainer's and the tile codec's vector loops compiled for AVX2+FMA and for AVX-512 in one
// binary (plus `h2t_crc32_fold` for PCLMULQDQ, `h2t_pointwise_avx512` for AVX-512 only and the plain-C
// `h2t_format_g6_fields`, each documented below): each function has one variant per instruction set (`__attribute__((target(...)))`), chosen per call by the
// `isa` argument, which the caller takes from `h2t_cpu_isa()` (CPUID + XGETBV) capped by its own
// policy (H2TCore's `InstructionSet`, which also reads H2T_ISA). Level 0 (no AVX2) is not handled
// here: the caller keeps its portable Swift loops for it. No allocation, no I/O, no checks: the
// Swift callers validate shapes and buffer sizes.
#include <stddef.h>

/// Instruction-set levels, in order of width.
enum {
    /// x86-64 baseline (SSE2) or a non-x86 CPU: the portable Swift kernels.
    H2T_ISA_BASELINE = 0,
    /// AVX2 with FMA and F16C (Haswell, Zen 1-3 and later).
    H2T_ISA_AVX2 = 1,
    /// AVX-512 F (Skylake-X, Ice Lake, Zen 4 and later), with the OS saving ZMM state.
    H2T_ISA_AVX512 = 2,
};

/// The widest level this CPU and OS support (CPUID feature bits and the XCR0 state mask).
int h2t_cpu_isa(void);

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `r < rows`, `c < cols` (a strided
/// transpose; the values are copied bit for bit).
void h2t_transpose(int isa, const float *src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t src_stride, float *dst,
                   ptrdiff_t dst_stride);

/// The columns of a dense `kernel × kernel` convolution (im2col): row `(ci * kernel + ky) * kernel + kx`,
/// column `(b * oh + oy) * ow + ox` of `columns` (`batch * oh * ow` per row) is input channel `ci` of
/// example `b` at `(oy * stride + ky - pad_top, ox * stride + kx - pad_left)`, 0 outside the image.
/// The input is `batch × channels × height × width`, or with `channel_major` `channels × batch ×
/// height × width`. Copies only: the values are the input's bits (+0 for padding).
void h2t_im2col(int isa, const float *input, ptrdiff_t channels, ptrdiff_t batch, ptrdiff_t height, ptrdiff_t width,
                int channel_major, ptrdiff_t kernel, ptrdiff_t stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
                ptrdiff_t oh, ptrdiff_t ow, float *columns);

/// Every output row of one depthwise plane:
/// `out[oy * width + x] = bias + sum_t weights[t] * rows[oy * row_step + offsets[t] + x]`
/// for `oy < height`, `x < width` (offsets already encode the kernel row and any stride-2 phase
/// split of the padded input). `isa` must be AVX2 or AVX-512.
void h2t_depthwise_rows(int isa, float *out, ptrdiff_t width, ptrdiff_t height, const float *rows,
                        ptrdiff_t row_step, const ptrdiff_t *offsets, ptrdiff_t taps,
                        const float *weights, float bias);

/// Depthwise convolution of one channel over `n` examples stored position-major
/// (`input[position * n + example]`): for each output position `p`,
/// `output[p * n + m] = bias + sum_{e in starts[p] ..< starts[p + 1]} weights[weight_index[e]] * input[input_index[e] * n + m]`.
void h2t_depthwise_positions(int isa, float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                             const ptrdiff_t *starts, const ptrdiff_t *weight_index, const ptrdiff_t *input_index,
                             const float *weights, float bias);

/// ``h2t_depthwise_positions`` with `n` channels of one example in the lanes instead of `n`
/// examples of one channel: `input[position * n + channel]`, per-channel weights
/// `weights[tap * n + channel]` and biases `bias[channel]`; each value is computed with the same
/// operations in the same order, so it has the same bits.
void h2t_depthwise_channels(int isa, float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                            const ptrdiff_t *starts, const ptrdiff_t *weight_index, const ptrdiff_t *input_index,
                            const float *weights, const float *bias);

/// Splits `count` values into those at even indices (`evens[j] = source[2 j]`) and those at
/// odd ones (`odds[j] = source[2 j + 1]`): a stride-2 depthwise convolution's padded rows, split
/// by column phase so that every kernel column reads a contiguous run. Data movement only.
void h2t_deinterleave(int isa, const float *source, ptrdiff_t count, float *evens, float *odds);

/// Interleaves eight rows of `length` 8-bit samples (row `l` at `rows + l * row_step`) into
/// `length` groups of eight floats: `out[8 * k + l] = rows[l * row_step + k]`. Data movement and
/// exact conversions only (the same result at every level); an AVX2 variant serves both vector
/// levels, and `isa` below AVX2 must not call it (the Swift caller has a scalar loop).
void h2t_interleave_rows_u8(int isa, const unsigned char *rows, ptrdiff_t row_step, ptrdiff_t length, float *out);

/// `out[i] = min(max(in[i], 0), 6)` (`out` may be `in`).
void h2t_relu6(int isa, float *out, const float *in, ptrdiff_t count);

/// `out[i] = a[i] + b[i]` (`out` may be `a` or `b`).
void h2t_add(int isa, float *out, const float *a, const float *b, ptrdiff_t count);

/// Head2Toe's window average over `planes` planes of `height × width` (plane `q` at
/// `input + q * plane_stride`), window and stride `window`, no padding: plane `q`'s
/// `((height - window) / window + 1) × ((width - window) / window + 1)` cells go row-major to
/// `output + q * output_stride`. Each cell is summed in exactly the order of H2TKernels'
/// `PoolingKernels.windowAverage` (per column the window's rows top to bottom, then the columns
/// left to right, from 0), then multiplied by `1 / (window * window)`, so every instruction set
/// gives bit-identical values. Planes go eight at a time, one per vector lane (the cells of a
/// large window are long dependent chains of additions; lanes make one chain serve eight planes).
/// `scratch` holds at least `8 * height * width` floats.
void h2t_window_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane_stride, ptrdiff_t height,
                        ptrdiff_t width, ptrdiff_t window, float *output, ptrdiff_t output_stride, float *scratch);

/// The means of `planes` contiguous planes of `plane` floats each (plane `q` at `input + q * plane`),
/// plane `q`'s mean written to `output[(q % group) * row_stride + q / group]`: for a channel-major
/// tap (`C × examples × H × W`) with `group` = examples, example `e`'s means land in its row
/// `output + e * row_stride` at their channels. Each mean is summed in exactly the order of
/// H2TKernels' `PoolingKernels.sum` (eight running sums over the plane's runs of eight, added up
/// from -0 in lane order, then the last `plane % 8` values), then multiplied by `1 / plane`, so
/// every level gives that loop's bits. Eight planes at a time, one per vector lane (an 8 × 8
/// transpose turns their runs into lanes), so the deep taps' planes of a few values cost no
/// horizontal sums. One AVX2 variant serves both levels.
void h2t_global_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane, ptrdiff_t group,
                        float *output, ptrdiff_t row_stride);

/// A tile's bfloat16 byte planes from `rows × cols` floats (row `r` at `source + r * row_stride`):
/// value `(r, c)` rounded to bfloat16 exactly as H2TStore's `HalfBits.bfloat16` (nearest even,
/// NaN kept quiet) has its low byte at `lo[c * rows + r]` and its high byte at `hi[c * rows + r]`.
/// Sixteen rows × eight columns per step (an 8×8 transpose of 32-bit lanes, then packs);
/// One AVX2 variant serves both levels. The values are the same at every level.
void h2t_split_bf16(int isa, const float *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                    unsigned char *lo, unsigned char *hi);

/// `bits[i]` = value `source[i]` rounded to bfloat16 exactly as H2TStore's `HalfBits.bfloat16`
/// (nearest even, NaN kept quiet), for `i < count`: the bit patterns a bfloat16 tile stores.
/// Sixteen values per step; one AVX2 variant serves both levels.
void h2t_bf16_bits(int isa, const float *source, ptrdiff_t count, unsigned short *bits);

/// The byte planes of `rows × cols` values already 16 bits wide (bfloat16 or float16 bit
/// patterns, row `r` at `source + r * row_stride`): the low byte of value `(r, c)` at
/// `lo[c * rows + r]`, its high byte at `hi[c * rows + r]`. The same blocks as `h2t_split_bf16`.
void h2t_split_u16(int isa, const unsigned short *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                   unsigned char *lo, unsigned char *hi);

/// `z = G a` for a symmetric `n × n` Gram matrix `G` (row-major) and `a` (`n × k`, row-major) into
/// `z` (`n × k`): the logits of the kernel-form final head. Reads `G` by columns
/// (`z[i][c] = sum_j G[j][i] a[j][c]`, contiguous loads; equal to `G a` because `G` is symmetric),
/// and each output is one chain of fused multiply-adds over `j` ascending from 0, so both levels
/// give the same bits and none depends on how the rows are blocked.
void h2t_gram_times(int isa, const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, float *z);

/// `values[i] = exp(values[i])` in place for `values[i] <= 0` (the shifted logits of a softmax),
/// within 2 ulp of the correctly rounded value; below -708 the result is `exp(-708)`, NaN stays
/// NaN. The same bits at both levels.
void h2t_exp_nonpositive(int isa, double *values, ptrdiff_t count);

/// Packs a 1×1 convolution's `cout × cin` weights (row-major) and its `cout` biases for
/// `h2t_pointwise_avx512`: `packed` (`8 * ceil(cout / 8) * cin` floats) holds, per block of eight output
/// channels, the eight weights of each input channel side by side; `packed_bias`
/// (`8 * ceil(cout / 8)`) the biases; both zero past `cout`. Plain C, for every level.
void h2t_pointwise_pack(const float *weights, const float *bias, ptrdiff_t cin, ptrdiff_t cout, float *packed,
                        float *packed_bias);

/// A 1×1 convolution of channel-major activations at AVX-512: `out[co * count + p] = bias[co] +
/// sum_ci w[co][ci] * in[ci * count + p]` for `co < cout`, `p < count`, with the weights packed by
/// `h2t_pointwise_pack`. Each output is one chain of fused multiply-adds from the bias over `ci`
/// ascending, whatever `count`. Only on a CPU with AVX-512 F.
void h2t_pointwise_avx512(const float *in, ptrdiff_t cin, ptrdiff_t count, const float *packed, const float *bias,
                          ptrdiff_t cout, float *out);

/// A classifier: `out[e * cout + co] = bias[co] + sum_ci w[co][ci] * in[e * cin + ci]` for
/// `e < examples`, `co < cout`, with the weights and biases packed by `h2t_pointwise_pack` (`w` is
/// `cout × cin`). Each output is one chain of fused multiply-adds from the bias over `ci`
/// ascending (as `h2t_pointwise_avx512`): the same bits at both levels.
void h2t_linear(int isa, const float *in, ptrdiff_t cin, ptrdiff_t examples, const float *packed, const float *bias,
                ptrdiff_t cout, float *out);

/// Four columns of a bfloat16 tile frame back to rows: column `j`'s low bytes at
/// `lo[j * plane + r]` and high bytes at `hi[j * plane + r]` (`r < rows`), value `(r, j)` written as
/// the float with those bits at `out[r * stride + j]`. One AVX2 variant serves both levels; the
/// values are the bits themselves.
void h2t_bf16_rows4(int isa, const unsigned char *lo, const unsigned char *hi, ptrdiff_t plane, ptrdiff_t rows,
                    float *out, ptrdiff_t stride);

/// Widens `n` 16-bit floats (IEEE half precision, or bfloat16 when `bfloat` is nonzero) at `in`
/// to float32 at `out`, exactly, front to back: `in` may be the back half of `out`'s own bytes
/// (`in == (char *)out + 2 * n`), so a row read as 16-bit values is widened where it lies.
/// Returns 0, having done nothing, below AVX2 (whose level includes F16C): the caller then
/// converts with its portable loop.
int h2t_widen16(int isa, int bfloat, const void *in, ptrdiff_t n, void *out);

/// Whether this CPU has carry-less multiplication (PCLMULQDQ) and SSE4.1, which
/// `h2t_crc32_fold` needs (every CPU with AVX2 has them; 0 off x86-64).
int h2t_cpu_has_pclmul(void);

/// Folds `blocks` 16-byte blocks of `data` (at least 4) into 16 bytes at `out` whose CRC-32
/// continues zlib's: `crc32(0xffffffff, out, 16)` equals `crc32(crc, data, 16 * blocks)`, with
/// `crc` the running value zlib's `crc32` would be given. Four 16-byte lanes per 64 bytes.
void h2t_crc32_fold(unsigned crc, const unsigned char *data, ptrdiff_t blocks, unsigned char *out);

/// The sum over byte values of the squared count of that value among `count` bytes at `bytes`:
/// `count²` times the chance that two bytes drawn with replacement are equal (so
/// `-log2(sum / count²)` is the bytes' collision entropy, in bits per byte). Four histograms
/// side by side, so that equal neighbouring bytes do not wait on each other's count. Plain C for
/// every platform: the tile encoder's test of whether a byte plane is worth compressing.
unsigned long long h2t_byte_collisions(const unsigned char *bytes, ptrdiff_t count);

/// Writes `,%.6g` (printf's) for each of `count` values to `out`, NUL-terminated, and returns the
/// length without the NUL, or -1 if `capacity` bytes are too few (16 per value always suffice).
/// Plain C for every platform: the CSV of `predict` without Swift's boxing of C variadic arguments.
ptrdiff_t h2t_format_g6_fields(const float *values, ptrdiff_t count, char *out, ptrdiff_t capacity);

#endif
