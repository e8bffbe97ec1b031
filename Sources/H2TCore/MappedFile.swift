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
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.failure(path) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Self.failure(path) }
        let isRegular = (info.st_mode & S_IFMT) == S_IFREG
        guard isRegular || readingStreams else {
            throw TensorFileError.unreadable(path: path, reason: (info.st_mode & S_IFMT) == S_IFDIR ? "is a directory" : "not a regular file")
        }
        guard (info.st_mode & S_IFMT) != S_IFDIR else { throw TensorFileError.unreadable(path: path, reason: "is a directory") }
        let size = Int(info.st_size)
        if isRegular, size > 0 {
            guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else { throw Self.failure(path) }
            madvise(base, size, MADV_SEQUENTIAL)
            bytes = UnsafeRawBufferPointer(start: base, count: size)
            isMapped = true
            return
        }
        // A stream, or a regular file that claims to be empty (some /proc files): read to the end.
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        var count = 0
        while true {
            if count == buffer.count {
                let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 16)
                grown.copyMemory(from: UnsafeRawBufferPointer(buffer))
                buffer.deallocate()
                buffer = grown
            }
            let got = read(fd, buffer.baseAddress! + count, buffer.count - count)
            if got == 0 { break }
            if got < 0 {
                if errno == EINTR { continue }
                let error = Self.failure(path)
                buffer.deallocate()
                throw error
            }
            count += got
        }
        bytes = UnsafeRawBufferPointer(start: buffer.baseAddress, count: count)
        isMapped = false
    }

    /// The whole file at `path` (stream or regular file) as one array: a single copy out of the
    /// page cache.
    public static func contents(of path: String) throws -> [UInt8] {
        try MappedFile(path: path, readingStreams: true).withBytes { [UInt8]($0) }
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
