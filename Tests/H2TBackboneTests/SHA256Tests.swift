import Foundation
import H2TCore
import Testing

/// `H2TCore.SHA256` (swift-crypto underneath) against the NIST FIPS 180-4 example vectors and
/// hashlib-computed padding edge cases: the known answers the hand-written SHA-256 it replaced was
/// checked with.
@Suite struct SHA256Tests {
    /// `Hex` spells every byte value as `%02x` does, from an array, a non-contiguous sequence and
    /// raw memory alike, and reads it back.
    @Test func hexOfEveryByte() {
        let bytes = (0...255).map { UInt8($0) }
        let expected = bytes.map { String(format: "%02x", $0) }.joined()
        #expect(Hex.encode(bytes) == expected)
        #expect(Hex.encode(bytes.lazy.map { $0 }) == expected)
        #expect(bytes.withUnsafeBytes { Hex.encode($0) } == expected)
        #expect(Hex.encode([UInt8]()) == "")
        #expect(Hex.decode(expected) == bytes && Hex.decode(expected.uppercased()) == bytes)
    }

    @Test func emptyMessage() {
        #expect(SHA256.hexDigest([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test func abc() {
        #expect(SHA256.hexDigest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func twoBlockMessage448Bits() {
        let message = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        #expect(SHA256.hexDigest(message) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func message896Bits() {
        let message = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
        #expect(SHA256.hexDigest(message) == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    @Test func oneMillionA() {
        let bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(SHA256.hexDigest(bytes) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // The same message fed in uneven pieces must give the same digest.
        var hasher = SHA256()
        var offset = 0
        var piece = 1
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            bytes[offset..<end].withUnsafeBytes { hasher.update($0) }
            offset = end
            piece = piece * 3 % 997 + 1
        }
        #expect(hasher.hexFinalize() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Lengths around the 56- and 64-byte padding boundaries (expected values from Python hashlib).
    @Test(arguments: [
        (55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"),
        (56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"),
        (63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"),
        (64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"),
        (65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"),
        (119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"),
        (120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"),
        (128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"),
    ])
    func paddingBoundaries(length: Int, expected: String) {
        let bytes = (0..<length).map { UInt8(($0 * 7 + 3) % 256) }
        #expect(SHA256.hexDigest(bytes) == expected)
        // Byte-at-a-time feeding exercises the pending-block path.
        var hasher = SHA256()
        for b in bytes { hasher.update([b]) }
        #expect(hasher.hexFinalize() == expected)
    }

    @Test func finalizeDoesNotConsumeTheHasher() {
        var hasher = SHA256()
        hasher.update("ab")
        _ = hasher.finalize()
        hasher.update("c")
        #expect(hasher.hexFinalize() == SHA256.hexDigest("abc"))
    }

    @Test func fileDigestMatchesInMemoryDigest() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sha256-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: url) }
        let bytes = (0..<(3 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        try Data(bytes).write(to: url)
        #expect(try SHA256.hexDigest(fileAtPath: url.path) == SHA256.hexDigest(bytes))
    }

    @Test func missingFileNamesThePath() {
        let error = #expect(throws: FileReadError.self) {
            try SHA256.hexDigest(fileAtPath: "/nonexistent/h2t/file.bin")
        }
        #expect(error?.description.contains("/nonexistent/h2t/file.bin") == true)
    }
}
