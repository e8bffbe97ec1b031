import Foundation
import Glibc

/// Progress of a long-running job (items done, rate, time left), drawn on stderr when it is a
/// terminal and silent otherwise or when `enabled` is false (e.g. under `--json`).
public final class ProgressReporter: @unchecked Sendable {
    // @unchecked Sendable: all state is guarded by `lock`.
    private let label: String
    private let unit: String
    private var total: Int?
    private let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private var done = 0
    private let lock = NSLock()

    /// Creates a reporter; it draws only if `enabled` and stderr is a terminal.
    public init(label: String, unit: String = "items", total: Int? = nil, enabled: Bool = true) {
        self.label = label
        self.unit = unit
        self.total = total
        self.enabled = enabled && isatty(STDERR_FILENO) == 1
    }

    /// Sets or changes the total.
    public func setTotal(_ total: Int) { lock.withLock { self.total = total } }

    /// Records `count` more items done and redraws at most ten times a second.
    public func advance(by count: Int) {
        lock.withLock {
            done += count
            guard enabled, Date().timeIntervalSince(lastDraw) >= 0.1 else { return }
            lastDraw = Date()
            draw()
        }
    }

    /// Draws the final state and ends the line.
    public func finish() {
        lock.withLock {
            guard enabled else { return }
            draw()
            FileHandle.standardError.write(Data("\n".utf8))
        }
    }

    private func draw() {
        let elapsed = max(Date().timeIntervalSince(start), 1e-6)
        let rate = Double(done) / elapsed
        var line = "\r\(label): \(done)"
        if let total { line += "/\(total) \(unit)" } else { line += " \(unit)" }
        line += String(format: "  %.1f %@/s", rate, unit)
        if let total, rate > 0, done < total {
            let left = Int(Double(total - done) / rate)
            line += String(format: "  %d:%02d left", left / 60, left % 60)
        } else {
            line += String(format: "  %.1fs", elapsed)
        }
        FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
    }
}
