import ArgumentParser

/// The values a numeric option accepts, and how an error message states them.
///
/// Every numeric option is declared with `parsing: .unconditional` (arrays:
/// `.unconditionalSingleValue`), so `--opt -3` reaches `validate()` just as `--opt=-3` does instead
/// of reading as a missing value; `validate()` then checks it with `checkRange`, so a bad value is
/// one line naming the option and this range (exit 64) before any work starts.
struct OptionRange<Value: Comparable> {
    /// The range as messages print it: `1...`, `0...19`, `(0, 1]`, with what it means.
    let text: String
    /// Whether `value` is accepted (false for NaN, whatever the bounds).
    let contains: (Value) -> Bool

    /// `lower...`.
    static func atLeast(_ lower: Value, _ meaning: String? = nil) -> OptionRange {
        OptionRange(text: "\(lower)..." + (meaning.map { " (\($0))" } ?? ""), contains: { $0 >= lower })
    }

    /// `bounds.lowerBound...bounds.upperBound`.
    static func within(_ bounds: ClosedRange<Value>, _ meaning: String? = nil) -> OptionRange {
        OptionRange(text: "\(bounds.lowerBound)...\(bounds.upperBound)" + (meaning.map { " (\($0))" } ?? ""), contains: { bounds.contains($0) })
    }
}

extension OptionRange where Value == Int {
    /// `1...`: counts and sizes.
    static var positiveCount: OptionRange { atLeast(1, "a positive count") }
}

extension OptionRange where Value == Double {
    /// `(0, 1]`: a share of something.
    static var fraction: OptionRange { OptionRange(text: "(0, 1]", contains: { $0 > 0 && $0 <= 1 }) }
    /// `0...`, finite: penalty strengths.
    static var finiteNonNegative: OptionRange { OptionRange(text: "0... (a finite number)", contains: { $0 >= 0 && $0.isFinite }) }
}

/// Throws "`option` must be in `range`, got `value`" as a `ValidationError` unless `value` (when
/// given) is in `range`.
func checkRange<Value>(_ option: String, _ value: Value?, _ range: OptionRange<Value>) throws {
    guard let value, !range.contains(value) else { return }
    throw ValidationError("\(option) must be in \(range.text), got \(value)")
}

/// Checks every value of a repeated or comma-separated option; the message names the first bad one.
func checkRange<Value>(_ option: String, _ values: [Value], _ range: OptionRange<Value>) throws {
    for value in values { try checkRange(option, value, range) }
}
