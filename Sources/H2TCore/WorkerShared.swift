#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Small pieces for handing data to parallel workers (`Parallel`, `DispatchQueue.concurrentPerform`),
/// shared by every module so there is one audited place for the `@unchecked Sendable` they need.

/// Carries a value (a pointer into a buffer that outlives the concurrent section, a per-worker
/// workspace) into a concurrently executed closure.
public struct UnsafeSendable<T>: @unchecked Sendable {
    // @unchecked Sendable: callers guarantee that workers touch disjoint parts of what `value`
    // points to, and that it outlives the concurrent section.
    /// The carried value.
    public let value: T

    /// Wraps `value`.
    public init(_ value: T) { self.value = value }
}

/// One result slot per work item, each written by exactly one worker and read after all finish.
public final class WorkerSlots<T>: @unchecked Sendable {
    // @unchecked Sendable: slots are disjoint per worker and read only after the workers finish.
    private let slots: UnsafeMutableBufferPointer<T?>

    /// `count` empty slots.
    public init(count: Int) {
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil)
    }

    deinit {
        slots.deinitialize()
        slots.deallocate()
    }

    /// Fills slot `index`.
    public func set(_ index: Int, _ value: T) { slots[index] = value }

    /// Slot `index` (`nil` until filled); read it only after its writer has finished, which the
    /// caller orders (`Parallel.forEachWhenReady` does for an item's dependencies).
    public subscript(index: Int) -> T? { slots[index] }

    /// Every slot, in order (`nil` for one never filled).
    public var values: [T?] { Array(slots) }
}

/// Float buffers that workers hand back for the next task to fill: a task that builds a large
/// matrix and drops it reuses the memory of an earlier one instead of faulting in fresh pages
/// (several milliseconds per hundred megabytes, and a lock every worker contends for). Holds at
/// most one buffer per worker that returned one; a buffer taken while another task still shares
/// it is simply copied on write, so reuse never changes a result.
public final class FloatBufferPool: Sendable {
    private let buffers = Mutex<[[Float]]>([])

    /// An empty pool.
    public init() {}

    /// A buffer to fill (empty, with the capacity of one handed back earlier, when there is one).
    public func take() -> [Float] {
        var buffer = buffers.withLock { $0.popLast() } ?? []
        buffer.removeAll(keepingCapacity: true)
        return buffer
    }

    /// Hands `buffer` back for a later `take()`.
    public func give(_ buffer: consuming [Float]) {
        let buffer = consume buffer
        buffers.withLock { $0.append(buffer) }
    }
}

/// Float memory kept from one use to the next, for the large per-segment buffers of an ingest
/// (a segment's preprocessed images, its row matrices): a fresh allocation of that size is
/// mapped anew and pays a page fault and a kernel clear for every page, each segment again. Not
/// zero-filled: what a user reads, it has written.
///
/// Buffers of 4 MB or more are aligned to 2 MB and advised as huge pages (`MADV_HUGEPAGE`,
/// which a kernel with transparent huge pages in `madvise` mode, Debian's and Ubuntu's default,
/// needs to use them): the first segment's hundreds of MB then fault in 2 MB at a time. A
/// 512-image ingest at 224×224 took 228,000 page faults before this and 95,000 after.
public final class ReusableFloats {
    /// How many floats fit without reallocating.
    public private(set) var capacity = 0
    private var base: UnsafeMutablePointer<Float>?

    /// Empty storage; memory is allocated on first use.
    public init() {}

    deinit { free(base) }

    /// The first `count` floats, holding whatever the last user left; grows (dropping the
    /// contents) when `count` exceeds the capacity. The buffer is valid until the next call or
    /// until this object is released.
    public func prefix(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(count >= 0, "negative float count")
        if count > capacity {
            free(base)
            base = Self.allocate(count)
            capacity = count
        }
        return UnsafeMutableBufferPointer(start: base, count: count)
    }

    /// `count` floats from `malloc`, or, from 4 MB, 2 MB-aligned and advised as huge pages.
    static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let huge = 2 << 20
        if bytes >= 4 << 20 {
            var memory: UnsafeMutableRawPointer?
            let rounded = (bytes + huge - 1) / huge * huge
            if posix_memalign(&memory, huge, rounded) == 0, let memory {
                #if os(Linux)
                _ = madvise(memory, rounded, MADV_HUGEPAGE)  // advice only: without it, plain pages
                #endif
                return memory.bindMemory(to: Float.self, capacity: count)
            }
        }
        guard let memory = malloc(bytes) else { fatalError("out of memory allocating \(bytes) bytes") }
        return memory.bindMemory(to: Float.self, capacity: count)
    }
}
