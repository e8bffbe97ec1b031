import CImageCodecs
import CJPEGDecode
import Foundation
import H2TCore

/// An 8-bit image, rows top to bottom, channels interleaved (`pixels[(y * width + x) * channels + c]`).
public struct DecodedImage: Sendable, Equatable {
    /// Columns.
    public let width: Int
    /// Rows.
    public let height: Int
    /// 1 (grayscale) or 3 (RGB).
    public let channels: Int
    /// Interleaved pixels.
    public let pixels: [UInt8]

    /// Creates an image; `pixels.count` must be `width * height * channels`.
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "pixel count does not match the dimensions")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// What to do with an alpha channel (PNG gray+alpha, RGBA, or palette transparency).
public enum AlphaHandling: String, Sendable, Hashable, Codable {
    /// Discard alpha and keep the stored colour values, as PIL's `convert("RGB")` (and so
    /// torchvision's `ImageFolder`) does.
    case drop
    /// Refuse the image with `ImageInputError.unexpectedChannelCount`.
    case reject
}

/// Decodes PNG (libpng) and JPEG (libjpeg) files into `DecodedImage`s.
///
/// 8-bit PNGs and all JPEGs decode to exactly the bytes Pillow produces (JPEG: libjpeg's
/// default islow IDCT and fancy upsampling). 16-bit PNGs are reduced to 8 bits by libpng's
/// simplified API (16-bit samples taken as linear light, encoded to sRGB); Pillow differs there
/// (it clips 16-bit grayscale). EXIF orientation is not applied, as in Pillow and torchvision.
///
/// Neither library may unwind through Swift frames: libpng is used only through its
/// "simplified" API, which catches its own errors inside libpng and returns a status; libjpeg is
/// called only from the C target `CJPEGDecode`, whose error handler jumps back to the calling C
/// frame, so a fatal libjpeg error is an ordinary thrown error. libjpeg's warnings (corrupt
/// entropy data, premature end of data) refuse the image too: libjpeg would otherwise fill the
/// damaged part with grey and carry on.
public enum ImageDecoder {
    /// Largest accepted image, in pixels (about 67 megapixels; guards against decompression bombs).
    public static let maximumPixelCount = 1 << 26

    /// Decodes the file at `path`, choosing the codec by the file's magic bytes.
    public static func decode(contentsOfFile path: String, alpha: AlphaHandling = .drop) throws -> DecodedImage {
        let bytes: [UInt8]
        do throws(FileReadError) {
            bytes = try InputFile.contents(of: path)
        } catch {
            throw ImageInputError.unreadable(file: path, reason: error.reason)
        }
        return try decode(bytes: bytes, file: path, alpha: alpha)
    }

    /// Decodes `paths` on `parallelism`'s threads, in order; a failure throws the error of the
    /// first failing file in that order (the one a decode one file after another would report).
    public static func decode(files paths: [String], alpha: AlphaHandling = .drop, parallelism: Parallelism = .default) throws -> [DecodedImage] {
        let outcomes = try Parallel.map(paths, parallelism: parallelism) { path in
            Result { try decode(contentsOfFile: path, alpha: alpha) }
        }
        return try outcomes.map { try $0.get() }
    }

    /// Decodes an in-memory PNG or JPEG; `file` names it in errors.
    public static func decode(bytes: [UInt8], file: String, alpha: AlphaHandling = .drop) throws -> DecodedImage {
        if isPNG(bytes) { return try decodePNG(bytes, file: file, alpha: alpha) }
        if isJPEG(bytes) { return try decodeJPEG(bytes, file: file) }
        throw ImageInputError.undecodable(file: file, reason: "neither PNG nor JPEG signature")
    }

    static func isPNG(_ b: [UInt8]) -> Bool { b.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) }
    static func isJPEG(_ b: [UInt8]) -> Bool { b.starts(with: [0xFF, 0xD8, 0xFF]) }

    // MARK: PNG

    private static func pngMessage(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    private static func decodePNG(_ bytes: [UInt8], file: String, alpha: AlphaHandling) throws -> DecodedImage {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        let began = bytes.withUnsafeBytes { raw in
            png_image_begin_read_from_memory(&image, raw.baseAddress, raw.count)
        }
        guard began != 0 else {
            throw ImageInputError.undecodable(file: file, reason: "libpng: \(pngMessage(&image))")
        }
        let width = Int(image.width), height = Int(image.height)
        let hasAlpha = image.format & png_uint_32(PNG_FORMAT_FLAG_ALPHA) != 0
        let hasColor = image.format & png_uint_32(PNG_FORMAT_FLAG_COLOR) != 0
        let storedChannels = (hasColor ? 3 : 1) + (hasAlpha ? 1 : 0)
        guard width * height <= maximumPixelCount else {
            png_image_free(&image)
            throw ImageInputError.undecodable(file: file, reason: "\(width)x\(height) exceeds \(maximumPixelCount) pixels")
        }
        if hasAlpha && alpha == .reject {
            png_image_free(&image)
            throw ImageInputError.unexpectedChannelCount(file: file, channels: storedChannels,
                                                         detail: "PNG with an alpha channel; alpha handling is 'reject'")
        }
        // Ask for the stored layout at 8 bits: no colour conversion and no alpha compositing, so
        // 8-bit files come out byte for byte as PIL reads them.
        image.format = (hasColor ? png_uint_32(PNG_FORMAT_FLAG_COLOR) : 0) | (hasAlpha ? png_uint_32(PNG_FORMAT_FLAG_ALPHA) : 0)
        var raw = [UInt8](repeating: 0, count: width * height * storedChannels)
        let finished = raw.withUnsafeMutableBytes { out in
            png_image_finish_read(&image, nil, out.baseAddress, png_int_32(width * storedChannels), nil)
        }
        guard finished != 0 else {  // finish_read releases the image on failure too
            throw ImageInputError.undecodable(file: file, reason: "libpng: \(pngMessage(&image))")
        }
        let channels = hasColor ? 3 : 1
        if !hasAlpha { return DecodedImage(width: width, height: height, channels: channels, pixels: raw) }
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        for p in 0..<(width * height) {
            for c in 0..<channels { pixels[p * channels + c] = raw[p * storedChannels + c] }
        }
        return DecodedImage(width: width, height: height, channels: channels, pixels: pixels)
    }

    // MARK: JPEG

    private static func decodeJPEG(_ bytes: [UInt8], file: String) throws -> DecodedImage {
        guard let decoder = h2t_jpeg_create() else {
            throw ImageInputError.undecodable(file: file, reason: "libjpeg: out of memory")
        }
        defer { h2t_jpeg_destroy(decoder) }
        func check(_ status: Int32) throws {
            switch Int(status) {
            case H2T_JPEG_OK: return
            case H2T_JPEG_WARNING:
                throw ImageInputError.undecodable(file: file, reason: "corrupt JPEG data: \(String(cString: h2t_jpeg_message(decoder)))")
            default:
                throw ImageInputError.undecodable(file: file, reason: "libjpeg: \(String(cString: h2t_jpeg_message(decoder)))")
            }
        }
        // libjpeg keeps a pointer to the input until the decoder is destroyed.
        return try bytes.withUnsafeBufferPointer { input in
            var header = h2t_jpeg_header()
            try check(h2t_jpeg_read_header(decoder, input.baseAddress, input.count, &header))
            let width = Int(header.width), height = Int(header.height), components = Int(header.components)
            guard components == 1 || components == 3 else {
                throw ImageInputError.unexpectedChannelCount(
                    file: file, channels: components,
                    detail: components == 4 ? "CMYK/YCCK JPEG" : "JPEG with \(components) components")
            }
            // Checked before libjpeg allocates anything sized by the header.
            guard width * height <= maximumPixelCount else {
                throw ImageInputError.undecodable(file: file, reason: "\(width)x\(height) exceeds \(maximumPixelCount) pixels")
            }
            var pixels = [UInt8](repeating: 0, count: width * height * components)
            try pixels.withUnsafeMutableBufferPointer { out in
                try check(h2t_jpeg_read_pixels(decoder, Int32(components), out.baseAddress, out.count))
            }
            return DecodedImage(width: width, height: height, channels: components, pixels: pixels)
        }
    }
}
