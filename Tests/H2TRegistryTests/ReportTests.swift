import Foundation
import H2TBackbone
import H2TRegistry
import Testing

@Suite("Head report")
struct ReportTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test func reportIsSelfContainedAndHasEverySection() throws {
        let fixture = try RegistryFixture()
        let head = try fixture.register("toys", tags: ["team": "vision"])
        try fixture.registry.setAlias("prod", to: HeadReference(task: "toys"))
        let (_, html) = try fixture.registry.report(HeadReference(task: "toys"))
        #expect(!html.contains("<script"), "no script")
        #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("src="), "nothing fetched from the network")
        for section in ["Comparison with the baselines", "Cross-validation curves", "Selected features per tap, in network order",
                        "Confusion matrix", "Lineage", "aria-label=\"confusion matrix\"", "<polyline", "prod", "team=vision"] {
            #expect(html.contains(section), "missing \(section)")
        }
        // One CV line per (target size, λ) of the grid, and one cell per confusion entry.
        let lambdas = Set(head.cvCurves.filter { $0.method == .head2toe }.compactMap(\.lambda))
        #expect(html.components(separatedBy: "<polyline").count - 1 == lambdas.count)
        let k = head.classNames.count
        #expect(html.components(separatedBy: "<title>true ").count - 1 == k * k)
        #expect(html.contains(head.lineage.train.digest))
    }

    /// Renders the report in headless Chromium and checks the screenshot is a real rendering
    /// (the page's blue bars are present). Set H2T_REPORT_SCREENSHOT to keep the PNG.
    @Test(.enabled(if: chromium != nil, "chromium is not installed (apt-get install -y chromium)"))
    func reportRendersInHeadlessChromium() throws {
        let fixture = try RegistryFixture()
        try fixture.register("toys")
        let (_, html) = try fixture.registry.report(HeadReference(task: "toys"))
        let page = fixture.directory.file("report.html"), shot = fixture.directory.file("report.png")
        try html.write(toFile: page, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.chromium!)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                             "--user-data-dir=\(fixture.directory.file("profile"))", "--window-size=1150,2200",
                             "--screenshot=\(shot)", "file://\(page)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let image = try ImageDecoder.decode(contentsOfFile: shot)
        #expect(image.width == 1150 && image.height == 2200)
        var blue = 0, nonWhite = 0
        for p in stride(from: 0, to: image.pixels.count, by: image.channels) {
            let (r, g, b) = (Int(image.pixels[p]), Int(image.pixels[p + 1]), Int(image.pixels[p + 2]))
            if abs(r - 0x2f) < 12, abs(g - 0x6f) < 12, abs(b - 0xdf) < 12 { blue += 1 }
            if r < 240 || g < 240 || b < 240 { nonWhite += 1 }
        }
        #expect(blue > 2000, "the bars of the baseline and tap charts are drawn")
        #expect(nonWhite > 20000)
        if let keep = ProcessInfo.processInfo.environment["H2T_REPORT_SCREENSHOT"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: shot, toPath: keep)
            try? FileManager.default.removeItem(atPath: keep + ".html")
            try FileManager.default.copyItem(atPath: page, toPath: keep + ".html")
        }
    }
}
