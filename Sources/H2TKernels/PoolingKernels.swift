/// The inner loops of Head2Toe's pooling over raw memory: the one numeric kernel where
/// `-Ounchecked` measurably pays (docs/reliability.md, "Safe builds"), so it lives in this
/// target, the only one built with it. Nothing here reads a file or checks a size: the caller
/// (`H2TCore.Head2ToePooling`, built with every check) validates shapes and buffer sizes first.
public enum PoolingKernels {
    /// Sum of `count` floats with eight independent accumulators (vectorisable).
    @inline(__always)
    public static func sum(_ values: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = SIMD8<Float>()
        var i = 0
        let raw = UnsafeRawPointer(values)
        while i + 8 <= count {
            lanes += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        var total = lanes.sum()
        while i < count {
            total += values[i]
            i += 1
        }
        return total
    }

    /// `output[ch]` = the mean of plane `ch`, for `channels` planes of `plane` floats.
    public static func globalAverage(_ source: UnsafePointer<Float>, channels: Int, plane: Int,
                                     into output: UnsafeMutablePointer<Float>) {
        let scale = 1 / Float(plane)
        for ch in 0..<channels { output[ch] = sum(source + ch * plane, count: plane) * scale }
    }

    /// Average pooling with window and stride `p`, no padding, of `channels` planes of
    /// `height × width` into `((height - p) / p + 1) × ((width - p) / p + 1)` cells per channel,
    /// channel-major (`c, i, j`). `p` must be in `1...min(height, width)`.
    public static func windowAverage(_ source: UnsafePointer<Float>, channels: Int, height: Int, width: Int, window p: Int,
                                     into output: UnsafeMutablePointer<Float>) {
        // Add the window's `p` input rows into one row (contiguous, so the compiler vectorises
        // it), then sum each run of `p` values of that row.
        let plane = height * width
        let oh = (height - p) / p + 1, ow = (width - p) / p + 1
        let used = ow * p
        let scale = 1 / Float(p * p)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(used, 1)) { rowSum in
            var o = 0
            for ch in 0..<channels {
                let base = source + ch * plane
                for i in 0..<oh {
                    let first = base + (i * p) * width
                    for k in 0..<used { rowSum[k] = first[k] }
                    for di in 1..<max(p, 1) {
                        let row = first + di * width
                        for k in 0..<used { rowSum[k] += row[k] }
                    }
                    for j in 0..<ow {
                        var total: Float = 0
                        for k in (j * p)..<((j + 1) * p) { total += rowSum[k] }
                        output[o] = total * scale
                        o += 1
                    }
                }
            }
        }
    }
}
