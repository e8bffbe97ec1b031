import ArgumentParser
import Foundation
import H2TRegistry

/// `h2t-store head report REF`.
struct HeadReport: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Write a self-contained HTML report of a head (inline SVG, no network).")

    @Argument(help: "NAME, NAME@vN or NAME@alias.") var reference: String
    @Option(name: .long, help: "Output file (default: <task>-v<N>.html).") var out: String?

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var output: OutputOptions

    struct Output: Encodable {
        var schema = "h2t.head-report-output/1"
        var head: String
        var path: String
        var bytes: Int
    }

    func run() throws {
        let registry = try openRegistry(storeOptions)
        let (head, html) = try registry.report(try parseReference(reference))
        let path = out ?? "\(head.task.replacingOccurrences(of: "/", with: "_"))-v\(head.version).html"
        do { try html.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw ValidationError("cannot write \(path): \(error.localizedDescription)")
        }
        if output.json { return try printJSON(Output(head: head.reference, path: path, bytes: html.utf8.count)) }
        print("wrote \(path) (\(head.reference), \(formatBytes(html.utf8.count)))")
    }
}
