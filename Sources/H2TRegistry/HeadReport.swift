import Foundation
import H2TStore
import H2TTrain

/// A self-contained HTML report of one head: inline SVG charts and inline CSS, no script, no
/// network access. Sections: scores against the baselines, CV curves (accuracy against keep
/// fraction for each target size and λ), kept features per tap in network order, the test
/// confusion matrix, and the lineage.
public enum HeadReportPage {
    /// Renders the page. `taps` is the feature set's full tap list in network order (so taps with
    /// no kept feature show as gaps); without it only the kept taps are drawn.
    public static func render(_ head: HeadRecord, tags: [String: String] = [:], aliases: [String] = [],
                              taps: [TapColumns]? = nil) -> String {
        var html = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(esc(head.reference)) · h2t-store head report</title>
        <style>
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
        h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
        .sub{color:#5b6577}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
        .card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:150px}
        .card b{display:block;font-size:22px}.card span{color:#5b6577;font-size:12px}
        table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eef1f5;text-align:left;font-size:13px}
        th{color:#5b6577;font-weight:600}svg text{font-family:system-ui,sans-serif}
        .legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
        code{font-size:12px;background:#f3f5f8;padding:1px 4px;border-radius:3px}
        </style></head><body>
        """
        let m = head.metrics, l = head.lineage, h = head.hyperParameters
        html += "<h1>\(esc(head.task)) <span class=\"sub\">v\(head.version)</span></h1>"
        html += "<div class=\"sub\">\(esc(head.classNames.count.description)) classes · \(head.inputCount) features from \(head.selection.count) tap\(head.selection.count == 1 ? "" : "s") of \(esc(l.architecture)) · F<sub>T</sub> \(h.targetSize) · created \(esc(head.createdAt))"
        if !aliases.isEmpty { html += " · aliases: " + aliases.map { "<code>\(esc($0))</code>" }.joined(separator: " ") }
        if !tags.isEmpty { html += " · tags: " + tags.sorted { $0.key < $1.key }.map { "<code>\(esc($0.key))=\(esc($0.value))</code>" }.joined(separator: " ") }
        html += "</div>"

        // Score cards.
        html += "<div class=\"cards\">"
        func card(_ title: String, _ value: Double?, _ note: String) -> String {
            "<div class=\"card\"><span>\(esc(title))</span><b>\(value.map { String(format: "%.1f%%", $0 * 100) } ?? "–")</b><span>\(esc(note))</span></div>"
        }
        html += card("Head2Toe test accuracy", m.head.testAccuracy, "CV \(pct(m.head.cvAccuracy))")
        if let p = m.linearProbe { html += card("Linear probe (test)", p.testAccuracy, "\(p.keptFeatures) features, CV \(pct(p.cvAccuracy))") }
        if let a = m.allFeatures { html += card("All features (test)", a.testAccuracy, "\(a.keptFeatures) features, CV \(pct(a.cvAccuracy))") }
        if let t = m.head.testAccuracy, let p = m.linearProbe?.testAccuracy {
            html += "<div class=\"card\"><span>Gain over linear probe</span><b>\(String(format: "%+.1f", (t - p) * 100)) pts</b><span>test accuracy</span></div>"
        }
        html += "</div>"

        html += "<h2>Comparison with the baselines</h2>" + baselineChart(m)
        html += "<h2>Cross-validation curves</h2><p class=\"sub\">Pooled CV accuracy against keep fraction, one line per target size F<sub>T</sub> and λ at the chosen final-head ridge; dashed lines: baselines at their best ridge. The ring marks the chosen configuration.</p>"
        html += cvChart(head)
        html += "<h2>Selected features per tap, in network order</h2><p class=\"sub\">Which layers Head2Toe chose: kept features per tap (bar height), tap width in the tooltip.</p>"
        html += tapChart(head, taps: taps)
        if let test = head.testMetrics[h.method.rawValue] ?? head.testMetrics[FitMethod.head2toe.rawValue] {
            html += "<h2>Confusion matrix (test, \(test.count) examples)</h2><p class=\"sub\">Rows: true class; columns: predicted class.</p>"
            html += confusionChart(test.confusion, classNames: head.classNames, perClass: test.perClassAccuracy)
        }
        html += "<h2>Lineage</h2><table>"
        let rows: [(String, String)] = [
            ("feature set", l.featureSet), ("backbone", "\(l.architecture) · \(l.backbone)"), ("dataset", l.dataset),
            ("training split", "\(l.train.split) · \(l.train.count) examples · digest \(l.train.digest)"),
            ("test split", l.test.map { "\($0.split) · \($0.count) examples · digest \($0.digest)" } ?? "none"),
            ("seed", "\(l.seed)"), ("tool version", l.toolVersion), ("normalisation", head.normalization.description),
            ("chosen", "fraction \(h.fraction.map { "\($0)" } ?? "–"), λ \(h.lambda.map { "\($0)" } ?? "–") (\(h.lambdaScale ?? "–")), absolute λ \(h.lambdaAbsolute.map { String(format: "%.4g", $0) } ?? "–"), \(h.folds.map(String.init) ?? "–") folds, head L2 \(h.headL2.map { "\($0)" } ?? "–")"),
        ]
        for (k, v) in rows { html += "<tr><th>\(esc(k))</th><td>\(esc(v))</td></tr>" }
        html += "</table></body></html>\n"
        return html
    }

    static let palette = ["#2f6fdf", "#e0682b", "#2a9d68", "#a03cc2", "#c9a227", "#d6336c", "#1b998b", "#6c757d", "#5f3dc4", "#8c6d31"]

    static func esc(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    static func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }
    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func baselineChart(_ m: HeadMetrics) -> String {
        let methods = [("Head2Toe", m.head), ("Linear probe", m.linearProbe), ("All features", m.allFeatures)].compactMap { n, s in s.map { (n, $0) } }
        let width = 1000.0, rowH = 26.0, left = 130.0, barW = 600.0
        var svg = "<svg width=\"\(Int(width))\" height=\"\(Int(Double(methods.count) * rowH * 2 + 40))\" viewBox=\"0 0 \(Int(width)) \(Int(Double(methods.count) * rowH * 2 + 40))\" role=\"img\" aria-label=\"baseline comparison\">"
        var y = 10.0
        for (name, score) in methods {
            svg += "<text x=\"\(f(left - 8))\" y=\"\(f(y + rowH - 6))\" text-anchor=\"end\" font-size=\"13\">\(esc(name))</text>"
            for (i, (label, value)) in [("test", score.testAccuracy), ("cv", Optional(score.cvAccuracy))].enumerated() {
                let yy = y + Double(i) * (rowH - 4)
                let v = value ?? 0
                svg += "<rect x=\"\(f(left))\" y=\"\(f(yy))\" width=\"\(f(barW * v))\" height=\"\(f(rowH - 8))\" fill=\"\(i == 0 ? "#2f6fdf" : "#9db8ea")\"><title>\(esc(name)) \(label): \(pct(value))</title></rect>"
                svg += "<text x=\"\(f(left + barW * v + 6))\" y=\"\(f(yy + rowH - 12))\" font-size=\"12\">\(label) \(pct(value))</text>"
            }
            y += rowH * 2
        }
        svg += "<text x=\"\(f(left))\" y=\"\(f(y + 14))\" font-size=\"11\" fill=\"#5b6577\">bar length = accuracy (0–100%); \(methods.map { "\($0.0): \($0.1.keptFeatures) features" }.joined(separator: " · "))</text>"
        return svg + "</svg>"
    }

    static func cvChart(_ head: HeadRecord) -> String {
        // Head2Toe curves at the chosen final-head ridge; each baseline at its best ridge.
        let chosenRidge = head.hyperParameters.headL2
        let points = head.cvCurves.filter { $0.method == .head2toe && $0.fraction != nil && ($0.ridge == nil || $0.ridge == chosenRidge) }
        guard !points.isEmpty else { return "<p class=\"sub\">No cross-validation curves recorded.</p>" }
        struct Series { var label: String; var points: [(x: Double, y: Double, chosen: Bool)] }
        var groups: [String: Series] = [:]
        var order: [String] = []
        for p in points {
            let key = "F_T \(p.targetSize), λ \(p.lambda.map { "\($0)" } ?? "–")" + ((p.solver ?? 0) > 0 ? ", solver \(p.solver!)" : "")
            if groups[key] == nil { groups[key] = Series(label: key, points: []); order.append(key) }
            let chosen = p.featureSet == head.lineage.featureSet && p.lambda == head.hyperParameters.lambda
                && p.fraction == head.hyperParameters.fraction && p.solver == head.hyperParameters.solver
            groups[key]!.points.append((p.fraction!, p.cvAccuracy, chosen))
        }
        let baselines = Dictionary(grouping: head.cvCurves.filter { $0.method != .head2toe }) { "\($0.method) \($0.featureSet)" }
            .values.map { rows in rows.max { ($0.cvAccuracy, $0.ridge ?? 0) < ($1.cvAccuracy, $1.ridge ?? 0) }! }
            .sorted { ($0.method.rawValue, $0.targetSize) < ($1.method.rawValue, $1.targetSize) }
        let ys = points.map(\.cvAccuracy) + baselines.map(\.cvAccuracy)
        let spread = (ys.max() ?? 1) - (ys.min() ?? 0)
        let step = spread > 0.25 ? 0.1 : 0.05
        var yMin = max(0, (((ys.min() ?? 0) - 0.01) / step).rounded(.down) * step)
        var yMax = min(1, (((ys.max() ?? 1) + 0.01) / step).rounded(.up) * step)
        if yMax - yMin < step { yMin = max(0, yMax - step); yMax = yMin + step }
        let xs = points.map { $0.fraction! }
        let xMin = log10(xs.min()!), xMax = log10(xs.max()!) + (xs.min() == xs.max() ? 1 : 0)
        let w = 760.0, hgt = 340.0, left = 60.0, right = 20.0, top = 16.0, bottom = 46.0
        let pw = w - left - right, ph = hgt - top - bottom
        func X(_ x: Double) -> Double { left + (xMax == xMin ? pw / 2 : (log10(x) - xMin) / (xMax - xMin) * pw) }
        func Y(_ y: Double) -> Double { top + (1 - (y - yMin) / (yMax - yMin)) * ph }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\" role=\"img\" aria-label=\"cross-validation curves\">"
        svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"#fafbfd\" stroke=\"#dde2ea\"/>"
        var tick = yMin
        while tick <= yMax + 1e-9 {
            svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(Y(tick)))\" y2=\"\(f(Y(tick)))\" stroke=\"#eef1f5\"/>"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(Y(tick) + 4))\" text-anchor=\"end\" font-size=\"11\">\(Int((tick * 100).rounded()))%</text>"
            tick += step
        }
        for x in Set(xs).sorted() {
            svg += "<text x=\"\(f(X(x)))\" y=\"\(f(top + ph + 16))\" text-anchor=\"middle\" font-size=\"11\">\(x)</text>"
        }
        svg += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(hgt - 8))\" text-anchor=\"middle\" font-size=\"12\">keep fraction (log scale)</text>"
        svg += "<text transform=\"translate(14 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">CV accuracy</text>"
        var legend = "<div class=\"legend\">"
        for (i, b) in baselines.enumerated() {
            let color = b.method == .linearProbe ? "#6c757d" : "#adb5bd"
            svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(Y(b.cvAccuracy)))\" y2=\"\(f(Y(b.cvAccuracy)))\" stroke=\"\(color)\" stroke-dasharray=\"6 4\"><title>\(esc(b.method.rawValue)) (F_T \(b.targetSize)): \(pct(b.cvAccuracy))</title></line>"
            legend += "<span><i style=\"background:\(color)\"></i>\(esc(b.method == .linearProbe ? "linear probe" : "all features")) F<sub>T</sub> \(b.targetSize) (\(pct(b.cvAccuracy)))</span>"
            _ = i
        }
        for (i, key) in order.enumerated() {
            let s = groups[key]!
            let color = palette[i % palette.count]
            let sorted = s.points.sorted { $0.x < $1.x }
            // Earlier series are drawn wider, so identical curves stay visible under later ones.
            let strokeWidth = 2 + 2.5 * Double(order.count - 1 - i)
            svg += "<polyline fill=\"none\" stroke-opacity=\"0.9\" stroke=\"\(color)\" stroke-width=\"\(f(strokeWidth))\" points=\"\(sorted.map { "\(f(X($0.x))),\(f(Y($0.y)))" }.joined(separator: " "))\"/>"
            for p in sorted {
                svg += "<circle cx=\"\(f(X(p.x)))\" cy=\"\(f(Y(p.y)))\" r=\"3.5\" fill=\"\(color)\"><title>\(esc(s.label)), fraction \(p.x): \(pct(p.y))</title></circle>"
                if p.chosen { svg += "<circle cx=\"\(f(X(p.x)))\" cy=\"\(f(Y(p.y)))\" r=\"8\" fill=\"none\" stroke=\"#1d2330\" stroke-width=\"2\"><title>chosen</title></circle>" }
            }
            legend += "<span><i style=\"background:\(color)\"></i>\(esc(s.label))</span>"
        }
        return svg + "</svg>" + legend + "</div>"
    }

    static func tapChart(_ head: HeadRecord, taps: [TapColumns]?) -> String {
        let kept = Dictionary(uniqueKeysWithValues: head.selection.map { ($0.order, $0) })
        let all: [(order: Int, name: String, width: Int, kept: Int)] = taps.map { list in
            list.enumerated().map { i, t in (i, t.name, t.width, kept[i]?.indices.count ?? 0) }
        } ?? head.selection.map { ($0.order, $0.tap, $0.width, $0.indices.count) }
        guard !all.isEmpty else { return "" }
        let maxKept = max(1, all.map(\.kept).max() ?? 1)
        let w = 1040.0, hgt = 260.0, left = 44.0, bottom = 70.0, top = 12.0
        let pw = w - left - 10, ph = hgt - top - bottom
        let slot = pw / Double(all.count)
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\" role=\"img\" aria-label=\"kept features per tap\">"
        svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(top + ph))\" y2=\"\(f(top + ph))\" stroke=\"#adb5bd\"/>"
        for frac in [0.5, 1.0] {
            let y = top + ph * (1 - frac)
            svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"#eef1f5\"/>"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\" font-size=\"11\">\(Int((Double(maxKept) * frac).rounded()))</text>"
        }
        var lastLabelX = -100.0
        for (i, t) in all.enumerated() {
            let x = left + Double(i) * slot
            let bh = ph * Double(t.kept) / Double(maxKept)
            let color = t.name.hasPrefix("stem") ? "#c9a227" : t.name.hasPrefix("head") || t.name == "pool" || t.name == "logits" ? "#a03cc2" : "#2f6fdf"
            let barWidth = max(1, min(slot * 0.8, 36)), barX = x + (slot - barWidth) / 2
            if t.kept > 0 {
                svg += "<rect x=\"\(f(barX))\" y=\"\(f(top + ph - bh))\" width=\"\(f(barWidth))\" height=\"\(f(bh))\" fill=\"\(color)\"><title>\(esc(t.name)) (tap \(t.order)): \(t.kept) of \(t.width) kept</title></rect>"
            } else {
                svg += "<rect x=\"\(f(barX))\" y=\"\(f(top + ph - 2))\" width=\"\(f(barWidth))\" height=\"2\" fill=\"#dde2ea\"><title>\(esc(t.name)) (tap \(t.order)): none of \(t.width) kept</title></rect>"
            }
            // Few taps: label each. Many taps: label where a block (the prefix before the first
            // '.') starts, so the labels mark the network's stages without overlapping.
            let group = String(t.name.split(separator: ".").first ?? Substring(t.name))
            let previous = i > 0 ? String(all[i - 1].name.split(separator: ".").first ?? "") : ""
            let label = all.count <= 40 ? t.name : (group != previous ? group : nil)
            if let label, x - lastLabelX >= 12 {
                svg += "<text transform=\"translate(\(f(x + slot / 2 - 3)) \(f(top + ph + 6))) rotate(60)\" font-size=\"10\" fill=\"#5b6577\">\(esc(label))</text>"
                lastLabelX = x
            }
        }
        svg += "</svg>"
        let total = all.map(\.kept).reduce(0, +)
        return svg + "<p class=\"sub\">\(total) features kept from \(all.filter { $0.kept > 0 }.count) of \(all.count) taps; taps are in network order from the stem (left) to the logits (right).</p>"
    }

    static func confusionChart(_ confusion: [[Int]], classNames: [String], perClass: [Double?]) -> String {
        let k = confusion.count
        guard k > 0 else { return "" }
        let cell = min(48.0, 560.0 / Double(k)), left = 130.0, top = 110.0
        let w = left + cell * Double(k) + 90, hgt = top + cell * Double(k) + 20
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\" role=\"img\" aria-label=\"confusion matrix\">"
        for (j, name) in classNames.enumerated() {
            svg += "<text transform=\"translate(\(f(left + cell * (Double(j) + 0.5))) \(f(top - 6))) rotate(-55)\" font-size=\"11\">\(esc(name))</text>"
        }
        for (i, row) in confusion.enumerated() {
            let total = max(1, row.reduce(0, +))
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(top + cell * (Double(i) + 0.5) + 4))\" text-anchor=\"end\" font-size=\"11\">\(esc(i < classNames.count ? classNames[i] : "\(i)"))</text>"
            for (j, count) in row.enumerated() {
                let share = Double(count) / Double(total)
                let fill = i == j ? "rgba(42,157,104,\(f(0.12 + 0.88 * share)))" : "rgba(224,104,43,\(f(share == 0 ? 0.03 : 0.12 + 0.88 * share)))"
                svg += "<rect x=\"\(f(left + cell * Double(j)))\" y=\"\(f(top + cell * Double(i)))\" width=\"\(f(cell - 1))\" height=\"\(f(cell - 1))\" fill=\"\(fill)\"><title>true \(esc(classNames[i])), predicted \(esc(classNames[j])): \(count)</title></rect>"
                if cell >= 22 {
                    svg += "<text x=\"\(f(left + cell * (Double(j) + 0.5)))\" y=\"\(f(top + cell * (Double(i) + 0.5) + 4))\" text-anchor=\"middle\" font-size=\"\(cell >= 36 ? 12 : 9)\" fill=\"\(share > 0.6 ? "#fff" : "#1d2330")\">\(count)</text>"
                }
            }
            let recall = i < perClass.count ? perClass[i] : nil
            svg += "<text x=\"\(f(left + cell * Double(k) + 8))\" y=\"\(f(top + cell * (Double(i) + 0.5) + 4))\" font-size=\"11\" fill=\"#5b6577\">\(pct(recall))</text>"
        }
        return svg + "</svg>"
    }
}

extension Registry {
    /// The HTML report of the head `reference` selects, with its tags, aliases and (when the store
    /// has it) the feature set's full tap list.
    public func report(_ reference: HeadReference) throws -> (head: HeadRecord, html: String) {
        let record = try head(reference)
        let exact = HeadReference(task: record.task, selector: .version(record.version))
        let aliases = try self.aliases(task: record.task).filter { $0.version == record.version }.map(\.alias)
        let taps = try? store.featureSet(record.lineage.featureSet).manifest.taps
        return (record, HeadReportPage.render(record, tags: try tags(exact), aliases: aliases, taps: taps))
    }
}
