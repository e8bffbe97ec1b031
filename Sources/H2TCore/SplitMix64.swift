/// SplitMix64 (Steele, Lea, Flood 2014): the project's one source of randomness (training, test
/// fixtures, benchmark data).
///
/// Written out rather than taken from the standard library so that fold assignment, shuffles and
/// mini-batch order are identical on every platform and Swift version, and so that
/// `tools/h2t_reference.py` can reproduce them bit for bit.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The internal state; the next output is a function of it alone.
    public private(set) var state: UInt64

    /// Starts the stream at `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<bound` as `next() % bound`: the modulo bias is below 2^-40 for the bounds
    /// used here (at most millions), and the rule is trivial to reproduce in Python.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }

    /// Uniform in [0, 1) with 24 bits (exact in `Float`).
    public mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }

    /// Uniform in (0, 1] with 53 bits (never 0, so its logarithm is finite).
    public mutating func unitOpen() -> Double { Double((next() >> 11) + 1) * 0x1p-53 }

    /// Fisher–Yates shuffle from the last element down, with `below(i + 1)` as the swap index.
    public mutating func shuffle<T>(_ array: inout [T]) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            let j = below(i + 1)
            array.swapAt(i, j)
        }
    }
}
