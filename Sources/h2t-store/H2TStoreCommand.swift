import ArgumentParser

@main
struct H2TStoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "h2t-store", abstract: "Feature store and model registry for Head2Toe transfer learning.")
}
