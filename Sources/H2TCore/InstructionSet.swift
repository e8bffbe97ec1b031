import CH2TKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The vector instruction set the backbone's own kernels run at, chosen once per process.
///
/// The package is compiled for baseline x86-64 (SSE2, no FMA) so that one binary runs on every
/// x86-64 CPU; the hot loops that are not in OpenBLAS (depthwise convolutions, activations, skip
/// additions) also exist as AVX2+FMA and AVX-512 variants in the `CH2TKernels` target, picked at
/// run time from CPUID. `H2T_ISA` caps the choice (`baseline`, `avx2` or `avx512`: a value above
/// what the CPU has is capped to the CPU), which also selects the matching OpenBLAS kernel table
/// (see ``BLAS``), so that one machine can measure the narrower paths.
public enum InstructionSet: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    /// SSE2 only (or not x86-64): the portable Swift loops.
    case baseline = 0
    /// AVX2 with FMA (and F16C, which every AVX2 CPU has).
    case avx2 = 1
    /// AVX-512 F.
    case avx512 = 2

    /// The environment variable that caps the choice.
    public static let environmentVariable = "H2T_ISA"

    /// The widest set this CPU and OS support.
    public static let detected: InstructionSet = InstructionSet(rawValue: Int(h2t_cpu_isa())) ?? .baseline

    /// The set in use: `detected`, capped by `H2T_ISA` when it holds a valid name (commands check
    /// the variable first with ``validateEnvironment()``, so an invalid one never gets here
    /// from the CLI; a library caller with an invalid value gets the detected set).
    public static let selected: InstructionSet = {
        guard let cap = try? environmentCap() else { return detected }
        return min(detected, cap)
    }()

    public static func < (a: InstructionSet, b: InstructionSet) -> Bool { a.rawValue < b.rawValue }

    /// Whether `H2T_ISA` lowered the set below what the CPU has.
    public static var isCapped: Bool { selected < detected }

    /// The name used by `H2T_ISA` and in benchmark output.
    public var description: String {
        switch self {
        case .baseline: return "baseline"
        case .avx2: return "avx2"
        case .avx512: return "avx512"
        }
    }

    /// The OpenBLAS kernel table of the same width.
    public var openBLASCore: String {
        switch self {
        case .baseline: return "Nehalem"
        case .avx2: return "Haswell"
        case .avx512: return "SkylakeX"
        }
    }

    /// The cap `H2T_ISA` asks for, or nil when it is unset or empty.
    ///
    /// - Throws: ``InstructionSetError`` for a value that names no set.
    public static func environmentCap() throws -> InstructionSet? {
        guard let raw = getenv(environmentVariable).map({ String(cString: $0) }), !raw.isEmpty else { return nil }
        guard let set = allCases.first(where: { $0.description == raw.lowercased() }) else {
            throw InstructionSetError(value: raw)
        }
        return set
    }

    /// Throws the one-line error for an invalid `H2T_ISA` (commands call it before computing).
    public static func validateEnvironment() throws { _ = try environmentCap() }
}

/// An `H2T_ISA` value that names no instruction set.
public struct InstructionSetError: Error, CustomStringConvertible, Sendable {
    /// The value found.
    public let value: String

    public var description: String {
        "\(InstructionSet.environmentVariable)=\(value) is not an instruction set; use baseline, avx2 or avx512"
    }
}
