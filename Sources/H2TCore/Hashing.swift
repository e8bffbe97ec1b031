#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto

/// SHA-256 (FIPS 180-4), used to verify pinned artefacts and to fingerprint stored data: a thin
/// byte-array front to swift-crypto's `SHA256` (BoringSSL's assembly on Linux, CryptoKit on Apple
/// platforms), which hashes several times faster than the hand-written one it replaced
/// (`h2t-bench hash`, docs/benchmarks.md "Identity").
///
/// One-shot use: `SHA256.hash(bytes)`; incremental use: `var h = SHA256(); h.update(a);
/// h.update(b); let digest = h.finalize()`.
public struct SHA256: @unchecked Sendable {
    // @unchecked Sendable: swift-crypto 3's `SHA256` is a value type whose state is copied on
    // write (and on `finalize`), but it is not marked `Sendable`.
    /// Length of a digest in bytes.
    public static let digestByteCount = 32

    private var hasher = Crypto.SHA256()

    /// Creates a hasher in the initial state.
    public init() {}

    /// Feeds `bytes` into the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
    }

    /// Feeds the bytes of `bytes` into the hash.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Feeds the UTF-8 bytes of `string` into the hash.
    public mutating func update(_ string: String) {
        var copy = string
        copy.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    /// Returns the 32-byte digest of everything fed so far. The hasher itself is not changed,
    /// so more bytes may be fed afterwards (the digest then covers the longer message).
    public func finalize() -> [UInt8] {
        // `finalize` of swift-crypto's value type works on a copy of its state.
        Array(hasher.finalize())
    }

    /// Returns the digest as 64 lowercase hexadecimal characters.
    public func hexFinalize() -> String { Hex.encode(finalize()) }

    // MARK: One-shot helpers

    /// The 32-byte digest of `bytes`.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var hasher = Crypto.SHA256()
        hasher.update(bufferPointer: bytes)
        return Array(hasher.finalize())
    }

    /// The 32-byte digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { hash($0) }
    }

    /// The digest of `bytes` as 64 lowercase hexadecimal characters.
    public static func hexDigest(_ bytes: UnsafeRawBufferPointer) -> String { Hex.encode(hash(bytes)) }

    /// The digest of `bytes` as 64 lowercase hexadecimal characters.
    public static func hexDigest(_ bytes: [UInt8]) -> String { Hex.encode(hash(bytes)) }

    /// The digest of the UTF-8 bytes of `string` as 64 lowercase hexadecimal characters.
    public static func hexDigest(_ string: String) -> String {
        var hasher = SHA256()
        hasher.update(string)
        return hasher.hexFinalize()
    }

    /// The digest of the file at `path` (a regular file or a pipe), read in 1 MiB chunks through
    /// one buffer, as 64 lowercase hex characters.
    ///
    /// - Throws: `FileReadError` naming the path when it cannot be opened or read.
    public static func hexDigest(fileAtPath path: String) throws(FileReadError) -> String {
        let file = try InputFile(path: path)
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try file.read(into: buffer)
            if n == 0 { return hasher.hexFinalize() }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
    }

    /// Lowercase hexadecimal spelling of `bytes` (the same as `Hex.encode`).
    public static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }
}

/// Lowercase hexadecimal spelling of bytes, and back: the one hex helper of the package
/// (ids, example ids, key prefixes).
public enum Hex {
    /// `bytes` as lowercase hex digits, two per byte, written straight into the string's
    /// storage (a table array and a byte array per call made `predict`'s 10,000 example ids a
    /// serial 8 ms).
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        bytes.withContiguousStorageIfAvailable { encode(UnsafeRawBufferPointer($0)) } ?? Array(bytes).withUnsafeBytes { encode($0) }
    }

    /// ``encode(_:)`` of raw memory.
    public static func encode(_ bytes: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: 2 * bytes.count) { out in
            @inline(__always) func digit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x57 + v }
            for (i, b) in bytes.enumerated() {
                out[2 * i] = digit(b >> 4)
                out[2 * i + 1] = digit(b & 0x0f)
            }
            return 2 * bytes.count
        }
    }

    /// The bytes spelled by `text` (hex digits of either case, an even number of them), or `nil`.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let high = nibble(chars[i]), let low = nibble(chars[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
}
