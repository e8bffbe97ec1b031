import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs independent work items on several threads: the one parallel-map helper of the project
/// (cross-validation tasks, tile decoding and encoding, listing entries).
///
/// Workers take the next unclaimed item until none is left, so uneven items balance themselves;
/// the first error stops the claiming and is rethrown once every worker has returned. Results
/// never depend on which worker ran an item.
public enum Parallel {
    /// One worker per core this process may run on: its CPU affinity mask (`sched_getaffinity`,
    /// which `taskset`, cgroup cpusets and Slurm's CPU binding set), not the machine's core count,
    /// and no more than a cgroup CPU quota grants (``CgroupCPULimit``: `docker run --cpus`,
    /// Kubernetes CPU limits). The base of ``Parallelism/default``, and the one place that counts cores.
    public static var defaultWorkers: Int {
        #if os(Linux)
        let cores = affinityCoreCount() ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
        #else
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        #endif
        return min(cores, CgroupCPULimit.current ?? cores)
    }

    #if os(Linux)
    /// The number of CPUs in this process's affinity mask, or `nil` if it cannot be read. The
    /// mask grows until it is large enough for the kernel's CPU count (`EINVAL` means too small).
    /// glibc declares `sched_getaffinity` only under `_GNU_SOURCE`, which the Glibc module is not
    /// built with, so the symbol is looked up once.
    static func affinityCoreCount() -> Int? {
        guard let getAffinity = schedGetAffinity else { return nil }
        var words = 16
        while words <= 1 << 14 {
            var mask = [UInt64](repeating: 0, count: words)
            let result = mask.withUnsafeMutableBytes { raw in getAffinity(0, raw.count, raw.baseAddress) }
            if result == 0 {
                let cores = mask.reduce(0) { $0 + $1.nonzeroBitCount }
                return cores > 0 ? cores : nil
            }
            guard errno == EINVAL else { return nil }
            words *= 2
        }
        return nil
    }

    private typealias SchedGetAffinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer?) -> Int32
    private static let schedGetAffinity: SchedGetAffinity? = dlsym(nil, "sched_getaffinity").map {
        unsafeBitCast($0, to: SchedGetAffinity.self)
    }
    #endif

    /// Runs `body` once on each of `parallelism.workers(items: itemCount)` threads. A worker
    /// calls `next()` for the index of its next item and returns when it gets `nil`; what it
    /// sets up before its first claim (a decoder, a transaction) serves all of its items.
    ///
    /// - Parameters:
    ///   - singleThreadedBLAS: the workers' products run on one OpenBLAS thread each, so that
    ///     the two levels of threading neither oversubscribe the cores nor make results depend
    ///     on the thread count (see ``Parallelism/withBLAS(_:)``).
    public static func forEachWorker(itemCount: Int, parallelism: Parallelism = .default, singleThreadedBLAS: Bool = false,
                                     _ body: (_ worker: Int, _ next: () -> Int?) throws -> Void) throws {
        guard itemCount > 0 else { return }
        let threads = parallelism.workers(items: itemCount)
        // Only a run that asks touches BLAS (its first use selects the kernels; see `BLAS`).
        guard singleThreadedBLAS else { return try run(itemCount: itemCount, threads: threads, body) }
        try parallelism.withBLAS {
            try run(itemCount: itemCount, threads: threads, body)
        }
    }

    private static func run(itemCount: Int, threads: Int, _ body: (_ worker: Int, _ next: () -> Int?) throws -> Void) throws {
        let state = ClaimState()
        let next: () -> Int? = {
            let index = state.next.add(1, ordering: .relaxed).oldValue
            return index < itemCount && !state.failed ? index : nil
        }
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

    /// `body(index)` for every index in `0..<count`, on `parallelism`'s threads, results in index order.
    public static func map<Output>(count: Int, parallelism: Parallelism = .default, singleThreadedBLAS: Bool = false,
                                   _ body: (Int) throws -> Output) throws -> [Output] {
        let slots = WorkerSlots<Output>(count: count)
        try forEachWorker(itemCount: count, parallelism: parallelism, singleThreadedBLAS: singleThreadedBLAS) { _, next in
            while let index = next() { slots.set(index, try body(index)) }
        }
        return slots.values.map { $0! }
    }

    /// `first()` and `second()` at the same time when `parallelism` has two threads (one after
    /// the other otherwise); both run to the end, then the first one's error, if any, is thrown,
    /// else the second one's.
    ///
    /// `first` runs on the calling thread and `second` on a thread of its own, not as two
    /// iterations of one `concurrentPerform`: libdispatch narrows a parallel loop started inside
    /// another, so a `Parallel.map` inside either closure would get half the threads (one on 2
    /// cores) for as long as it runs.
    public static func both<A, B>(parallelism: Parallelism = .default, _ first: () throws -> A, _ second: () throws -> B) throws -> (A, B) {
        guard parallelism.threads > 1 else {
            let a = Result { try first() }, b = Result { try second() }
            return (try a.get(), try b.get())
        }
        let handoff = Handoff<B>(), finished = DispatchSemaphore(value: 0)
        let a: Result<A, any Error> = withoutActuallyEscaping(second) { second in
            // The thread drops its reference to `second` before it signals, so nothing holds the
            // closure once this one returns.
            handoff.work = second
            let thread = Thread {
                let result = Result { try handoff.work!() }
                handoff.work = nil
                handoff.result = result
                finished.signal()
            }
            thread.stackSize = 8 << 20  // a main thread's, whatever the platform's default for others
            thread.start()
            let a = Result { try first() }
            finished.wait()
            return a
        }
        return (try a.get(), try handoff.result!.get())
    }

    /// `body(index)` for every index in `0..<count`, each only once the items in
    /// `dependencies[index]` have finished, on `parallelism`'s threads. The items' order is their
    /// priority: a free worker takes the lowest-numbered item whose dependencies are done, and
    /// waits while none is ready but some still run. An item depends on earlier items only, so
    /// one thread runs them in order. The first error stops the claiming, wakes the waiting
    /// workers and is rethrown once every worker has returned.
    ///
    /// What one item hands to its dependents (a result slot) is safe to read in theirs: an item
    /// is marked finished under the same lock its dependents are claimed under.
    public static func forEachWhenReady(count: Int, dependencies: [[Int]], parallelism: Parallelism = .default,
                                        singleThreadedBLAS: Bool = false, _ body: (Int) throws -> Void) throws {
        precondition(dependencies.count == count, "one list of dependencies per item")
        for (item, list) in dependencies.enumerated() {
            precondition(list.allSatisfy { (0..<item).contains($0) }, "item \(item) may depend on earlier items only")
        }
        let schedule = DependencySchedule(dependencies)
        try forEachWorker(itemCount: count, parallelism: parallelism, singleThreadedBLAS: singleThreadedBLAS) { _, _ in
            while let item = schedule.claim() {
                do { try body(item) } catch {
                    schedule.fail()
                    throw error
                }
                schedule.finish(item)
            }
        }
    }

    /// `body(item)` for every item, on `parallelism`'s threads, results in the items' order.
    public static func map<Item, Output>(_ items: [Item], parallelism: Parallelism = .default, singleThreadedBLAS: Bool = false,
                                         _ body: (Item) throws -> Output) throws -> [Output] {
        try map(count: items.count, parallelism: parallelism, singleThreadedBLAS: singleThreadedBLAS) { try body(items[$0]) }
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

/// Which items of a `Parallel.forEachWhenReady` run are claimed, finished and ready.
private final class DependencySchedule: @unchecked Sendable {
    // @unchecked Sendable: every field is read and written under `condition`'s lock.
    private let condition = NSCondition()
    /// Unfinished dependencies of each item.
    private var waitingOn: [Int]
    /// The items that depend on each item.
    private var dependents: [[Int]]
    private var claimed: [Bool]
    private var unclaimed: Int
    private var failed = false

    init(_ dependencies: [[Int]]) {
        waitingOn = dependencies.map { Set($0).count }
        dependents = Array(repeating: [], count: dependencies.count)
        for (item, list) in dependencies.enumerated() { for d in Set(list) { dependents[d].append(item) } }
        claimed = Array(repeating: false, count: dependencies.count)
        unclaimed = dependencies.count
    }

    /// The lowest-numbered ready item, once there is one; nil when none is left or a run failed.
    func claim() -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while !failed && unclaimed > 0 {
            if let item = claimed.indices.first(where: { !claimed[$0] && waitingOn[$0] == 0 }) {
                claimed[item] = true
                unclaimed -= 1
                return item
            }
            // Nothing ready: the running items are what the rest waits on.
            condition.wait()
        }
        return nil
    }

    func finish(_ item: Int) {
        condition.lock()
        defer { condition.unlock() }
        for d in dependents[item] { waitingOn[d] -= 1 }
        condition.broadcast()
    }

    func fail() {
        condition.lock()
        defer { condition.unlock() }
        failed = true
        condition.broadcast()
    }
}

/// `Parallel.both`'s second closure and its result, handed to and back from its thread (the
/// semaphore that ends the thread's work orders these accesses).
private final class Handoff<Value>: @unchecked Sendable {
    var work: (() throws -> Value)?
    var result: Result<Value, any Error>?
}
