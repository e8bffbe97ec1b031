/// How a tensor's elements were stored in the weight file.
public enum WeightElementType: String, Sendable, Hashable, Codable, CaseIterable {
    case float32, float64, float16, bfloat16
    case int64, int32, int16, int8, uint8, bool

    /// Bytes per element in the file.
    public var byteCount: Int {
        switch self {
        case .float64, .int64: 8
        case .float32, .int32: 4
        case .float16, .bfloat16, .int16: 2
        case .int8, .uint8, .bool: 1
        }
    }

    /// Whether elements are converted to `Float` (otherwise to `Int64`).
    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float64, .float16, .bfloat16: true
        default: false
        }
    }
}

/// The elements of a tensor, contiguous in row-major (C) order.
///
/// Floating-point tensors of any stored precision become `Float`; integer and boolean tensors
/// (for example BatchNorm's `num_batches_tracked`, an int64 scalar) become `Int64` so that nothing
/// is silently rounded.
public enum WeightValues: Sendable, Equatable {
    /// Floating-point elements converted to single precision.
    case float([Float])
    /// Integer or boolean elements widened to 64 bits.
    case integer([Int64])

    /// Number of elements.
    public var count: Int {
        switch self {
        case .float(let v): v.count
        case .integer(let v): v.count
        }
    }
}

/// One named tensor of a state dict.
public struct WeightTensor: Sendable, Equatable {
    /// Dimensions, outermost first; `[]` for a scalar.
    public let shape: [Int]
    /// The element type in the file.
    public let storedType: WeightElementType
    /// The elements, contiguous row-major.
    public let values: WeightValues

    /// Creates a tensor; `values.count` must equal the product of `shape`.
    public init(shape: [Int], storedType: WeightElementType, values: WeightValues) {
        precondition(values.count == shape.reduce(1, *), "tensor element count does not match its shape")
        self.shape = shape
        self.storedType = storedType
        self.values = values
    }

    /// Number of elements (1 for a scalar).
    public var count: Int { values.count }

    /// The float elements, or `nil` for an integer tensor.
    public var floats: [Float]? {
        if case .float(let v) = values { return v }
        return nil
    }
}

/// What a reader does with tensors whose elements are not floating point.
public enum NonFloatTensorPolicy: Sendable {
    /// Keep them as `WeightValues.integer`.
    case keep
    /// Leave them out of the state dict, listing their names in `StateDict.skippedNames`.
    case skip
}

/// A model's named tensors in file order (PyTorch's `state_dict()`, or a safetensors file).
public struct StateDict: Sendable {
    /// Tensor names in the order the file lists them.
    public private(set) var names: [String] = []
    /// Tensors by name.
    public private(set) var tensors: [String: WeightTensor] = [:]
    /// Names left out by `NonFloatTensorPolicy.skip`, in file order.
    public private(set) var skippedNames: [String] = []

    /// The file the tensors were read from (used in error messages); empty when built in memory.
    public var source: String

    /// An empty state dict read from `source`.
    public init(source: String = "") { self.source = source }

    /// Number of tensors.
    public var count: Int { names.count }

    /// The tensor named `name`, if present.
    public subscript(name: String) -> WeightTensor? { tensors[name] }

    /// Adds `tensor` under `name`, replacing (in place, keeping the order) an earlier one.
    public mutating func insert(_ tensor: WeightTensor, named name: String) {
        if tensors.updateValue(tensor, forKey: name) == nil { names.append(name) }
    }

    /// Records that `name` was present in the file but left out.
    public mutating func recordSkipped(_ name: String) { skippedNames.append(name) }

    /// The float elements of `name` after checking its shape.
    ///
    /// - Throws: `StateDictMismatch` naming the key when it is absent, not floating point, or
    ///   shaped differently.
    public func floats(_ name: String, shape: [Int]) throws -> [Float] {
        guard let tensor = tensors[name] else { throw StateDictMismatch(file: source, missing: [name]) }
        guard tensor.shape == shape else {
            throw StateDictMismatch(file: source,
                                    wrongShapes: [.init(name: name, expected: shape, actual: tensor.shape)])
        }
        guard let floats = tensor.floats else {
            throw StateDictMismatch(file: source, wrongTypes: [.init(name: name, storedType: tensor.storedType)])
        }
        return floats
    }

    /// Checks the state dict against the keys and shapes a network expects.
    ///
    /// Every expected key must be present with exactly its shape and floating point elements
    /// (unless its expected shape is listed with `allowInteger`). Keys not listed are an error
    /// unless `ignoring` returns true for them (e.g. `{ $0.hasSuffix("num_batches_tracked") }`).
    /// All problems are collected into one error so a wrong checkpoint is diagnosed in one go.
    public func validate(expected: [ExpectedTensor], ignoring: (String) -> Bool = { _ in false }) throws {
        var problem = StateDictMismatch(file: source)
        var expectedNames = Set<String>()
        for item in expected {
            expectedNames.insert(item.name)
            guard let tensor = tensors[item.name] else {
                problem.missing.append(item.name)
                continue
            }
            if tensor.shape != item.shape {
                problem.wrongShapes.append(.init(name: item.name, expected: item.shape, actual: tensor.shape))
            }
            if !tensor.storedType.isFloatingPoint && !item.allowInteger {
                problem.wrongTypes.append(.init(name: item.name, storedType: tensor.storedType))
            }
        }
        for name in names where !expectedNames.contains(name) && !ignoring(name) {
            problem.unexpected.append(name)
        }
        if !problem.isEmpty { throw problem }
    }
}

/// One key and shape a network expects in its state dict.
public struct ExpectedTensor: Sendable, Hashable {
    /// State-dict key, e.g. `features.0.0.weight`.
    public let name: String
    /// Exact expected shape.
    public let shape: [Int]
    /// Whether integer storage is acceptable (e.g. a counter); floats are required otherwise.
    public let allowInteger: Bool

    /// Creates an expectation.
    public init(_ name: String, _ shape: [Int], allowInteger: Bool = false) {
        self.name = name
        self.shape = shape
        self.allowInteger = allowInteger
    }
}

/// A state dict that does not fit the network: every missing, unexpected or mis-shaped key.
public struct StateDictMismatch: Error, CustomStringConvertible, Equatable {
    /// A key present with another shape.
    public struct WrongShape: Sendable, Equatable {
        /// The key.
        public let name: String
        /// Shape the network needs.
        public let expected: [Int]
        /// Shape in the file.
        public let actual: [Int]
        /// Creates a record of a mis-shaped key.
        public init(name: String, expected: [Int], actual: [Int]) {
            self.name = name
            self.expected = expected
            self.actual = actual
        }
    }

    /// A key present with non-float elements where floats are needed.
    public struct WrongType: Sendable, Equatable {
        /// The key.
        public let name: String
        /// Element type in the file.
        public let storedType: WeightElementType
        /// Creates a record of a non-float key.
        public init(name: String, storedType: WeightElementType) {
            self.name = name
            self.storedType = storedType
        }
    }

    /// The weight file the state dict came from (may be empty).
    public var file: String = ""
    /// Expected keys that are absent.
    public var missing: [String] = []
    /// Keys in the file that the network does not use.
    public var unexpected: [String] = []
    /// Keys whose shapes differ.
    public var wrongShapes: [WrongShape] = []
    /// Keys whose element types are not floating point.
    public var wrongTypes: [WrongType] = []

    /// Whether nothing is wrong.
    public var isEmpty: Bool { missing.isEmpty && unexpected.isEmpty && wrongShapes.isEmpty && wrongTypes.isEmpty }

    /// One line listing the first few problems of each kind with their counts.
    public var description: String {
        func list(_ items: [String]) -> String {
            items.prefix(3).joined(separator: ", ") + (items.count > 3 ? ", … (\(items.count) in all)" : "")
        }
        var parts: [String] = []
        if !missing.isEmpty { parts.append("missing keys: \(list(missing))") }
        if !unexpected.isEmpty { parts.append("unexpected keys: \(list(unexpected))") }
        if !wrongShapes.isEmpty {
            parts.append("wrong shapes: " + list(wrongShapes.map { "\($0.name) is \($0.actual), expected \($0.expected)" }))
        }
        if !wrongTypes.isEmpty {
            parts.append("non-float tensors: " + list(wrongTypes.map { "\($0.name) (\($0.storedType.rawValue))" }))
        }
        let origin = file.isEmpty ? "state dict" : "state dict of \(file)"
        return origin + " does not match the network: " + parts.joined(separator: "; ")
    }
}
