/// Big-endian composite keys, so that related records sort together and scans are sequential.
///
/// Key layout (documented for other readers in `schemas/store-format.md`):
/// - `tiles`:        fs(16) | segmentStart u32 | columnBlock u32
/// - `segments`:     fs(16) | segmentStart u32          → rowCount u32 LE
/// - `rows`:         fs(16) | example(32)               → row u32 BE
/// - `rowexamples`:  fs(16) | row u32                   → example(32)
/// - `splititems`:   dataset | 0 | split | 0 | index u32 → example(32) | label u32 LE
/// - `splitmembers`: dataset | 0 | split | 0 | example(32) → index u32 BE
/// where fs(16) is the first 16 bytes of the feature set's SHA-256 id.
enum Keys {
    static func fsPrefix(_ id: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var it = Array(id.utf8).makeIterator()
        func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
        for _ in 0..<16 {
            guard let h = it.next(), let l = it.next() else { break }
            out.append(nibble(h) << 4 | nibble(l))
        }
        return out
    }

    static func u32(_ v: Int) -> [UInt8] {
        let x = UInt32(v)
        return [UInt8(x >> 24), UInt8(truncatingIfNeeded: x >> 16), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x)]
    }

    static func readU32BE(_ p: UnsafeRawBufferPointer, _ at: Int) -> Int {
        Int(p[at]) << 24 | Int(p[at + 1]) << 16 | Int(p[at + 2]) << 8 | Int(p[at + 3])
    }

    static func readU32LE(_ p: UnsafeRawBufferPointer, _ at: Int) -> Int {
        Int(p[at]) | Int(p[at + 1]) << 8 | Int(p[at + 2]) << 16 | Int(p[at + 3]) << 24
    }

    static func u32LE(_ v: Int) -> [UInt8] {
        let x = UInt32(v)
        return [UInt8(truncatingIfNeeded: x), UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x >> 16), UInt8(x >> 24)]
    }

    static func tile(_ fs: [UInt8], segment: Int, block: Int) -> [UInt8] { fs + u32(segment) + u32(block) }
    static func segment(_ fs: [UInt8], start: Int) -> [UInt8] { fs + u32(start) }
    static func row(_ fs: [UInt8], example: ExampleID) -> [UInt8] { fs + example.bytes }
    static func rowExample(_ fs: [UInt8], row: Int) -> [UInt8] { fs + u32(row) }
    static func split(_ dataset: String, _ split: String) -> [UInt8] { Array(dataset.utf8) + [0] + Array(split.utf8) + [0] }

    /// Human-readable form of a tile key for error messages.
    static func describeTile(_ fsID: String, segment: Int, block: Int) -> String {
        "tiles/\(fsID.prefix(12))/rows@\(segment)/block\(block)"
    }
}
