// The live progress line, fitted to the terminal's width.
import Config
import Training

/// The live progress line of `qshape train`, fitted to the terminal: the parts that fit, most
/// important first, so a redraw never wraps (a wrapped line leaves a copy behind at every redraw).
public enum ProgressLine {
    /// Narrower terminals get no live line, only the line per epoch.
    public static let minimumWidth = 40

    /// The line for `p`, at most `width − 1` characters (the last column is left free: some
    /// terminals wrap when it is written); nil when the terminal is narrower than `minimumWidth`.
    public static func render(_ p: StepProgress, width: Int) -> String? {
        guard width >= minimumWidth else { return nil }
        let room = width - 1
        let percent = 100 * p.step / max(1, p.stepsInEpoch)
        let head =
            "epoch \(p.epoch + 1)/\(p.totalEpochs) \(String(repeating: " ", count: max(0, 3 - "\(percent)".count)))\(percent)%"
        // Optional parts in the order they are given up when space runs short (last first).
        var parts = [String(format: "  loss %.4f", p.loss)]
        if p.samplesPerSecond > 0 {
            let left = Double(p.stepsInEpoch - p.step) * Double(p.batchSize) / p.samplesPerSecond
            let total =
                left + Double((p.totalEpochs - p.epoch - 1) * p.stepsInEpoch * p.batchSize)
                / p.samplesPerSecond
            parts.append("  ETA \(duration(total))")
            parts.append(String(format: "  %.0f samples/s", p.samplesPerSecond))
            if p.totalEpochs > p.epoch + 1 { parts.append("  epoch ETA \(duration(left))") }
        }
        var line = head
        for part in parts where line.count + part.count <= room { line += part }
        // The bar goes after the epoch, in whatever room is left (10 to 30 cells).
        let barWidth = min(30, room - line.count - 1)
        guard barWidth >= 10 else { return line }
        let filled = barWidth * p.step / max(1, p.stepsInEpoch)
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: barWidth - filled)
        let split = line.index(line.startIndex, offsetBy: "epoch \(p.epoch + 1)/\(p.totalEpochs)".count)
        return String(line[..<split]) + " " + bar + String(line[split...])
    }

    /// "42s", "3:07", "1:02:03".
    public static func duration(_ seconds: Double) -> String {
        let t = Int(seconds.isFinite ? max(0, seconds.rounded()) : 0)
        if t >= 3600 { return String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) }
        return t >= 60 ? String(format: "%d:%02d", t / 60, t % 60) : "\(t)s"
    }
}
