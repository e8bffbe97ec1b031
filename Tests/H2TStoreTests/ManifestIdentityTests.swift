import Foundation
import H2TCore
import H2TStore
import Testing

/// Ids are content hashes of canonical JSON: every manifest that was ever stored must keep its id.
/// The expected ids below were computed by the build before the canonical-JSON writer and the
/// pooling rule were introduced (Foundation's `JSONEncoder` with `.sortedKeys` on Linux).
@Suite("Manifest identities")
struct ManifestIdentityTests {
    /// A preprocessing record as the image backbones write it (floats, enums, nested numbers).
    struct PreprocessingLike: Codable {
        var height = 224, width = 224
        var resize = "bilinear_pil_half_pixel", grayscale = "replicate", alpha = "drop"
        var mean: [Float] = [0.485, 0.456, 0.406]
        var std: [Float] = [0.229, 0.224, 0.225]
    }

    static func fixtures() throws -> [(name: String, bytes: [UInt8])] {
        let toy = BackboneManifest(architecture: "external:toy", weightsSHA256: nil,
                                   taps: [TapDescriptor(name: "conv", shape: [4, 4, 4]), TapDescriptor(name: "logits", shape: [8])])
        let toyID = try toy.identity()
        let pyreader = BackboneManifest(architecture: "external:pyreader-test", weightsSHA256: nil,
                                        taps: [TapDescriptor(name: "a", shape: [100]), TapDescriptor(name: "b", shape: [50])])
        let other = BackboneManifest(architecture: "external:résumé/net", weightsSHA256: String(repeating: "ab", count: 32),
                                     preprocessing: .object(["size": .number(224), "mean": .array([.number(0.485), .number(0.456)]),
                                                             "note": .string("a/b \"q\""), "flip": .bool(false), "crop": .null]),
                                     taps: [TapDescriptor(name: "x", shape: [3])])
        let image = BackboneManifest(architecture: "mobilenet_v2", weightsSHA256: String(repeating: "0f", count: 32),
                                     preprocessing: try JSONValue(encoding: PreprocessingLike()),
                                     taps: [TapDescriptor(name: "features.0", shape: [32, 112, 112]),
                                            TapDescriptor(name: "features.18", shape: [1280, 7, 7]),
                                            TapDescriptor(name: "classifier", shape: [1000])])
        let awkward = BackboneManifest(architecture: "external:keys", weightsSHA256: nil,
                                       preprocessing: .object(["a10": .number(1e20), "a2": .number(3e-7), "B": .number(-0.0),
                                                               "_x": .number(1.5), "é": .string("\u{1}\n\t\\/é😀"), "Z": .number(123456789012)]),
                                       taps: [])
        var out: [(String, [UInt8])] = []
        for (name, backbone) in [("toy", toy), ("pyreader", pyreader), ("other", other), ("image", image), ("awkward", awkward)] {
            out.append(("backbone \(name)", try CanonicalJSON.encode(backbone)))
        }
        out.append(("featureset toy F_T 16", try CanonicalJSON.encode(
            FeatureSetManifest(backbone: toy, backboneID: toyID, targetSize: 16, codec: .lossless, columnBlock: 8))))
        out.append(("featureset image F_T 8192 default codec", try CanonicalJSON.encode(
            FeatureSetManifest(backbone: image, backboneID: try image.identity(), targetSize: 8192))))
        out.append(("featureset pyreader float16", try CanonicalJSON.encode(
            FeatureSetManifest(backbone: pyreader, backboneID: try pyreader.identity(), targetSize: 64,
                               codec: TileCodec(dtype: .float16, compressed: false, frameWidth: 3), columnBlock: 64))))
        out.append(("dataset", try CanonicalJSON.encode(DatasetManifest(name: "toy", classNames: ["cat", "dog", "ü"], splits: ["train": 9, "test": 3]))))
        out.append(("example", try CanonicalJSON.encode(ExampleRecord(name: "dir/img 1.png", source: "tab\there"))))
        return out
    }

    static let expected: [String: String] = [
        "backbone toy": "64b7dce5cb12c6e18f11303281e1fc220980f81c6cea981370475301677c6512",
        "backbone pyreader": "92ead702e952cc8a7d360a8dccd8fd894d41a140ba014543c5e6748b83b539cc",
        "backbone other": "425ee8f651ba386033a23ea14478c112a76a3bd210b69641fcca09c6a611c827",
        "backbone image": "2a627cfc997613cf5aa9660af7d01f3e8eb6e73a9b79d6ad38b47fa5975e0d03",
        "backbone awkward": "2842a2c973809f320e8141a831b00ea03645fdaeeb1f882f81f087b385476bbf",
        "featureset toy F_T 16": "9f4e084fe10f7a6e4a3ae17b2bc0ce2d8bde66dede1d5366ce5eff13823869f6",
        "featureset image F_T 8192 default codec": "1772c8224fe9e1010ddfebebb7393b1a404975975d835a52be6c6b7ecf01b0d1",
        "featureset pyreader float16": "26042325b31333e13a78a3dd729dbdac0cdb57b11f8c78676d58cc5c4323d33e",
        "dataset": "8bb90c788f898eed146e95c6e03a73fbcec09755ac212e5af4fd1fb4c603eed8",
        "example": "95b9b9d5fe883589642c7a3e2dbd849731e65cc81e65646247e06ac8027fcd59",
    ]

    @Test func idsOfKnownManifestsAreUnchanged() throws {
        let fixtures = try Self.fixtures()
        #expect(fixtures.count == Self.expected.count)
        for (name, bytes) in fixtures {
            let id = SHA256.hex(SHA256.hash(bytes))
            #expect(Self.expected[name] == id, "\(name)")
        }
    }
}
