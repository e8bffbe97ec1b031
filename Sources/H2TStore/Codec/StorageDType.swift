import CH2TKernels
import H2TCore

/// How feature values are stored on disk. Reads always decode to `Float`.
public enum StorageDType: String, Sendable, Codable, CaseIterable {
    /// IEEE binary32: lossless.
    case float32
    /// IEEE binary16: 11 significant bits, range ±65504 (values beyond saturate to ±inf).
    case float16
    /// bfloat16: float32's range with 8 significant bits; rounded to nearest even.
    case bfloat16

    /// Bytes per stored value (= number of byte planes).
    public var byteWidth: Int {
        switch self {
        case .float32: return 4
        case .float16, .bfloat16: return 2
        }
    }

    /// The one-byte code used in tile headers.
    public var code: UInt8 {
        switch self {
        case .float32: return 0
        case .float16: return 1
        case .bfloat16: return 2
        }
    }

    /// The dtype for a tile-header code, or `nil` for an unknown one.
    public init?(code: UInt8) {
        switch code {
        case 0: self = .float32
        case 1: self = .float16
        case 2: self = .bfloat16
        default: return nil
        }
    }
}

extension StorageDType {
    /// Writes the bfloat16 bit patterns of `count` floats (nearest even, NaN kept quiet): what a
    /// bfloat16 tile stores of them, so that a matrix of these bits encodes to the tile of the
    /// floats (``TileEncoder/encode(bits:rowStride:rows:cols:)``) in half the memory. On
    /// `CH2TKernels`' vector loop from AVX2 up; the bits are the same at every level.
    public static func bfloat16Bits(_ source: UnsafePointer<Float>, count: Int, into bits: UnsafeMutablePointer<UInt16>,
                                    isa: InstructionSet = .selected) {
        if isa != .baseline { return h2t_bf16_bits(Int32(isa.rawValue), source, count, bits) }
        for i in 0..<count { bits[i] = HalfBits.bfloat16(source[i]) }
    }
}

/// Float to stored-bit conversions. bfloat16 rounds to nearest even and keeps NaN a NaN.
@usableFromInline
enum HalfBits {
    @inline(__always) @usableFromInline
    static func bfloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    @inline(__always) @usableFromInline
    static func float(bfloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    @inline(__always) @usableFromInline
    static func float16(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// All 65,536 float16 values as Float: a table lookup beats converting one at a time.
    static let float16Table: [Float] = (0...UInt16.max).map { Float(Float16(bitPattern: $0)) }
}
