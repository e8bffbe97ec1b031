import CH2TKernels
import CZlib
import H2TCore

/// CRC-32 with zlib's polynomial and conventions (the checksum of every tile header and frame):
/// zlib's table-driven `crc32` for short inputs, on a CPU without carry-less multiplication or
/// under `H2T_ISA=baseline`; otherwise the multiple of 16 bytes at its start is folded with
/// PCLMULQDQ (`h2t_crc32_fold`), several times faster, and zlib finishes the last 16 to 79
/// bytes. Both give the same value for every input.
public enum CRC32 {
    /// Inputs from this many bytes are folded.
    static let foldFrom = 64
    /// Whether folding is used here.
    public static let folds = InstructionSet.selected != .baseline && h2t_cpu_has_pclmul() != 0

    /// The CRC-32 of `bytes`, continuing from `crc` (0 to start), as zlib's `crc32(crc, ...)`.
    @inline(__always)
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard folds, bytes.count >= foldFrom, let base = bytes.baseAddress else { return zlib(bytes, continuing: crc) }
        let blocks = bytes.count / 16
        var folded = (UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &folded) { out in
            h2t_crc32_fold(crc, base.assumingMemoryBound(to: UInt8.self), blocks, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            let head = zlib(UnsafeRawBufferPointer(out), continuing: 0xFFFF_FFFF)
            return zlib(UnsafeRawBufferPointer(rebasing: bytes[(blocks * 16)...]), continuing: head)
        }
    }

    /// zlib's `crc32(crc, bytes)`: the reference, and the path for short inputs.
    public static func zlib(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        UInt32(truncatingIfNeeded: CZlib.crc32_z(UInt(crc), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count))
    }
}
