import CZlib

/// A minimal reader for zip archives whose members are stored uncompressed, as `torch.save`
/// writes them (so that tensors can be memory-mapped in place).
///
/// Only what such files use is supported: one disk, no zip64, no encryption, method 0 (stored).
/// Anything else is refused with a message naming the file and member. Each member's CRC-32 is
/// checked when it is read, which catches corrupted tensor bytes.
struct StoredZipArchive {
    struct Entry {
        let name: String
        let dataOffset: Int
        let size: Int
        let crc32: UInt32
    }

    let bytes: [UInt8]
    let file: String
    /// Members in central-directory order.
    private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]

    static func looksLikeZip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x50 && bytes[1] == 0x4B && bytes[2] == 0x03 && bytes[3] == 0x04
    }

    init(bytes: [UInt8], file: String) throws {
        self.bytes = bytes
        self.file = file
        // End of central directory: 22 bytes plus a comment of up to 65535 bytes, found from the end.
        let minimum = 22
        guard bytes.count >= minimum else { throw truncated(0, minimum, "zip end-of-central-directory record") }
        var eocd = -1
        var candidate = bytes.count - minimum
        let lowest = max(0, bytes.count - minimum - 65535)
        while candidate >= lowest {
            if u32(candidate) == 0x0605_4B50 { eocd = candidate; break }
            candidate -= 1
        }
        guard eocd >= 0 else {
            throw WeightFileError.unknownFormat(file: file, reason: "zip end-of-central-directory record not found (truncated?)")
        }
        let diskNumber = u16(eocd + 4), cdDisk = u16(eocd + 6)
        let entriesOnDisk = u16(eocd + 8), entryCount = u16(eocd + 10)
        let cdSize = Int(u32(eocd + 12)), cdOffset = Int(u32(eocd + 16))
        if entryCount == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            throw WeightFileError.unsupportedZip(file: file, reason: "zip64 archives are not supported")
        }
        guard diskNumber == 0, cdDisk == 0, entriesOnDisk == entryCount else {
            throw WeightFileError.unsupportedZip(file: file, reason: "multi-disk archives are not supported")
        }
        guard cdOffset <= eocd, cdSize <= eocd - cdOffset else {
            throw truncated(cdOffset, cdSize, "zip central directory")
        }
        var p = cdOffset
        for _ in 0..<Int(entryCount) {
            guard p + 46 <= eocd else { throw truncated(p, 46, "zip central directory entry") }
            guard u32(p) == 0x0201_4B50 else {
                throw WeightFileError.malformed(file: file, reason: "bad zip central directory signature at offset \(p)")
            }
            let flags = u16(p + 8), method = u16(p + 10)
            let crc = u32(p + 16)
            let compressedSize = Int(u32(p + 20)), size = Int(u32(p + 24))
            let nameLength = Int(u16(p + 28)), extraLength = Int(u16(p + 30)), commentLength = Int(u16(p + 32))
            let localOffset = Int(u32(p + 42))
            guard p + 46 + nameLength <= eocd else { throw truncated(p + 46, nameLength, "zip member name") }
            let name = String(decoding: bytes[(p + 46)..<(p + 46 + nameLength)], as: UTF8.self)
            if size == 0xFFFF_FFFF || compressedSize == 0xFFFF_FFFF || localOffset == 0xFFFF_FFFF {
                throw WeightFileError.unsupportedZip(file: file, reason: "member \(name) uses zip64 sizes")
            }
            guard flags & 0x1 == 0 else {
                throw WeightFileError.unsupportedZip(file: file, reason: "member \(name) is encrypted")
            }
            guard method == 0 else {
                throw WeightFileError.unsupportedZip(
                    file: file, reason: "member \(name) uses compression method \(method); only stored (0) members are read")
            }
            guard compressedSize == size else {
                throw WeightFileError.malformed(file: file, reason: "stored member \(name) has different sizes")
            }
            // The local header repeats name and extra field with its own lengths (torch pads the
            // extra field so that tensor data is 64-byte aligned); the data follows it.
            guard localOffset + 30 <= bytes.count else { throw truncated(localOffset, 30, "zip local header of \(name)") }
            guard u32(localOffset) == 0x0403_4B50 else {
                throw WeightFileError.malformed(file: file, reason: "bad zip local header signature for \(name)")
            }
            let dataOffset = localOffset + 30 + Int(u16(localOffset + 26)) + Int(u16(localOffset + 28))
            guard dataOffset <= bytes.count, size <= bytes.count - dataOffset else {
                throw truncated(dataOffset, size, "zip member \(name)")
            }
            index[name] = entries.count
            entries.append(Entry(name: name, dataOffset: dataOffset, size: size, crc32: crc))
            p += 46 + nameLength + extraLength + commentLength
        }
    }

    func entry(named name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The member's bytes after checking their CRC-32.
    func contents(of entry: Entry) throws -> ArraySlice<UInt8> {
        let slice = bytes[entry.dataOffset..<(entry.dataOffset + entry.size)]
        let crc = slice.withUnsafeBytes { raw -> UInt32 in
            var value = crc32(0, nil, 0)
            var base = raw.baseAddress?.assumingMemoryBound(to: Bytef.self)
            var remaining = raw.count
            while remaining > 0 {  // zlib takes a 32-bit length
                let n = min(remaining, 1 << 30)
                value = crc32(value, base, uInt(n))
                base = base.map { $0 + n }
                remaining -= n
            }
            return UInt32(value)
        }
        guard crc == entry.crc32 else {
            throw WeightFileError.malformed(file: file, reason: "zip member \(entry.name) fails its CRC-32 check (corrupted)")
        }
        return slice
    }

    private func truncated(_ offset: Int, _ needed: Int, _ what: String) -> WeightFileError {
        .truncated(file: file, offset: offset, needed: needed, what: what)
    }

    private func u16(_ p: Int) -> UInt16 { UInt16(bytes[p]) | UInt16(bytes[p + 1]) << 8 }
    private func u32(_ p: Int) -> UInt32 {
        UInt32(bytes[p]) | UInt32(bytes[p + 1]) << 8 | UInt32(bytes[p + 2]) << 16 | UInt32(bytes[p + 3]) << 24
    }
}
