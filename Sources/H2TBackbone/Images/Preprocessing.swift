import H2TCore
import H2TKernels

/// How images are resized to the network input.
public enum ResizeMethod: String, Sendable, Hashable, Codable {
    /// PIL's `Image.resize(size, BILINEAR)` rule, which torchvision's `Resize` uses on PIL images:
    /// a triangle filter on half-pixel centres (`align_corners=False`: output pixel `i` samples
    /// the source at `(i + 0.5) * in / out`), whose support is widened by the scale factor when
    /// shrinking (antialiasing; plain bilinear when enlarging), weights renormalised at the
    /// borders, applied separably (rows, then columns). Computed in `Float` without PIL's
    /// rounding to 8 bits after each pass, so results differ from PIL by at most about 1/255.
    case bilinearPIL = "bilinear_pil_half_pixel"
}

/// How a one-channel image becomes the three channels a backbone takes.
public enum GrayscaleHandling: String, Sendable, Hashable, Codable {
    /// Copy the gray value into R, G and B (PIL `convert("RGB")`).
    case replicate
}

/// Everything that turns a decoded image into network input, recorded in the backbone manifest
/// so that the same example always yields the same features.
///
/// Steps, in order: alpha handling (at decode time), resize to `height`×`width` with `resize`,
/// gray to RGB, scale to 0...1 (`/ 255`), then `(x - mean[c]) / std[c]`; output is channel-first
/// float, `[3, height, width]` per image.
public struct Preprocessing: Sendable, Hashable, Codable {
    /// Output rows.
    public var height: Int
    /// Output columns.
    public var width: Int
    /// Resize rule.
    public var resize: ResizeMethod
    /// One-channel handling.
    public var grayscale: GrayscaleHandling
    /// Alpha handling when decoding PNGs.
    public var alpha: AlphaHandling
    /// Per-channel mean on 0...1, RGB.
    public var mean: [Float]
    /// Per-channel standard deviation on 0...1, RGB.
    public var std: [Float]

    /// Creates a preprocessing description.
    public init(height: Int, width: Int, mean: [Float], std: [Float], resize: ResizeMethod = .bilinearPIL,
                grayscale: GrayscaleHandling = .replicate, alpha: AlphaHandling = .drop) {
        self.height = height
        self.width = width
        self.mean = mean
        self.std = std
        self.resize = resize
        self.grayscale = grayscale
        self.alpha = alpha
    }

    /// The preprocessing a backbone's weights were trained with, at a square `size`.
    public init(architecture: BackboneArchitecture, size: Int, alpha: AlphaHandling = .drop) {
        let normalisation = architecture.normalisation
        self.init(height: size, width: size, mean: normalisation.mean, std: normalisation.std, alpha: alpha)
    }

    /// The default square input size for sources of the given size: 64 for small sources such as
    /// 28×28 (Fashion-)MNIST, where 224 would cost 12× the compute for no extra detail; 224 (the
    /// training size) otherwise.
    public static func defaultInputSize(sourceWidth: Int, sourceHeight: Int) -> Int {
        max(sourceWidth, sourceHeight) <= 64 ? 64 : 224
    }

    /// Floats per preprocessed image (`3 * height * width`).
    public var valuesPerImage: Int { 3 * height * width }

    /// Checks sizes and statistics.
    public func validate() throws {
        guard height > 0, width > 0, height <= 4096, width <= 4096 else {
            throw ImageInputError.invalidPreprocessing(reason: "size \(width)x\(height) is outside 1...4096")
        }
        guard mean.count == 3, std.count == 3 else {
            throw ImageInputError.invalidPreprocessing(reason: "mean and std need 3 values each")
        }
        guard std.allSatisfy({ $0 > 0 && $0.isFinite }), mean.allSatisfy(\.isFinite) else {
            throw ImageInputError.invalidPreprocessing(reason: "std must be positive and finite")
        }
    }

    /// Preprocesses `image` into `output` (`valuesPerImage` floats, channel-first).
    public func write(_ image: DecodedImage, to output: UnsafeMutableBufferPointer<Float>) {
        image.pixels.withUnsafeBufferPointer { pixels in
            write(pixels: pixels, width: image.width, height: image.height, channels: image.channels,
                  horizontal: ResampleAxis(input: image.width, output: width),
                  vertical: ResampleAxis(input: image.height, output: height), to: output)
        }
    }

    /// Preprocesses `images` into one `[N, 3, height, width]` tensor, the images shared among
    /// `parallelism`'s threads (each image's values do not depend on which thread wrote them).
    public func tensor(_ images: [DecodedImage], parallelism: Parallelism = .default) -> [Float] {
        let per = valuesPerImage
        return [Float](unsafeUninitializedCapacity: images.count * per) { buffer, initialized in
            let base = UnsafeSendable(buffer.baseAddress)
            // `try?`: the body cannot throw, so neither can the map.
            _ = try? Parallel.map(count: images.count, parallelism: parallelism) { i in
                write(images[i], to: UnsafeMutableBufferPointer(start: base.value! + i * per, count: per))
            }
            initialized = images.count * per
        }
    }

    /// Preprocesses images `range` of an IDX stack into one `[range.count, 3, height, width]`
    /// tensor, the images shared among `parallelism`'s threads.
    public func tensor(_ images: GrayscaleImages, range: Range<Int>, parallelism: Parallelism = .default) -> [Float] {
        [Float](unsafeUninitializedCapacity: range.count * valuesPerImage) { buffer, initialized in
            write(images, range: range, parallelism: parallelism, into: buffer)
            initialized = range.count * valuesPerImage
        }
    }

    /// ``tensor(_:range:parallelism:)`` written into `output` (at least `range.count ×
    /// valuesPerImage` floats, which need not be initialised), e.g. memory reused from segment
    /// to segment.
    public func write(_ images: GrayscaleImages, range: Range<Int>, parallelism: Parallelism = .default,
                      into output: UnsafeMutableBufferPointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= images.count, "image range out of bounds")
        let per = valuesPerImage
        precondition(output.count >= range.count * per, "output buffer too small")
        let size = images.height * images.width
        let horizontal = ResampleAxis(input: images.width, output: width)
        let vertical = ResampleAxis(input: images.height, output: height)
        let base = UnsafeSendable(output.baseAddress)
        images.pixels.withUnsafeBufferPointer { pixels in
            let source = UnsafeSendable(pixels)
            // `try?`: the body cannot throw, so neither can the map.
            _ = try? Parallel.map(count: range.count, parallelism: parallelism) { k in
                let i = range.lowerBound + k
                write(pixels: UnsafeBufferPointer(rebasing: source.value[(i * size)..<((i + 1) * size)]),
                      width: images.width, height: images.height, channels: 1,
                      horizontal: horizontal, vertical: vertical,
                      to: UnsafeMutableBufferPointer(start: base.value! + k * per, count: per))
            }
        }
    }

    /// Resizes rows first (`[inHeight][outW][channels]`), then columns, then normalises; every
    /// output value is the same sum in the same order as PIL's separable rule describes
    /// (`ResizeKernels`, eight values at a time, bit-identical to one at a time).
    private func write(pixels: UnsafeBufferPointer<UInt8>, width inWidth: Int, height inHeight: Int, channels: Int,
                       horizontal: ResampleAxis, vertical: ResampleAxis, to output: UnsafeMutableBufferPointer<Float>) {
        precondition(output.count >= valuesPerImage, "output buffer too small")
        precondition(channels == 1 || channels == 3, "images have 1 or 3 channels")
        precondition(pixels.count >= inWidth * inHeight * channels, "pixel buffer too small")
        precondition(horizontal.starts.count == width && vertical.starts.count == height, "resampling axes of another size")
        let outW = width, outH = height, plane = outH * outW, length = outW * channels
        let scale: [Float] = (0..<3).map { 1 / (255 * std[$0]) }
        let shift: [Float] = (0..<3).map { -mean[$0] / std[$0] }
        let rows = UnsafeMutablePointer<Float>.allocate(capacity: inHeight * length)
        let scratch = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: inWidth * channels)
        let line = UnsafeMutablePointer<Float>.allocate(capacity: length)
        defer { rows.deallocate(); scratch.deallocate(); line.deallocate() }
        horizontal.starts.withUnsafeBufferPointer { starts in
            horizontal.counts.withUnsafeBufferPointer { counts in
                horizontal.weights.withUnsafeBufferPointer { weights in
                    ResizeKernels.horizontal(pixels: pixels.baseAddress!, rows: inHeight, width: inWidth, channels: channels, outWidth: outW,
                                             starts: starts.baseAddress!,
                                             counts: counts.baseAddress!, weights: weights.baseAddress!, stride: horizontal.stride,
                                             scratch: scratch, output: rows, isa: Int32(InstructionSet.selected.rawValue))
                }
            }
        }
        let out = output.baseAddress!
        vertical.weights.withUnsafeBufferPointer { weights in
            for y in 0..<outH {
                ResizeKernels.vertical(rows: rows, length: length, first: vertical.starts[y], taps: vertical.counts[y],
                                       weights: weights.baseAddress! + y * vertical.stride, line: line)
                let target = out + y * outW
                if channels == 1 {
                    for k in 0..<3 {
                        let (a, b) = (scale[k], shift[k])
                        for x in 0..<outW { target[k * plane + x] = line[x] * a + b }
                    }
                } else {
                    for c in 0..<3 {
                        let (a, b) = (scale[c], shift[c])
                        for x in 0..<outW { target[c * plane + x] = line[x * 3 + c] * a + b }
                    }
                }
            }
        }
    }
}

/// Precomputed filter taps for resizing one axis from `input` to `output` samples (PIL's rule,
/// see `ResizeMethod.bilinearPIL`).
struct ResampleAxis {
    /// First source index of each output sample.
    var starts: [Int] = []
    /// Number of taps of each output sample.
    var counts: [Int] = []
    /// Weights, `stride` slots per output sample.
    var weights: [Float] = []
    var stride = 0

    init(input: Int, output: Int) {
        let scale = Double(input) / Double(output)
        let filterScale = max(scale, 1)
        let support = 1.0 * filterScale  // the triangle filter's support is 1
        stride = Int(support.rounded(.up)) * 2 + 1
        weights = [Float](repeating: 0, count: output * stride)
        for i in 0..<output {
            let center = (Double(i) + 0.5) * scale
            let first = max(Int(center - support + 0.5), 0)        // C truncation, as PIL
            let last = min(Int(center + support + 0.5), input)
            var taps = [Double]()
            for s in first..<max(first, last) {
                let x = abs((Double(s) - center + 0.5) / filterScale)
                taps.append(x < 1 ? 1 - x : 0)
            }
            let total = taps.reduce(0, +)
            starts.append(first)
            counts.append(taps.count)
            for (t, w) in taps.enumerated() { weights[i * stride + t] = Float(total == 0 ? 0 : w / total) }
        }
    }
}
