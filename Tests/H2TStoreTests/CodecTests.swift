import CH2TKernels
import Foundation
import H2TCore
import H2TStore
import Testing

@Suite("Tile codec")
struct CodecTests {
    static let rows = 37, cols = 23

    func sample() -> [Float] {
        var generator = ActivationGenerator(state: 7)
        return generator.matrix(rows: Self.rows, cols: Self.cols)
    }

    func roundTrip(_ codec: TileCodec, _ values: [Float]) throws -> [Float] {
        let tile = values.withUnsafeBufferPointer { TileEncoder(codec: codec).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols) }
        var out = [Float](repeating: -1, count: values.count)
        try tile.withUnsafeBytes { bytes in
            try out.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: Self.cols) }
        }
        return out
    }

    @Test("decoding a whole tile on 1-4 threads, in runs of frames, gives the serial decoder's values",
          arguments: [StorageDType.bfloat16, .float32])
    func parallelDecodeAll(dtype: StorageDType) throws {
        let values = sample()
        let tile = values.withUnsafeBufferPointer {
            TileEncoder(codec: TileCodec(dtype: dtype, frameWidth: 2)).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols)
        }
        try tile.withUnsafeBytes { bytes in
            var serial = [Float](repeating: -1, count: values.count)
            try serial.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: Self.cols) }
            for threads in 1...4 {
                for run in [1, 3, 64] {
                    var out = [Float](repeating: -1, count: values.count)
                    try out.withUnsafeMutableBufferPointer {
                        try TileDecoder.decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: Self.cols,
                                                  parallelism: Parallelism(threads: threads), framesPerRun: run)
                    }
                    #expect(out.map(\.bitPattern) == serial.map(\.bitPattern), "\(threads) threads, runs of \(run) frames")
                }
            }
            // A damaged frame is the serial decoder's error, whichever worker meets it.
            var damaged = Array(bytes)
            damaged[damaged.count - 3] ^= 0xFF
            try damaged.withUnsafeBytes { bad in
                var out = [Float](repeating: 0, count: values.count)
                #expect(throws: TileError.self) {
                    try out.withUnsafeMutableBufferPointer {
                        try TileDecoder.decodeAll(bad, binding: [], into: $0.baseAddress!, destStride: Self.cols,
                                                  parallelism: Parallelism(threads: 2), framesPerRun: 1)
                    }
                }
            }
        }
    }

    @Test("encoding a whole tile on 1-4 threads, in runs of frames, gives the serial encoder's bytes",
          arguments: [TileCodec(dtype: .bfloat16, frameWidth: 2), TileCodec(dtype: .float32, frameWidth: 3),
                      TileCodec(dtype: .float16, compressed: false, frameWidth: 4), TileCodec(dtype: .bfloat16, level: 3, frameWidth: 1)])
    func parallelEncode(codec: TileCodec) throws {
        // A wider source row than the tile (a stride) and columns that do not fill the last frame.
        let values = sample(), cols = Self.cols - 2
        let serial = values.withUnsafeBufferPointer { TileEncoder(codec: codec).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: cols) }
        for threads in 1...4 {
            for run in [1, 2, 5, 64] {
                let parallel = values.withUnsafeBufferPointer {
                    TileEncoder.encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: cols, codec: codec,
                                       parallelism: Parallelism(threads: threads), framesPerRun: run)
                }
                #expect(parallel == serial, "\(threads) threads, runs of \(run) frames")
            }
        }
        var out = [Float](repeating: -1, count: Self.rows * cols)
        let tile = values.withUnsafeBufferPointer {
            TileEncoder.encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: cols, codec: codec,
                               parallelism: Parallelism(threads: 3), framesPerRun: 2)
        }
        try tile.withUnsafeBytes { bytes in
            try out.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: cols) }
        }
        var expected = [Float](repeating: -2, count: Self.rows * cols)
        try serial.withUnsafeBytes { bytes in
            try expected.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: cols) }
        }
        #expect(out.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    @Test(arguments: [1, 3, 64])
    func float32IsLossless(frameWidth: Int) throws {
        let values = sample()
        #expect(try roundTrip(TileCodec(dtype: .float32, frameWidth: frameWidth), values) == values)
        #expect(try roundTrip(TileCodec(dtype: .float32, compressed: false, frameWidth: frameWidth), values) == values)
    }

    @Test func bfloat16RoundsToNearestEven() throws {
        let values = sample()
        let decoded = try roundTrip(TileCodec(dtype: .bfloat16), values)
        for (a, b) in zip(values, decoded) {
            #expect(abs(a - b) <= abs(a) * 0.00391)   // 2^-8: half a unit in the last of 8 significant bits
        }
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: nearest even is 1.
        let tie: [Float] = [1 + 1.0 / 256, 1 + 3.0 / 256]
        let tile = tie.withUnsafeBufferPointer { TileEncoder(codec: .default).encode($0.baseAddress!, rowStride: 2, rows: 1, cols: 2) }
        var out = [Float](repeating: 0, count: 2)
        try tile.withUnsafeBytes { b in try out.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(b, binding: [], into: $0.baseAddress!, destStride: 2) } }
        #expect(out == [1, 1 + 4.0 / 256])
    }

    /// The bfloat16 planes come from a vector kernel on AVX2 CPUs: its tiles must be byte for
    /// byte the portable loop's, for every shape of tail (rows not a multiple of 16, columns not
    /// of 8, a row stride wider than the block) and every special value.
    @Test(arguments: [(1, 1), (15, 7), (16, 8), (17, 9), (48, 24), (37, 23), (512, 129)])
    func bfloat16PlanesAreTheSameAtEveryInstructionSet(rows: Int, cols: Int) {
        var generator = ActivationGenerator(state: UInt64(rows * 1000 + cols))
        let stride = cols + 5
        var values = generator.matrix(rows: rows, cols: stride).enumerated().map { $0.offset % 3 == 1 ? -$0.element : $0.element }
        let specials: [Float] = [.nan, -.nan, Float(bitPattern: 0x7FA0_0001), .infinity, -.infinity, 0, -0.0,
                                 .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
                                 1 + 1.0 / 256, 1 + 3.0 / 256, -(1 + 1.0 / 256), Float(bitPattern: 0x3F80_8000)]
        for (i, special) in specials.enumerated() where i < values.count { values[(i * 7919) % values.count] = special }
        let sets = InstructionSet.allCases.filter { $0 <= InstructionSet.detected }
        let tiles = sets.map { isa in
            values.withUnsafeBufferPointer {
                TileEncoder(codec: .default, isa: isa).encode($0.baseAddress!, rowStride: stride, rows: rows, cols: cols)
            }
        }
        for (isa, tile) in zip(sets, tiles) { #expect(tile == tiles[0], "\(rows)×\(cols) at \(isa)") }
    }

    /// The ingest keeps a segment's rows as bfloat16 bits: at every instruction set they must be
    /// the bits the baseline loop gives (`HalfBits.bfloat16`), specials and every tail length
    /// included, and encode to the floats' tile.
    @Test(arguments: [0, 1, 15, 16, 17, 40, 512 * 9])
    func bfloat16BitsAreTheTilesBits(count: Int) {
        var state = SplitMix64(seed: UInt64(count) &+ 3)
        var values = (0..<count).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: state.next())) }
        let specials: [Float] = [.nan, -.nan, Float(bitPattern: 0x7FA0_0001), .infinity, -.infinity, 0, -0.0,
                                 .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
                                 1 + 1.0 / 256, 1 + 3.0 / 256, -(1 + 1.0 / 256), Float(bitPattern: 0x3F80_8000)]
        for (i, special) in specials.enumerated() where i < count { values[(i * 7919) % count] = special }
        var expected = [UInt16](repeating: 0, count: count)
        values.withUnsafeBufferPointer { v in
            expected.withUnsafeMutableBufferPointer { StorageDType.bfloat16Bits(v.baseAddress!, count: count, into: $0.baseAddress!, isa: .baseline) }
        }
        for isa in InstructionSet.allCases where isa <= InstructionSet.detected {
            var bits = [UInt16](repeating: 0xAAAA, count: count + 1)
            values.withUnsafeBufferPointer { v in
                bits.withUnsafeMutableBufferPointer { StorageDType.bfloat16Bits(v.baseAddress!, count: count, into: $0.baseAddress!, isa: isa) }
            }
            #expect(Array(bits.prefix(count)) == expected, "\(count) values at \(isa)")
            #expect(bits[count] == 0xAAAA, "wrote past the end at \(isa)")
        }
        guard count == 512 * 9 else { return }
        let fromFloats = values.withUnsafeBufferPointer { TileEncoder(codec: .default).encode($0.baseAddress!, rowStride: 9, rows: 512, cols: 9) }
        let fromBits = expected.withUnsafeBufferPointer { TileEncoder(codec: .default).encode(bits: $0.baseAddress!, rowStride: 9, rows: 512, cols: 9) }
        #expect(fromBits == fromFloats)
    }

    /// Rows already in the stored 16-bit type (what capture sends) are split without floats: the
    /// tile must be the one the floats they stand for give, at every instruction set and shape.
    @Test(arguments: [(1, 1), (15, 7), (16, 8), (17, 9), (48, 24), (37, 23), (512, 129)])
    func sixteenBitRowsGiveTheTilesOfTheirFloats(rows: Int, cols: Int) {
        var state = SplitMix64(seed: UInt64(rows * 1000 + cols))
        let stride = cols + 3
        var bits = (0..<(rows * stride)).map { _ in UInt16(truncatingIfNeeded: state.next()) }
        for dtype in [StorageDType.bfloat16, .float16] {
            let nanMask: UInt16 = dtype == .bfloat16 ? 0x7F80 : 0x7C00
            // Exactly representable values (zeros, subnormals, infinities); NaNs need the
            // --allow-nonfinite float path, so none here.
            for i in bits.indices where bits[i] & nanMask == nanMask && bits[i] & ~(nanMask | 0x8000) != 0 { bits[i] &= ~nanMask }
            if bits.count > 2 { bits[1] = nanMask; bits[2] = nanMask | 0x8000 }
            let floats = bits.map { dtype == .bfloat16 ? Float(bitPattern: UInt32($0) << 16) : Float(Float16(bitPattern: $0)) }
            let codec = TileCodec(dtype: dtype)
            let expected = floats.withUnsafeBufferPointer {
                TileEncoder(codec: codec, isa: .baseline).encode($0.baseAddress!, rowStride: stride, rows: rows, cols: cols)
            }
            for isa in InstructionSet.allCases where isa <= InstructionSet.detected {
                let tile = bits.withUnsafeBufferPointer { TileEncoder(codec: codec, isa: isa).encode(bits: $0.baseAddress!, rowStride: stride, rows: rows, cols: cols) }
                #expect(tile == expected, "\(dtype) \(rows)×\(cols) at \(isa)")
            }
        }
    }

    @Test func float16WithinHalfPrecision() throws {
        let values = sample()
        let decoded = try roundTrip(TileCodec(dtype: .float16), values)
        for (a, b) in zip(values, decoded) { #expect(abs(a - b) <= max(abs(a) * 0.000489, 6e-8)) }
    }

    @Test func selectedColumnsAndRowsMatchFullDecode() throws {
        let values = sample()
        let tile = values.withUnsafeBufferPointer { TileEncoder(codec: TileCodec(frameWidth: 4)).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols) }
        let full = try roundTrip(TileCodec(frameWidth: 4), values)
        let picks = [ColumnPick(local: 2, out: 0), ColumnPick(local: 9, out: 1), ColumnPick(local: 22, out: 2)]
        let rows = [RowPick(local: 30, out: 0), RowPick(local: 1, out: 1)]
        var out = [Float](repeating: 0, count: 6)
        try tile.withUnsafeBytes { b in
            try out.withUnsafeMutableBufferPointer { try TileDecoder().decode(b, binding: [], columns: picks, rows: rows, into: $0.baseAddress!, destStride: 3) }
        }
        #expect(out == [full[30 * 23 + 2], full[30 * 23 + 9], full[30 * 23 + 22], full[1 * 23 + 2], full[1 * 23 + 9], full[1 * 23 + 22]])
    }

    /// Whole bfloat16 frames of four columns go back to rows eight rows at a time (a vector
    /// transpose); one column at a time takes the scalar loop. Both give the same bits, for row
    /// counts with and without a remainder of eight and a narrower last frame.
    @Test(arguments: [1, 7, 8, 9, 37, 64])
    func wholeFramesDecodeToTheBitsOfOneColumnAtATime(rows: Int) throws {
        for cols in [4, 23] {
            var generator = ActivationGenerator(state: UInt64(rows * cols))
            var values = generator.matrix(rows: rows, cols: cols)
            values[0] = -0.0; values[values.count - 1] = .infinity
            let tile = values.withUnsafeBufferPointer { TileEncoder(codec: .default).encode($0.baseAddress!, rowStride: cols, rows: rows, cols: cols) }
            var whole = [Float](repeating: .nan, count: rows * cols), single = whole
            try tile.withUnsafeBytes { b in
                try whole.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(b, binding: [], into: $0.baseAddress!, destStride: cols) }
                try single.withUnsafeMutableBufferPointer { out in
                    for c in 0..<cols {
                        try TileDecoder().decode(b, binding: [], columns: [ColumnPick(local: c, out: c)], into: out.baseAddress!, destStride: cols)
                    }
                }
            }
            #expect(whole.map(\.bitPattern) == single.map(\.bitPattern), "\(rows) × \(cols)")
        }
    }

    /// The folded CRC-32 (PCLMULQDQ) gives zlib's value for every length (below, at and past
    /// the folding threshold, every remainder mod 16 and 64), start offset and running value.
    @Test func foldedCRC32IsZlibs() throws {
        var generator = SplitMix64(seed: 5)
        let data = (0..<70_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        var lengths = Array(0...300) + [1_023, 1_024, 4_096, 4_111, 65_536, 69_990]
        lengths += (0..<20).map { _ in Int(generator.next() % 60_000) }
        try data.withUnsafeBytes { bytes in
            for (i, length) in lengths.enumerated() {
                let offset = i % 13
                let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
                for start: UInt32 in [0, 0xFFFF_FFFF, UInt32(truncatingIfNeeded: generator.next())] {
                    let expected = CRC32.zlib(slice, continuing: start)
                    try #require(CRC32.checksum(slice, continuing: start) == expected, "length \(length), offset \(offset), crc \(start)")
                }
            }
        }
        // The classic check value, and chaining equals one call.
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926)
        data.withUnsafeBytes { bytes in
            let first = UnsafeRawBufferPointer(rebasing: bytes[0..<1_000]), rest = UnsafeRawBufferPointer(rebasing: bytes[1_000..<70_000])
            #expect(CRC32.checksum(rest, continuing: CRC32.checksum(first)) == CRC32.zlib(bytes))
        }
        print("CRC32 folds on this machine: \(CRC32.folds)")
    }

    /// The ranges the query layer reads ahead for some columns hold every byte their decode
    /// reads: with every other byte after the header and frame table scrambled, the picked
    /// columns still decode (checksums included) to the same values. And they leave out the
    /// frames not picked.
    @Test func storedRangesOfFramesHoldEveryByteTheirDecodeReads() throws {
        let rows = 64, cols = 40
        var generator = ActivationGenerator(state: 11)
        let values = generator.matrix(rows: rows, cols: cols)
        for codec in [TileCodec(frameWidth: 4), TileCodec(dtype: .float32, frameWidth: 3), TileCodec(compressed: false, frameWidth: 2)] {
            let tile = values.withUnsafeBufferPointer { TileEncoder(codec: codec).encode($0.baseAddress!, rowStride: cols, rows: rows, cols: cols) }
            for picked in [[0], [5, 6, 7, 21], [1, 12, 13, 30, 39], Array(0..<cols)] {
                let picks = picked.enumerated().map { ColumnPick(local: $0.element, out: $0.offset) }
                let frames = Array(Set(picked.map { $0 / codec.frameWidth })).sorted()
                let header = try tile.withUnsafeBytes { try TileHeader(parsing: $0, binding: []) }
                for gap in [0, 64, 4096] {
                    let ranges = tile.withUnsafeBytes { header.storedRanges(ofFrames: frames, in: $0, mergingWithin: gap) }
                    var scrambled = tile
                    for i in header.headerByteCount..<tile.count where !ranges.contains(where: { $0.contains(i) }) { scrambled[i] ^= 0xA5 }
                    var expected = [Float](repeating: 0, count: rows * picks.count), got = expected
                    try tile.withUnsafeBytes { b in
                        try expected.withUnsafeMutableBufferPointer { try TileDecoder().decode(b, binding: [], columns: picks, into: $0.baseAddress!, destStride: picks.count) }
                    }
                    try scrambled.withUnsafeBytes { b in
                        try got.withUnsafeMutableBufferPointer { try TileDecoder().decode(b, binding: [], columns: picks, into: $0.baseAddress!, destStride: picks.count) }
                    }
                    #expect(got == expected, "\(codec), columns \(picked), gap \(gap)")
                    let stored = ranges.reduce(0) { $0 + $1.count }, frameBytes = tile.count - header.headerByteCount
                    if gap == 0 {
                        // Exactly the picked frames' bytes.
                        let sizes = tile.withUnsafeBytes { header.frameByteCounts($0) }
                        #expect(stored == frames.reduce(0) { $0 + sizes[$1] })
                    }
                    if frames.count == header.frameCount { #expect(ranges == [header.headerByteCount..<tile.count]) }
                    if picked == [0] { #expect(stored < frameBytes / 4) }
                }
            }
        }
    }

    @Test func everyFlippedByteIsDetected() throws {
        let values = sample()
        let tile = values.withUnsafeBufferPointer { TileEncoder(codec: .default).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols) }
        let decoder = TileDecoder()
        for position in stride(from: 0, to: tile.count, by: 7) {
            var damaged = tile
            damaged[position] ^= 0x5A
            #expect(throws: TileError.self) { _ = try damaged.withUnsafeBytes { try decoder.verify($0, binding: []) } }
        }
    }

    @Test func unknownVersionAndTruncationAreNamed() throws {
        let values = sample()
        var tile = values.withUnsafeBufferPointer { TileEncoder(codec: .default).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols) }
        let truncated = Array(tile.prefix(20))
        #expect(throws: TileError.self) { _ = try truncated.withUnsafeBytes { try TileHeader(parsing: $0, binding: []) } }
        tile[4] = 9
        do {
            _ = try tile.withUnsafeBytes { try TileHeader(parsing: $0, binding: []) }
            Issue.record("a version-9 tile was accepted")
        } catch {
            #expect("\(error)".contains("version 9"))
        }
    }

    func encoded(_ codec: TileCodec = .default) -> [UInt8] {
        sample().withUnsafeBufferPointer { TileEncoder(codec: codec).encode($0.baseAddress!, rowStride: Self.cols, rows: Self.rows, cols: Self.cols) }
    }

    @Test func aBoundTileReadsOnlyUnderItsKeyAndRowCount() throws {
        let key: [UInt8] = Array(repeating: 0xAB, count: 16) + [0, 0, 0, 16, 0, 0, 0, 1]
        var tile = encoded()
        TileCodec.bind(&tile, to: TileCodec.binding(key: key, rows: Self.rows))
        let decoder = TileDecoder()
        #expect(try tile.withUnsafeBytes { try decoder.verify($0, binding: TileCodec.binding(key: key, rows: Self.rows)) } == Self.rows * Self.cols)
        var otherBlock = key
        otherBlock[23] = 2
        var otherSegment = key
        otherSegment[19] = 32
        for binding in [TileCodec.binding(key: otherBlock, rows: Self.rows), TileCodec.binding(key: otherSegment, rows: Self.rows),
                        TileCodec.binding(key: key, rows: Self.rows + 1), []] {
            #expect(throws: TileError.headerChecksumMismatch) { _ = try tile.withUnsafeBytes { try decoder.verify($0, binding: binding) } }
        }
    }

    /// A tile copied into the store's reserved space and bound there is the tile bound in place,
    /// and the original stays unbound.
    @Test func aTileBoundAsItIsCopiedIsTheTileBoundInPlace() throws {
        let binding = TileCodec.binding(key: Array(repeating: 0x5A, count: 24), rows: Self.rows)
        let tile = encoded()
        var inPlace = tile
        TileCodec.bind(&inPlace, to: binding)
        var copied = [UInt8](repeating: 0, count: tile.count)
        copied.withUnsafeMutableBytes { TileCodec.copy(tile, boundTo: binding, into: $0) }
        #expect(copied == inPlace && copied != tile)
        #expect(try copied.withUnsafeBytes { try TileDecoder().verify($0, binding: binding) } == Self.rows * Self.cols)
    }

    /// A version-1 tile (no binding) as an earlier h2t-store wrote it: the header CRC covers the
    /// header and the frame table only.
    @Test func versionOneTilesStillRead() throws {
        var tile = encoded(TileCodec(dtype: .float32))
        tile[4] = 1
        tile[5] = 0
        let dataOffset = 28 + ((Self.cols + 3) / 4) * 4 * (4 + 2)
        let crc = crc32(Array(tile[0..<24]) + Array(tile[28..<dataOffset]))
        tile[24] = UInt8(crc & 0xFF); tile[25] = UInt8(crc >> 8 & 0xFF); tile[26] = UInt8(crc >> 16 & 0xFF); tile[27] = UInt8(crc >> 24)
        var out = [Float](repeating: -1, count: Self.rows * Self.cols)
        // Whatever binding the reader passes, a version-1 tile has none to check.
        try tile.withUnsafeBytes { b in
            try out.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(b, binding: [1, 2, 3], into: $0.baseAddress!, destStride: Self.cols) }
        }
        #expect(out == sample())
        #expect(try tile.withUnsafeBytes { try TileHeader(parsing: $0, binding: []) }.version == 1)
    }

    @Test("the byte-collision count is the sum of squared byte counts", arguments: [0, 1, 3, 4, 5, 9, 2051])
    func byteCollisionsCountSquares(count: Int) {
        var generator = SplitMix64(seed: UInt64(count) &+ 11)
        // Skewed bytes (small values more often) so that squares of counts above one matter.
        let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next() % 97 % 41) }
        var counts = [UInt64](repeating: 0, count: 256)
        for byte in bytes { counts[Int(byte)] += 1 }
        #expect(bytes.withUnsafeBufferPointer { h2t_byte_collisions($0.baseAddress, count) } == counts.reduce(0) { $0 + $1 * $1 })
    }

    /// A frame's stored plane lengths, read from the frame table as `schemas/store-format.md` §5 lays it out.
    func planeLengths(_ tile: [UInt8], frame: Int, planes: Int) -> [Int] {
        let entry = 28 + frame * 4 * (planes + 2)
        return (0..<planes).map { p in
            (0..<4).reduce(0) { $0 | Int(tile[entry + 4 + 4 * p + $1]) << (8 * $1) }
        }
    }

    /// The encoder stores a low byte plane of noise raw without trying zstd, and still compresses
    /// a low plane with zeros in it and every high plane; the values come back either way.
    @Test func noisyLowPlanesAreStoredRawAndSkewedOnesCompressed() throws {
        let rows = 512, cols = 12
        var generator = SplitMix64(seed: 5)
        var values = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                // Frame 0: 1 + noise in the mantissa (its low byte is noise, its high byte one value).
                // Frame 1: the same, half of them zeros (as after ReLU6).
                // Frame 2: eight distinct values.
                let noise = 1 + Float(generator.next() % 1_000_000) / 1_000_000
                switch c / 4 {
                case 0: values[r * cols + c] = noise
                case 1: values[r * cols + c] = generator.next() % 2 == 0 ? 0 : noise
                default: values[r * cols + c] = Float(generator.next() % 8) * 0.37
                }
            }
        }
        func decoded(_ codec: TileCodec) throws -> (tile: [UInt8], values: [Float]) {
            let tile = values.withUnsafeBufferPointer { TileEncoder(codec: codec).encode($0.baseAddress!, rowStride: cols, rows: rows, cols: cols) }
            var out = [Float](repeating: -1, count: rows * cols)
            try tile.withUnsafeBytes { bytes in
                try out.withUnsafeMutableBufferPointer { try TileDecoder().decodeAll(bytes, binding: [], into: $0.baseAddress!, destStride: cols) }
            }
            return (tile, out)
        }
        let (tile, out) = try decoded(.default)
        let raw = 4 * rows
        let noisy = planeLengths(tile, frame: 0, planes: 2), halfZero = planeLengths(tile, frame: 1, planes: 2)
        let fewValues = planeLengths(tile, frame: 2, planes: 2)
        #expect(noisy[0] == raw && noisy[1] < raw / 10)
        #expect(halfZero[0] < raw * 3 / 4 && halfZero[1] < raw / 2)
        #expect(fewValues[0] < raw / 2 && fewValues[1] < raw / 2)
        #expect(out == (try decoded(TileCodec(compressed: false)).values))
    }

    /// CRC-32 (IEEE, as zlib), bit by bit: an independent check of the header checksum rule.
    func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
