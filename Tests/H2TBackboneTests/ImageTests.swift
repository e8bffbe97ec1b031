import Foundation
import H2TBackbone
import H2TCore
import H2TKernels
import H2TTestSupport
import Testing

/// Expected values written by tools/image_reference.py (Pillow decodes, float preprocessing).
private enum ImageReference {
    static var expected: [String: Any] {
        (try? Fixtures.json("images_expected.json") as? [String: Any]) ?? [:]
    }
    static var decoded: [String: [String: Any]] { expected["decoded"] as? [String: [String: Any]] ?? [:] }
    static var preprocessing: [[String: Any]] { expected["preprocessing"] as? [[String: Any]] ?? [] }
    static func path(_ name: String) throws -> String { try Fixtures.url("images/\(name)").path }
    static func idx(_ name: String) throws -> String { try Fixtures.url("idx/\(name)").path }
}

@Suite struct IDXTests {
    @Test(arguments: ["images.idx3-ubyte", "images.idx3-ubyte.gz"])
    func readsRawAndGzipped(file: String) throws {
        let expected = try #require(Fixtures.json("idx/idx_expected.json") as? [String: Any])
        let images = try IDX.readImages(path: ImageReference.idx(file))
        #expect(images.count == 3 && images.height == 4 && images.width == 5)
        #expect(images.pixels.map(Int.init) == expected["pixels"] as? [Int])
        #expect(images.image(1).pixels == Array(images.pixels[20..<40]))
    }

    @Test func readsADatasetAndChecksCounts() throws {
        let dataset = try IDX.readDataset(images: ImageReference.idx("images.idx3-ubyte.gz"),
                                          labels: ImageReference.idx("labels.idx1-ubyte.gz"))
        #expect(dataset.labels == [7, 0, 9])
        let images = try ImageReference.idx("images.idx3-ubyte.gz")
        let labels = try ImageReference.idx("labels_two.idx1-ubyte.gz")
        let error = #expect(throws: ImageInputError.self) { try IDX.readDataset(images: images, labels: labels) }
        #expect(error == .countMismatch(images: images, labels: labels, imageCount: 3, labelCount: 2))
    }

    @Test func badFilesAreErrorsNamingThem() throws {
        let truncated = try ImageReference.idx("truncated.idx3-ubyte.gz")
        let e1 = #expect(throws: ImageInputError.self) { try IDX.readImages(path: truncated) }
        #expect(e1?.description.hasPrefix("\(truncated): corrupt gzip data") == true)

        let short = try ImageReference.idx("short.idx3-ubyte")
        let e2 = #expect(throws: ImageInputError.self) { try IDX.readImages(path: short) }
        #expect(e2 == .sizeMismatch(file: short, expected: 76, actual: 71))

        let float = try ImageReference.idx("float.idx3")
        let e3 = #expect(throws: ImageInputError.self) { try IDX.readImages(path: float) }
        #expect(e3?.description.contains("element type 0xd") == true)

        let labels = try ImageReference.idx("labels.idx1-ubyte.gz")
        let e4 = #expect(throws: ImageInputError.self) { try IDX.readImages(path: labels) }
        #expect(e4?.description.contains("3 dimensions") == true)

        let e5 = #expect(throws: ImageInputError.self) { try IDX.readLabels(path: "/nonexistent/labels.gz") }
        #expect(e5?.description.hasPrefix("/nonexistent/labels.gz: cannot read") == true)

        let png = try ImageReference.path("gray.png")
        #expect(throws: ImageInputError.self) { try IDX.readImages(path: png) }

        // The whole-file check an ingest runs beside a read of the first images finds each of
        // these as the whole read does, and passes a good file.
        for bad in [truncated, short, float, labels, png, "/nonexistent/images.gz"] {
            var whole: ImageInputError?, checked: ImageInputError?
            do { _ = try IDX.readImages(path: bad) } catch let error as ImageInputError { whole = error }
            do { try IDX.checkImages(path: bad) } catch let error as ImageInputError { checked = error }
            #expect(checked != nil && checked == whole, "\(bad)")
        }
        try IDX.checkImages(path: ImageReference.idx("images.idx3-ubyte.gz"))
    }

    /// Files are mapped, not read into memory; a pipe (`--idx <(zcat …)`) has nothing to map and
    /// is read to its end instead: the same images, whole or a prefix, and the same checks. A
    /// directory is one line naming it.
    @Test(arguments: ["images.idx3-ubyte", "images.idx3-ubyte.gz"])
    func aPipeReadsAsTheFileDoes(file: String) throws {
        let path = try ImageReference.idx(file)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let dir = TemporaryDirectory()
        let fifo = dir.file("images.pipe")
        // Each read opens the pipe anew, so a writer thread feeds it once per read.
        func throughPipe<R>(_ read: () throws -> R) throws -> R {
            #expect(mkfifo(fifo, 0o600) == 0)
            defer { unlink(fifo) }
            let writer = Thread {
                guard let handle = FileHandle(forWritingAtPath: fifo) else { return }
                try? handle.write(contentsOf: bytes)
                try? handle.close()
            }
            writer.start()
            return try read()
        }
        let whole = try IDX.readImages(path: path)
        #expect(try throughPipe { try IDX.readImages(path: fifo) } == whole)
        let prefix = try throughPipe { try IDX.readImages(path: fifo, limit: 2) }
        #expect(prefix.fileCount == 3 && prefix.images.pixels == Array(whole.pixels[0..<40]))
        try throughPipe { try IDX.checkImages(path: fifo) }

        let folder = #expect(throws: ImageInputError.self) { try IDX.readImages(path: dir.path) }
        #expect(folder == .unreadable(file: dir.path, reason: "is a directory"))
        let missing = #expect(throws: ImageInputError.self) { try IDX.checkImages(path: dir.file("absent.gz")) }
        #expect(missing == .unreadable(file: dir.file("absent.gz"), reason: "No such file or directory"))
    }

    /// 0×N and N×0 images would all hash to one example and pool to nothing: an input error.
    @Test(arguments: [(0, 0), (0, 5), (4, 0)])
    func emptyImagesAreRefused(size: (Int, Int)) throws {
        let path = NSTemporaryDirectory() + "h2t-empty-\(size.0)x\(size.1)-\(UUID().uuidString).idx3"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let header: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, UInt8(size.0), 0, 0, 0, UInt8(size.1)]
        try Data(header + [UInt8](repeating: 1, count: 3 * size.0 * size.1)).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: ImageInputError.self) { try IDX.readImages(path: path) }
        #expect(error?.description.hasPrefix("\(path): ") == true)
        #expect(error?.description.contains("\(size.0)×\(size.1) pixels") == true)
    }

    /// A limited read inflates only the images it needs: the same bytes as the full read's first
    /// images; a file cut after them still serves them, one cut before them is named as short;
    /// without a limit the cut file is corrupt gzip, as before.
    @Test(.enabled(if: TestPaths.cache.isPresent(.fashionMNISTTestImages), "run tools/fetch-artifacts fashion_mnist"))
    func limitedReadsInflateOnlyWhatTheyNeed() throws {
        let path = try TestPaths.cache.verifiedPath(of: .fashionMNISTTestImages)
        let full = try IDX.readImages(path: path)
        for limit in [1, 1000, 9_999, 10_000, 20_000] {
            let (images, fileCount) = try IDX.readImages(path: path, limit: limit)
            #expect(fileCount == 10_000)
            #expect(images.count == min(limit, 10_000) && images.height == 28 && images.width == 28)
            #expect(images.pixels == Array(full.pixels[..<(images.count * 784)]))
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = NSTemporaryDirectory() + "h2t-cut-\(UUID().uuidString)-images-idx3-ubyte.gz"
        defer { try? FileManager.default.removeItem(atPath: cut) }
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let (first, _) = try IDX.readImages(path: cut, limit: 1000)
        #expect(first.pixels == Array(full.pixels[..<(1000 * 784)]))
        let short = #expect(throws: ImageInputError.self) { try IDX.readImages(path: cut, limit: 9_999) }
        #expect(short?.description.hasPrefix("\(cut): ") == true)
        let corrupt = #expect(throws: ImageInputError.self) { try IDX.readImages(path: cut) }
        #expect(corrupt?.description.hasPrefix("\(cut): corrupt gzip data") == true)
        let checked = #expect(throws: ImageInputError.self) { try IDX.checkImages(path: cut) }
        #expect(checked != nil && checked == corrupt)
        try IDX.checkImages(path: path)
    }

    /// A gzip file of several members (as `cat a.gz b.gz` makes) reads as its members' bytes
    /// joined, whole, as a prefix and in the whole-file check, across the reader's 1 MB pieces; cut
    /// inside a member it is corrupt.
    @Test(.enabled(if: TestPaths.cache.isPresent(.fashionMNISTTestImages), "run tools/fetch-artifacts fashion_mnist"))
    func multiMemberGzipReadsAsOneStream() throws {
        let full = try IDX.readImages(path: TestPaths.cache.verifiedPath(of: .fashionMNISTTestImages))
        let header: [UInt8] = [0, 0, 8, 3] + [full.count, full.height, full.width].flatMap { n in
            (0..<4).map { UInt8(truncatingIfNeeded: n >> (24 - 8 * $0)) }
        }
        let idx = header + full.pixels
        let split = 1_000_003
        let file = Self.storedGzipMember(Array(idx[..<split])) + Self.storedGzipMember(Array(idx[split...]))
        let dir = TemporaryDirectory()
        let path = dir.file("members.idx3-ubyte.gz"), cut = dir.file("cut.idx3-ubyte.gz")
        try Data(file).write(to: URL(fileURLWithPath: path))
        try Data(file[..<(file.count - 2_000_000)]).write(to: URL(fileURLWithPath: cut))
        #expect(try IDX.readImages(path: path) == full)
        let (first, count) = try IDX.readImages(path: path, limit: 5_000)
        #expect(count == full.count && first.pixels == Array(full.pixels[..<(5_000 * 784)]))
        try IDX.checkImages(path: path)
        let truncated = ImageInputError.corruptGzip(file: cut, reason: "stream ends early (truncated)")
        #expect(throws: truncated) { try IDX.readImages(path: cut) }
        #expect(throws: truncated) { try IDX.checkImages(path: cut) }
    }

    /// One gzip member holding `bytes` in stored (uncompressed) deflate blocks.
    static func storedGzipMember(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]
        var start = 0
        repeat {
            let n = min(65_535, bytes.count - start)
            out.append(start + n == bytes.count ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += bytes[start..<(start + n)]
            start += n
        } while start < bytes.count
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc = ~crc
        let size = UInt32(truncatingIfNeeded: bytes.count)
        return out + [crc, size].flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    }

    @Test(.enabled(if: TestPaths.cache.isPresent(.fashionMNISTTestImages) && TestPaths.cache.isPresent(.fashionMNISTTestLabels),
                   "run tools/fetch-artifacts fashion_mnist"))
    func realFashionMNISTTestSplit() throws {
        let data = try IDX.fashionMNIST(train: false, cache: TestPaths.cache)
        #expect(data.images.count == 10_000 && data.images.height == 28 && data.images.width == 28)
        // Reference values from Python's gzip module on the same file.
        #expect(data.images.pixels.reduce(0) { $0 + Int($1) } == 573_469_082)
        #expect(data.images.pixels[..<784].reduce(0) { $0 + Int($1) } == 33_456)
        #expect(Array(data.labels.prefix(10)) == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        #expect((0..<10).map { c in data.labels.count { $0 == c } } == Array(repeating: 1000, count: 10))
    }
}

@Suite struct ImageDecodingTests {
    @Test(arguments: ["gray.png", "rgb.png", "rgba.png", "gray_alpha.png", "palette.png",
                      "rgb.jpg", "rgb_progressive.jpg", "gray.jpg"])
    func decodesLikePillow(name: String) throws {
        let reference = try #require(ImageReference.decoded[name])
        let image = try ImageDecoder.decode(contentsOfFile: ImageReference.path(name))
        #expect(image.width == reference["width"] as? Int)
        #expect(image.height == reference["height"] as? Int)
        #expect(image.channels == reference["channels"] as? Int)
        #expect(image.pixels.map(Int.init) == reference["pixels"] as? [Int])
    }

    @Test func alphaCanBeRejected() throws {
        let path = try ImageReference.path("rgba.png")
        let error = #expect(throws: ImageInputError.self) { try ImageDecoder.decode(contentsOfFile: path, alpha: .reject) }
        guard case .unexpectedChannelCount(let file, 4, _) = error else {
            Issue.record("expected unexpectedChannelCount(4), got \(String(describing: error))")
            return
        }
        #expect(file == path)
    }

    @Test func cmykJPEGHasAnUnexpectedChannelCount() throws {
        let path = try ImageReference.path("cmyk.jpg")
        let error = #expect(throws: ImageInputError.self) { try ImageDecoder.decode(contentsOfFile: path) }
        #expect(error?.description.hasPrefix("\(path): unexpected channel count 4") == true)
    }

    @Test(arguments: ["truncated.jpg", "corrupt_data.jpg", "corrupt.png", "not_an_image.png"])
    func corruptFilesAreErrorsNamingThem(name: String) throws {
        let path = try ImageReference.path(name)
        let error = #expect(throws: ImageInputError.self) { try ImageDecoder.decode(contentsOfFile: path) }
        #expect(error?.description.hasPrefix("\(path): not a decodable PNG/JPEG image") == true, "\(String(describing: error))")
    }

    /// libjpeg's fatal errors must never be reached: every truncation and every single-byte
    /// change of the headers either decodes or throws (a miss would stop the test process).
    @Test(arguments: ["rgb.jpg", "rgb_progressive.jpg", "gray.jpg"])
    func mangledJPEGsNeverReachLibjpegFatalErrors(name: String) throws {
        let bytes = try Fixtures.bytes("images/\(name)")
        for length in 0..<bytes.count {
            #expect(throws: ImageInputError.self) { try ImageDecoder.decode(bytes: Array(bytes[..<length]), file: "cut") }
        }
        // Headers: everything up to the end of the first scan header, each byte changed 3 ways.
        let sos = try #require((0..<(bytes.count - 1)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xDA })
        for position in 0..<(sos + 14) {
            for delta: UInt8 in [0x01, 0x80, 0xFF] {
                var mangled = bytes
                mangled[position] ^= delta
                _ = try? ImageDecoder.decode(bytes: mangled, file: "mangled")
            }
        }
    }

    @Test func mangledPNGsNeverCrash() throws {
        let bytes = try Fixtures.bytes("images/rgb.png")
        // Without the final 12-byte IEND chunk the pixel data is still complete (Pillow reads it too).
        #expect(try ImageDecoder.decode(bytes: Array(bytes.dropLast(12)), file: "no-iend").width == 11)
        for length in 0..<(bytes.count - 12) {
            #expect(throws: ImageInputError.self) { try ImageDecoder.decode(bytes: Array(bytes[..<length]), file: "cut") }
        }
        for position in bytes.indices {
            var mangled = bytes
            mangled[position] ^= 0x55
            _ = try? ImageDecoder.decode(bytes: mangled, file: "mangled")
        }
    }

    @Test(.enabled(if: TestPaths.cache.isPresent(.chelsea), "run tools/fetch-artifacts skimage_samples"))
    func realSamplePhotos() throws {
        let chelsea = try ImageDecoder.decode(contentsOfFile: TestPaths.cache.verifiedPath(of: .chelsea))
        #expect(chelsea.width == 451 && chelsea.height == 300 && chelsea.channels == 3)
        #expect(chelsea.pixels.reduce(0) { $0 + Int($1) } == 46_802_357)  // Pillow's sum
        let coffee = try ImageDecoder.decode(contentsOfFile: TestPaths.cache.verifiedPath(of: .coffee))
        #expect(coffee.width == 600 && coffee.height == 400)
        #expect(coffee.pixels.reduce(0) { $0 + Int($1) } == 71_003_487)
    }
}

@Suite struct PreprocessingTests {
    static let identity = Preprocessing(height: 1, width: 4, mean: [0, 0, 0], std: [1, 1, 1])

    /// Values on 0...255 after resizing one row (mean 0, std 1/255 keeps pixel units).
    static func resizeRow(_ row: [UInt8], to width: Int) -> [Float] {
        let p = Preprocessing(height: 1, width: width, mean: [0, 0, 0], std: [1.0 / 255, 1.0 / 255, 1.0 / 255])
        let out = p.tensor([DecodedImage(width: row.count, height: 1, channels: 1, pixels: row)])
        return Array(out[0..<width])
    }

    @Test func halfPixelBilinearClosedForms() {
        // Enlarging: align_corners=False bilinear, edges clamped.
        #expect(Self.resizeRow([0, 100], to: 4) == [0, 25, 75, 100])
        // Same size: identity.
        #expect(Self.resizeRow([3, 200, 17, 90], to: 4) == [3, 200, 17, 90])
        // Shrinking 2x widens the triangle to 2 px (antialias): taps 0.75, 0.75, 0.25 over 1.75.
        let shrunk = Self.resizeRow([0, 10, 20, 30], to: 2)
        #expect(abs(shrunk[0] - 12.5 / 1.75) < 1e-4)
        #expect(abs(shrunk[1] - (10 * 0.25 + 20 * 0.75 + 30 * 0.75) / 1.75) < 1e-4)
    }

    @Test func normalisationAndGrayReplication() {
        let p = Preprocessing(height: 1, width: 1, mean: [0.5, 0.25, 0], std: [0.5, 0.25, 2])
        let out = p.tensor([DecodedImage(width: 1, height: 1, channels: 1, pixels: [255])])
        #expect(out == [1, 3, 0.5])
        let rgb = p.tensor([DecodedImage(width: 1, height: 1, channels: 3, pixels: [0, 255, 51])])
        #expect(abs(rgb[0] + 1) < 1e-6 && abs(rgb[1] - 3) < 1e-6 && abs(rgb[2] - 0.1) < 1e-6)
    }

    @Test func matchesThePythonReference() throws {
        let cases = ImageReference.preprocessing
        #expect(cases.count == 5)
        for c in cases {
            let name = try #require(c["image"] as? String)
            let width = try #require(c["width"] as? Int), height = try #require(c["height"] as? Int)
            let mean = try #require(c["mean"] as? [Double]).map(Float.init)
            let std = try #require(c["std"] as? [Double]).map(Float.init)
            let expected = try #require(c["tensor"] as? [Double])
            let image = try ImageDecoder.decode(contentsOfFile: ImageReference.path(name))
            let out = Preprocessing(height: height, width: width, mean: mean, std: std).tensor([image])
            #expect(out.count == 3 * width * height)
            let worst = zip(out, expected).map { abs(Double($0) - $1) }.max() ?? .infinity
            #expect(worst < 2e-5, "\(name) -> \(width)x\(height): max |Δ| \(worst)")
        }
    }

    @Test func idxPathEqualsDecodedImagePath() throws {
        let images = try IDX.readImages(path: ImageReference.idx("images.idx3-ubyte"))
        let p = Preprocessing(architecture: .mobileNetV2, size: 9)
        let viaStack = p.tensor(images, range: 1..<3)
        let viaImages = p.tensor([images.image(1), images.image(2)])
        #expect(viaStack == viaImages)
        #expect(viaStack.count == 2 * 3 * 81)
    }

    @Test func recordsAsJSONAndValidates() throws {
        let p = Preprocessing(architecture: .efficientNetLite0, size: 64)
        let data = try JSONEncoder().encode(p)
        #expect(try JSONDecoder().decode(Preprocessing.self, from: data) == p)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("bilinear_pil_half_pixel") && text.contains("replicate"))
        try p.validate()
        #expect(throws: ImageInputError.self) { try Preprocessing(height: 0, width: 4, mean: [0, 0, 0], std: [1, 1, 1]).validate() }
        #expect(throws: ImageInputError.self) { try Preprocessing(height: 4, width: 4, mean: [0, 0, 0], std: [1, 0, 1]).validate() }
        #expect(Preprocessing.defaultInputSize(sourceWidth: 28, sourceHeight: 28) == 64)
        #expect(Preprocessing.defaultInputSize(sourceWidth: 451, sourceHeight: 300) == 224)
    }
}

@Suite struct ImageFolderTests {
    /// classA: 2 good images + 3 bad files; classB: 1 good (alpha dropped) + 1 truncated; a loose file.
    static func makeFolder() throws -> URL {
        let root = try TestPaths.temporaryDirectory("folder")
        let fm = FileManager.default
        func copy(_ fixture: String, _ destination: String) throws {
            let target = root.appendingPathComponent(destination)
            try fm.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.copyItem(at: Fixtures.url("images/\(fixture)"), to: target)
        }
        try copy("rgb.png", "classA/001.png")
        try copy("gray.jpg", "classA/002.JPG")
        try copy("cmyk.jpg", "classA/003.jpg")
        try copy("not_an_image.png", "classA/004.png")
        try copy("gray.png", "classA/sub/005.png")  // class folders are read recursively
        try "notes".write(to: root.appendingPathComponent("classA/notes.txt"), atomically: true, encoding: .utf8)
        try "hidden".write(to: root.appendingPathComponent("classA/.DS_Store"), atomically: true, encoding: .utf8)
        try copy("rgba.png", "classB/a.png")
        try copy("truncated.jpg", "classB/b.jpg")
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("classB/c.png").path,
                                  withDestinationPath: "/nonexistent/target.png")
        try copy("gray.png", "loose.png")
        return root
    }

    @Test func scanAndDecodeReportEverySkippedFile() throws {
        let root = try Self.makeFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let folder = try ImageFolder.scan(root.path)
        #expect(folder.classNames == ["classA", "classB"])
        let a = root.appendingPathComponent("classA").path, b = root.appendingPathComponent("classB").path
        #expect(folder.items.map(\.path) == ["\(a)/001.png", "\(a)/002.JPG", "\(a)/003.jpg", "\(a)/sub/005.png",
                                             "\(b)/a.png", "\(b)/b.jpg"])
        #expect(folder.items.map(\.label) == [0, 0, 0, 0, 1, 1])
        let scanSkips = Dictionary(uniqueKeysWithValues: folder.skipped.map { ($0.path, $0.reason) })
        #expect(scanSkips.count == 4)
        #expect(scanSkips["\(a)/004.png"] == .wrongSignature)
        #expect(scanSkips["\(a)/notes.txt"] == .notAnImage(extension: "txt"))
        #expect(scanSkips[root.appendingPathComponent("loose.png").path] == .outsideClassFolder)
        if case .unreadable? = scanSkips["\(b)/c.png"] {} else { Issue.record("broken link not reported: \(folder.skipped)") }

        let p = Preprocessing(architecture: .mobileNetV2, size: 8)
        let batch = folder.decodeBatch(0..<folder.items.count, preprocessing: p)
        #expect(batch.items.map(\.path) == ["\(a)/001.png", "\(a)/002.JPG", "\(a)/sub/005.png", "\(b)/a.png"])
        #expect(batch.tensor.count == 4 * p.valuesPerImage)
        #expect(batch.skipped.map(\.path) == ["\(a)/003.jpg", "\(b)/b.jpg"])
        if case .unexpectedChannelCount(4, _) = batch.skipped[0].reason {} else { Issue.record("\(batch.skipped[0])") }
        if case .undecodable = batch.skipped[1].reason {} else { Issue.record("\(batch.skipped[1])") }
        #expect(batch.skipped[1].description.hasPrefix("\(b)/b.jpg: undecodable"))

        // Rejecting alpha turns the RGBA file into a reported skip too.
        var strict = p
        strict.alpha = .reject
        let strictBatch = folder.decodeBatch(4..<5, preprocessing: strict)
        #expect(strictBatch.items.isEmpty && strictBatch.skipped.count == 1)
    }

    @Test func emptyFoldersAreErrorsNamingThem() throws {
        let root = try TestPaths.temporaryDirectory("empty")
        defer { try? FileManager.default.removeItem(at: root) }
        let e1 = #expect(throws: ImageInputError.self) { try ImageFolder.scan(root.path) }
        #expect(e1?.description.hasPrefix("\(root.path): no class subfolders") == true)

        try FileManager.default.createDirectory(at: root.appendingPathComponent("cats"), withIntermediateDirectories: true)
        try "x".write(to: root.appendingPathComponent("cats/readme.md"), atomically: true, encoding: .utf8)
        let e2 = #expect(throws: ImageInputError.self) { try ImageFolder.scan(root.path) }
        #expect(e2?.description.contains("no usable images in 1 class folders; skipped 1") == true)
        #expect(e2?.description.contains("readme.md: not an image") == true)

        let e3 = #expect(throws: ImageInputError.self) { try ImageFolder.scan(root.path + "/missing") }
        #expect(e3?.description.hasPrefix("\(root.path)/missing: image folder does not exist") == true)
    }
}

/// The resize kernels against the one-value-at-a-time loops they replace, bit for bit: row
/// counts that leave partial groups of eight, lengths that leave vector tails, one and three
/// channels, both interleaving paths (scalar, and AVX2 where the CPU has it).
@Suite struct ResizeKernelTests {
    @Test func horizontalAndVerticalPassesMatchTheScalarSums() {
        var rng = SplitMix64(seed: 77)
        let paths: [Int32] = InstructionSet.detected >= .avx2 ? [0, 1] : [0]
        for (rows, width, channels, outWidth) in [(13, 37, 3, 11), (8, 9, 1, 20), (21, 64, 3, 64), (3, 5, 1, 2)] {
            let pixels = (0..<(rows * width * channels)).map { _ in UInt8(rng.below(256)) }
            let stride = 7
            var starts: [Int] = [], counts: [Int] = [], weights = [Float](repeating: 0, count: outWidth * stride)
            for x in 0..<outWidth {
                let count = 1 + rng.below(min(stride, width))
                let start = rng.below(width - count + 1)
                starts.append(Int(start))
                counts.append(Int(count))
                for t in 0..<Int(count) { weights[x * stride + t] = Float(rng.below(1000)) / 997 }
            }
            var expected = [Float](repeating: 0, count: rows * outWidth * channels)
            for y in 0..<rows { for x in 0..<outWidth { for c in 0..<channels {
                var sum: Float = 0
                for t in 0..<counts[x] { sum += weights[x * stride + t] * Float(pixels[(y * width + starts[x] + t) * channels + c]) }
                expected[(y * outWidth + x) * channels + c] = sum
            } } }
            for isa in paths {
                let scratch = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: width * channels)
                defer { scratch.deallocate() }
                var output = [Float](repeating: .nan, count: rows * outWidth * channels)
                output.withUnsafeMutableBufferPointer { out in
                    ResizeKernels.horizontal(pixels: pixels, rows: rows, width: width, channels: channels, outWidth: outWidth,
                                             starts: starts, counts: counts, weights: weights, stride: stride,
                                             scratch: scratch, output: out.baseAddress!, isa: isa)
                }
                #expect(output == expected, "horizontal, \(rows)×\(width)×\(channels), isa \(isa)")
            }
            // Vertical: output row from `taps` of the rows just computed.
            let length = outWidth * channels, taps = min(rows, 5), first = rows - taps
            let vertical = (0..<taps).map { _ in Float(rng.below(1000)) / 991 }
            var line = [Float](repeating: .nan, count: length)
            expected.withUnsafeBufferPointer { source in
                line.withUnsafeMutableBufferPointer { target in
                    ResizeKernels.vertical(rows: source.baseAddress!, length: length, first: first, taps: taps, weights: vertical,
                                           line: target.baseAddress!)
                }
            }
            let scalar = (0..<length).map { j -> Float in
                var sum: Float = 0
                for t in 0..<taps { sum += vertical[t] * expected[(first + t) * length + j] }
                return sum
            }
            #expect(line == scalar, "vertical, length \(length)")
        }
    }
}
