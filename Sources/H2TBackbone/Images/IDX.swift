import CZlib
import Foundation
import H2TCore

/// A stack of 8-bit grayscale images, row-major: image `i`, row `y`, column `x` is at
/// `pixels[(i * height + y) * width + x]`.
public struct GrayscaleImages: Sendable, Equatable {
    /// Number of images.
    public let count: Int
    /// Rows per image.
    public let height: Int
    /// Columns per image.
    public let width: Int
    /// All pixels, image after image.
    public let pixels: [UInt8]

    /// Creates a stack; `pixels.count` must be `count * height * width`.
    public init(count: Int, height: Int, width: Int, pixels: [UInt8]) {
        precondition(pixels.count == count * height * width, "pixel count does not match the dimensions")
        self.count = count
        self.height = height
        self.width = width
        self.pixels = pixels
    }

    /// Image `index` as a one-channel `DecodedImage`.
    public func image(_ index: Int) -> DecodedImage {
        let size = height * width
        return DecodedImage(width: width, height: height, channels: 1,
                            pixels: Array(pixels[(index * size)..<((index + 1) * size)]))
    }
}

/// A labelled image dataset read from an IDX images file and an IDX labels file.
public struct IDXDataset: Sendable, Equatable {
    /// The images.
    public let images: GrayscaleImages
    /// One label per image.
    public let labels: [UInt8]
}

/// Reader for the IDX format of MNIST, Fashion-MNIST and their relatives, plain or gzip'd.
///
/// Layout: two zero bytes, an element-type byte (0x08 = unsigned byte, the only type these
/// datasets use), a dimension count, one big-endian int32 per dimension, then the elements.
/// Gzip is recognised by its magic bytes, not by the file name.
public enum IDX {
    /// An IDX array of unsigned bytes.
    public struct ByteArray: Sendable, Equatable {
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Elements in row-major order.
        public let values: [UInt8]
    }

    /// Reads any unsigned-byte IDX array.
    public static func readBytes(path: String) throws -> ByteArray {
        let data = try fileContents(path)
        let (shape, headerSize, elements) = try header(of: data, path: path)
        guard data.count - headerSize == elements else {
            throw ImageInputError.sizeMismatch(file: path, expected: headerSize + elements, actual: data.count)
        }
        return ByteArray(shape: shape, values: Array(data[headerSize...]))
    }

    /// The first `limit` images of an images file and the file's image count. A gzip'd file is
    /// inflated only as far as those images need, so its trailing checksum (which covers the whole
    /// stream) is not checked: for files whose bytes the caller has verified otherwise, as the
    /// artefact cache does with pinned SHA-256 digests. Without a limit, or with one at or above
    /// the file's count, this is ``readImages(path:)``.
    public static func readImages(path: String, limit: Int?) throws -> (images: GrayscaleImages, fileCount: Int) {
        guard let limit else {
            let images = try readImages(path: path)
            return (images, images.count)
        }
        // Enough once the header and `limit` images are in: the header is parsed again on every
        // inflated chunk until then (a few bytes).
        let data = try fileContents(path) { prefix in
            guard let (shape, headerSize, elements) = try? header(of: prefix, path: path), shape.count == 3, shape[0] > 0 else { return false }
            return prefix.count >= headerSize + min(limit, shape[0]) * (elements / shape[0])
        }
        let (shape, headerSize, elements) = try header(of: data, path: path)
        try checkImageShape(shape, path: path)
        let count = min(limit, shape[0])
        let needed = count * shape[1] * shape[2]
        if count == shape[0] {
            guard data.count - headerSize == elements else {
                throw ImageInputError.sizeMismatch(file: path, expected: headerSize + elements, actual: data.count)
            }
        } else if data.count - headerSize < needed {
            throw ImageInputError.sizeMismatch(file: path, expected: headerSize + elements, actual: data.count)
        }
        let images = GrayscaleImages(count: count, height: shape[1], width: shape[2],
                                     pixels: Array(data[headerSize..<(headerSize + needed)]))
        return (images, shape[0])
    }

    /// Checks a whole images file as ``readImages(path:)`` would (readable, gzip stream and
    /// checksums intact, an images header, exactly the bytes the header declares) without keeping
    /// its pixels: the inflated stream goes through a 1 MB buffer. For an ingest that reads the
    /// first images with ``readImages(path:limit:)`` and checks the rest of the file meanwhile.
    public static func checkImages(path: String) throws {
        // The header is at most 4 + 4 × 255 bytes.
        let headerBound = 4 + 4 * 255
        let input = try GzipInput(path)
        let (data, size) = input.isGzip
            ? try Gzip.inflatedSize(input, prefix: headerBound)
            : try input.storedSize(prefix: headerBound)
        let (shape, headerSize, elements) = try header(of: data, path: path)
        try checkImageShape(shape, path: path)
        guard size - headerSize == elements else {
            throw ImageInputError.sizeMismatch(file: path, expected: headerSize + elements, actual: size)
        }
    }

    /// The shape, header size and element count an IDX file's header declares.
    private static func header(of data: [UInt8], path: String) throws -> (shape: [Int], headerSize: Int, elements: Int) {
        guard data.count >= 4 else { throw ImageInputError.notIDX(file: path, reason: "shorter than the 4-byte magic") }
        guard data[0] == 0, data[1] == 0 else {
            throw ImageInputError.notIDX(file: path, reason: "magic does not start with two zero bytes")
        }
        guard data[2] == 0x08 else {
            throw ImageInputError.notIDX(
                file: path, reason: "element type 0x\(String(data[2], radix: 16)) is not unsigned byte (0x08)")
        }
        let rank = Int(data[3])
        guard rank >= 1 else { throw ImageInputError.notIDX(file: path, reason: "zero dimensions") }
        let headerSize = 4 + 4 * rank
        guard data.count >= headerSize else {
            throw ImageInputError.sizeMismatch(file: path, expected: headerSize, actual: data.count)
        }
        var shape: [Int] = []
        var elements = 1
        for d in 0..<rank {
            let p = 4 + 4 * d
            let size = Int(UInt32(data[p]) << 24 | UInt32(data[p + 1]) << 16 | UInt32(data[p + 2]) << 8 | UInt32(data[p + 3]))
            shape.append(size)
            let (product, overflow) = elements.multipliedReportingOverflow(by: size)
            guard !overflow, product <= 1 << 40 else { throw ImageInputError.notIDX(file: path, reason: "dimensions \(shape) too large") }
            elements = product
        }
        return (shape, headerSize, elements)
    }

    /// An images file has three dimensions (count, rows, columns) and non-empty images.
    private static func checkImageShape(_ shape: [Int], path: String) throws {
        guard shape.count == 3 else {
            throw ImageInputError.notIDX(file: path, reason: "an images file has 3 dimensions, this one has \(shape)")
        }
        // Empty images would all hash to one example id and pool to nothing.
        guard shape[1] > 0, shape[2] > 0 else {
            throw ImageInputError.notIDX(file: path, reason: "its images are \(shape[1])×\(shape[2]) pixels; an image needs at least one")
        }
    }

    /// Reads an images file (three dimensions: count, rows, columns).
    public static func readImages(path: String) throws -> GrayscaleImages {
        let array = try readBytes(path: path)
        try checkImageShape(array.shape, path: path)
        return GrayscaleImages(count: array.shape[0], height: array.shape[1], width: array.shape[2], pixels: array.values)
    }

    /// Reads a labels file (one dimension).
    public static func readLabels(path: String) throws -> [UInt8] {
        let array = try readBytes(path: path)
        guard array.shape.count == 1 else {
            throw ImageInputError.notIDX(file: path, reason: "a labels file has 1 dimension, this one has \(array.shape)")
        }
        return array.values
    }

    /// Reads a matching images/labels pair, checking that the counts agree.
    public static func readDataset(images imagesPath: String, labels labelsPath: String) throws -> IDXDataset {
        let images = try readImages(path: imagesPath)
        let labels = try readLabels(path: labelsPath)
        guard images.count == labels.count else {
            throw ImageInputError.countMismatch(images: imagesPath, labels: labelsPath,
                                                imageCount: images.count, labelCount: labels.count)
        }
        return IDXDataset(images: images, labels: labels)
    }

    /// Reads Fashion-MNIST from the artefact cache (digests verified first).
    ///
    /// - Parameter train: the 60,000-image training split if true, else the 10,000-image test split.
    public static func fashionMNIST(train: Bool, cache: ArtifactCache) throws -> IDXDataset {
        let images = try cache.verifiedPath(of: train ? .fashionMNISTTrainImages : .fashionMNISTTestImages)
        let labels = try cache.verifiedPath(of: train ? .fashionMNISTTrainLabels : .fashionMNISTTestLabels)
        return try readDataset(images: images, labels: labels)
    }

    /// Fashion-MNIST's class names, by label.
    public static let fashionMNISTClassNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    /// The file's bytes, gunzipped when they start with the gzip magic; `enough`, given the
    /// bytes inflated so far, may stop the inflation early (see ``Gzip/decompress(_:enough:)``).
    static func fileContents(_ path: String, enough: (([UInt8]) -> Bool)? = nil) throws -> [UInt8] {
        let input = try GzipInput(path)
        return input.isGzip ? try Gzip.decompress(input, enough: enough) : try input.storedBytes()
    }
}

/// An input file read front to back through one 1 MB buffer, its first piece read up front to
/// tell gzip by its magic: a gzip'd file is inflated as it is read (a prefix read reads only as
/// far as it inflates), with no copy of the whole compressed file in memory. An unreadable file
/// is ``ImageInputError/unreadable(file:reason:)``.
final class GzipInput {
    let file: InputFile
    /// The current piece: `buffer[0 ..< count]`.
    private(set) var buffer: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(_ path: String) throws {
        do throws(FileReadError) {
            file = try InputFile(path: path)
        } catch {
            throw ImageInputError.unreadable(file: path, reason: error.reason)
        }
        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        _ = try next()
    }

    deinit { buffer.deallocate() }

    var path: String { file.path }
    var isGzip: Bool { count >= 2 && buffer[0] == 0x1F && buffer[1] == 0x8B }

    /// Reads the next piece; false at the end of the file.
    func next() throws -> Bool {
        do throws(FileReadError) {
            count = try file.read(into: buffer)
        } catch {
            throw ImageInputError.unreadable(file: path, reason: error.reason)
        }
        return count > 0
    }

    /// The whole file as stored (the first piece and the rest).
    func storedBytes() throws -> [UInt8] {
        do throws(FileReadError) {
            return try file.readToEnd(after: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        } catch {
            throw ImageInputError.unreadable(file: path, reason: error.reason)
        }
    }

    /// The first `prefix` bytes as stored (or fewer, in a shorter file) and the file's size: a
    /// regular file's from its metadata, a stream's by reading it to the end.
    func storedSize(prefix: Int) throws -> (prefix: [UInt8], size: Int) {
        var head = [UInt8](UnsafeRawBufferPointer(rebasing: buffer[0..<min(prefix, count)]))
        // The first piece (1 MB) holds the prefix unless the file is shorter.
        if let size = file.size, head.count == min(prefix, size) { return (head, size) }
        var size = count
        while try next() {
            if head.count < prefix { head += UnsafeRawBufferPointer(rebasing: buffer[0..<min(prefix - head.count, count)]) }
            size += count
        }
        return (head, size)
    }

    /// The gzip trailer's ISIZE (the last member's size modulo 2^32) of a regular file.
    var trailingSize: Int? {
        guard let size = file.size, size >= 18, let last = file.bytes(at: size - 4, count: 4) else { return nil }
        return Int(UInt32(last[0]) | UInt32(last[1]) << 8 | UInt32(last[2]) << 16 | UInt32(last[3]) << 24)
    }
}

/// Gzip decompression through zlib (all members of a multi-member file, as `gunzip` does).
enum Gzip {
    /// Inflates `input`; when `enough` says the output so far suffices, stops there (the output
    /// then holds at least what it asked for, and the stream's end and checksum are not checked).
    static func decompress(_ input: GzipInput, enough: (([UInt8]) -> Bool)? = nil) throws -> [UInt8] {
        // ISIZE is the size modulo 2^32 of the last member: a good first guess.
        var output: [UInt8] = []
        if let hint = input.trailingSize { output.reserveCapacity(min(hint, 1 << 31)) }
        try inflatePieces(input) { chunk in
            output.append(contentsOf: chunk)
            return enough?(output) ?? false
        }
        return output
    }

    /// Inflates all of `input` (every member, checksums included) without keeping the output, in
    /// 1 MB pieces: its first `prefix` bytes and its whole inflated size. For checking a file whose
    /// bytes are already in use from a prefix (``IDX/checkImages(path:)``).
    static func inflatedSize(_ input: GzipInput, prefix: Int) throws -> (prefix: [UInt8], size: Int) {
        var head: [UInt8] = [], size = 0
        try inflatePieces(input) { chunk in
            if head.count < prefix { head += chunk.prefix(prefix - head.count) }
            size += chunk.count
            return false
        }
        return (head, size)
    }

    /// The inflation loop: reads `input` piece by piece and hands each piece of output to
    /// `consume`, which returns true to stop there (the stream's end and checksum are then not
    /// checked).
    private static func inflatePieces(_ input: GzipInput, consume: (ArraySlice<UInt8>) throws -> Bool) throws {
        let file = input.path
        var stream = z_stream()
        // 15 + 16: a gzip wrapper, not zlib or raw deflate.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw ImageInputError.corruptGzip(file: file, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var ended = false
        // The next piece of the file as zlib's input, once the current one is used up.
        func refill() throws {
            guard stream.avail_in == 0, !ended else { return }
            if try input.next() {
                // zlib's next_in is not const, but inflate only reads through it.
                stream.next_in = input.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
                stream.avail_in = uInt(input.count)
            } else {
                ended = true
            }
        }
        stream.next_in = input.buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        stream.avail_in = uInt(input.count)
        while true {
            try refill()
            let status: Int32 = buffer.withUnsafeMutableBufferPointer { out in
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(chunk)
                return inflate(&stream, Z_NO_FLUSH)
            }
            let stop = try consume(buffer[0..<(chunk - Int(stream.avail_out))])
            if status == Z_OK || status == Z_STREAM_END, stop { return }
            switch status {
            case Z_OK:
                continue
            case Z_STREAM_END:
                try refill()
                if stream.avail_in == 0 { return }
                // Another gzip member follows.
                guard inflateReset(&stream) == Z_OK else {
                    throw ImageInputError.corruptGzip(file: file, reason: "cannot restart for the next member")
                }
            case Z_BUF_ERROR:
                // No progress with a fresh output buffer: the input ran out mid-stream.
                throw ImageInputError.corruptGzip(file: file, reason: "stream ends early (truncated)")
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                throw ImageInputError.corruptGzip(file: file, reason: message)
            }
        }
    }
}
