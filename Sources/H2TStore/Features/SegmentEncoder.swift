import Dispatch

/// Encodes a block of rows into the tiles of one feature set, using both cores.
///
/// Keeps one `TileEncoder` (and its zstd context) per worker, reused across segments.
public final class SegmentEncoder: @unchecked Sendable {
    // @unchecked Sendable: each worker index owns exactly one encoder during `encode`.
    /// The feature set laid out by this encoder.
    public let manifest: FeatureSetManifest
    private let encoders: [TileEncoder]

    /// Creates an encoder for a feature set, with `workers` threads.
    public init(manifest: FeatureSetManifest, workers: Int = 2) {
        self.manifest = manifest
        encoders = (0..<max(1, workers)).map { _ in TileEncoder(codec: manifest.codec) }
    }

    /// Encodes `rows` rows of `manifest.width` features (row-major, contiguous) into one tile per column block.
    public func encode(_ features: UnsafePointer<Float>, rows: Int) -> [[UInt8]] {
        let blocks = manifest.columnBlocks
        let width = manifest.width
        let blockWidth = manifest.columnBlock
        let out = TileSlots(count: blocks)
        let workers = encoders.count
        let source = UnsafeSendablePointer(features)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let encoder = encoders[worker]
            var block = worker
            while block < blocks {
                let first = block * blockWidth
                let cols = min(blockWidth, width - first)
                out.set(block, encoder.encode(source.pointer + first, rowStride: width, rows: rows, cols: cols))
                block += workers
            }
        }
        return out.all
    }
}

/// Result slots written by distinct workers at distinct indices.
final class TileSlots: @unchecked Sendable {
    // @unchecked Sendable: every index is written by exactly one worker, read after all finish.
    private let storage: UnsafeMutablePointer<[UInt8]>

    init(count: Int) {
        storage = .allocate(capacity: count)
        storage.initialize(repeating: [], count: count)
        self.count = count
    }

    private let count: Int

    func set(_ index: Int, _ value: [UInt8]) { storage[index] = value }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }

    func collect() -> [[UInt8]] { Array(UnsafeBufferPointer(start: storage, count: count)) }
}

extension TileSlots {
    var all: [[UInt8]] { collect() }
}

/// A pointer handed to worker threads that write disjoint parts of the memory behind it.
struct UnsafeSendablePointer<T>: @unchecked Sendable {
    // @unchecked Sendable: callers guarantee disjoint access from each worker.
    let pointer: UnsafePointer<T>
    init(_ pointer: UnsafePointer<T>) { self.pointer = pointer }
}

/// A mutable pointer handed to worker threads that write disjoint parts of the memory behind it.
struct UnsafeSendableMutablePointer<T>: @unchecked Sendable {
    // @unchecked Sendable: callers guarantee disjoint writes from each worker.
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}
