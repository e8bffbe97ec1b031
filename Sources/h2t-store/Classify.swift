import ArgumentParser
import H2TCore
import Foundation
import H2TBackbone

/// `h2t-store classify`: ImageNet top-5 of images with a built-in backbone (a sanity check that
/// the weights and preprocessing are right: chelsea.png is class 285, coffee.png 967).
struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "ImageNet top-5 classes of PNG/JPEG images with a built-in backbone.")

    @Argument(help: "PNG or JPEG files.") var images: [String]
    @Option(name: .long, help: "\(BackboneArchitecture.names(separator: " or ")).") var backbone: BackboneArchitecture = .mobileNetV2
    @Option(name: .long, parsing: .unconditional, help: "Square input size, 32...1024 (the weights were trained at 224).") var inputSize: Int = 224
    @Option(name: .long, parsing: .unconditional, help: "Classes to print per image, 1...1000.") var top: Int = 5
    @OptionGroup var cacheOptions: CacheOptions
    @OptionGroup var threadOptions: ThreadOptions
    @OptionGroup var output: OutputOptions

    struct Result: Encodable {
        var image: String
        var top: [ImageNetPrediction]
    }

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image") }
        try checkRange("--input-size", inputSize, .within(32...1024))
        try checkRange("--top", top, .within(1...1000, "ImageNet has 1000 classes"))
    }

    func run() throws {
        let network = try BackboneNetwork.load(backbone, from: cacheOptions.artifactCache)
        let preprocessing = Preprocessing(architecture: backbone, size: inputSize)
        let parallelism = try threadOptions.parallelism
        let decoded = try ImageDecoder.decode(files: images, alpha: preprocessing.alpha, parallelism: parallelism)
        let predictions = try network.classify(preprocessing.tensor(decoded, parallelism: parallelism), count: decoded.count,
                                               height: inputSize, width: inputSize, top: top, parallelism: parallelism)
        let results = zip(images, predictions).map { Result(image: $0, top: $1) }
        if output.json { return try printJSON(results) }
        for result in results {
            print(result.image)
            for p in result.top { print(String(format: "  class %4d  p=%.4f  logit=%.3f", p.classIndex, p.probability, p.logit)) }
        }
    }
}
