import CH2TKernels

/// `z = G a` for a symmetric `n × n` Gram matrix `G` and an `n × k` coefficient matrix `a`: the
/// product behind every step of the kernel-form final head (`n ≈ 800`, `k` = the classes).
///
/// Why not OpenBLAS: with `k` = 10 right-hand sides `sgemm` packs all of `G` on every call and
/// runs its micro-kernel a third empty, so one step cost about 0.22 ms on Haswell kernels; the
/// `CH2TKernels` loop streams `G` once, 16 or 32 columns at a time with every class in registers
/// (`docs/benchmarks.md`, "Training"). Each output is one chain of fused multiply-adds in a fixed
/// order, so AVX2 and AVX-512 give the same bits. A CPU without AVX2 keeps `sgemm`.
public enum GramProduct {
    /// Writes `G a` (`n × k`, row-major) to `z`. `gram` holds `n × n` values, `coefficients`
    /// and `z` hold `n × k`.
    public static func multiply(gram: UnsafePointer<Float>, rows n: Int, coefficients: UnsafePointer<Float>,
                                classes k: Int, into z: UnsafeMutablePointer<Float>) {
        guard n > 0, k > 0 else { return }
        let isa = InstructionSet.selected
        if isa >= .avx2 {
            h2t_gram_times(Int32(isa.rawValue), gram, n, coefficients, k, z)
        } else {
            BLAS.sgemm(m: n, n: k, k: n, a: gram, lda: n, b: coefficients, ldb: k, c: z, ldc: k)
        }
    }

    /// Makes a Gram matrix exactly symmetric by copying its upper triangle onto its lower one
    /// (`sgemm`'s `X Xᵀ` can differ in the last bit between `(i, j)` and `(j, i)`), so that the
    /// column reads of ``multiply(gram:rows:coefficients:classes:into:)`` and the row reads of
    /// cross-validation's blocks see the same numbers.
    public static func symmetrize(_ gram: UnsafeMutablePointer<Float>, rows n: Int) {
        for i in 0..<n {
            for j in 0..<i { gram[i * n + j] = gram[j * n + i] }
        }
    }
}
