import COpenBLAS

/// The one door to BLAS for every module (row-major, single precision).
///
/// Kept in one place so that the choice of OpenBLAS kernels (see `OPENBLAS_CORETYPE` in the
/// README) is made once for the whole process.
public enum BLAS {
    /// `C = alpha * op(A) * op(B) + beta * C`, row-major; `op(X)` is `X` or its transpose.
    @inlinable
    public static func sgemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
