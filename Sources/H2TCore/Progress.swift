import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Progress of a long-running job (items done, rate, time left) on stderr; stdout is never touched.
///
/// On a terminal the line is redrawn in place at most ten times a second. Off a terminal (a file
/// or a pipe: CI logs, `nohup`, a pipeline) a redrawn line would be unreadable, so a plain line
/// is printed every `interval` seconds and once more by `finish()`; a job shorter than the
/// interval prints only that last line. The interval is 10 s, or `H2T_PROGRESS_INTERVAL`
/// (seconds, ≥ 0) when set. Nothing is printed when `enabled` is false (`--json`, `--quiet`).
public final class ProgressReporter: @unchecked Sendable {
    // @unchecked Sendable: all state is guarded by `lock`.

    /// How the reporter prints.
    private enum Style {
        /// One line redrawn in place (`\r`, erase to end of line).
        case terminal
        /// Plain lines, one per interval and one at the end.
        case plain(interval: Double)
    }

    /// Seconds between plain lines when `H2T_PROGRESS_INTERVAL` is not set.
    static let defaultInterval = 10.0

    private let label: String
    private let unit: String
    private var total: Int?
    private let enabled: Bool
    private let style: Style
    private let start: Date
    private var lastDraw: Date
    private var done = 0
    private let lock = NSLock()

    /// Creates a reporter for the process's stderr (a terminal or not); it prints only if `enabled`.
    public init(label: String, unit: String = "items", total: Int? = nil, enabled: Bool = true) {
        self.label = label
        self.unit = unit
        self.total = total
        self.enabled = enabled
        let style = Self.styleForStderr()
        self.style = style
        let now = Date()
        start = now
        // A plain reporter waits one interval before its first line; the terminal draws at once.
        if case .plain = style { lastDraw = now } else { lastDraw = .distantPast }
    }

    /// Redrawn on a terminal; else plain lines every `H2T_PROGRESS_INTERVAL` (if a number ≥ 0) or
    /// `defaultInterval` seconds.
    private static func styleForStderr() -> Style {
        if isatty(STDERR_FILENO) == 1 { return .terminal }
        let setting = ProcessInfo.processInfo.environment["H2T_PROGRESS_INTERVAL"]
        let interval = setting.flatMap(Double.init).flatMap { $0 >= 0 && $0.isFinite ? $0 : nil }
        return .plain(interval: interval ?? defaultInterval)
    }

    /// Sets or changes the total.
    public func setTotal(_ total: Int) { lock.withLock { self.total = total } }

    /// Records `count` more items done and prints if the style's interval has passed.
    public func advance(by count: Int) {
        lock.withLock {
            done += count
            guard enabled else { return }
            let interval: Double
            switch style {
            case .terminal: interval = 0.1
            case .plain(let seconds): interval = seconds
            }
            let now = Date()
            guard now.timeIntervalSince(lastDraw) >= interval else { return }
            lastDraw = now
            draw(final: false)
        }
    }

    /// Prints the final state (and ends the terminal's line).
    public func finish() {
        lock.withLock {
            guard enabled else { return }
            draw(final: true)
        }
    }

    /// Items per second, or seconds per item when fewer than one item a second finishes (a CV
    /// task can take minutes: "0.0 tasks/s" would say nothing).
    public static func rateText(_ rate: Double, unit: String) -> String {
        if rate >= 1 || rate <= 0 { return String(format: "%.1f %@/s", rate, unit) }
        let singular = unit.hasSuffix("s") ? String(unit.dropLast()) : unit
        return String(format: "%.1f s/%@", 1 / rate, singular)
    }

    private func draw(final: Bool) {
        let elapsed = max(Date().timeIntervalSince(start), 1e-6)
        let rate = Double(done) / elapsed
        let count = total.map { "\(done)/\($0) \(unit)" } ?? "\(done) \(unit)"
        let rateText = Self.rateText(rate, unit: unit)
        var timeText = String(format: "%.1fs", elapsed)
        if !final, let total, rate > 0, done < total {
            let left = Int(Double(total - done) / rate)
            timeText = String(format: "%d:%02d left", left / 60, left % 60)
        }
        let line: String
        switch style {
        case .terminal:
            line = "\r\(label): \(count)  \(rateText)  \(timeText)\u{1B}[K" + (final ? "\n" : "")
        case .plain:
            line = final ? "\(label): done, \(count) in \(timeText), \(rateText)\n" : "\(label): \(count), \(rateText), \(timeText)\n"
        }
        FileHandle.standardError.write(Data(line.utf8))
    }
}
