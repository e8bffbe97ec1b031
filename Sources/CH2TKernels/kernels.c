// See include/h2t_kernels.h. Each public function switches on `isa` to a static variant compiled
// for that instruction set; multiply-adds are fused (one rounding) in both variants.
#include "h2t_kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int h2t_cpu_isa(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return H2T_ISA_BASELINE;
    // F16C comes with every AVX2 CPU; required so that the AVX2 level can widen float16 with it.
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(fma && osxsave && avx && f16c)) return H2T_ISA_BASELINE;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    unsigned long long xcr0 = ((unsigned long long)hi << 32) | lo;
    if ((xcr0 & 0x6) != 0x6) return H2T_ISA_BASELINE;  // XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return H2T_ISA_BASELINE;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
    if (!avx2) return H2T_ISA_BASELINE;
    if (avx512f && (xcr0 & 0xe6) == 0xe6) return H2T_ISA_AVX512;  // + opmask, ZMM0-15 high, ZMM16-31
    return H2T_ISA_AVX2;
}

// MARK: depthwise rows

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx2,fma")))

AVX2 static inline __m256i tail_mask8(ptrdiff_t left) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), index);
}

// Sixteen values at a time: the even and odd lanes of two vectors, then their 64-bit pairs put
// back in order ([a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]).
/// The even (`phase` 0) or odd (`phase` 1) lanes of `a` then `b`, in order.
#define PICK_LANES(a, b, phase) \
    _mm256_castpd_ps(_mm256_permute4x64_pd( \
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, (phase) ? _MM_SHUFFLE(3, 1, 3, 1) : _MM_SHUFFLE(2, 0, 2, 0))), \
        _MM_SHUFFLE(3, 1, 2, 0)))

AVX2 static void deinterleave_avx2(const float *source, ptrdiff_t count, float *evens, float *odds) {
    ptrdiff_t j = 0;
    for (; 2 * j + 16 <= count; j += 8) {
        const __m256 a = _mm256_loadu_ps(source + 2 * j), b = _mm256_loadu_ps(source + 2 * j + 8);
        _mm256_storeu_ps(evens + j, PICK_LANES(a, b, 0));
        _mm256_storeu_ps(odds + j, PICK_LANES(a, b, 1));
    }
    for (ptrdiff_t i = 2 * j; i < count; i++) {
        if ((i & 1) == 0) evens[i >> 1] = source[i];
        else odds[i >> 1] = source[i];
    }
}

void h2t_deinterleave(int isa, const float *source, ptrdiff_t count, float *evens, float *odds) {
    (void)isa;  // one variant: shuffles, no arithmetic, the same at both levels
    deinterleave_avx2(source, count, evens, odds);
}

// MARK: transpose

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `r < rows`, `c < cols`: 8 × 8 blocks
/// through `transpose8` (a forward declaration: it is defined with the tile encoder's loops),
/// scalar edges.
AVX2 static inline void transpose8(__m256i r[8]);

AVX2 static void transpose_avx2(const float *src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t src_stride, float *dst,
                                ptrdiff_t dst_stride) {
    const ptrdiff_t full_rows = rows - rows % 8, full_cols = cols - cols % 8;
    for (ptrdiff_t r0 = 0; r0 < full_rows; r0 += 8) {
        for (ptrdiff_t c0 = 0; c0 < full_cols; c0 += 8) {
            __m256i v[8];
            for (int k = 0; k < 8; k++) v[k] = _mm256_castps_si256(_mm256_loadu_ps(src + (r0 + k) * src_stride + c0));
            transpose8(v);
            for (int k = 0; k < 8; k++) _mm256_storeu_ps(dst + (c0 + k) * dst_stride + r0, _mm256_castsi256_ps(v[k]));
        }
        for (ptrdiff_t c = full_cols; c < cols; c++) {
            for (ptrdiff_t r = r0; r < r0 + 8; r++) dst[c * dst_stride + r] = src[r * src_stride + c];
        }
    }
    for (ptrdiff_t r = full_rows; r < rows; r++) {
        for (ptrdiff_t c = 0; c < cols; c++) dst[c * dst_stride + r] = src[r * src_stride + c];
    }
}

void h2t_transpose(int isa, const float *src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t src_stride, float *dst,
                   ptrdiff_t dst_stride) {
    (void)isa;  // one variant: loads, shuffles and stores, the same at both levels
    transpose_avx2(src, rows, cols, src_stride, dst, dst_stride);
}

// MARK: im2col (the stem's columns)

/// `dst[ox] = line[ox * stride + offset]` for `ox < ow`, 0 where that index is outside
/// `[0, width)`. Stride 1 is a copy; stride 2 takes the even lanes of two vectors (`PICK_LANES`)
/// while a 16-value load stays inside the line; others go one value at a time.
AVX2 static void im2col_line_avx2(const float *line, ptrdiff_t width, ptrdiff_t ow, ptrdiff_t stride,
                                  ptrdiff_t offset, float *dst) {
    // The outputs whose index is inside the line: lo ..< hi.
    ptrdiff_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    ptrdiff_t hi = offset > width - 1 ? 0 : (width - 1 - offset) / stride + 1;
    if (hi > ow) hi = ow;
    if (lo > hi) lo = hi;
    for (ptrdiff_t ox = 0; ox < lo; ox++) dst[ox] = 0;
    for (ptrdiff_t ox = hi; ox < ow; ox++) dst[ox] = 0;
    ptrdiff_t ox = lo;
    if (stride == 1) {
        for (; ox + 8 <= hi; ox += 8) _mm256_storeu_ps(dst + ox, _mm256_loadu_ps(line + ox + offset));
    } else if (stride == 2) {
        for (; ox + 8 <= hi && 2 * ox + offset + 16 <= width; ox += 8) {
            const __m256 a = _mm256_loadu_ps(line + 2 * ox + offset), b = _mm256_loadu_ps(line + 2 * ox + offset + 8);
            _mm256_storeu_ps(dst + ox, PICK_LANES(a, b, 0));
        }
    }
    for (; ox < hi; ox++) dst[ox] = line[ox * stride + offset];
}

void h2t_im2col(int isa, const float *input, ptrdiff_t channels, ptrdiff_t batch, ptrdiff_t height, ptrdiff_t width,
                int channel_major, ptrdiff_t kernel, ptrdiff_t stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
                ptrdiff_t oh, ptrdiff_t ow, float *columns) {
    (void)isa;  // one variant: loads, shuffles and stores, the same at both levels
    const ptrdiff_t n = batch * oh * ow;
    for (ptrdiff_t ci = 0; ci < channels; ci++) {
        for (ptrdiff_t ky = 0; ky < kernel; ky++) {
            for (ptrdiff_t kx = 0; kx < kernel; kx++) {
                float *row = columns + ((ci * kernel + ky) * kernel + kx) * n;
                for (ptrdiff_t b = 0; b < batch; b++) {
                    const float *plane = input + (channel_major ? ci * batch + b : b * channels + ci) * height * width;
                    for (ptrdiff_t oy = 0; oy < oh; oy++) {
                        const ptrdiff_t iy = oy * stride + ky - pad_top;
                        float *dst = row + (b * oh + oy) * ow;
                        if (iy < 0 || iy >= height) {
                            for (ptrdiff_t ox = 0; ox < ow; ox++) dst[ox] = 0;
                        } else {
                            im2col_line_avx2(plane + iy * width, width, ow, stride, kx - pad_left, dst);
                        }
                    }
                }
            }
        }
    }
}

// Eight samples of each of the eight rows at a time: widened to floats, then the 8 x 8 block
// transposed (unpacks within 128-bit halves, then the halves swapped into place).
AVX2 static void interleave_rows_u8_avx2(const unsigned char *rows, ptrdiff_t row_step, ptrdiff_t length, float *out) {
    ptrdiff_t k = 0;
    for (; k + 8 <= length; k += 8) {
        __m256 r[8];
        for (int l = 0; l < 8; l++) {
            const __m128i bytes = _mm_loadl_epi64((const __m128i *)(rows + l * row_step + k));
            r[l] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
        }
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
        const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
        const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
        float *o = out + 8 * k;
        _mm256_storeu_ps(o + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(o + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(o + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(o + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(o + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < length; k++) {
        for (int l = 0; l < 8; l++) out[8 * k + l] = (float)rows[l * row_step + k];
    }
}

void h2t_interleave_rows_u8(int isa, const unsigned char *rows, ptrdiff_t row_step, ptrdiff_t length, float *out) {
    (void)isa;  // one variant: exact conversions and shuffles, the same at both levels
    interleave_rows_u8_avx2(rows, row_step, length, out);
}

// Each output is the bias, then one fused multiply-add per tap in tap order (the same chain at
// every blocking and level). A block is `R` output rows × `NV` vectors of columns: `R * NV`
// independent chains per tap, enough to cover the multiply-add's latency; one vector per row
// (two chains, the previous blocking) left the FMA units three quarters idle on the wide maps.
#define INLINE __attribute__((always_inline)) static inline

// AVX2's masked loads are slower than plain ones (one a cycle on AMD): only a last vector that
// is cut short by the row's end is loaded masked.
AVX2 INLINE void depthwise_taps_avx2(__m256 *acc, const float *r, ptrdiff_t row_step, const ptrdiff_t *offsets,
                                     ptrdiff_t taps, const float *weights, ptrdiff_t x, __m256i last, const int nv,
                                     const int rows, const int masked) {
    for (ptrdiff_t t = 0; t < taps; t++) {
        const __m256 w = _mm256_set1_ps(weights[t]);
        const float *p = r + offsets[t] + x;
        for (int y = 0; y < rows; y++) {
            for (int j = 0; j < nv; j++) {
                const float *q = p + y * row_step + 8 * j;
                const __m256 v = masked && j == nv - 1 ? _mm256_maskload_ps(q, last) : _mm256_loadu_ps(q);
                acc[y * nv + j] = _mm256_fmadd_ps(w, v, acc[y * nv + j]);
            }
        }
    }
}

AVX2 INLINE void depthwise_block_avx2(float *o, ptrdiff_t width, const float *r, ptrdiff_t row_step,
                                      const ptrdiff_t *offsets, ptrdiff_t taps, const float *weights, float bias,
                                      ptrdiff_t x, const int nv, const int rows) {
    const __m256i last = tail_mask8(width - x - 8 * (nv - 1));
    __m256 acc[8];
    for (int k = 0; k < nv * rows; k++) acc[k] = _mm256_set1_ps(bias);
    if (width - x >= 8 * nv) depthwise_taps_avx2(acc, r, row_step, offsets, taps, weights, x, last, nv, rows, 0);
    else depthwise_taps_avx2(acc, r, row_step, offsets, taps, weights, x, last, nv, rows, 1);
    for (int y = 0; y < rows; y++) {
        for (int j = 0; j < nv; j++) {
            float *q = o + y * width + x + 8 * j;
            if (j == nv - 1) _mm256_maskstore_ps(q, last, acc[y * nv + j]);
            else _mm256_storeu_ps(q, acc[y * nv + j]);
        }
    }
}

AVX512 INLINE void depthwise_block_avx512(float *o, ptrdiff_t width, const float *r, ptrdiff_t row_step,
                                          const ptrdiff_t *offsets, ptrdiff_t taps, const float *weights, float bias,
                                          ptrdiff_t x, const int nv, const int rows) {
    __mmask16 mask[4];
    __m512 acc[8];
    for (int j = 0; j < nv; j++) {
        const ptrdiff_t left = width - x - 16 * j;
        mask[j] = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    }
    for (int k = 0; k < nv * rows; k++) acc[k] = _mm512_set1_ps(bias);
    for (ptrdiff_t t = 0; t < taps; t++) {
        const __m512 w = _mm512_set1_ps(weights[t]);
        const float *p = r + offsets[t] + x;
        for (int y = 0; y < rows; y++) {
            for (int j = 0; j < nv; j++) {
                acc[y * nv + j] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask[j], p + y * row_step + 16 * j), acc[y * nv + j]);
            }
        }
    }
    for (int y = 0; y < rows; y++) {
        for (int j = 0; j < nv; j++) _mm512_mask_storeu_ps(o + y * width + x + 16 * j, mask[j], acc[y * nv + j]);
    }
}

// Blocks of up to four vectors across and, by their width, up to two (three or four vectors) or
// four (one or two vectors) rows down; each case a constant shape, so the loops above unroll.
#define DEPTHWISE_ROWS(NAME, BLOCK, LANES, ATTR)                                                                \
    ATTR static void NAME(float *out, ptrdiff_t width, ptrdiff_t height, const float *rows, ptrdiff_t row_step,  \
                          const ptrdiff_t *offsets, ptrdiff_t taps, const float *weights, float bias) {         \
        for (ptrdiff_t x = 0; x < width; x += 4 * LANES) {                                                      \
            const ptrdiff_t left = (width - x + LANES - 1) / LANES;                                             \
            const int nv = left < 4 ? (int)left : 4, most = nv >= 3 ? 2 : 4;                                    \
            for (ptrdiff_t oy = 0; oy < height;) {                                                              \
                const int n = height - oy < most ? (int)(height - oy) : most;                                   \
                const float *r = rows + oy * row_step;                                                          \
                float *o = out + oy * width;                                                                    \
                switch (nv * 8 + n) {                                                                           \
                case 8 + 1: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 1, 1); break;         \
                case 8 + 2: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 1, 2); break;         \
                case 8 + 3: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 1, 3); break;         \
                case 8 + 4: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 1, 4); break;         \
                case 16 + 1: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 2, 1); break;        \
                case 16 + 2: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 2, 2); break;        \
                case 16 + 3: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 2, 3); break;        \
                case 16 + 4: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 2, 4); break;        \
                case 24 + 1: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 3, 1); break;        \
                case 24 + 2: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 3, 2); break;        \
                case 32 + 1: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 4, 1); break;        \
                default: BLOCK(o, width, r, row_step, offsets, taps, weights, bias, x, 4, 2); break;            \
                }                                                                                               \
                oy += n;                                                                                        \
            }                                                                                                   \
        }                                                                                                       \
    }

DEPTHWISE_ROWS(depthwise_rows_avx2, depthwise_block_avx2, 8, AVX2)
DEPTHWISE_ROWS(depthwise_rows_avx512, depthwise_block_avx512, 16, AVX512)

void h2t_depthwise_rows(int isa, float *out, ptrdiff_t width, ptrdiff_t height, const float *rows,
                        ptrdiff_t row_step, const ptrdiff_t *offsets, ptrdiff_t taps,
                        const float *weights, float bias) {
    if (isa >= H2T_ISA_AVX512) depthwise_rows_avx512(out, width, height, rows, row_step, offsets, taps, weights, bias);
    else depthwise_rows_avx2(out, width, height, rows, row_step, offsets, taps, weights, bias);
}

// MARK: depthwise over positions (small maps, examples in the vector lanes)

AVX2 static void depthwise_positions_avx2(float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                                          const ptrdiff_t *starts, const ptrdiff_t *wi, const ptrdiff_t *ii,
                                          const float *weights, float bias) {
    for (ptrdiff_t p = 0; p < positions; p++) {
        float *out = output + p * n;
        for (ptrdiff_t m = 0; m < n; m += 8) {
            __m256i mask = tail_mask8(n - m);
            __m256 acc = _mm256_set1_ps(bias);
            for (ptrdiff_t e = starts[p]; e < starts[p + 1]; e++) {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(weights[wi[e]]), _mm256_maskload_ps(input + ii[e] * n + m, mask), acc);
            }
            _mm256_maskstore_ps(out + m, mask, acc);
        }
    }
}

AVX512 static void depthwise_positions_avx512(float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                                              const ptrdiff_t *starts, const ptrdiff_t *wi, const ptrdiff_t *ii,
                                              const float *weights, float bias) {
    for (ptrdiff_t p = 0; p < positions; p++) {
        float *out = output + p * n;
        for (ptrdiff_t m = 0; m < n; m += 16) {
            ptrdiff_t left = n - m;
            __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __m512 acc = _mm512_set1_ps(bias);
            for (ptrdiff_t e = starts[p]; e < starts[p + 1]; e++) {
                acc = _mm512_fmadd_ps(_mm512_set1_ps(weights[wi[e]]), _mm512_maskz_loadu_ps(mask, input + ii[e] * n + m), acc);
            }
            _mm512_mask_storeu_ps(out + m, mask, acc);
        }
    }
}

void h2t_depthwise_positions(int isa, float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                             const ptrdiff_t *starts, const ptrdiff_t *weight_index, const ptrdiff_t *input_index,
                             const float *weights, float bias) {
    if (isa >= H2T_ISA_AVX512) depthwise_positions_avx512(output, input, n, positions, starts, weight_index, input_index, weights, bias);
    else depthwise_positions_avx2(output, input, n, positions, starts, weight_index, input_index, weights, bias);
}

// Channels in the vector lanes (one example, any number of channels): lane l of position p is
// channel l, with its own weights (`weights[tap * n + l]`) and bias; each lane performs exactly
// the operations of the examples-in-lanes kernel above (start from the bias, one fused
// multiply-add per entry in order), so both give the same bits.
AVX2 static void depthwise_channels_avx2(float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                                         const ptrdiff_t *starts, const ptrdiff_t *wi, const ptrdiff_t *ii,
                                         const float *weights, const float *bias) {
    for (ptrdiff_t p = 0; p < positions; p++) {
        float *out = output + p * n;
        for (ptrdiff_t m = 0; m < n; m += 8) {
            __m256i mask = tail_mask8(n - m);
            __m256 acc = _mm256_maskload_ps(bias + m, mask);
            for (ptrdiff_t e = starts[p]; e < starts[p + 1]; e++) {
                acc = _mm256_fmadd_ps(_mm256_maskload_ps(weights + wi[e] * n + m, mask),
                                      _mm256_maskload_ps(input + ii[e] * n + m, mask), acc);
            }
            _mm256_maskstore_ps(out + m, mask, acc);
        }
    }
}

AVX512 static void depthwise_channels_avx512(float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                                             const ptrdiff_t *starts, const ptrdiff_t *wi, const ptrdiff_t *ii,
                                             const float *weights, const float *bias) {
    for (ptrdiff_t p = 0; p < positions; p++) {
        float *out = output + p * n;
        for (ptrdiff_t m = 0; m < n; m += 16) {
            ptrdiff_t left = n - m;
            __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __m512 acc = _mm512_maskz_loadu_ps(mask, bias + m);
            for (ptrdiff_t e = starts[p]; e < starts[p + 1]; e++) {
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, weights + wi[e] * n + m),
                                      _mm512_maskz_loadu_ps(mask, input + ii[e] * n + m), acc);
            }
            _mm512_mask_storeu_ps(out + m, mask, acc);
        }
    }
}

void h2t_depthwise_channels(int isa, float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                            const ptrdiff_t *starts, const ptrdiff_t *weight_index, const ptrdiff_t *input_index,
                            const float *weights, const float *bias) {
    if (isa >= H2T_ISA_AVX512) depthwise_channels_avx512(output, input, n, positions, starts, weight_index, input_index, weights, bias);
    else depthwise_channels_avx2(output, input, n, positions, starts, weight_index, input_index, weights, bias);
}

// MARK: element-wise

// Out of place (a tap written once from the one before it, not copied then changed); `out` may be `in`.
AVX2 static void relu6_avx2(float *out, const float *in, ptrdiff_t count) {
    const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6);
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(in + i), zero), six));
    for (; i < count; i++) out[i] = in[i] < 0 ? 0 : (in[i] > 6 ? 6 : in[i]);
}

AVX512 static void relu6_avx512(float *out, const float *in, ptrdiff_t count) {
    const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6);
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(out + i, _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(in + i), zero), six));
    for (; i < count; i++) out[i] = in[i] < 0 ? 0 : (in[i] > 6 ? 6 : in[i]);
}

void h2t_relu6(int isa, float *out, const float *in, ptrdiff_t count) {
    if (isa >= H2T_ISA_AVX512) relu6_avx512(out, in, count);
    else relu6_avx2(out, in, count);
}

AVX2 static void add_avx2(float *out, const float *a, const float *b, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < count; i++) out[i] = a[i] + b[i];
}

AVX512 static void add_avx512(float *out, const float *a, const float *b, ptrdiff_t count) {
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    for (; i < count; i++) out[i] = a[i] + b[i];
}

void h2t_add(int isa, float *out, const float *a, const float *b, ptrdiff_t count) {
    if (isa >= H2T_ISA_AVX512) add_avx512(out, a, b, count);
    else add_avx2(out, a, b, count);
}

// MARK: window average (pooling)

/// The `cells` cells of one plane from its column sums (`columns`: per output row, `ow * p`
/// sums): each cell adds its `p` column sums left to right from 0, as the Swift kernel does. The
/// order within a cell is fixed, so the speed comes from eight cells' independent chains at once.
static inline void window_cells(const float *columns, ptrdiff_t cells, ptrdiff_t p, float scale, float *out) {
    ptrdiff_t m = 0;
    for (; m + 8 <= cells; m += 8) {
        const float *c = columns + m * p;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (ptrdiff_t t = 0; t < p; t++) {
            a0 += c[t]; a1 += c[p + t]; a2 += c[2 * p + t]; a3 += c[3 * p + t];
            a4 += c[4 * p + t]; a5 += c[5 * p + t]; a6 += c[6 * p + t]; a7 += c[7 * p + t];
        }
        out[m] = a0 * scale; out[m + 1] = a1 * scale; out[m + 2] = a2 * scale; out[m + 3] = a3 * scale;
        out[m + 4] = a4 * scale; out[m + 5] = a5 * scale; out[m + 6] = a6 * scale; out[m + 7] = a7 * scale;
    }
    for (; m + 4 <= cells; m += 4) {
        const float *c = columns + m * p;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (ptrdiff_t t = 0; t < p; t++) { a0 += c[t]; a1 += c[p + t]; a2 += c[2 * p + t]; a3 += c[3 * p + t]; }
        out[m] = a0 * scale; out[m + 1] = a1 * scale; out[m + 2] = a2 * scale; out[m + 3] = a3 * scale;
    }
    for (; m < cells; m++) {
        float total = 0;
        for (ptrdiff_t t = 0; t < p; t++) total += columns[m * p + t];
        out[m] = total * scale;
    }
}

AVX2 static void window_average_avx2(const float *input, ptrdiff_t planes, ptrdiff_t plane_stride, ptrdiff_t height,
                                     ptrdiff_t width, ptrdiff_t p, float *output, ptrdiff_t output_stride, float *columns) {
    const ptrdiff_t oh = (height - p) / p + 1, ow = (width - p) / p + 1, used = ow * p;
    const float scale = 1.0f / (float)(p * p);
    for (ptrdiff_t q = 0; q < planes; q++) {
        const float *plane = input + q * plane_stride;
        // Column sums of each output row's window rows, top to bottom; rows stored back to back.
        for (ptrdiff_t i = 0; i < oh; i++) {
            const float *first = plane + i * p * width;
            float *sums = columns + i * used;
            for (ptrdiff_t k = 0; k < used; k += 8) {
                __m256i mask = tail_mask8(used - k);
                __m256 acc = _mm256_maskload_ps(first + k, mask);
                for (ptrdiff_t di = 1; di < p; di++) acc = _mm256_add_ps(acc, _mm256_maskload_ps(first + di * width + k, mask));
                _mm256_maskstore_ps(sums + k, mask, acc);
            }
        }
        window_cells(columns, oh * ow, p, scale, output + q * output_stride);
    }
}

AVX512 static void window_average_avx512(const float *input, ptrdiff_t planes, ptrdiff_t plane_stride, ptrdiff_t height,
                                         ptrdiff_t width, ptrdiff_t p, float *output, ptrdiff_t output_stride, float *columns) {
    const ptrdiff_t oh = (height - p) / p + 1, ow = (width - p) / p + 1, used = ow * p;
    const float scale = 1.0f / (float)(p * p);
    for (ptrdiff_t q = 0; q < planes; q++) {
        const float *plane = input + q * plane_stride;
        for (ptrdiff_t i = 0; i < oh; i++) {
            const float *first = plane + i * p * width;
            float *sums = columns + i * used;
            for (ptrdiff_t k = 0; k < used; k += 16) {
                ptrdiff_t left = used - k;
                __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                __m512 acc = _mm512_maskz_loadu_ps(mask, first + k);
                for (ptrdiff_t di = 1; di < p; di++) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, first + di * width + k));
                _mm512_mask_storeu_ps(sums + k, mask, acc);
            }
        }
        window_cells(columns, oh * ow, p, scale, output + q * output_stride);
    }
}


// MARK: bfloat16 byte planes (tile encoding)

/// Round to nearest even, quiet NaNs kept (H2TStore's `HalfBits.bfloat16`), as a 32-bit lane.
static inline unsigned bf16_scalar(float value) {
    unsigned bits;
    __builtin_memcpy(&bits, &value, 4);
    if (value != value) return (bits >> 16) | 0x40;
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
}

AVX2 static inline __m256i bf16_avx2(__m256 value) {
    const __m256i bits = _mm256_castps_si256(value);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256 nan = _mm256_cmp_ps(value, value, _CMP_UNORD_Q);
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(quiet), nan));
}

/// Transposes eight rows of eight 32-bit lanes in place: afterwards `r[j]` holds column `j`.
AVX2 static inline void transpose8(__m256i r[8]) {
    __m256 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(_mm256_castsi256_ps(r[k]), _mm256_castsi256_ps(r[k + 1]));
        t[k + 1] = _mm256_unpackhi_ps(_mm256_castsi256_ps(r[k]), _mm256_castsi256_ps(r[k + 1]));
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        r[k + 4] = _mm256_castps_si256(_mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}

/// Stores sixteen rows × eight columns of 16-bit values (one per 32-bit lane; `top[k]` is row
/// `r0 + k`, `bottom[k]` row `r0 + 8 + k`) as their low and high byte planes.
AVX2 static inline void store_planes_avx2(__m256i top[8], __m256i bottom[8], ptrdiff_t rows, ptrdiff_t r0,
                                          ptrdiff_t c0, unsigned char *lo, unsigned char *hi) {
    transpose8(top);
    transpose8(bottom);
    const __m256i byte = _mm256_set1_epi32(0xFF), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int j = 0; j < 8; j++) {
        // Per 128-bit lane: low bytes of rows (0-3, 8-11 | 4-7, 12-15), then their high bytes.
        __m256i low = _mm256_packus_epi32(_mm256_and_si256(top[j], byte), _mm256_and_si256(bottom[j], byte));
        __m256i high = _mm256_packus_epi32(_mm256_srli_epi32(top[j], 8), _mm256_srli_epi32(bottom[j], 8));
        __m256i both = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(low, high), order);
        ptrdiff_t at = (c0 + j) * rows + r0;
        _mm_storeu_si128((__m128i *)(lo + at), _mm256_castsi256_si128(both));
        _mm_storeu_si128((__m128i *)(hi + at), _mm256_extracti128_si256(both, 1));
    }
}

/// Sixteen rows × eight columns: rows `r0 ..< r0 + 16` of columns `c0 ..< c0 + 8`.
AVX2 static inline void split_block_avx2(const float *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t r0,
                                         ptrdiff_t c0, unsigned char *lo, unsigned char *hi) {
    __m256i top[8], bottom[8];
    for (int k = 0; k < 8; k++) {
        top[k] = bf16_avx2(_mm256_loadu_ps(source + (r0 + k) * row_stride + c0));
        bottom[k] = bf16_avx2(_mm256_loadu_ps(source + (r0 + 8 + k) * row_stride + c0));
    }
    store_planes_avx2(top, bottom, rows, r0, c0, lo, hi);
}

/// The same block of values already 16 bits wide.
AVX2 static inline void split_u16_block_avx2(const unsigned short *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t r0,
                                             ptrdiff_t c0, unsigned char *lo, unsigned char *hi) {
    __m256i top[8], bottom[8];
    for (int k = 0; k < 8; k++) {
        top[k] = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(source + (r0 + k) * row_stride + c0)));
        bottom[k] = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(source + (r0 + 8 + k) * row_stride + c0)));
    }
    store_planes_avx2(top, bottom, rows, r0, c0, lo, hi);
}

AVX2 static void split_u16_avx2(const unsigned short *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                                unsigned char *lo, unsigned char *hi) {
    const ptrdiff_t full_rows = rows - rows % 16, full_cols = cols - cols % 8;
    for (ptrdiff_t r0 = 0; r0 < full_rows; r0 += 16) {
        for (ptrdiff_t c0 = 0; c0 < full_cols; c0 += 8) split_u16_block_avx2(source, row_stride, rows, r0, c0, lo, hi);
    }
    for (ptrdiff_t r = 0; r < rows; r++) {
        const unsigned short *row = source + r * row_stride;
        for (ptrdiff_t c = r < full_rows ? full_cols : 0; c < cols; c++) {
            lo[c * rows + r] = (unsigned char)row[c];
            hi[c * rows + r] = (unsigned char)(row[c] >> 8);
        }
    }
}

void h2t_split_u16(int isa, const unsigned short *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                   unsigned char *lo, unsigned char *hi) {
    (void)isa;
    split_u16_avx2(source, row_stride, rows, cols, lo, hi);
}

AVX2 static void split_bf16_avx2(const float *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                                 unsigned char *lo, unsigned char *hi) {
    const ptrdiff_t full_rows = rows - rows % 16, full_cols = cols - cols % 8;
    for (ptrdiff_t r0 = 0; r0 < full_rows; r0 += 16) {
        for (ptrdiff_t c0 = 0; c0 < full_cols; c0 += 8) split_block_avx2(source, row_stride, rows, r0, c0, lo, hi);
    }
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *row = source + r * row_stride;
        for (ptrdiff_t c = r < full_rows ? full_cols : 0; c < cols; c++) {
            unsigned bits = bf16_scalar(row[c]);
            lo[c * rows + r] = (unsigned char)bits;
            hi[c * rows + r] = (unsigned char)(bits >> 8);
        }
    }
}

void h2t_split_bf16(int isa, const float *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                    unsigned char *lo, unsigned char *hi) {
    (void)isa;
    split_bf16_avx2(source, row_stride, rows, cols, lo, hi);
}

AVX2 static void bf16_bits_avx2(const float *source, ptrdiff_t count, unsigned short *bits) {
    ptrdiff_t i = 0;
    for (; i + 16 <= count; i += 16) {
        // packus works within 128-bit halves: [a0-3 b0-3 | a4-7 b4-7], put back in order.
        const __m256i a = bf16_avx2(_mm256_loadu_ps(source + i)), b = bf16_avx2(_mm256_loadu_ps(source + i + 8));
        _mm256_storeu_si256((__m256i *)(bits + i), _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0)));
    }
    for (; i < count; i++) bits[i] = (unsigned short)bf16_scalar(source[i]);
}

void h2t_bf16_bits(int isa, const float *source, ptrdiff_t count, unsigned short *bits) {
    (void)isa;
    bf16_bits_avx2(source, count, bits);
}

// MARK: window average, eight planes at a time

/// The cells of eight planes from their transposed column sums (`columns`: each window column's
/// eight sums as one vector, cell by cell): each cell adds its `p` columns left to right from 0.
AVX2 static inline void window_cells_group8(const float *columns, ptrdiff_t cells, ptrdiff_t p, float scale, float *output,
                                            ptrdiff_t output_stride) {
    float lanes[8];
    for (ptrdiff_t m = 0; m < cells; m++) {
        const float *c = columns + m * p * 8;
        __m256 acc = _mm256_setzero_ps();
        for (ptrdiff_t t = 0; t < p; t++) acc = _mm256_add_ps(acc, _mm256_loadu_ps(c + t * 8));
        _mm256_storeu_ps(lanes, _mm256_mul_ps(acc, _mm256_set1_ps(scale)));
        for (int q = 0; q < 8; q++) output[q * output_stride + m] = lanes[q];
    }
}

/// Window averages of eight planes at once, one plane per vector lane: the column sums of the
/// eight planes are transposed so that each window column's eight sums are one vector, and each
/// cell then adds its `p` column sums left to right from 0 in all eight lanes together. Every
/// lane performs exactly the additions of `window_cells` in the same order (bit-identical); the
/// gain is that a cell's dependent chain of `p` additions now serves eight planes.
/// `scratch` holds `8 * oh * ow * p` floats. The transposed columns are stored as vectors: clang
/// otherwise turns their short store loop into a `memcpy` call per block (3% of a 64×64 ingest).
AVX2 __attribute__((no_builtin("memcpy"))) static void window_average_group8(const float *input, ptrdiff_t plane_stride, ptrdiff_t height, ptrdiff_t width,
                                       ptrdiff_t p, float *output, ptrdiff_t output_stride, float *scratch) {
    const ptrdiff_t oh = (height - p) / p + 1, ow = (width - p) / p + 1, used = ow * p, cells = oh * ow;
    const float scale = 1.0f / (float)(p * p);
    for (ptrdiff_t i = 0; i < oh; i++) {
        for (ptrdiff_t k0 = 0; k0 < used; k0 += 8) {
            const __m256i mask = tail_mask8(used - k0);
            // Rows in the outer loop: the eight planes' sums are independent chains side by side.
            const float *first = input + i * p * width + k0;
            __m256 acc[8];
            __m256i v[8];
            if (used - k0 >= 8) {
                for (int q = 0; q < 8; q++) acc[q] = _mm256_loadu_ps(first + q * plane_stride);
                for (ptrdiff_t di = 1; di < p; di++) {
                    for (int q = 0; q < 8; q++) acc[q] = _mm256_add_ps(acc[q], _mm256_loadu_ps(first + q * plane_stride + di * width));
                }
            } else {
                for (int q = 0; q < 8; q++) acc[q] = _mm256_maskload_ps(first + q * plane_stride, mask);
                for (ptrdiff_t di = 1; di < p; di++) {
                    for (int q = 0; q < 8; q++) acc[q] = _mm256_add_ps(acc[q], _mm256_maskload_ps(first + q * plane_stride + di * width, mask));
                }
            }
            for (int q = 0; q < 8; q++) v[q] = _mm256_castps_si256(acc[q]);
            transpose8(v);
            const ptrdiff_t n = used - k0 < 8 ? used - k0 : 8;
            for (ptrdiff_t kk = 0; kk < n; kk++) _mm256_storeu_si256((__m256i *)(scratch + (i * used + k0 + kk) * 8), v[kk]);
        }
    }
    window_cells_group8(scratch, cells, p, scale, output, output_stride);
}

/// `window_average_group8` with the column sums taken sixteen columns at a time (one AVX-512
/// vector per plane: half the loads and additions of the eight-column pass, which is most of
/// the work on the large maps of early layers), then split into two eight-column halves for
/// the same transposes. Each column sum adds the same values in the same order: bit-identical.
AVX512 __attribute__((no_builtin("memcpy"))) static void window_average_group8_avx512(const float *input, ptrdiff_t plane_stride,
                                       ptrdiff_t height, ptrdiff_t width, ptrdiff_t p, float *output,
                                       ptrdiff_t output_stride, float *scratch) {
    const ptrdiff_t oh = (height - p) / p + 1, ow = (width - p) / p + 1, used = ow * p, cells = oh * ow;
    for (ptrdiff_t i = 0; i < oh; i++) {
        for (ptrdiff_t k0 = 0; k0 < used; k0 += 16) {
            const ptrdiff_t left = used - k0;
            const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            const float *first = input + i * p * width + k0;
            __m512 acc[8];
            for (int q = 0; q < 8; q++) acc[q] = _mm512_maskz_loadu_ps(mask, first + q * plane_stride);
            for (ptrdiff_t di = 1; di < p; di++) {
                for (int q = 0; q < 8; q++) acc[q] = _mm512_add_ps(acc[q], _mm512_maskz_loadu_ps(mask, first + q * plane_stride + di * width));
            }
            __m256i low[8], high[8];
            for (int q = 0; q < 8; q++) {
                low[q] = _mm512_castsi512_si256(_mm512_castps_si512(acc[q]));
                high[q] = _mm512_extracti64x4_epi64(_mm512_castps_si512(acc[q]), 1);
            }
            transpose8(low);
            const ptrdiff_t n = left < 16 ? left : 16;
            for (ptrdiff_t kk = 0; kk < n && kk < 8; kk++) _mm256_storeu_si256((__m256i *)(scratch + (i * used + k0 + kk) * 8), low[kk]);
            if (n > 8) {
                transpose8(high);
                for (ptrdiff_t kk = 8; kk < n; kk++) _mm256_storeu_si256((__m256i *)(scratch + (i * used + k0 + kk) * 8), high[kk - 8]);
            }
        }
    }
    window_cells_group8(scratch, cells, p, 1.0f / (float)(p * p), output, output_stride);
}

void h2t_window_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane_stride, ptrdiff_t height,
                        ptrdiff_t width, ptrdiff_t window, float *output, ptrdiff_t output_stride, float *scratch) {
    ptrdiff_t q = 0;
    for (; q + 8 <= planes; q += 8) {
        if (isa >= H2T_ISA_AVX512) {
            window_average_group8_avx512(input + q * plane_stride, plane_stride, height, width, window, output + q * output_stride,
                                         output_stride, scratch);
        } else {
            window_average_group8(input + q * plane_stride, plane_stride, height, width, window, output + q * output_stride,
                                  output_stride, scratch);
        }
    }
    if (q == planes) return;
    input += q * plane_stride;
    output += q * output_stride;
    if (isa >= H2T_ISA_AVX512) window_average_avx512(input, planes - q, plane_stride, height, width, window, output, output_stride, scratch);
    else window_average_avx2(input, planes - q, plane_stride, height, width, window, output, output_stride, scratch);
}

// Eight planes' means (`planes[q]`, one plane per lane), each summed as `PoolingKernels.sum` adds it.
AVX2 static void global_average_group8(const float *const planes[8], ptrdiff_t plane, const __m256i tail, __m256 scale,
                                       float *means) {
    const ptrdiff_t runs = plane / 8, rest = plane % 8;
    __m256 lanes[8];
    __m256i v[8];
    for (int j = 0; j < 8; j++) lanes[j] = _mm256_setzero_ps();
    for (ptrdiff_t b = 0; b < runs; b++) {
        for (int q = 0; q < 8; q++) v[q] = _mm256_loadu_si256((const __m256i *)(planes[q] + 8 * b));
        transpose8(v);
        for (int j = 0; j < 8; j++) lanes[j] = _mm256_add_ps(lanes[j], _mm256_castsi256_ps(v[j]));
    }
    __m256 total = _mm256_set1_ps(-0.0f);
    for (int j = 0; j < 8; j++) total = _mm256_add_ps(total, lanes[j]);
    if (rest > 0) {
        for (int q = 0; q < 8; q++) v[q] = _mm256_castps_si256(_mm256_maskload_ps(planes[q] + 8 * runs, tail));
        transpose8(v);
        for (ptrdiff_t j = 0; j < rest; j++) total = _mm256_add_ps(total, _mm256_castsi256_ps(v[j]));
    }
    _mm256_storeu_ps(means, _mm256_mul_ps(total, scale));
}

AVX2 static void global_average_avx2(const float *input, ptrdiff_t planes, ptrdiff_t plane, ptrdiff_t group,
                                     float *output, ptrdiff_t row_stride) {
    const __m256i tail = tail_mask8(plane % 8);
    const __m256 scale = _mm256_set1_ps(1.0f / (float)plane);
    float means[8];
    ptrdiff_t member = 0, column = 0;  // plane q0 + q is member `member` of group `column`
    for (ptrdiff_t q0 = 0; q0 < planes; q0 += 8) {
        const ptrdiff_t n = planes - q0 < 8 ? planes - q0 : 8;
        // A last group of fewer than eight planes repeats its last plane in the spare lanes.
        const float *group_planes[8];
        for (ptrdiff_t q = 0; q < 8; q++) group_planes[q] = input + (q0 + (q < n ? q : n - 1)) * plane;
        global_average_group8(group_planes, plane, tail, scale, means);
        for (ptrdiff_t q = 0; q < n; q++) {
            output[member * row_stride + column] = means[q];
            if (++member == group) { member = 0; column++; }
        }
    }
}

void h2t_global_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane, ptrdiff_t group,
                        float *output, ptrdiff_t row_stride) {
    (void)isa;
    global_average_avx2(input, planes, plane, group, output, row_stride);
}

// MARK: training: Gram-matrix product and exponentials

// One 16 (AVX2) or 32 (AVX-512) column block of z = G a for classes c0 ..< c0 + cb: each output
// is one chain of fused multiply-adds over j ascending from 0, as in the scalar tail below.
#define GRAM_BLOCK(NAME, ATTR, VEC, WIDTH, LOAD, SET1, FMADD, ZERO, STORE, MAXC)                            \
    static inline ATTR __attribute__((always_inline)) void NAME(const float *g, ptrdiff_t n, const float *a,   \
                                                                ptrdiff_t k, ptrdiff_t i0, ptrdiff_t c0,       \
                                                                const int cb, float *z) {                      \
        VEC x0[MAXC], x1[MAXC];                                                                                \
        for (int c = 0; c < cb; c++) { x0[c] = ZERO(); x1[c] = ZERO(); }                                       \
        const float *gp = g + i0, *ap = a + c0;                                                                \
        for (ptrdiff_t j = 0; j < n; j++, gp += n, ap += k) {                                                  \
            VEC g0 = LOAD(gp), g1 = LOAD(gp + WIDTH);                                                          \
            for (int c = 0; c < cb; c++) {                                                                     \
                VEC b = SET1(ap[c]);                                                                           \
                x0[c] = FMADD(g0, b, x0[c]);                                                                   \
                x1[c] = FMADD(g1, b, x1[c]);                                                                   \
            }                                                                                                  \
        }                                                                                                      \
        float t[2 * WIDTH];                                                                                    \
        for (int c = 0; c < cb; c++) {                                                                         \
            STORE(t, x0[c]);                                                                                   \
            STORE(t + WIDTH, x1[c]);                                                                           \
            for (int l = 0; l < 2 * WIDTH; l++) z[(i0 + l) * k + c0 + c] = t[l];                               \
        }                                                                                                      \
    }

GRAM_BLOCK(gram_block_avx2, AVX2, __m256, 8, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_setzero_ps,
           _mm256_storeu_ps, 6)
GRAM_BLOCK(gram_block_avx512, AVX512, __m512, 16, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_setzero_ps,
           _mm512_storeu_ps, 12)

AVX2 static void gram_tail(const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, ptrdiff_t i0, float *z) {
    for (ptrdiff_t i = i0; i < n; i++) {
        for (ptrdiff_t c = 0; c < k; c++) {
            float s = 0;
            for (ptrdiff_t j = 0; j < n; j++) s = __builtin_fmaf(g[j * n + i], a[j * k + c], s);
            z[i * k + c] = s;
        }
    }
}

// Classes go in near-equal chunks of at most 6 (AVX2: 12 accumulators of 16 registers) or 12
// (AVX-512: 24 of 32); the switch gives each chunk width a fully unrolled block.
#define GRAM_CHUNK_CASES(BLOCK)                                                                                \
    case 1: BLOCK(g, n, a, k, i0, c0, 1, z); break;                                                            \
    case 2: BLOCK(g, n, a, k, i0, c0, 2, z); break;                                                            \
    case 3: BLOCK(g, n, a, k, i0, c0, 3, z); break;                                                            \
    case 4: BLOCK(g, n, a, k, i0, c0, 4, z); break;                                                            \
    case 5: BLOCK(g, n, a, k, i0, c0, 5, z); break;                                                            \
    case 6: BLOCK(g, n, a, k, i0, c0, 6, z); break;

AVX2 static void gram_times_avx2(const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, float *z) {
    ptrdiff_t chunks = (k + 5) / 6, i0 = 0;
    for (; i0 + 16 <= n; i0 += 16) {
        ptrdiff_t c0 = 0;
        for (ptrdiff_t q = 1; q <= chunks; q++) {
            ptrdiff_t c1 = k * q / chunks;
            switch (c1 - c0) { GRAM_CHUNK_CASES(gram_block_avx2) }
            c0 = c1;
        }
    }
    gram_tail(g, n, a, k, i0, z);
}

AVX512 static void gram_times_avx512(const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, float *z) {
    ptrdiff_t chunks = (k + 11) / 12, i0 = 0;
    for (; i0 + 32 <= n; i0 += 32) {
        ptrdiff_t c0 = 0;
        for (ptrdiff_t q = 1; q <= chunks; q++) {
            ptrdiff_t c1 = k * q / chunks;
            switch (c1 - c0) {
                GRAM_CHUNK_CASES(gram_block_avx512)
                case 7: gram_block_avx512(g, n, a, k, i0, c0, 7, z); break;
                case 8: gram_block_avx512(g, n, a, k, i0, c0, 8, z); break;
                case 9: gram_block_avx512(g, n, a, k, i0, c0, 9, z); break;
                case 10: gram_block_avx512(g, n, a, k, i0, c0, 10, z); break;
                case 11: gram_block_avx512(g, n, a, k, i0, c0, 11, z); break;
                case 12: gram_block_avx512(g, n, a, k, i0, c0, 12, z); break;
            }
            c0 = c1;
        }
    }
    gram_tail(g, n, a, k, i0, z);
}

void h2t_gram_times(int isa, const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, float *z) {
    if (isa >= H2T_ISA_AVX512) gram_times_avx512(g, n, a, k, z);
    else gram_times_avx2(g, n, a, k, z);
}

// exp(x) for x <= 0: x = n ln 2 + r with |r| <= ln 2 / 2 (n by the 1.5 * 2^52 rounding trick, r by
// Cody-Waite with fdlibm's split of ln 2), the degree-13 Taylor polynomial of e^r by Horner (its
// truncation error is below 4e-18 relatively), times 2^n from the exponent bits. Inputs below
// -708 are raised to -708 (e^-708 ≈ 3e-308 is still normal); NaN stays NaN. The vector bodies and
// the scalar tail do the same operations, so every level gives the same bits.
static const double exp_magic = 6755399441055744.0;  // 1.5 * 2^52
static const double exp_log2e = 1.4426950408889634;
static const double exp_ln2_hi = 6.93147180369123816490e-01;
static const double exp_ln2_lo = 1.90821492927058770002e-10;
static const double exp_top = 1.0 / 6227020800.0;  // 1/13!, then 1/12! ... 1/0! for Horner
static const double exp_coefficients[13] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                            1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                                            1.0 / 6.0, 0.5, 1.0, 1.0};

AVX2 static inline double exp_scalar(double x) {
    x = x > -708.0 || x != x ? x : -708.0;
    double t = __builtin_fma(x, exp_log2e, exp_magic);
    double n = t - exp_magic;
    double r = __builtin_fma(-n, exp_ln2_hi, x);
    r = __builtin_fma(-n, exp_ln2_lo, r);
    double p = exp_top;
    for (int q = 0; q < 13; q++) p = __builtin_fma(p, r, exp_coefficients[q]);
    union { double d; long long i; } bits = {t}, scale;
    scale.i = (long long)((unsigned long long)(bits.i + 1023) << 52);
    return p * scale.d;
}

#define EXP_VECTOR(NAME, ATTR, VEC, IVEC, WIDTH, LOAD, STORE, SET1, MAX, FMADD, SUB, MUL, CAST_I, CAST_D, ADD_I,  \
                   SLL_I, SET1_I)                                                                                \
    ATTR static void NAME(double *values, ptrdiff_t count) {                                                     \
        ptrdiff_t i = 0;                                                                                         \
        for (; i + WIDTH <= count; i += WIDTH) {                                                                 \
            VEC x = MAX(SET1(-708.0), LOAD(values + i));                                                         \
            VEC t = FMADD(x, SET1(exp_log2e), SET1(exp_magic));                                                  \
            VEC n = SUB(t, SET1(exp_magic));                                                                     \
            VEC r = FMADD(SUB(SET1(0.0), n), SET1(exp_ln2_hi), x);                                               \
            r = FMADD(SUB(SET1(0.0), n), SET1(exp_ln2_lo), r);                                                   \
            VEC p = SET1(exp_top);                                                                               \
            for (int q = 0; q < 13; q++) p = FMADD(p, r, SET1(exp_coefficients[q]));                             \
            IVEC scale = SLL_I(ADD_I(CAST_I(t), SET1_I(1023)), 52);                                              \
            STORE(values + i, MUL(p, CAST_D(scale)));                                                            \
        }                                                                                                        \
        for (; i < count; i++) values[i] = exp_scalar(values[i]);                                               \
    }

EXP_VECTOR(exp_avx2, AVX2, __m256d, __m256i, 4, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd, _mm256_max_pd,
           _mm256_fmadd_pd, _mm256_sub_pd, _mm256_mul_pd, _mm256_castpd_si256, _mm256_castsi256_pd, _mm256_add_epi64,
           _mm256_slli_epi64, _mm256_set1_epi64x)
EXP_VECTOR(exp_avx512, AVX512, __m512d, __m512i, 8, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd, _mm512_max_pd,
           _mm512_fmadd_pd, _mm512_sub_pd, _mm512_mul_pd, _mm512_castpd_si512, _mm512_castsi512_pd, _mm512_add_epi64,
           _mm512_slli_epi64, _mm512_set1_epi64)

void h2t_exp_nonpositive(int isa, double *values, ptrdiff_t count) {
    if (isa >= H2T_ISA_AVX512) exp_avx512(values, count);
    else exp_avx2(values, count);
}

// MARK: pointwise (1×1) convolution, channel-major, AVX-512

// out[co * count + p] = bias[co] + sum over ci ascending of w[co][ci] * in[ci * count + p]: each
// output is one chain of fused multiply-adds started from the bias, whichever block or lane
// computes it. Weights are packed by blocks of eight output channels (`h2t_pointwise_pack`), so
// the eight weights of one input channel are contiguous; positions are read in place (no packing
// of the activations, which a GEMM does on every call): 8 channels × 48 positions in 24
// accumulators, then 16 at a time, and up to four last positions across the channels
// (`pointwise_positions_avx512`). An AVX2 variant (4 channels × 16 positions in 8 of its 16
// registers) was slower than OpenBLAS's Haswell GEMM at 64×64: its weights, read once per 16
// positions, came from L3 for the deep layers; 6 × 16 in 12 registers, with packed position
// tiles, came within 5-8% under the GEMM path in total, not worth other AVX2 bits (see
// docs/benchmarks.md); AVX2 keeps the GEMM.

void h2t_pointwise_pack(const float *weights, const float *bias, ptrdiff_t cin, ptrdiff_t cout, float *packed,
                        float *packed_bias) {
    const ptrdiff_t blocks = (cout + 7) / 8;
    for (ptrdiff_t b = 0; b < blocks; b++) {
        for (ptrdiff_t ci = 0; ci < cin; ci++) {
            for (ptrdiff_t j = 0; j < 8; j++) {
                const ptrdiff_t co = 8 * b + j;
                packed[(b * cin + ci) * 8 + j] = co < cout ? weights[co * cin + ci] : 0.0f;
            }
        }
        for (ptrdiff_t j = 0; j < 8; j++) packed_bias[8 * b + j] = 8 * b + j < cout ? bias[8 * b + j] : 0.0f;
    }
}

AVX512 INLINE __m512 linear_weights16(const float *packed, ptrdiff_t cin, ptrdiff_t block, ptrdiff_t blocks, ptrdiff_t ci);

/// Positions `p0 ..< p0 + ne` (ne ≤ 4) of every output channel, with the output channels in the
/// lanes (64 at a time, as `linear_block_avx512` does for examples): the same chains as
/// `pointwise_avx512`, so the same bits. For the last few positions of a map: a 7 × 7 map's 49
/// are three vectors and one position, which a masked vector of 16 lanes computed at the cost of
/// a third of the map (20% of each 7 × 7 layer's time).
AVX512 static void pointwise_positions_avx512(const float *in, ptrdiff_t cin, ptrdiff_t count, ptrdiff_t p0, int ne,
                                              const float *packed, const float *bias, ptrdiff_t cout, float *out) {
    const ptrdiff_t blocks = (cout + 7) / 8;
    // Lane l of an output vector goes to row co0 + 16q + l, `count` floats apart.
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)count));
    for (ptrdiff_t co0 = 0; co0 < cout; co0 += 64) {
        __mmask16 mask[4];
        __m512 acc[4][4];
        for (int q = 0; q < 4; q++) {
            const ptrdiff_t left = cout - co0 - 16 * q;
            mask[q] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
            const __m512 b = _mm512_maskz_loadu_ps(mask[q], bias + co0 + 16 * q);
            for (int j = 0; j < ne; j++) acc[j][q] = b;
        }
        const float *x = in + p0;
        for (ptrdiff_t ci = 0; ci < cin; ci++, x += count) {
            __m512 w[4];
            for (int q = 0; q < 4; q++) w[q] = linear_weights16(packed, cin, co0 / 8 + 2 * q, blocks, ci);
            for (int j = 0; j < ne; j++) {
                const __m512 v = _mm512_set1_ps(x[j]);
                for (int q = 0; q < 4; q++) acc[j][q] = _mm512_fmadd_ps(w[q], v, acc[j][q]);
            }
        }
        for (int j = 0; j < ne; j++) {
            for (int q = 0; q < 4; q++) {
                if (mask[q]) _mm512_mask_i32scatter_ps(out + (co0 + 16 * q) * count + p0 + j, mask[q], rows, acc[j][q], 4);
            }
        }
    }
}

AVX512 static void pointwise_avx512(const float *in, ptrdiff_t cin, ptrdiff_t count, const float *packed,
                                    const float *bias, ptrdiff_t cout, float *out) {
    const ptrdiff_t blocks = (cout + 7) / 8;
    for (ptrdiff_t p = 0; p < count;) {
        const ptrdiff_t left = count - p;
        if (left >= 48) {
            for (ptrdiff_t b = 0; b < blocks; b++) {
                const float *w = packed + b * cin * 8;
                __m512 a[8][3];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) a[j][0] = a[j][1] = a[j][2] = _mm512_set1_ps(bias[8 * b + j]);
                const float *x = in + p;
                for (ptrdiff_t ci = 0; ci < cin; ci++, x += count, w += 8) {
                    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16), x2 = _mm512_loadu_ps(x + 32);
#pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) {
                        const __m512 wj = _mm512_set1_ps(w[j]);
                        a[j][0] = _mm512_fmadd_ps(wj, x0, a[j][0]);
                        a[j][1] = _mm512_fmadd_ps(wj, x1, a[j][1]);
                        a[j][2] = _mm512_fmadd_ps(wj, x2, a[j][2]);
                    }
                }
                const ptrdiff_t rows = cout - 8 * b < 8 ? cout - 8 * b : 8;
                for (ptrdiff_t j = 0; j < rows; j++) {
                    float *o = out + (8 * b + j) * count + p;
                    _mm512_storeu_ps(o, a[j][0]);
                    _mm512_storeu_ps(o + 16, a[j][1]);
                    _mm512_storeu_ps(o + 32, a[j][2]);
                }
            }
            p += 48;
        } else if (left <= 4 && count <= (1 << 26)) {
            // A few last positions (more, and a masked vector is cheaper than the weights reread).
            pointwise_positions_avx512(in, cin, count, p, (int)left, packed, bias, cout, out);
            p = count;
        } else {
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            for (ptrdiff_t b = 0; b < blocks; b++) {
                const float *w = packed + b * cin * 8;
                __m512 a[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) a[j] = _mm512_set1_ps(bias[8 * b + j]);
                const float *x = in + p;
                for (ptrdiff_t ci = 0; ci < cin; ci++, x += count, w += 8) {
                    const __m512 x0 = _mm512_maskz_loadu_ps(m, x);
#pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(w[j]), x0, a[j]);
                }
                const ptrdiff_t rows = cout - 8 * b < 8 ? cout - 8 * b : 8;
                for (ptrdiff_t j = 0; j < rows; j++) _mm512_mask_storeu_ps(out + (8 * b + j) * count + p, m, a[j]);
            }
            p += left >= 16 ? 16 : left;
        }
    }
}

void h2t_pointwise_avx512(const float *in, ptrdiff_t cin, ptrdiff_t count, const float *packed, const float *bias,
                          ptrdiff_t cout, float *out) {
    pointwise_avx512(in, cin, count, packed, bias, cout, out);
}

// MARK: classifier (fully connected)

// out[e * cout + co] = bias[co] + sum over ci ascending of w[co][ci] * in[e * cin + ci]: the same
// chains as `pointwise_avx512` with the output channels in the lanes, 32 channels of 4 examples
// in 8 accumulators. A GEMM repacked MobileNetV2's 1,280 × 1,000 classifier on every call of a
// one-example slice (4% of a 224×224 ingest's CPU). Weights are `h2t_pointwise_pack`'s: block
// `b`'s eight weights of input channel `ci` are contiguous, so 16 channels are two 256-bit loads.
// (On 7×7 maps, 49 positions, where `pointwise_avx512` spends a fourth vector on one position,
// channels in the lanes were slower than that kernel: weights reloaded every four positions and
// channel-major outputs scattered.)

AVX512 INLINE __m512 linear_weights16(const float *packed, ptrdiff_t cin, ptrdiff_t block, ptrdiff_t blocks, ptrdiff_t ci) {
    const __m256 lo = block < blocks ? _mm256_loadu_ps(packed + (block * cin + ci) * 8) : _mm256_setzero_ps();
    const __m256 hi = block + 1 < blocks ? _mm256_loadu_ps(packed + ((block + 1) * cin + ci) * 8) : _mm256_setzero_ps();
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

AVX512 INLINE void linear_block_avx512(const float *in, ptrdiff_t cin, const float *packed, const float *bias, ptrdiff_t cout,
                                ptrdiff_t co0, ptrdiff_t e0, float *out, const int ne) {
    const ptrdiff_t blocks = (cout + 7) / 8, block = co0 / 8;
    const ptrdiff_t left0 = cout - co0, left1 = cout - co0 - 16;
    const __mmask16 m0 = left0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left0) - 1);
    const __mmask16 m1 = left1 >= 16 ? (__mmask16)0xFFFF : left1 <= 0 ? (__mmask16)0 : (__mmask16)((1u << left1) - 1);
    __m512 acc[4][2];
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bias + co0), b1 = _mm512_maskz_loadu_ps(m1, bias + co0 + 16);
    for (int j = 0; j < ne; j++) { acc[j][0] = b0; acc[j][1] = b1; }
    const float *x = in + e0 * cin;
    for (ptrdiff_t ci = 0; ci < cin; ci++) {
        const __m512 w0 = linear_weights16(packed, cin, block, blocks, ci);
        const __m512 w1 = linear_weights16(packed, cin, block + 2, blocks, ci);
        for (int j = 0; j < ne; j++) {
            const __m512 v = _mm512_set1_ps(x[j * cin + ci]);
            acc[j][0] = _mm512_fmadd_ps(w0, v, acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(w1, v, acc[j][1]);
        }
    }
    for (int j = 0; j < ne; j++) {
        float *o = out + (e0 + j) * cout + co0;
        _mm512_mask_storeu_ps(o, m0, acc[j][0]);
        _mm512_mask_storeu_ps(o + 16, m1, acc[j][1]);
    }
}

/// The AVX2 variant: 16 output channels (two packed blocks of eight, each one 256-bit load) of 4
/// examples in 8 accumulators; the same chains, so the same bits as `linear_avx512`.
AVX2 INLINE void linear_block_avx2(const float *in, ptrdiff_t cin, const float *packed, const float *bias, ptrdiff_t cout,
                                   ptrdiff_t co0, ptrdiff_t e0, float *out, const int ne) {
    const ptrdiff_t blocks = (cout + 7) / 8, block = co0 / 8;
    const int second = block + 1 < blocks;
    const __m256i m0 = tail_mask8(cout - co0), m1 = tail_mask8(cout - co0 - 8);
    __m256 acc[4][2];
    const __m256 b0 = _mm256_loadu_ps(bias + co0), b1 = second ? _mm256_loadu_ps(bias + co0 + 8) : _mm256_setzero_ps();
    for (int j = 0; j < ne; j++) { acc[j][0] = b0; acc[j][1] = b1; }
    const float *x = in + e0 * cin;
    const float *w = packed + block * cin * 8;
    for (ptrdiff_t ci = 0; ci < cin; ci++) {
        const __m256 w0 = _mm256_loadu_ps(w + ci * 8);
        const __m256 w1 = second ? _mm256_loadu_ps(w + (cin + ci) * 8) : _mm256_setzero_ps();
        for (int j = 0; j < ne; j++) {
            const __m256 v = _mm256_set1_ps(x[j * cin + ci]);
            acc[j][0] = _mm256_fmadd_ps(w0, v, acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(w1, v, acc[j][1]);
        }
    }
    for (int j = 0; j < ne; j++) {
        float *o = out + (e0 + j) * cout + co0;
        _mm256_maskstore_ps(o, m0, acc[j][0]);
        _mm256_maskstore_ps(o + 8, m1, acc[j][1]);
    }
}

// Output channels in blocks of `CHANNELS`, examples four at a time (each case a constant count,
// so the block's loops unroll).
#define LINEAR(NAME, BLOCK, CHANNELS, ATTR)                                                                     \
    ATTR static void NAME(const float *in, ptrdiff_t cin, ptrdiff_t examples, const float *packed, const float *bias, \
                          ptrdiff_t cout, float *out) {                                                          \
        for (ptrdiff_t co0 = 0; co0 < cout; co0 += CHANNELS) {                                                 \
            for (ptrdiff_t e0 = 0; e0 < examples; e0 += 4) {                                                   \
                switch (examples - e0 < 4 ? examples - e0 : 4) {                                               \
                case 1: BLOCK(in, cin, packed, bias, cout, co0, e0, out, 1); break;                            \
                case 2: BLOCK(in, cin, packed, bias, cout, co0, e0, out, 2); break;                            \
                case 3: BLOCK(in, cin, packed, bias, cout, co0, e0, out, 3); break;                            \
                default: BLOCK(in, cin, packed, bias, cout, co0, e0, out, 4); break;                           \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

LINEAR(linear_avx2, linear_block_avx2, 16, AVX2)
LINEAR(linear_avx512, linear_block_avx512, 32, AVX512)

void h2t_linear(int isa, const float *in, ptrdiff_t cin, ptrdiff_t examples, const float *packed, const float *bias,
                ptrdiff_t cout, float *out) {
    if (isa >= H2T_ISA_AVX512) linear_avx512(in, cin, examples, packed, bias, cout, out);
    else linear_avx2(in, cin, examples, packed, bias, cout, out);
}

// MARK: bfloat16 byte planes back to rows (tile decoding)

// Eight rows of the four columns at a time: each column's low and high bytes widened to the
// float's bits 16-23 and 24-31, then a 4×8 transpose (unpack, then shuffle of 64-bit pairs) to
// eight rows of four floats.
AVX2 static void bf16_rows4_avx2(const unsigned char *lo, const unsigned char *hi, ptrdiff_t plane, ptrdiff_t rows,
                                 float *out, ptrdiff_t stride) {
    ptrdiff_t r = 0;
    for (; r + 8 <= rows; r += 8) {
        __m256 v[4];
        for (int j = 0; j < 4; j++) {
            const __m256i l = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(lo + j * plane + r)));
            const __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(hi + j * plane + r)));
            v[j] = _mm256_castsi256_ps(_mm256_or_si256(_mm256_slli_epi32(h, 24), _mm256_slli_epi32(l, 16)));
        }
        const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
        const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
        const __m256 r04 = _mm256_shuffle_ps(t0, t2, 0x44), r15 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 r26 = _mm256_shuffle_ps(t1, t3, 0x44), r37 = _mm256_shuffle_ps(t1, t3, 0xEE);
        float *row = out + r * stride;
        _mm_storeu_ps(row, _mm256_castps256_ps128(r04));
        _mm_storeu_ps(row + stride, _mm256_castps256_ps128(r15));
        _mm_storeu_ps(row + 2 * stride, _mm256_castps256_ps128(r26));
        _mm_storeu_ps(row + 3 * stride, _mm256_castps256_ps128(r37));
        _mm_storeu_ps(row + 4 * stride, _mm256_extractf128_ps(r04, 1));
        _mm_storeu_ps(row + 5 * stride, _mm256_extractf128_ps(r15, 1));
        _mm_storeu_ps(row + 6 * stride, _mm256_extractf128_ps(r26, 1));
        _mm_storeu_ps(row + 7 * stride, _mm256_extractf128_ps(r37, 1));
    }
    for (; r < rows; r++) {
        for (int j = 0; j < 4; j++) {
            const unsigned bits = (unsigned)hi[j * plane + r] << 24 | (unsigned)lo[j * plane + r] << 16;
            __builtin_memcpy(out + r * stride + j, &bits, 4);
        }
    }
}

void h2t_bf16_rows4(int isa, const unsigned char *lo, const unsigned char *hi, ptrdiff_t plane, ptrdiff_t rows,
                    float *out, ptrdiff_t stride) {
    (void)isa;
    bf16_rows4_avx2(lo, hi, plane, rows, out, stride);
}

// MARK: 16-bit floats widened to float32

#define F16C __attribute__((target("avx2,f16c")))

// Front to back, eight values per step: the eight floats stored (bytes [4i, 4i + 32)) end at or
// before the 16-bit values still to be read when these are the back half of the same bytes
// (from 2n + 2i + 16), so the widening may run in place. Bytes, not typed pointers: the two
// views alias. Every half and every bfloat16 is exactly a float.
F16C static void half_to_float_f16c(const unsigned char *in, ptrdiff_t n, unsigned char *out) {
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i bits = _mm_loadu_si128((const __m128i *)(in + 2 * i));
        _mm256_storeu_ps((float *)(out + 4 * i), _mm256_cvtph_ps(bits));
    }
    for (; i < n; i++) {
        unsigned short bits;
        __builtin_memcpy(&bits, in + 2 * i, 2);
        const float value = _cvtsh_ss(bits);
        __builtin_memcpy(out + 4 * i, &value, 4);
    }
}

AVX2 static void bf16_to_float_avx2(const unsigned char *in, ptrdiff_t n, unsigned char *out) {
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + 2 * i)));
        _mm256_storeu_si256((__m256i *)(out + 4 * i), _mm256_slli_epi32(wide, 16));
    }
    for (; i < n; i++) {
        unsigned short bits;
        __builtin_memcpy(&bits, in + 2 * i, 2);
        const unsigned wide = (unsigned)bits << 16;
        __builtin_memcpy(out + 4 * i, &wide, 4);
    }
}

int h2t_widen16(int isa, int bfloat, const void *in, ptrdiff_t n, void *out) {
    if (isa < H2T_ISA_AVX2) return 0;
    if (bfloat) bf16_to_float_avx2((const unsigned char *)in, n, (unsigned char *)out);
    else half_to_float_f16c((const unsigned char *)in, n, (unsigned char *)out);
    return 1;
}

// MARK: CRC-32 by carry-less multiplication

// Reading a block of data as a polynomial over GF(2) (bit-reflected, as zlib's CRC-32 does), a
// 128-bit block A followed by d bits of data is congruent, modulo the CRC polynomial P, to
// lo(A) * (x^(d+32) mod P)' + hi(A) * (x^(d+96) mod P)' placed over the next block (the
// constants bit-reflected, as PCLMULQDQ on reflected data needs; the standard pairs for d = 512
// and d = 128). Folding every block into the last leaves 16 bytes with the data's CRC.
#define PCLMUL __attribute__((target("pclmul,sse4.1")))

PCLMUL static inline __m128i crc32_fold(__m128i x, __m128i k, __m128i next) {
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), next);
}

int h2t_cpu_has_pclmul(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c >> 1) & 1 && (c >> 19) & 1;  // PCLMULQDQ and SSE4.1
}

PCLMUL void h2t_crc32_fold(unsigned crc, const unsigned char *data, ptrdiff_t blocks, unsigned char *out) {
    const __m128i by64 = _mm_set_epi64x(0x1c6e41596LL, 0x154442bd4LL);
    const __m128i by16 = _mm_set_epi64x(0x0ccaa009eLL, 0x1751997d0LL);
    __m128i x0 = _mm_loadu_si128((const __m128i *)data), x1 = _mm_loadu_si128((const __m128i *)(data + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(data + 32)), x3 = _mm_loadu_si128((const __m128i *)(data + 48));
    // zlib's running value enters complemented into the first 32 bits.
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)~crc));
    data += 64;
    blocks -= 4;
    for (; blocks >= 4; blocks -= 4, data += 64) {
        x0 = crc32_fold(x0, by64, _mm_loadu_si128((const __m128i *)data));
        x1 = crc32_fold(x1, by64, _mm_loadu_si128((const __m128i *)(data + 16)));
        x2 = crc32_fold(x2, by64, _mm_loadu_si128((const __m128i *)(data + 32)));
        x3 = crc32_fold(x3, by64, _mm_loadu_si128((const __m128i *)(data + 48)));
    }
    x0 = crc32_fold(x0, by16, x1);
    x0 = crc32_fold(x0, by16, x2);
    x0 = crc32_fold(x0, by16, x3);
    for (; blocks > 0; blocks--, data += 16) x0 = crc32_fold(x0, by16, _mm_loadu_si128((const __m128i *)data));
    _mm_storeu_si128((__m128i *)out, x0);
}

#else  // not x86-64: no variants; callers stay on their portable loops.

void h2t_transpose(int isa, const float *src, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t src_stride, float *dst,
                   ptrdiff_t dst_stride) {
    (void)isa; (void)src; (void)rows; (void)cols; (void)src_stride; (void)dst; (void)dst_stride;
}
void h2t_im2col(int isa, const float *input, ptrdiff_t channels, ptrdiff_t batch, ptrdiff_t height, ptrdiff_t width,
                int channel_major, ptrdiff_t kernel, ptrdiff_t stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
                ptrdiff_t oh, ptrdiff_t ow, float *columns) {
    (void)isa; (void)input; (void)channels; (void)batch; (void)height; (void)width; (void)channel_major; (void)kernel;
    (void)stride; (void)pad_top; (void)pad_left; (void)oh; (void)ow; (void)columns;
}
void h2t_deinterleave(int isa, const float *source, ptrdiff_t count, float *evens, float *odds) {
    (void)isa; (void)source; (void)count; (void)evens; (void)odds;
}
void h2t_interleave_rows_u8(int isa, const unsigned char *rows, ptrdiff_t row_step, ptrdiff_t length, float *out) {
    (void)isa; (void)rows; (void)row_step; (void)length; (void)out;
}
int h2t_cpu_isa(void) { return H2T_ISA_BASELINE; }
void h2t_depthwise_rows(int isa, float *out, ptrdiff_t width, ptrdiff_t height, const float *rows, ptrdiff_t row_step,
                        const ptrdiff_t *offsets, ptrdiff_t taps, const float *weights, float bias) {
    (void)isa; (void)out; (void)width; (void)height; (void)rows; (void)row_step; (void)offsets; (void)taps; (void)weights; (void)bias;
}
void h2t_depthwise_positions(int isa, float *output, const float *input, ptrdiff_t n, ptrdiff_t positions,
                             const ptrdiff_t *starts, const ptrdiff_t *weight_index, const ptrdiff_t *input_index,
                             const float *weights, float bias) {
    (void)isa; (void)output; (void)input; (void)n; (void)positions; (void)starts; (void)weight_index; (void)input_index; (void)weights; (void)bias;
}
void h2t_relu6(int isa, float *out, const float *in, ptrdiff_t count) { (void)isa; (void)out; (void)in; (void)count; }
void h2t_add(int isa, float *out, const float *a, const float *b, ptrdiff_t count) {
    (void)isa; (void)out; (void)a; (void)b; (void)count;
}
void h2t_window_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane_stride, ptrdiff_t height,
                        ptrdiff_t width, ptrdiff_t window, float *output, ptrdiff_t output_stride, float *scratch) {
    (void)isa; (void)input; (void)planes; (void)plane_stride; (void)height; (void)width; (void)window; (void)output;
    (void)output_stride; (void)scratch;
}
void h2t_global_average(int isa, const float *input, ptrdiff_t planes, ptrdiff_t plane, ptrdiff_t group,
                        float *output, ptrdiff_t row_stride) {
    (void)isa; (void)input; (void)planes; (void)plane; (void)group; (void)output; (void)row_stride;
}
void h2t_split_bf16(int isa, const float *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                    unsigned char *lo, unsigned char *hi) {
    (void)isa; (void)source; (void)row_stride; (void)rows; (void)cols; (void)lo; (void)hi;
}
void h2t_split_u16(int isa, const unsigned short *source, ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t cols,
                   unsigned char *lo, unsigned char *hi) {
    (void)isa; (void)source; (void)row_stride; (void)rows; (void)cols; (void)lo; (void)hi;
}
void h2t_bf16_bits(int isa, const float *source, ptrdiff_t count, unsigned short *bits) {
    (void)isa; (void)source; (void)count; (void)bits;
}
void h2t_gram_times(int isa, const float *g, ptrdiff_t n, const float *a, ptrdiff_t k, float *z) {
    (void)isa; (void)g; (void)n; (void)a; (void)k; (void)z;
}
void h2t_exp_nonpositive(int isa, double *values, ptrdiff_t count) { (void)isa; (void)values; (void)count; }
int h2t_cpu_has_pclmul(void) { return 0; }
int h2t_widen16(int isa, int bfloat, const void *in, ptrdiff_t n, void *out) {
    (void)isa; (void)bfloat; (void)in; (void)n; (void)out;
    return 0;
}
void h2t_pointwise_pack(const float *weights, const float *bias, ptrdiff_t cin, ptrdiff_t cout, float *packed,
                        float *packed_bias) {
    (void)weights; (void)bias; (void)cin; (void)cout; (void)packed; (void)packed_bias;
}
void h2t_pointwise_avx512(const float *in, ptrdiff_t cin, ptrdiff_t count, const float *packed, const float *bias,
                          ptrdiff_t cout, float *out) {
    (void)in; (void)cin; (void)count; (void)packed; (void)bias; (void)cout; (void)out;
}
void h2t_linear(int isa, const float *in, ptrdiff_t cin, ptrdiff_t examples, const float *packed, const float *bias,
                ptrdiff_t cout, float *out) {
    (void)isa; (void)in; (void)cin; (void)examples; (void)packed; (void)bias; (void)cout; (void)out;
}
void h2t_bf16_rows4(int isa, const unsigned char *lo, const unsigned char *hi, ptrdiff_t plane, ptrdiff_t rows,
                    float *out, ptrdiff_t stride) {
    (void)isa; (void)lo; (void)hi; (void)plane; (void)rows; (void)out; (void)stride;
}
void h2t_crc32_fold(unsigned crc, const unsigned char *data, ptrdiff_t blocks, unsigned char *out) {
    (void)crc; (void)data; (void)blocks; (void)out;
}

#endif

// MARK: byte statistics (every platform)

unsigned long long h2t_byte_collisions(const unsigned char *bytes, ptrdiff_t count) {
    unsigned counts[4][256] = {{0}};
    ptrdiff_t i = 0;
    for (; i + 4 <= count; i += 4) {
        counts[0][bytes[i]]++;
        counts[1][bytes[i + 1]]++;
        counts[2][bytes[i + 2]]++;
        counts[3][bytes[i + 3]]++;
    }
    for (; i < count; i++) counts[0][bytes[i]]++;
    unsigned long long sum = 0;
    for (int v = 0; v < 256; v++) {
        const unsigned long long c = (unsigned long long)counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v];
        sum += c * c;
    }
    return sum;
}

// MARK: text (every platform)

#include <stdio.h>

ptrdiff_t h2t_format_g6_fields(const float *values, ptrdiff_t count, char *out, ptrdiff_t capacity) {
    ptrdiff_t length = 0;
    for (ptrdiff_t i = 0; i < count; i++) {
        if (capacity - length <= 1) return -1;
        const int written = snprintf(out + length, (size_t)(capacity - length), ",%.6g", (double)values[i]);
        if (written < 0 || written >= capacity - length) return -1;
        length += written;
    }
    return length;
}
