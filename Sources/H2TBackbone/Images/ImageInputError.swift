/// Why an image or dataset file could not be used. Every case names the file or folder.
public enum ImageInputError: Error, CustomStringConvertible, Equatable {
    /// The file could not be opened or read.
    case unreadable(file: String, reason: String)
    /// The file is not an IDX file, or an IDX file of an unsupported kind.
    case notIDX(file: String, reason: String)
    /// The file holds fewer (or more) bytes than its header announces.
    case sizeMismatch(file: String, expected: Int, actual: Int)
    /// The gzip stream is corrupt or truncated.
    case corruptGzip(file: String, reason: String)
    /// An images file and a labels file disagree on the example count.
    case countMismatch(images: String, labels: String, imageCount: Int, labelCount: Int)
    /// The file is not a PNG or JPEG image, or is corrupt.
    case undecodable(file: String, reason: String)
    /// The image decodes but has a channel layout this pipeline does not accept.
    case unexpectedChannelCount(file: String, channels: Int, detail: String)
    /// The folder does not exist, is not a folder, or holds no usable image.
    case emptyFolder(path: String, reason: String)
    /// A preprocessing parameter is out of range.
    case invalidPreprocessing(reason: String)

    /// One line naming the file and the problem.
    public var description: String {
        switch self {
        case let .unreadable(file, reason): "\(file): cannot read: \(reason)"
        case let .notIDX(file, reason): "\(file): not a supported IDX file: \(reason)"
        case let .sizeMismatch(file, expected, actual):
            "\(file): IDX data is \(actual) bytes, its header announces \(expected) (truncated or corrupt)"
        case let .corruptGzip(file, reason): "\(file): corrupt gzip data: \(reason)"
        case let .countMismatch(images, labels, imageCount, labelCount):
            "\(images) holds \(imageCount) images but \(labels) holds \(labelCount) labels"
        case let .undecodable(file, reason): "\(file): not a decodable PNG/JPEG image: \(reason)"
        case let .unexpectedChannelCount(file, channels, detail):
            "\(file): unexpected channel count \(channels) (\(detail)); expected grayscale or RGB"
        case let .emptyFolder(path, reason): "\(path): \(reason)"
        case let .invalidPreprocessing(reason): "invalid preprocessing: \(reason)"
        }
    }
}
