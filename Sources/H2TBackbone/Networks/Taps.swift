/// One tap of a backbone: a distinct intermediate tensor Head2Toe may read, in network order.
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

    /// One line.
    public var description: String {
        switch self {
        case .weights(let architecture, let detail):
            "weights for \(architecture) do not fit: \(detail)"
        case .invalidInput(let reason):
            "invalid network input: \(reason)"
        case .unknownTap(let name, let known):
            "unknown tap '\(name)' (the network has \(known) taps; see BackboneNetwork.taps(height:width:))"
        }
    }
}

extension NetworkSpec {
    /// The ordered taps for a `height × width` input; mirrors `BackboneNetwork.forward`.
    func taps(height: Int, width: Int) -> [BackboneTap] {
        var taps: [BackboneTap] = []
        func add(_ name: String, _ shape: [Int], _ kind: BackboneTap.Kind, _ module: String, _ aliases: [String] = []) {
            taps.append(BackboneTap(order: taps.count, name: name, shape: shape, kind: kind, module: module, aliases: aliases))
        }
        func module(_ unit: ConvUnit) -> String { "\(unit.convKey)+\(unit.bnKey)" }
        var (h, w) = padding(stem, height: height, width: width)
            .outputSize(height: height, width: width, kernel: stem.kernel, stride: stem.stride)
        add("stem.conv_bn", [stem.outputChannels, h, w], .convBN, module(stem))
        add("stem.relu6", [stem.outputChannels, h, w], .relu6, module(stem))
        for block in blocks {
            let p = "block\(block.index)"
            if let expand = block.expand {
                add("\(p).expand.conv_bn", [expand.outputChannels, h, w], .convBN, module(expand))
                add("\(p).expand.relu6", [expand.outputChannels, h, w], .relu6, module(expand))
            }
            let dw = block.depthwise
            (h, w) = padding(dw, height: h, width: w).outputSize(height: h, width: w, kernel: dw.kernel, stride: dw.stride)
            add("\(p).depthwise.conv_bn", [dw.outputChannels, h, w], .convBN, module(dw))
            add("\(p).depthwise.relu6", [dw.outputChannels, h, w], .relu6, module(dw))
            let c = block.project.outputChannels
            if block.residual {
                add("\(p).project.conv_bn", [c, h, w], .convBN, module(block.project))
                add("\(p).residual_add", [c, h, w], .residualAdd, block.modulePath, ["\(p).output"])
            } else {
                add("\(p).project.conv_bn", [c, h, w], .convBN, module(block.project), ["\(p).output"])
            }
        }
        add("head.conv_bn", [head.outputChannels, h, w], .convBN, module(head))
        add("head.relu6", [head.outputChannels, h, w], .relu6, module(head))
        add("pool", [head.outputChannels], .globalPool, "avgpool", ["pre_logits"])
        add("logits", [classes], .logits, classifierWeight.replacingSuffix(".weight"))
        return taps
    }
}

extension String {
    fileprivate func replacingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
