import H2TCore

/// One tap of a backbone: a named intermediate activation and its per-example shape
/// (`[C, H, W]` for spatial maps, channel-first; `[C]` for vectors).
///
/// Distinct from the backbone layer's `BackboneTap` (which adds network order, kind, checkpoint
/// module and aliases, none of which the store keeps, and which external activations lack) and
/// from `TapColumns` (where the tap's pooled features sit in a feature-set row): this is the
/// backbone manifest's record of a tap, part of the backbone's identity.
public struct TapDescriptor: Sendable, Hashable, Codable {
    /// Stable tap name, e.g. `features.3.conv.1`.
    public var name: String
    /// Per-example shape.
    public var shape: [Int]

    /// Creates a descriptor.
    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }
}

/// A backbone: architecture, weights digest, preprocessing and the ordered taps. Immutable; its
/// id is the SHA-256 of its canonical JSON (schema `schemas/backbone.schema.json`).
public struct BackboneManifest: Sendable, Hashable, Codable {
    /// Schema tag.
    public var schema = "h2t.backbone/1"
    /// Architecture name (`mobilenet_v2`, `efficientnet_lite0`, or `external:<name>`).
    public var architecture: String
    /// SHA-256 of the weights file, when known.
    public var weightsSHA256: String?
    /// Input preprocessing (resize, normalisation), as recorded by the backbone layer.
    public var preprocessing: JSONValue
    /// Taps in network order.
    public var taps: [TapDescriptor]

    /// Creates a manifest.
    public init(architecture: String, weightsSHA256: String?, preprocessing: JSONValue = .null, taps: [TapDescriptor]) {
        self.architecture = architecture
        self.weightsSHA256 = weightsSHA256
        self.preprocessing = preprocessing
        self.taps = taps
    }

    /// The content-derived identity.
    public func identity() throws -> String { try CanonicalJSON.identity(of: self) }
}

/// The rule that turns a tap's activation into pooled features, named and versioned: part of a
/// feature set's identity, so that features pooled by another rule are never reused for it.
public struct PoolingRule: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Rule name, e.g. `head2toe-avgpool`.
    public var name: String
    /// Rule version; a changed rule gets a new version.
    public var version: Int

    /// Creates a rule reference.
    public init(name: String, version: Int) {
        self.name = name
        self.version = version
    }

    /// Head2Toe's average pooling to a target size as `Head2ToePooling` implements it: the rule of
    /// every feature set of store format 1, and the default.
    public static let head2toeAvgPool = PoolingRule(name: "head2toe-avgpool", version: 1)

    /// Rules this build can apply to new activations.
    public static let implemented: [PoolingRule] = [.head2toeAvgPool]

    public var description: String { "\(name) v\(version)" }
}

/// A feature set: one backbone pooled to one target size by one pooling rule, stored with one
/// codec. Immutable; its id is the SHA-256 of its canonical JSON (schema
/// `schemas/featureset.schema.json`).
///
/// The pooling rule is written into the manifest only when it is not `head2toe-avgpool` v1, so
/// that the manifests (and ids) of feature sets made before the rule was recorded are unchanged,
/// and a manifest without the field reads as rule v1 (`schemas/store-format.md` §2).
public struct FeatureSetManifest: Sendable, Hashable, Codable {
    /// Schema tag.
    public var schema = "h2t.featureset/1"
    /// Id of the backbone manifest.
    public var backbone: String
    /// Head2Toe pooling target size `F_T`.
    public var targetSize: Int
    /// How tiles are encoded.
    public var codec: TileCodec
    /// Columns per tile (a tile = one segment of rows × one column block).
    public var columnBlock: Int
    /// Per-tap column ranges, in tap order.
    public var taps: [TapColumns]
    /// Total features per example (`D`).
    public var width: Int
    /// The pooling rule as stored: `nil` for the default (omitted from the JSON).
    private var storedPoolingRule: PoolingRule?

    enum CodingKeys: String, CodingKey {
        case schema, backbone, targetSize, codec, columnBlock, taps, width
        case storedPoolingRule = "poolingRule"
    }

    /// Lays out a feature set for `backbone`, pooling every tap to `targetSize` with `poolingRule`
    /// (whose column layout is that of `Head2ToePooling`).
    public init(backbone: BackboneManifest, backboneID: String, targetSize: Int,
                codec: TileCodec = .default, columnBlock: Int = 1024, poolingRule: PoolingRule = .head2toeAvgPool) {
        self.backbone = backboneID
        self.targetSize = targetSize
        self.codec = codec
        self.columnBlock = columnBlock
        self.storedPoolingRule = poolingRule == .head2toeAvgPool ? nil : poolingRule
        let pooling = Head2ToePooling(targetSize: targetSize)
        var offset = 0
        var taps: [TapColumns] = []
        for tap in backbone.taps {
            let width = pooling.outputWidth(shape: tap.shape)
            taps.append(TapColumns(name: tap.name, sourceShape: tap.shape, offset: offset, width: width))
            offset += width
        }
        self.taps = taps
        self.width = offset
    }

    /// The content-derived identity.
    public func identity() throws -> String { try CanonicalJSON.identity(of: self) }

    /// Number of column blocks (tiles per segment).
    public var columnBlocks: Int { (width + columnBlock - 1) / columnBlock }

    /// The rule the features were pooled with (`head2toe-avgpool` v1 when the manifest has none).
    public var poolingRule: PoolingRule { storedPoolingRule ?? .head2toeAvgPool }

    /// Whether storing this manifest needs store format 2 (it records a non-default rule).
    var needsFormat2: Bool { storedPoolingRule != nil }

    /// The pooling to apply to new activations of this feature set; refuses a rule this build
    /// does not implement (its features could not be matched).
    public func pooling() throws -> Head2ToePooling {
        guard poolingRule == .head2toeAvgPool else {
            throw StoreError.unsupportedPoolingRule(poolingRule, implemented: PoolingRule.implemented)
        }
        return Head2ToePooling(targetSize: targetSize)
    }

    /// Global column index of `(tap, index)`, or `nil` if out of range.
    public func column(tap: String, index: Int) -> Int? {
        guard let t = taps.first(where: { $0.name == tap }), index >= 0, index < t.width else { return nil }
        return t.offset + index
    }
}

/// A content hash identifying an example (32 bytes of SHA-256).
public struct ExampleID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The digest bytes.
    public let bytes: [UInt8]

    /// Wraps a 32-byte digest.
    public init(digest: [UInt8]) {
        precondition(digest.count == 32, "an example id is a 32-byte digest")
        bytes = digest
    }

    /// The content identity of a decoded image (`channels`-interleaved 8-bit pixels): the same
    /// pixels give the same example however they were read (an IDX stack, a PNG, a JPEG).
    public init(imagePixels pixels: UnsafeBufferPointer<UInt8>, width: Int, height: Int, channels: Int) {
        var hasher = SHA256()
        hasher.update(Array("h2t.image:\(width)x\(height)x\(channels):".utf8))
        hasher.update(UnsafeRawBufferPointer(pixels))
        self.init(digest: hasher.finalize())
    }

    /// Parses 64 hex digits; `nil` if malformed.
    public init?(hex: String) {
        guard hex.utf8.count == 64, let bytes = Hex.decode(hex) else { return nil }
        self.bytes = bytes
    }

    /// The id of an example known only by a user-supplied name (external activations).
    public init(name: String) {
        self.init(digest: SHA256.hash(Array("h2t.example-name:\(name)".utf8)))
    }

    /// The id of an example from its decoded content (e.g. pixels plus shape).
    public init(content: UnsafeRawBufferPointer) {
        self.init(digest: SHA256.hash(content))
    }

    /// Lowercase hex.
    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    public static func < (a: ExampleID, b: ExampleID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// What the store knows about an example besides its features.
public struct ExampleRecord: Sendable, Hashable, Codable {
    /// The user's name for the example (file path, dataset index, external id).
    public var name: String
    /// Where it came from (input file).
    public var source: String

    /// Creates a record.
    public init(name: String, source: String) {
        self.name = name
        self.source = source
    }
}

/// A dataset: class names and the sizes of its splits; its items live in their own table.
public struct DatasetManifest: Sendable, Hashable, Codable {
    /// Schema tag.
    public var schema = "h2t.dataset/1"
    /// Dataset name.
    public var name: String
    /// Class names; labels index into this list.
    public var classNames: [String]
    /// Items per split.
    public var splits: [String: Int]

    /// Creates a manifest.
    public init(name: String, classNames: [String], splits: [String: Int] = [:]) {
        self.name = name
        self.classNames = classNames
        self.splits = splits
    }
}
