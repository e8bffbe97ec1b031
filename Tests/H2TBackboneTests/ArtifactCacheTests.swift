import Foundation
import H2TBackbone
import Testing

/// Locations shared by the tests: the repository root (from this file's path) and temp folders.
enum TestPaths {
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func temporaryDirectory(_ label: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("h2t-\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// The user's artefact cache (as the CLI resolves it), used to gate real-data tests.
    static let cache = ArtifactCache()
}

@Suite struct ArtifactCacheTests {
    /// The Swift pins and tools/artifacts.json (read by tools/fetch-artifacts) must agree exactly.
    @Test func swiftPinsMatchToolPinTable() throws {
        struct Table: Decodable { let format: Int; let artifacts: [ArtifactPin] }
        let data = try Data(contentsOf: TestPaths.repositoryRoot.appendingPathComponent("tools/artifacts.json"))
        let table = try JSONDecoder().decode(Table.self, from: data)
        #expect(table.format == 1)
        #expect(table.artifacts == Artifact.allCases.map(\.pin))
    }

    @Test func cacheFolderResolution() {
        #expect(ArtifactCache(environment: ["HOME": "/srv/u"]).root == "/srv/u/.cache/h2t-store")
        #expect(ArtifactCache(environment: ["HOME": "/srv/u", "H2T_CACHE": "/data/c"]).root == "/data/c")
        let explicit = ArtifactCache(explicitRoot: "/x/y", environment: ["H2T_CACHE": "/data/c"])
        #expect(explicit.root == "/x/y")
        #expect(explicit.isExplicit)
    }

    @Test func missingArtifactNamesFileAndCommand() throws {
        let dir = try TestPaths.temporaryDirectory("cache")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = ArtifactCache(environment: ["H2T_CACHE": dir.path])
        let error = #expect(throws: ArtifactError.self) { try cache.verifiedPath(of: .mobilenetV2) }
        let message = error?.description ?? ""
        #expect(message.contains("tools/fetch-artifacts mobilenet_v2"))
        #expect(message.contains(dir.appendingPathComponent("weights/mobilenet_v2-b0353104.pth").path))
        #expect(!cache.isPresent(.mobilenetV2))

        // With an explicit folder the command must repeat it, or it would fetch elsewhere.
        let explicit = ArtifactCache(explicitRoot: dir.path + "/with space")
        let explicitError = #expect(throws: ArtifactError.self) { try explicit.verifiedContents(of: .chelsea) }
        #expect(explicitError?.description.contains("tools/fetch-artifacts --cache '\(dir.path)/with space' skimage_samples") == true)
    }

    @Test func corruptedArtifactIsRefused() throws {
        let dir = try TestPaths.temporaryDirectory("cache")
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = ArtifactCache(explicitRoot: dir.path)
        let path = cache.expectedPath(of: .fashionMNISTTestLabels)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try Data(repeating: 0, count: Artifact.fashionMNISTTestLabels.pin.bytes).write(to: URL(fileURLWithPath: path))
        #expect(cache.isPresent(.fashionMNISTTestLabels))  // right size, wrong bytes
        let error = #expect(throws: ArtifactError.self) { try cache.verifiedPath(of: .fashionMNISTTestLabels) }
        guard case .checksumMismatch(let name, let p, let expected, _, let command) = error else {
            Issue.record("expected a checksum mismatch, got \(String(describing: error))")
            return
        }
        #expect(name == "fashion_mnist_test_labels")
        #expect(p == path)
        #expect(expected == Artifact.fashionMNISTTestLabels.pin.sha256)
        #expect(command.hasPrefix("tools/fetch-artifacts --cache"))
    }

    @Test(.enabled(if: TestPaths.cache.isPresent(.fashionMNISTTestLabels), "run tools/fetch-artifacts first"))
    func realArtifactVerifies() throws {
        let path = try TestPaths.cache.verifiedPath(of: .fashionMNISTTestLabels)
        #expect(path.hasSuffix("fashion-mnist/t10k-labels-idx1-ubyte.gz"))
        #expect(try TestPaths.cache.verifiedContents(of: .fashionMNISTTestLabels).count == 5_125)
    }
}
