/// One tap of a backbone: a distinct intermediate tensor Head2Toe may read, in network order.
/// Each operation of a ``NetworkDescription`` produces one; the list is derived from the
/// description (``NetworkDescription/taps(height:width:)``).
///
/// ## Naming
///
/// With batch norm folded into the preceding convolution, "conv output" and "BN output" are one
/// tensor; it is exposed once, as `…conv_bn` (the normalised value, i.e. what the BN layer
/// outputs). Then, in network order:
///
/// - `stem.conv_bn`, `stem.relu6`
/// - per block `i` (0-based; MobileNetV2 `features.(i+1)`, EfficientNet `_blocks.i`):
///   `block{i}.expand.conv_bn`, `block{i}.expand.relu6` (absent in block 0, expansion 1),
///   `block{i}.depthwise.conv_bn`, `block{i}.depthwise.relu6`, `block{i}.project.conv_bn`
///   (linear bottleneck, no activation), and `block{i}.residual_add` in blocks with a skip
///   connection;
/// - `head.conv_bn`, `head.relu6`, `pool` (global average, the pre-logits), `logits`.
///
/// A block's output is its last tap (`residual_add`, or `project.conv_bn` without a skip); it is
/// not repeated, but carries the alias `block{i}.output`; `pool` carries `pre_logits`. Counts:
/// MobileNetV2 99 taps (17 blocks, 10 with skips), EfficientNet-Lite0 93 (16 blocks, 9 skips).
public struct BackboneTap: Sendable, Hashable, Codable {
    /// What kind of tensor a tap is.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// A convolution with its batch norm folded in (pre-activation).
        case convBN = "conv_bn"
        /// A ReLU6 output.
        case relu6
        /// A block output with its skip connection added.
        case residualAdd = "residual_add"
        /// Global average pool of the last feature map (pre-logits).
        case globalPool = "global_pool"
        /// Classifier output.
        case logits
    }

    /// Position in network order, from 0.
    public let order: Int
    /// Stable name (see the type's documentation).
    public let name: String
    /// Per-example shape: `[C, H, W]` channel-first, or `[C]`.
    public let shape: [Int]
    /// Kind of tensor.
    public let kind: Kind
    /// The checkpoint module(s) that produce it, e.g. `features.2.conv.0.0+features.2.conv.0.1`.
    public let module: String
    /// Other names for the same tensor (`block{i}.output`, `pre_logits`).
    public let aliases: [String]

    /// Elements per example.
    public var elementCount: Int { shape.reduce(1, *) }
}

/// Which taps a run hands to its callback, and how far it computes.
public struct TapSelection: Sendable, Hashable {
    let names: Set<String>?
    let stopAfter: String?

    /// Every tap; the whole network runs.
    public static let all = TapSelection(names: nil, stopAfter: nil)

    /// Only these taps (names or aliases); the network runs up to the deepest of them.
    public static func only(_ names: [String]) -> TapSelection { TapSelection(names: Set(names), stopAfter: nil) }

    /// Every tap up to and including `name` (early exit: nothing deeper is computed).
    public static func upTo(_ name: String) -> TapSelection { TapSelection(names: nil, stopAfter: name) }

    /// Resolves against a network's taps: the selected orders and the last order to compute.
    func resolve(_ taps: [BackboneTap]) throws -> (selected: [Bool], last: Int) {
        func find(_ name: String) throws -> Int {
            guard let tap = taps.first(where: { $0.name == name || $0.aliases.contains(name) }) else {
                throw NetworkError.unknownTap(name: name, known: taps.count)
            }
            return tap.order
        }
        var selected = [Bool](repeating: names == nil, count: taps.count)
        var last = taps.count - 1
        if let names {
            guard !names.isEmpty else { throw NetworkError.invalidInput("empty tap selection") }
            last = 0
            for name in names {
                let order = try find(name)
                selected[order] = true
                last = max(last, order)
            }
        }
        if let stopAfter {
            last = try find(stopAfter)
            for i in (last + 1)..<max(last + 1, taps.count) { selected[i] = false }
        }
        return (selected, last)
    }
}

/// Why a network could not be built or run.
public enum NetworkError: Error, CustomStringConvertible, Equatable {
    /// The weights do not fit the architecture (missing/unexpected keys, shapes, types).
    case weights(architecture: String, detail: String)
    /// The input batch is malformed.
    case invalidInput(String)
    /// A tap name that the network does not have.
    case unknownTap(name: String, known: Int)
    /// A network description that is not well formed (a name used twice, an unknown reference,
    /// channel counts that do not match).
    case invalidDescription(network: String, detail: String)
    /// A well-formed description with an operation the kernels cannot run.
    case unsupported(network: String, detail: String)

    /// One line.
    public var description: String {
        switch self {
        case .weights(let architecture, let detail):
            "weights for \(architecture) do not fit: \(detail)"
        case .invalidInput(let reason):
            "invalid network input: \(reason)"
        case .unknownTap(let name, let known):
            "unknown tap '\(name)' (the network has \(known) taps; see BackboneNetwork.taps(height:width:))"
        case .invalidDescription(let network, let detail):
            "network description \(network) is invalid: \(detail)"
        case .unsupported(let network, let detail):
            "network \(network) cannot run on these kernels: \(detail)"
        }
    }
}
