import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that could not be opened or read: its path and the system's reason.
public struct FileReadError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file.
    public let path: String
    /// Why, as the system says it (`strerror`), or "is a directory".
    public let reason: String

    public var description: String { "\(path): cannot read: \(reason)" }
}

/// A file opened for reading front to back: a regular file or a stream (a pipe such as
/// `--idx <(zcat …)`, a character device) alike.
///
/// Input files are read straight into the memory that keeps them (``readToEnd()``) or through one
/// reused buffer (``read(into:)``), never into a staging buffer first: memory a process touches
/// for the first time is expensive on some machines (a VM zeroes and backs every new page; see
/// docs/benchmarks.md, "Fewer fresh pages"). They are read, not mapped, so a file truncated by
/// another process meanwhile is a short read (an error naming the file), not a `SIGBUS`.
public final class InputFile {
    /// The file's path.
    public let path: String
    /// The size of a regular file when it was opened; nil for a stream.
    public let size: Int?
    private let descriptor: Int32
    /// Bytes read so far.
    private var consumed = 0

    /// Opens `path` for reading; a directory is refused by name.
    public init(path: String) throws(FileReadError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.failure(path) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = Self.failure(path)
            close(fd)
            throw error
        }
        let kind = info.st_mode & S_IFMT
        guard kind != S_IFDIR else {
            close(fd)
            throw FileReadError(path: path, reason: "is a directory")
        }
        descriptor = fd
        size = kind == S_IFREG ? Int(info.st_size) : nil
    }

    deinit { close(descriptor) }

    /// Whether `path` is a regular file (which can be read more than once, unlike a pipe).
    public static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// The whole file at `path` in one array.
    public static func contents(of path: String) throws(FileReadError) -> [UInt8] {
        try InputFile(path: path).readToEnd()
    }

    /// Reads the next bytes into `buffer` (as many as are at hand, up to its size); 0 at the end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(FileReadError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let got = readSome(descriptor, base, buffer.count)
            if got >= 0 {
                consumed += got
                return got
            }
            if errno != EINTR { throw Self.failure(path) }
        }
    }

    /// `prefix` (bytes the caller read already) and everything not read yet, in one array. A
    /// regular file is read straight into it (what it held when opened, then anything appended
    /// since); a stream in 64 KB pieces.
    public func readToEnd(after prefix: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) throws(FileReadError) -> [UInt8] {
        var bytes: [UInt8] = []
        if let size, size > consumed {
            let expected = prefix.count + size - consumed
            var failure: FileReadError?
            bytes = [UInt8](unsafeUninitializedCapacity: expected) { buffer, initialized in
                if let base = prefix.baseAddress {
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(start: base, count: prefix.count))
                    initialized = prefix.count
                }
                while initialized < expected {
                    do throws(FileReadError) {
                        let rest = UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[initialized...]))
                        let got = try read(into: rest)
                        if got == 0 { return }
                        initialized += got
                    } catch {
                        failure = error
                        return
                    }
                }
            }
            if let failure { throw failure }
        } else {
            bytes = [UInt8](prefix)
        }
        let piece = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { piece.deallocate() }
        while true {
            let got = try read(into: piece)
            if got == 0 { return bytes }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[0..<got]))
        }
    }

    /// The `count` bytes at `offset` of a regular file, without moving the read position; nil
    /// for a stream or a range outside the file.
    public func bytes(at offset: Int, count: Int) -> [UInt8]? {
        guard let size, offset >= 0, count > 0, count <= size - offset else { return nil }
        var result = [UInt8](repeating: 0, count: count)
        let read: Void? = result.withUnsafeMutableBytes { try? self.read(at: offset, byteCount: count, into: $0.baseAddress!) }
        return read == nil ? nil : result
    }

    /// Copies the `byteCount` bytes at `offset` of a regular file into `destination`, without
    /// moving the read position (`pread`; safe from several threads at once). A file that ends
    /// before them (cut since it was opened) is an error naming it.
    public func read(at offset: Int, byteCount: Int, into destination: UnsafeMutableRawPointer) throws(FileReadError) {
        precondition(size != nil, "positional read of a stream")
        var done = 0
        while done < byteCount {
            let got = pread(descriptor, destination + done, byteCount - done, off_t(offset + done))
            if got > 0 {
                done += got
            } else if got == 0 {
                throw FileReadError(path: path, reason: "the file ends at byte \(offset + done), \(size!) when opened (truncated while being read?)")
            } else if errno != EINTR {
                throw Self.failure(path)
            }
        }
    }

    /// Checks that `path` exists (a file, a pipe or a device), without opening it: a command
    /// checks its inputs before it creates anything.
    public static func checkExists(_ path: String) throws(FileReadError) {
        var info = stat()
        guard stat(path, &info) == 0 else { throw failure(path) }
    }

    private static func failure(_ path: String) -> FileReadError {
        FileReadError(path: path, reason: String(cString: strerror(errno)))
    }
}

/// `read(2)`, named apart from ``InputFile/read(into:)``.
private func readSome(_ fd: Int32, _ base: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, base, count)
}
