// What `qshape train` prints: a live progress line on a terminal, epoch lines otherwise.
import Foundation
import Workflows
import Training

/// Training output: a live progress line on a terminal, fitted to its width (`ProgressLine`), and
/// one line per epoch; only the lines per epoch when the output is not a terminal.
final class ConsoleObserver: TrainingObserver {
    let interactive: Bool
    private var lastDraw = ContinuousClock.now
    /// A progress line is on the screen (to clear before the next message).
    private var drawn = false

    init(interactive: Bool) { self.interactive = interactive }

    func message(_ text: String) {
        clear()
        print(text)
    }

    func step(_ p: StepProgress) {
        guard interactive else { return }
        let now = ContinuousClock.now
        guard p.step == p.stepsInEpoch || now - lastDraw > .milliseconds(100) else { return }
        lastDraw = now
        guard let line = ProgressLine.render(p, width: terminalWidth()) else { return }
        draw(line)
    }

    func phase(_ text: String) {
        let width = terminalWidth()
        guard interactive, width >= ProgressLine.minimumWidth else { return }
        draw(String((text + "…").prefix(width - 1)))
    }

    /// Replaces the live line (never wider than the terminal: see `ProgressLine`).
    private func draw(_ line: String) {
        print("\r\u{1B}[2K" + line, terminator: "")
        fflush(stdout)
        drawn = true
    }

    func epoch(_ m: EpochMetrics, of total: Int) {
        clear()
        var line = String(
            format: "epoch %d/%d  loss %.4f  train %.2f%%", m.epoch, total, m.loss, m.trainAccuracy)
        if let v = m.validationAccuracy { line += String(format: "  val %.2f%%", v) }
        if let t = m.testAccuracy { line += String(format: "  test %.2f%%", t) }
        line += String(
            format: "  lr %.3g  %.1f s  %.0f samples/s", m.learningRate, m.epochSeconds, m.samplesPerSecond)
        print(line)
    }

    private func clear() {
        if drawn { print("\r\u{1B}[2K", terminator: "") }
        drawn = false
    }

    /// The terminal's width now (it may be resized while training), 80 when unknown.
    private func terminalWidth() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        return Int(ProcessInfo.processInfo.environment["COLUMNS"] ?? "") ?? 80
    }
}
