/// Everything that can be wrong with a training request, detected before any work starts.
///
/// Each case carries the context needed to fix the input and prints as one line.
public enum TrainError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A buffer does not have the size its declared shape implies.
    case shapeMismatch(what: String, expected: Int, actual: Int)
    /// The tap ranges do not partition the columns `0..<D` in order.
    case invalidTapLayout(featureSet: String, reason: String)
    /// A feature is NaN or infinite.
    case nonFiniteFeature(featureSet: String, split: String, row: Int, column: Int)
    /// A label is outside `0..<classCount`.
    case labelOutOfRange(split: String, row: Int, label: Int, classCount: Int)
    /// The split has fewer than two distinct classes, so there is nothing to discriminate.
    case singleClass(split: String, label: Int)
    /// A hyper-parameter grid axis has no values.
    case emptyGridAxis(String)
    /// A keep fraction outside `(0, 1]`.
    case invalidFraction(Double)
    /// A group-lasso strength that is negative or not finite.
    case invalidLambda(Double)
    /// Any other setting out of its domain (fold count, iterations, tolerances, ...).
    case invalidSetting(String)
    /// A tap name that the feature set does not have.
    case unknownTap(featureSet: String, tap: String)
    /// Two inputs that must agree do not (e.g. train and test tap layouts).
    case inconsistentInput(String)

    public var description: String {
        switch self {
        case let .shapeMismatch(what, expected, actual):
            return "\(what): expected \(expected) values, got \(actual)"
        case let .invalidTapLayout(featureSet, reason):
            return "feature set '\(featureSet)': invalid tap layout: \(reason)"
        case let .nonFiniteFeature(featureSet, split, row, column):
            return "feature set '\(featureSet)', \(split) split: non-finite feature at row \(row), column \(column)"
        case let .labelOutOfRange(split, row, label, classCount):
            return "\(split) split: label \(label) at row \(row) is outside 0..<\(classCount)"
        case let .singleClass(split, label):
            return "\(split) split has a single class (\(label)); need at least two"
        case let .emptyGridAxis(axis):
            return "hyper-parameter grid axis '\(axis)' is empty"
        case let .invalidFraction(value):
            return "keep fraction \(value) is outside (0, 1]"
        case let .invalidLambda(value):
            return "group-lasso strength \(value) must be finite and >= 0"
        case let .invalidSetting(message):
            return "invalid setting: \(message)"
        case let .unknownTap(featureSet, tap):
            return "feature set '\(featureSet)' has no tap named '\(tap)'"
        case let .inconsistentInput(message):
            return "inconsistent input: \(message)"
        }
    }
}
