import Dispatch
import Foundation
import Synchronization

/// Runs independent work items on several threads: the one parallel-map helper of the project
/// (cross-validation tasks, tile decoding and encoding, listing entries).
///
/// Workers take the next unclaimed item until none is left, so uneven items balance themselves;
/// the first error stops the claiming and is rethrown once every worker has returned. Results
/// never depend on which worker ran an item.
public enum Parallel {
    /// One worker per core this process may use: the default of every parallel API.
    public static var defaultWorkers: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// The number of workers to start for `items` items when `requested` are asked for (nil or 0
    /// means one per active core): never more than the items, at least one.
    public static func workerCount(_ requested: Int?, items: Int) -> Int {
        let requested = requested ?? 0
        let available = requested > 0 ? requested : defaultWorkers
        return max(1, min(available, items))
    }

    /// Runs `body` once on each of `workerCount(workers, items: itemCount)` threads. A worker
    /// calls `next()` for the index of its next item and returns when it gets `nil`; what it
    /// sets up before its first claim (a decoder, a transaction) serves all of its items.
    ///
    /// - Parameters:
    ///   - singleThreadedBLAS: make OpenBLAS single-threaded while more than one worker runs, so
    ///     that each worker's products do not each start a thread per core (OpenBLAS's thread
    ///     count is process-wide; it is restored on return).
    public static func forEachWorker(itemCount: Int, workers: Int? = nil, singleThreadedBLAS: Bool = false,
                                     _ body: (_ worker: Int, _ next: () -> Int?) throws -> Void) throws {
        guard itemCount > 0 else { return }
        let threads = workerCount(workers, items: itemCount)
        let state = ClaimState()
        let next: () -> Int? = {
            let index = state.next.add(1, ordering: .relaxed).oldValue
            return index < itemCount && !state.failed ? index : nil
        }
        // Only a run that asks touches BLAS (its first use selects the kernels; see `BLAS`).
        let previousBLASThreads = singleThreadedBLAS && threads > 1 ? BLAS.threadCount : nil
        if previousBLASThreads != nil { BLAS.setThreadCount(1) }
        defer { if let previousBLASThreads { BLAS.setThreadCount(previousBLASThreads) } }
        if threads == 1 {
            try body(0, next)
            return
        }
        // The workers have all returned when `concurrentPerform` does, so `body` does not escape.
        try withoutActuallyEscaping(body) { body in
            let work = UnsafeSendable(body), claim = UnsafeSendable(next)
            DispatchQueue.concurrentPerform(iterations: threads) { worker in
                do { try work.value(worker, claim.value) } catch { state.fail(error) }
            }
            if let error = state.error { throw error }
        }
    }

    /// `body(index)` for every index in `0..<count`, on `workers` threads (0: one per active
    /// core), results in index order.
    public static func map<Output>(count: Int, workers: Int? = nil, singleThreadedBLAS: Bool = false,
                                   _ body: (Int) throws -> Output) throws -> [Output] {
        let slots = WorkerSlots<Output>(count: count)
        try forEachWorker(itemCount: count, workers: workers, singleThreadedBLAS: singleThreadedBLAS) { _, next in
            while let index = next() { slots.set(index, try body(index)) }
        }
        return slots.values.map { $0! }
    }

    /// `body(item)` for every item, on `workers` threads (0: one per active core), results in
    /// the items' order.
    public static func map<Item, Output>(_ items: [Item], workers: Int? = nil, singleThreadedBLAS: Bool = false,
                                         _ body: (Item) throws -> Output) throws -> [Output] {
        try map(count: items.count, workers: workers, singleThreadedBLAS: singleThreadedBLAS) { try body(items[$0]) }
    }
}

/// The shared claim counter and first error of one `Parallel.forEachWorker` run.
private final class ClaimState: Sendable {
    let next = Atomic<Int>(0)
    private let firstError = Mutex<(any Error)?>(nil)
    private let failedFlag = Atomic<Bool>(false)

    var failed: Bool { failedFlag.load(ordering: .relaxed) }
    var error: (any Error)? { firstError.withLock { $0 } }

    func fail(_ error: any Error) {
        firstError.withLock { if $0 == nil { $0 = error } }
        failedFlag.store(true, ordering: .relaxed)
    }
}
