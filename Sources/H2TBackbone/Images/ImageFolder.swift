import Foundation

/// A labelled image folder: one subfolder per class, as torchvision's `ImageFolder` reads it.
///
/// Classes are the subfolder names in byte order (label = position); each class folder is read
/// recursively, files before subfolders, both in byte order of their names; hidden entries
/// (starting with `.`) are ignored. Nothing is
/// skipped silently: every file that is not used is listed in `skipped` with the reason, at scan
/// time (not an image by its extension or signature, unreadable, a loose file at the top level)
/// or when decoding (`decodeBatch`).
public struct ImageFolder: Sendable {
    /// One usable image file.
    public struct Item: Sendable, Hashable {
        /// Full path.
        public let path: String
        /// Label (index into `classNames`).
        public let label: Int
    }

    /// Why a file was left out.
    public enum SkipReason: Sendable, Hashable, CustomStringConvertible {
        /// The name's extension is not an image extension.
        case notAnImage(extension: String)
        /// The extension says image but the first bytes are neither PNG nor JPEG.
        case wrongSignature
        /// Opening or reading failed.
        case unreadable(String)
        /// The decoder refused it (corrupt, truncated, unsupported variant).
        case undecodable(String)
        /// Decoded, but with a channel layout the pipeline does not accept.
        case unexpectedChannelCount(Int, String)
        /// A regular file directly in the root folder, which belongs to no class.
        case outsideClassFolder

        /// One phrase.
        public var description: String {
            switch self {
            case .notAnImage(let ext): "not an image (extension '\(ext)')"
            case .wrongSignature: "not a PNG or JPEG (file signature)"
            case .unreadable(let reason): "unreadable: \(reason)"
            case .undecodable(let reason): "undecodable: \(reason)"
            case .unexpectedChannelCount(let n, let detail): "unexpected channel count \(n) (\(detail))"
            case .outsideClassFolder: "not inside a class folder"
            }
        }
    }

    /// A file that was left out, and why.
    public struct Skipped: Sendable, Hashable, CustomStringConvertible {
        /// Full path.
        public let path: String
        /// The reason.
        public let reason: SkipReason
        /// `path: reason`.
        public var description: String { "\(path): \(reason)" }
    }

    /// Decoded, preprocessed images of a batch, with what was skipped while decoding.
    public struct Batch: Sendable {
        /// `[items.count, 3, H, W]` channel-first floats.
        public let tensor: [Float]
        /// The items that made it into `tensor`, in order.
        public let items: [Item]
        /// Items of the requested range that failed to decode.
        public let skipped: [Skipped]
    }

    /// Extensions (lower case, without the dot) taken as images.
    public static let imageExtensions: Set<String> = ["png", "jpg", "jpeg"]

    /// The root folder.
    public let root: String
    /// Class names (subfolder names), sorted; a label is an index into this list.
    public let classNames: [String]
    /// Usable image files, class by class.
    public let items: [Item]
    /// Files left out at scan time, with reasons.
    public let skipped: [Skipped]

    /// Checks that `root` is a directory, without reading it.
    ///
    /// - Throws: `ImageInputError.emptyFolder` naming `root` when it does not exist or is a file.
    public static func checkExists(_ root: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) else {
            throw ImageInputError.emptyFolder(path: root, reason: "image folder does not exist")
        }
        guard isDirectory.boolValue else {
            throw ImageInputError.emptyFolder(path: root, reason: "is a file, not an image folder")
        }
    }

    /// Scans `root`.
    ///
    /// - Throws: `ImageInputError.emptyFolder` naming `root` when it does not exist, has no class
    ///   subfolder, or no class subfolder holds a usable image (the skipped files are summarised
    ///   in the message).
    public static func scan(_ root: String) throws -> ImageFolder {
        let fm = FileManager.default
        try checkExists(root)
        let entries: [String]
        do {
            entries = try fm.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }.sorted(by: byteOrder)
        } catch {
            throw ImageInputError.unreadable(file: root, reason: (error as NSError).localizedDescription)
        }
        var classNames: [String] = []
        var items: [Item] = []
        var skipped: [Skipped] = []
        for entry in entries {
            let path = (root as NSString).appendingPathComponent(entry)
            var entryIsDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &entryIsDirectory) else {
                skipped.append(Skipped(path: path, reason: .unreadable("broken link or vanished file")))
                continue
            }
            guard entryIsDirectory.boolValue else {
                skipped.append(Skipped(path: path, reason: .outsideClassFolder))
                continue
            }
            let label = classNames.count
            classNames.append(entry)
            collect(folder: path, label: label, depth: 0, items: &items, skipped: &skipped)
        }
        guard !classNames.isEmpty else {
            let detail = skipped.isEmpty ? "" : " (\(skipped.count) loose files at the top level)"
            throw ImageInputError.emptyFolder(path: root, reason: "no class subfolders in the image folder\(detail)")
        }
        guard !items.isEmpty else {
            let summary = skipped.prefix(3).map(\.description).joined(separator: "; ")
            throw ImageInputError.emptyFolder(
                path: root, reason: "no usable images in \(classNames.count) class folders"
                    + (skipped.isEmpty ? "" : "; skipped \(skipped.count): \(summary)"))
        }
        return ImageFolder(root: root, classNames: classNames, items: items, skipped: skipped)
    }

    /// Decodes `item` (throws `ImageInputError` naming the file).
    public func decode(_ item: Item, alpha: AlphaHandling = .drop) throws -> DecodedImage {
        try ImageDecoder.decode(contentsOfFile: item.path, alpha: alpha)
    }

    /// Decodes and preprocesses `items[range]`, reporting (not throwing) files that fail to decode.
    public func decodeBatch(_ range: Range<Int>, preprocessing: Preprocessing) -> Batch {
        var images: [DecodedImage] = []
        var used: [Item] = []
        var failed: [Skipped] = []
        for item in items[range] {
            do {
                images.append(try decode(item, alpha: preprocessing.alpha))
                used.append(item)
            } catch let error as ImageInputError {
                failed.append(Skipped(path: item.path, reason: Self.skipReason(error)))
            } catch {
                failed.append(Skipped(path: item.path, reason: .undecodable("\(error)")))
            }
        }
        return Batch(tensor: preprocessing.tensor(images), items: used, skipped: failed)
    }

    /// The reason a decode error gives for skipping its file (without the path, which
    /// `Skipped` carries).
    public static func skipReason(_ error: ImageInputError) -> SkipReason {
        switch error {
        case .unreadable(_, let reason): .unreadable(reason)
        case .unexpectedChannelCount(_, let n, let detail): .unexpectedChannelCount(n, detail)
        case .undecodable(_, let reason): .undecodable(reason)
        default: .undecodable(error.description)
        }
    }

    /// Adds the images under `folder` (recursively, as torchvision's `ImageFolder` walks class
    /// folders): files of a folder in byte order, then its subfolders in byte order.
    private static func collect(folder: String, label: Int, depth: Int, items: inout [Item], skipped: inout [Skipped]) {
        let fm = FileManager.default
        let names: [String]
        do {
            names = try fm.contentsOfDirectory(atPath: folder).filter { !$0.hasPrefix(".") }.sorted(by: byteOrder)
        } catch {
            skipped.append(Skipped(path: folder, reason: .unreadable((error as NSError).localizedDescription)))
            return
        }
        var subfolders: [String] = []
        for name in names {
            let file = (folder as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            if fm.fileExists(atPath: file, isDirectory: &isDirectory), isDirectory.boolValue {
                subfolders.append(file)
            } else if let reason = scanProblem(file) {
                skipped.append(Skipped(path: file, reason: reason))
            } else {
                items.append(Item(path: file, label: label))
            }
        }
        for subfolder in subfolders {
            // Symbolic links are followed; the depth bound stops link cycles.
            guard depth < 32 else {
                skipped.append(Skipped(path: subfolder, reason: .unreadable("nested more than 32 folders deep (link cycle?)")))
                continue
            }
            collect(folder: subfolder, label: label, depth: depth + 1, items: &items, skipped: &skipped)
        }
    }

    /// Cheap checks made while scanning: extension, readability and the first bytes.
    private static func scanProblem(_ file: String) -> SkipReason? {
        let ext = (file as NSString).pathExtension.lowercased()
        guard imageExtensions.contains(ext) else { return .notAnImage(extension: ext) }
        guard let handle = FileHandle(forReadingAtPath: file) else { return .unreadable("cannot open") }
        defer { try? handle.close() }
        let head: Data
        do {
            head = try handle.read(upToCount: 8) ?? Data()
        } catch {
            return .unreadable((error as NSError).localizedDescription)
        }
        let bytes = [UInt8](head)
        return ImageDecoder.isPNG(bytes) || ImageDecoder.isJPEG(bytes) ? nil : .wrongSignature
    }

    private static func byteOrder(_ a: String, _ b: String) -> Bool { Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8)) }
}
