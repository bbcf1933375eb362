import Foundation
import QShapeKit
import Training

/// Training output: a live progress bar on a terminal, one line per epoch otherwise.
final class ConsoleObserver: TrainingObserver {
    let interactive: Bool
    private var lastDraw = ContinuousClock.now

    init(interactive: Bool) { self.interactive = interactive }

    func message(_ text: String) { print(text); fflush(stdout) }

    func step(_ p: StepProgress) {
        guard interactive else { return }
        let now = ContinuousClock.now
        guard p.step == p.stepsInEpoch || now - lastDraw > .milliseconds(100) else { return }
        lastDraw = now
        let width = 30, filled = width * p.step / max(1, p.stepsInEpoch)
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        print(String(format: "\repoch %d/%d %@ %3d%%  loss %.4f  %8.0f samples/s  ETA %@ ",
                     p.epoch + 1, p.totalEpochs, bar as NSString, 100 * p.step / max(1, p.stepsInEpoch), p.loss,
                     p.samplesPerSecond, formatDuration(etaSeconds(p)) as NSString), terminator: "")
        fflush(stdout)
    }

    /// Seconds left in this epoch at the current rate.
    private func etaSeconds(_ p: StepProgress) -> Double {
        guard p.samplesPerSecond > 0 else { return 0 }
        return Double((p.stepsInEpoch - p.step) * p.batchSize) / p.samplesPerSecond
    }

    func epoch(_ m: EpochMetrics, of total: Int) {
        if interactive { print("\r\u{1B}[2K", terminator: "") }
        var line = String(format: "epoch %d/%d  loss %.4f  train %.2f%%", m.epoch, total, m.loss, m.trainAccuracy)
        if let v = m.validationAccuracy { line += String(format: "  val %.2f%%", v) }
        if let t = m.testAccuracy { line += String(format: "  test %.2f%%", t) }
        line += String(format: "  lr %.3g  %.1f s  %.0f samples/s", m.learningRate, m.epochSeconds, m.samplesPerSecond)
        print(line)
        fflush(stdout)
    }
}

func formatDuration(_ s: Double) -> String {
    let t = Int(s.rounded())
    return t >= 60 ? String(format: "%d:%02d", t / 60, t % 60) : "\(t)s"
}
