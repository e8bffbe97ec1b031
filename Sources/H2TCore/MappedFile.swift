import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file's bytes, read-only, for as long as the object lives.
///
/// A regular file is memory-mapped: its pages are the page cache's, so reading it allocates no
/// memory and touches only the parts that are read (a gzip'd IDX file whose first images are
/// wanted, a checkpoint parsed once). Memory a process touches for the first time is expensive on
/// some machines (a VM zeroes and backs every new page; see docs/benchmarks.md, "Fewer fresh
/// pages"), and reading a file into a buffer and then into an array paid for it twice.
/// A pipe or other stream (`--idx <(zcat …)`) has nothing to map; with `readingStreams` it is
/// read to its end into memory instead.
public final class MappedFile: @unchecked Sendable {
    // @unchecked Sendable: the bytes are read-only and immutable for the object's lifetime.
    /// The file path.
    public let path: String
    /// The file's bytes, valid while the object lives: a caller that does not hold the object
    /// for longer reads them through ``withBytes(_:)``.
    public let bytes: UnsafeRawBufferPointer
    /// Whether `bytes` is a mapping (else memory this object allocated, or empty).
    private let isMapped: Bool

    /// Maps the regular file at `path`; anything else is `TensorFileError.unreadable`.
    public convenience init(path: String) throws {
        try self.init(path: path, readingStreams: false)
    }

    /// Maps the regular file at `path`, or, with `readingStreams`, reads any other readable file
    /// (a pipe, a character device) to its end. Errors are `TensorFileError.unreadable` with the
    /// system's reason.
    public init(path: String, readingStreams: Bool) throws {
        self.path = path
        let (fd, size) = try Self.openForReading(path, readingStreams: readingStreams)
        defer { close(fd) }
        if let size, size > 0 {
            guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else { throw Self.failure(path) }
            madvise(base, size, MADV_SEQUENTIAL)
            bytes = UnsafeRawBufferPointer(start: base, count: size)
            isMapped = true
            return
        }
        // A stream, or a regular file that claims to be empty (some /proc files): read to the end.
        bytes = try Self.readToEnd(fd, path: path)
        isMapped = false
    }

    /// The whole file at `path` (stream or regular file) as one array, read straight into it:
    /// one copy out of the page cache, no staging buffer, and no map (for small files, such as
    /// photos, a map and an unmap cost more than they save).
    public static func contents(of path: String) throws -> [UInt8] {
        let (fd, size) = try openForReading(path, readingStreams: true)
        defer { close(fd) }
        guard let size, size > 0 else {
            let bytes = try readToEnd(fd, path: path)
            defer { bytes.deallocate() }
            return [UInt8](bytes)
        }
        // A file that shrinks meanwhile gives what it has; one that grows, its first `size` bytes.
        return try [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            while initialized < size {
                let got = try readSome(fd, into: buffer.baseAddress! + initialized, count: size - initialized, path: path)
                if got == 0 { break }
                initialized += got
            }
        }
    }

    /// Calls `body` with the file's bytes, keeping the object (and so the mapping) alive until it
    /// returns: Swift may release an object right after its last use, which `bytes` alone is.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    /// The reason `TensorFileError.unreadable` gives for a failed system call (from `errno`).
    public static func reason(of error: Error) -> String {
        if case TensorFileError.unreadable(_, let reason) = error { return reason }
        return "\(error)"
    }

    /// Opens `path` for reading: the descriptor, and the size of a regular file (nil for a
    /// stream, which only `readingStreams` accepts). A directory is refused by name.
    private static func openForReading(_ path: String, readingStreams: Bool) throws -> (fd: Int32, size: Int?) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(path) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = failure(path)
            close(fd)
            throw error
        }
        let kind = info.st_mode & S_IFMT
        guard kind == S_IFREG || (readingStreams && kind != S_IFDIR) else {
            close(fd)
            throw TensorFileError.unreadable(path: path, reason: kind == S_IFDIR ? "is a directory" : "not a regular file")
        }
        return (fd, kind == S_IFREG ? Int(info.st_size) : nil)
    }

    /// Everything left to read from `fd`, in memory the caller deallocates.
    private static func readToEnd(_ fd: Int32, path: String) throws -> UnsafeRawBufferPointer {
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        var count = 0
        while true {
            if count == buffer.count {
                let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 16)
                grown.copyMemory(from: UnsafeRawBufferPointer(buffer))
                buffer.deallocate()
                buffer = grown
            }
            let got: Int
            do {
                got = try readSome(fd, into: buffer.baseAddress! + count, count: buffer.count - count, path: path)
            } catch {
                buffer.deallocate()
                throw error
            }
            if got == 0 { return UnsafeRawBufferPointer(start: buffer.baseAddress, count: count) }
            count += got
        }
    }

    /// One `read(2)` of at most `count` bytes, retried on EINTR; 0 at the end of the file.
    private static func readSome(_ fd: Int32, into base: UnsafeMutableRawPointer, count: Int, path: String) throws -> Int {
        while true {
            let got = read(fd, base, count)
            if got >= 0 { return got }
            if errno != EINTR { throw failure(path) }
        }
    }

    private static func failure(_ path: String) -> TensorFileError {
        .unreadable(path: path, reason: String(cString: strerror(errno)))
    }

    deinit {
        guard let base = bytes.baseAddress else { return }
        if isMapped {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        } else {
            base.deallocate()
        }
    }
}
