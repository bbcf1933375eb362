// Tests: the live progress line at every terminal width.
import XCTest
import Foundation
@testable import Training
@testable import qshape
@testable import Workflows
@testable import Config

/// Issue 17's console: the live progress line fits the terminal at every width, with a total ETA.
final class ConsoleTests: XCTestCase {
    func testProgressLineFitsEveryWidth() {
        let cases = [
            StepProgress(
                epoch: 0, totalEpochs: 10, step: 3, stepsInEpoch: 469, batchSize: 128,
                samplesPerSecond: 61_234, loss: 2.3),
            StepProgress(
                epoch: 98, totalEpochs: 100_000, step: 46_900, stepsInEpoch: 46_900, batchSize: 65_536,
                samplesPerSecond: 1.5, loss: 12_345.678),
            StepProgress(
                epoch: 4, totalEpochs: 5, step: 0, stepsInEpoch: 0, batchSize: 1, samplesPerSecond: 0,
                loss: .nan)
        ]
        for p in cases {
            for width in 0...240 {
                guard let line = ProgressLine.render(p, width: width) else {
                    XCTAssertLessThan(width, ProgressLine.minimumWidth)
                    continue
                }
                XCTAssertLessThanOrEqual(line.count, width - 1, "width \(width): \(line)")
                XCTAssertTrue(line.hasPrefix("epoch \(p.epoch + 1)/\(p.totalEpochs) "), line)
            }
        }
        // 80 columns: the bar, the loss and the whole run's ETA (9 epochs and 466 steps of 128 at 61,234/s).
        let line = ProgressLine.render(cases[0], width: 80)!
        XCTAssertTrue(
            line.contains("░░░░░░░░░░") && line.contains("loss 2.3000") && line.contains("  ETA 10s"), line)
        XCTAssertEqual(ProgressLine.duration(3723), "1:02:03")
        XCTAssertEqual(ProgressLine.duration(.infinity), "0s")
    }

    /// In an 80-column pseudo-terminal (`script`), no redraw of the progress line is wider than 79.
    func testProgressRedrawsNeverWrapAt80Columns() throws {
        try XCTSkipUnless(
            FileManager.default.isExecutableFile(atPath: "/usr/bin/script"),
            "script (util-linux) is not installed")
        let dir = temporaryDirectory(self)
        let exe = try qshapeExecutable().path
        let command =
            "stty cols 80 rows 24; '\(exe)' train '\(Fixtures.example("fashion-mlp.yaml"))' --out '\(dir)/run' --set data.dir='\(Fixtures.fashion)' --set training.epochs=2"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        p.arguments = ["-q", "-e", "-c", command, "\(dir)/typescript"]
        p.standardOutput = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let raw = try String(contentsOfFile: "\(dir)/typescript", encoding: .utf8)
        let plain = raw.replacingOccurrences(
            of: "\u{1B}\\[[0-9;]*[A-Za-z]", with: "", options: .regularExpression)
        let redraws = plain.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).filter {
            $0.contains("█") || $0.contains("░")
        }
        XCTAssertFalse(redraws.isEmpty, "no progress line was drawn: \(plain.prefix(400))")
        for r in redraws { XCTAssertLessThanOrEqual(r.count, 79, String(r)) }
    }
}
