// The SHA-256 that H2TCore carried before it took swift-crypto's (Sources/H2TCore/SHA256.swift
// until issue 13): kept here, unchanged, as the baseline of `h2t-bench hash`, so that the choice
// can be re-measured on another machine (docs/benchmarks.md "Identity").

struct HandWrittenSHA256 {
    /// Length of a digest in bytes.
    static let digestByteCount = 32
    /// Length of one compression block in bytes.
    static let blockByteCount = 64

    private var state: State = .initial
    /// Bytes of an incomplete block carried to the next `update` (always fewer than 64).
    private var pending: [UInt8] = []
    /// Total number of bytes fed so far.
    private var byteCount: UInt64 = 0

    /// Creates a hasher in the initial state.
    init() { pending.reserveCapacity(HandWrittenSHA256.blockByteCount) }

    /// Feeds `bytes` into the hash.
    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress, bytes.count > 0 else { return }
        var remaining = bytes.count
        byteCount &+= UInt64(remaining)
        if !pending.isEmpty {
            let take = min(HandWrittenSHA256.blockByteCount - pending.count, remaining)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base, count: take))
            base += take
            remaining -= take
            if pending.count == HandWrittenSHA256.blockByteCount {
                pending.withUnsafeBytes { HandWrittenSHA256.compress(&state, blocks: $0.baseAddress!, count: 1) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        let fullBlocks = remaining / HandWrittenSHA256.blockByteCount
        if fullBlocks > 0 {
            HandWrittenSHA256.compress(&state, blocks: base, count: fullBlocks)
            base += fullBlocks * HandWrittenSHA256.blockByteCount
            remaining -= fullBlocks * HandWrittenSHA256.blockByteCount
        }
        if remaining > 0 {
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base, count: remaining))
        }
    }

    /// Feeds the bytes of `bytes` into the hash.
    mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Returns the 32-byte digest of everything fed so far. The hasher itself is not changed,
    /// so more bytes may be fed afterwards (the digest then covers the longer message).
    func finalize() -> [UInt8] {
        var state = self.state
        // Padding: 0x80, zeros up to 56 mod 64, then the message length in bits, big-endian.
        var tail = pending
        tail.append(0x80)
        while tail.count % HandWrittenSHA256.blockByteCount != 56 { tail.append(0) }
        let bitCount = byteCount &* 8
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitCount >> UInt64(shift))) }
        tail.withUnsafeBytes { HandWrittenSHA256.compress(&state, blocks: $0.baseAddress!, count: $0.count / HandWrittenSHA256.blockByteCount) }
        var digest = [UInt8]()
        digest.reserveCapacity(HandWrittenSHA256.digestByteCount)
        for word in state.words {
            digest.append(UInt8(truncatingIfNeeded: word >> 24))
            digest.append(UInt8(truncatingIfNeeded: word >> 16))
            digest.append(UInt8(truncatingIfNeeded: word >> 8))
            digest.append(UInt8(truncatingIfNeeded: word))
        }
        return digest
    }

    /// The 32-byte digest of `bytes`.
    static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var hasher = HandWrittenSHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    // MARK: Compression

    struct State: Sendable {
        var a, b, c, d, e, f, g, h: UInt32
        static let initial = State(a: 0x6a09e667, b: 0xbb67ae85, c: 0x3c6ef372, d: 0xa54ff53a,
                                   e: 0x510e527f, f: 0x9b05688c, g: 0x1f83d9ab, h: 0x5be0cd19)
        var words: [UInt32] { [a, b, c, d, e, f, g, h] }
    }

    static let roundConstants: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    @inline(__always)
    static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 &- n)) }

    /// Runs the compression function over `count` consecutive 64-byte blocks at `blocks`.
    static func compress(_ state: inout State, blocks: UnsafeRawPointer, count: Int) {
        roundConstants.withUnsafeBufferPointer { kBuf in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
                let k = kBuf.baseAddress!
                let w = w.baseAddress!
                var s = state
                for blockIndex in 0..<count {
                    let block = blocks + blockIndex &* 64
                    for i in 0..<16 {
                        w[i] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self))
                    }
                    for i in 16..<64 {
                        let x = w[i &- 15], y = w[i &- 2]
                        let s0 = rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3)
                        let s1 = rotr(y, 17) ^ rotr(y, 19) ^ (y >> 10)
                        w[i] = w[i &- 16] &+ s0 &+ w[i &- 7] &+ s1
                    }
                    var a = s.a, b = s.b, c = s.c, d = s.d, e = s.e, f = s.f, g = s.g, h = s.h
                    for i in 0..<64 {
                        let bigS1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                        let choose = (e & f) ^ (~e & g)
                        let t1 = h &+ bigS1 &+ choose &+ k[i] &+ w[i]
                        let bigS0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                        let majority = (a & b) ^ (a & c) ^ (b & c)
                        let t2 = bigS0 &+ majority
                        h = g; g = f; f = e; e = d &+ t1
                        d = c; c = b; b = a; a = t1 &+ t2
                    }
                    s.a &+= a; s.b &+= b; s.c &+= c; s.d &+= d
                    s.e &+= e; s.f &+= f; s.g &+= g; s.h &+= h
                }
                state = s
            }
        }
    }
}
