import CImageCodecs
import Foundation

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
/// only handed files that `JPEGStructure` has validated first (every condition that makes
/// libjpeg stop with a fatal error is checked beforehand), and its non-fatal warnings (corrupt
/// entropy data, premature end of data) are counted and turned into errors.
public enum ImageDecoder {
    /// Largest accepted image, in pixels (about 67 megapixels; guards against decompression bombs).
    public static let maximumPixelCount = 1 << 26

    /// Decodes the file at `path`, choosing the codec by the file's magic bytes.
    public static func decode(contentsOfFile path: String, alpha: AlphaHandling = .drop) throws -> DecodedImage {
        let bytes: [UInt8]
        do {
            bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ImageInputError.unreadable(file: path, reason: (error as NSError).localizedDescription)
        }
        return try decode(bytes: bytes, file: path, alpha: alpha)
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

    /// Per-decode state reachable from libjpeg's C callbacks through `client_data`.
    private final class JPEGContext {
        let file: String
        init(file: String) { self.file = file }
    }

    private static func decodeJPEG(_ bytes: [UInt8], file: String) throws -> DecodedImage {
        let structure = try JPEGStructure.validate(bytes, file: file)
        guard structure.components == 1 || structure.components == 3 else {
            throw ImageInputError.unexpectedChannelCount(
                file: file, channels: structure.components,
                detail: structure.components == 4 ? "CMYK/YCCK JPEG" : "JPEG with \(structure.components) components")
        }
        guard structure.width * structure.height <= maximumPixelCount else {
            throw ImageInputError.undecodable(
                file: file, reason: "\(structure.width)x\(structure.height) exceeds \(maximumPixelCount) pixels")
        }

        // Stable addresses: libjpeg keeps pointers to both structs.
        let info = UnsafeMutablePointer<jpeg_decompress_struct>.allocate(capacity: 1)
        let errors = UnsafeMutablePointer<jpeg_error_mgr>.allocate(capacity: 1)
        info.initialize(to: jpeg_decompress_struct())
        errors.initialize(to: jpeg_error_mgr())
        let context = JPEGContext(file: file)
        let unmanaged = Unmanaged.passRetained(context)
        defer {
            jpeg_destroy_decompress(info)
            info.deallocate()
            errors.deallocate()
            unmanaged.release()
        }
        info.pointee.err = jpeg_std_error(errors)
        // Validation rules out the fatal conditions; should one slip through, stop with a
        // message naming the file instead of letting libjpeg exit() or returning into it.
        errors.pointee.error_exit = { common in
            var buffer = [CChar](repeating: 0, count: Int(JMSG_LENGTH_MAX))
            common?.pointee.err.pointee.format_message(common, &buffer)
            let file = common.flatMap { $0.pointee.client_data }
                .map { Unmanaged<JPEGContext>.fromOpaque($0).takeUnretainedValue().file } ?? "?"
            fatalError("libjpeg fatal error on \(file) that validation did not foresee: \(cString(buffer))")
        }
        errors.pointee.output_message = { _ in }  // warnings are counted, not printed
        jpeg_CreateDecompress(info, JPEG_LIB_VERSION, MemoryLayout<jpeg_decompress_struct>.size)
        info.pointee.client_data = unmanaged.toOpaque()

        let channels = structure.components == 1 ? 1 : 3
        var pixels = [UInt8](repeating: 0, count: structure.width * structure.height * channels)
        bytes.withUnsafeBufferPointer { input in
            jpeg_mem_src(info, input.baseAddress, UInt(input.count))
            _ = jpeg_read_header(info, 1)
            info.pointee.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB
            _ = jpeg_start_decompress(info)
            let stride = Int(info.pointee.output_width) * channels
            pixels.withUnsafeMutableBufferPointer { out in
                while info.pointee.output_scanline < info.pointee.output_height {
                    var row: JSAMPROW? = out.baseAddress! + Int(info.pointee.output_scanline) * stride
                    _ = jpeg_read_scanlines(info, &row, 1)
                }
            }
            _ = jpeg_finish_decompress(info)
        }
        if errors.pointee.num_warnings > 0 {
            var buffer = [CChar](repeating: 0, count: Int(JMSG_LENGTH_MAX))
            info.withMemoryRebound(to: jpeg_common_struct.self, capacity: 1) { common in
                errors.pointee.format_message(common, &buffer)
            }
            throw ImageInputError.undecodable(file: file, reason: "corrupt JPEG data: \(cString(buffer))")
        }
        return DecodedImage(width: structure.width, height: structure.height, channels: channels, pixels: pixels)
    }
}

/// The text of a NUL-terminated C character buffer.
private func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A structural check of a JPEG file that rejects, before libjpeg sees it, everything libjpeg
/// would treat as a fatal error (its `error_exit`, which must not unwind through Swift).
///
/// Accepted: Huffman-coded baseline, extended-sequential and progressive 8-bit JPEGs
/// (SOF0/1/2) with well-formed segments, defined tables, integral sampling ratios, valid
/// progression parameters and an EOI marker. Refused with `ImageInputError.undecodable`:
/// arithmetic, lossless and hierarchical processes, 12-bit precision, unknown markers, and
/// anything truncated or inconsistent.
struct JPEGStructure {
    var width = 0
    var height = 0
    var components = 0

    private struct Component {
        let id: UInt8
        let h: Int
        let v: Int
        let quantTable: Int
    }

    static func validate(_ b: [UInt8], file: String) throws -> JPEGStructure {
        func fail(_ reason: String) -> ImageInputError { .undecodable(file: file, reason: "JPEG: \(reason)") }
        guard b.count >= 4, b[0] == 0xFF, b[1] == 0xD8 else { throw fail("no SOI marker") }
        var result = JPEGStructure()
        var frame: [Component] = []
        var progressive = false
        var quantDefined = [Bool](repeating: false, count: 4)
        var dcDefined = [Bool](repeating: false, count: 4)
        var acDefined = [Bool](repeating: false, count: 4)
        var scans = 0
        var p = 2
        while true {
            // Between segments only 0xFF fill bytes may precede a marker code.
            guard p < b.count else { throw fail("truncated: no EOI marker") }
            guard b[p] == 0xFF else { throw fail("extraneous bytes before a marker at offset \(p)") }
            while p < b.count && b[p] == 0xFF { p += 1 }
            guard p < b.count else { throw fail("truncated: no EOI marker") }
            let marker = b[p]
            p += 1
            switch marker {
            case 0xD9:  // EOI
                guard !frame.isEmpty, scans > 0 else { throw fail("no image data before EOI") }
                return result
            case 0xD8:
                throw fail("second SOI marker")
            case 0xD0...0xD7, 0x01:  // RSTn / TEM outside a scan: standalone, ignored by libjpeg
                continue
            default:
                break
            }
            guard p + 2 <= b.count else { throw fail("truncated segment length at offset \(p)") }
            let length = Int(b[p]) << 8 | Int(b[p + 1])
            guard length >= 2, p + length <= b.count else { throw fail("segment 0xFF\(hex(marker)) runs past the end (truncated)") }
            let body = Array(b[(p + 2)..<(p + length)])
            let segmentEnd = p + length
            p = segmentEnd

            switch marker {
            case 0xC0, 0xC1, 0xC2:  // SOF: baseline, extended sequential, progressive (Huffman)
                guard frame.isEmpty else { throw fail("two SOF markers") }
                guard body.count >= 6 else { throw fail("short SOF segment") }
                guard body[0] == 8 else { throw fail("\(body[0])-bit precision is not supported") }
                result.height = Int(body[1]) << 8 | Int(body[2])
                result.width = Int(body[3]) << 8 | Int(body[4])
                result.components = Int(body[5])
                guard result.height > 0, result.width > 0 else { throw fail("empty image (zero width or height)") }
                guard result.height <= 65500, result.width <= 65500 else { throw fail("image larger than 65500 pixels") }
                guard (1...10).contains(result.components) else { throw fail("\(result.components) components") }
                guard body.count == 6 + 3 * result.components else { throw fail("SOF length does not match its components") }
                for c in 0..<result.components {
                    let id = body[6 + 3 * c], hv = body[7 + 3 * c], tq = Int(body[8 + 3 * c])
                    let h = Int(hv >> 4), v = Int(hv & 0x0F)
                    guard (1...4).contains(h), (1...4).contains(v) else { throw fail("sampling factors \(h)x\(v)") }
                    guard tq < 4 else { throw fail("quantisation table index \(tq)") }
                    frame.append(Component(id: id, h: h, v: v, quantTable: tq))
                }
                let maxH = frame.map(\.h).max()!, maxV = frame.map(\.v).max()!
                guard frame.allSatisfy({ maxH % $0.h == 0 && maxV % $0.v == 0 }) else {
                    throw fail("fractional sampling ratios are not supported")
                }
                progressive = marker == 0xC2
            case 0xC3, 0xC5...0xC7, 0xC8, 0xC9...0xCB, 0xCD...0xCF:
                throw fail("unsupported coding process (SOF 0xFF\(hex(marker)): lossless, hierarchical or arithmetic)")
            case 0xCC:
                throw fail("arithmetic coding (DAC) is not supported")
            case 0xC4:  // DHT
                var q = 0
                while q < body.count {
                    guard q + 17 <= body.count else { throw fail("short Huffman table") }
                    let tableClass = body[q] >> 4, slot = Int(body[q] & 0x0F)
                    guard tableClass <= 1, slot < 4 else { throw fail("Huffman table index 0x\(hex(body[q]))") }
                    let counts = body[(q + 1)...(q + 16)].map(Int.init)
                    let total = counts.reduce(0, +)
                    guard total <= 256, q + 17 + total <= body.count else { throw fail("bad Huffman table length") }
                    var code = 0
                    for (index, count) in counts.enumerated() {
                        code += count
                        guard code < 1 << (index + 1) else { throw fail("Huffman code lengths overflow") }
                        code <<= 1
                    }
                    let symbols = body[(q + 17)..<(q + 17 + total)]
                    if tableClass == 0 {
                        guard symbols.allSatisfy({ $0 <= 15 }) else { throw fail("DC Huffman symbol above 15") }
                        dcDefined[slot] = true
                    } else {
                        acDefined[slot] = true
                    }
                    q += 17 + total
                }
            case 0xDB:  // DQT
                var q = 0
                while q < body.count {
                    let precision = body[q] >> 4, slot = Int(body[q] & 0x0F)
                    guard slot < 4, precision <= 1 else { throw fail("quantisation table index 0x\(hex(body[q]))") }
                    let size = 1 + 64 * (precision == 0 ? 1 : 2)
                    guard q + size <= body.count else { throw fail("short quantisation table") }
                    quantDefined[slot] = true
                    q += size
                }
            case 0xDD:  // DRI
                guard body.count == 2 else { throw fail("DRI segment length") }
            case 0xDA:  // SOS
                guard !frame.isEmpty else { throw fail("scan before SOF") }
                guard let n = body.first.map(Int.init), (1...4).contains(n), body.count == 4 + 2 * n else {
                    throw fail("bad SOS segment")
                }
                var inScan: [Component] = []
                var needsDC = false, needsAC = false
                let ss = Int(body[1 + 2 * n]), se = Int(body[2 + 2 * n])
                let ah = Int(body[3 + 2 * n] >> 4), al = Int(body[3 + 2 * n] & 0x0F)
                if progressive {
                    var bad = ss == 0 ? se != 0 : (ss > se || se >= 64 || n != 1)
                    if ah != 0 && al != ah - 1 { bad = true }
                    if al > 13 { bad = true }
                    guard !bad else { throw fail("invalid progression parameters Ss=\(ss) Se=\(se) Ah=\(ah) Al=\(al)") }
                    needsDC = ss == 0 && ah == 0
                    needsAC = ss > 0
                } else {
                    needsDC = true
                    needsAC = true
                }
                for i in 0..<n {
                    let id = body[1 + 2 * i], tables = body[2 + 2 * i]
                    guard let component = frame.first(where: { $0.id == id }), !inScan.contains(where: { $0.id == id }) else {
                        throw fail("scan names unknown or repeated component \(id)")
                    }
                    inScan.append(component)
                    let dc = Int(tables >> 4), ac = Int(tables & 0x0F)
                    if needsDC { guard dc < 4, dcDefined[dc] else { throw fail("DC Huffman table \(dc) not defined") } }
                    if needsAC { guard ac < 4, acDefined[ac] else { throw fail("AC Huffman table \(ac) not defined") } }
                    guard quantDefined[component.quantTable] else {
                        throw fail("quantisation table \(component.quantTable) not defined")
                    }
                }
                if n > 1 { guard inScan.reduce(0, { $0 + $1.h * $1.v }) <= 10 else { throw fail("too many blocks per MCU") } }
                scans += 1
                // Skip entropy-coded data: up to the next marker that is not a stuffed 0xFF00 or RSTn.
                while true {
                    guard p + 1 < b.count else { throw fail("truncated scan data (no EOI)") }
                    if b[p] == 0xFF {
                        let next = b[p + 1]
                        if next == 0x00 || (0xD0...0xD7).contains(next) || next == 0xFF {
                            p += next == 0xFF ? 1 : 2
                            continue
                        }
                        break
                    }
                    p += 1
                }
            case 0xDC, 0xE0...0xEF, 0xFE:  // DNL, APPn, COM: skipped
                break
            default:
                throw fail("unknown marker 0xFF\(hex(marker))")
            }
        }
    }

    private static func hex(_ v: UInt8) -> String { String(format: "%02X", v) }
}
