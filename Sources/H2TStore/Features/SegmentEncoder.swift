import H2TCore

/// Encodes a block of rows into the tiles of one feature set, on a ``Parallelism``'s threads.
///
/// Keeps one `TileEncoder` (and its zstd context) per worker, reused across segments.
public final class SegmentEncoder: @unchecked Sendable {
    // @unchecked Sendable: each worker index owns exactly one encoder during `encode`.
    /// The feature set laid out by this encoder.
    public let manifest: FeatureSetManifest
    private let encoders: [TileEncoder]
    private let parallelism: Parallelism

    /// Creates an encoder for a feature set, encoding on `parallelism`'s threads (tiles are
    /// independent, so the bytes do not depend on them).
    public init(manifest: FeatureSetManifest, parallelism: Parallelism = .default) {
        self.manifest = manifest
        self.parallelism = parallelism
        encoders = (0..<parallelism.workers(items: manifest.columnBlocks)).map { _ in TileEncoder(codec: manifest.codec) }
    }

    /// Encodes `rows` rows of `manifest.width` features (row-major, contiguous) into one tile per column block.
    public func encode(_ features: UnsafePointer<Float>, rows: Int) -> [[UInt8]] {
        tiles { encoder, first, cols in encoder.encode(features + first, rowStride: manifest.width, rows: rows, cols: cols) }
    }

    /// Encodes `rows` rows of `manifest.width` values already in the codec's 16-bit storage type
    /// (bit patterns, row-major, contiguous): the tiles `encode(_:rows:)` gives for the floats
    /// they stand for.
    public func encode(bits: UnsafePointer<UInt16>, rows: Int) -> [[UInt8]] {
        tiles { encoder, first, cols in encoder.encode(bits: bits + first, rowStride: manifest.width, rows: rows, cols: cols) }
    }

    /// One tile per column block, `encodeBlock(encoder, first column, columns)` run on the workers.
    private func tiles(_ encodeBlock: (TileEncoder, Int, Int) -> [UInt8]) -> [[UInt8]] {
        let blocks = manifest.columnBlocks
        let width = manifest.width
        let blockWidth = manifest.columnBlock
        let out = WorkerSlots<[UInt8]>(count: blocks)
        // Encoding cannot fail, so the only error `forEachWorker` could rethrow is none.
        try! Parallel.forEachWorker(itemCount: blocks, parallelism: parallelism) { worker, next in
            let encoder = encoders[worker]
            while let block = next() {
                let first = block * blockWidth
                out.set(block, encodeBlock(encoder, first, min(blockWidth, width - first)))
            }
        }
        return out.values.map { $0! }
    }
}
