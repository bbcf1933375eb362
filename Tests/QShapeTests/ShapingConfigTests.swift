// Tests: the shaping section's keys, defaults, overrides and refusals.
import XCTest
import Foundation
@testable import Workflows
@testable import Config
import Shaping

final class ShapingConfigTests: XCTestCase {
    let base =
        "model:\n  layers: [flatten, {type: dense, out: 8}, relu, {type: dense, out: 10}]\ntraining: {epochs: 4}\n"

    func load(_ extra: String, overrides: [String] = []) throws -> Config {
        let dir = temporaryDirectory(self)
        write(base + extra, to: "\(dir)/c.yaml")
        return try Config.load(path: "\(dir)/c.yaml", overrides: overrides)
    }

    func message(_ extra: String, overrides: [String] = []) -> String {
        do { _ = try load(extra, overrides: overrides); return "no error" } catch { return "\(error)" }
    }

    func testShapingSectionReadsEveryTermWithDefaults() throws {
        let c = try load(
            "shaping:\n  layers: all_but_first_last\n  aggregate: sum\n  warmup_epochs: 2\n  kurtosis: {weight: 1}\n  range: {weight: 0.1, sharpness: 10, scope: channel}\n  quant_error: {weight: 0.5, bits: 3, relative: false}\n  overrides: {\"3\": {kurtosis: {weight: 0.2, target: 3.0}}}\n"
        )
        let s = try XCTUnwrap(c.shaping)
        XCTAssertEqual(s.layers, .allButFirstLast)
        XCTAssertEqual(s.terms[.kurtosis], .init(weight: 1, target: 1.8, scope: .tensor, aggregate: .sum))
        XCTAssertEqual(s.terms[.range]?.scope, .channel)
        XCTAssertEqual(s.rangeSharpness, 10)
        XCTAssertEqual(s.quantErrorBits, 3)
        XCTAssertFalse(s.quantErrorRelative)
        XCTAssertEqual(s.overrides[3]?[.kurtosis]?.target, 3.0)
        XCTAssertEqual(s.warmupEpochs, 2)
        // The resolved YAML carries it and loads back to the same values.
        let dir = temporaryDirectory(self)
        write(c.resolvedYAML, to: "\(dir)/r.yaml")
        XCTAssertEqual(try Config.load(path: "\(dir)/r.yaml").shaping, s)
    }

    func testKurtosisForTheGridOfBBits() throws {
        // Against the levels themselves: K of q uniform over −m…m, summed in wide integers.
        for bits in 2...12 {
            let m = (1 << (bits - 1)) - 1
            var s2 = 0, s4 = 0
            for q in -m...m { s2 += q * q; s4 += q * q * q * q }
            let n = Double(2 * m + 1), k = (Double(s4) / n) / ((Double(s2) / n) * (Double(s2) / n))
            XCTAssertEqual(PenaltyTerm.gridKurtosis(bits: bits), k, accuracy: 1e-12 * k, "\(bits)")
        }
        XCTAssertEqual(PenaltyTerm.gridKurtosis(bits: 2), 1.5)
        XCTAssertEqual(PenaltyTerm.gridKurtosis(bits: 16), 1.8, accuracy: 1e-6)
        let c = try load("shaping:\n  kurtosis: {weight: 1, bits: 3}\n")
        XCTAssertEqual(c.shaping?.terms[.kurtosis]?.target, 1.75)
        XCTAssertTrue(
            message("shaping:\n  kurtosis: {weight: 1, bits: 3, target: 2}\n").contains(
                "shaping.kurtosis.bits: give either target or bits"))
        XCTAssertTrue(
            message("shaping:\n  kurtosis: {weight: 1, bits: 1}\n").contains("shaping.kurtosis.bits"))
    }

    func testInvalidShapingIsRefusedBeforeTraining() {
        XCTAssertTrue(
            message("shaping: {kurtosis: {weight: -1}}").contains(
                "shaping.kurtosis.weight: expected a number ≥ 0, got -1"))
        XCTAssertTrue(
            message("shaping: {kurtosis: {weight: 1, target: 0.5}}").contains(
                "shaping.kurtosis.target: expected a number ≥ 1, got 0.5"))
        XCTAssertTrue(
            message("shaping: {layers: [1, 2]}").contains(
                "shaping.layers: layer 2 has no weights; weight layers of this model: 1, 3"))
        XCTAssertTrue(message("shaping: {layers: [9]}").contains("layer 9 does not exist"))
        XCTAssertTrue(message("shaping: {kurtossis: {weight: 1}}").contains("did you mean 'kurtosis'?"))
        XCTAssertTrue(message("shaping: {start_epoch: 4}").contains("must be less than training.epochs"))
        XCTAssertTrue(
            message("shaping: {l2: {weight: 1, target: 2}}").contains("shaping.l2.target: unknown key"))
    }

    func testSetReachesShapingKeys() throws {
        let c = try load(
            "shaping: {kurtosis: {weight: 1}}\n",
            overrides: ["shaping.kurtosis.weight=0.5", "shaping.skewness.weight=2"])
        XCTAssertEqual(c.shaping?.terms[.kurtosis]?.weight, 0.5)
        XCTAssertEqual(c.shaping?.terms[.skewness]?.weight, 2)
        let d = try load("", overrides: ["shaping.kurtosis.weight=0.5"])
        XCTAssertEqual(d.shaping?.terms[.kurtosis]?.weight, 0.5)
    }

    /// A shaped run logs, per shaped layer, the statistics and each penalty, every epoch.
    func testShapedRunLogsStatisticsPerLayer() throws {
        let dir = temporaryDirectory(self)
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp-kurtosis.yaml"),
            overrides: [
                "data.dir=\(Fixtures.fashion)", "training.epochs=2", "training.max_steps_per_epoch=20"
            ])
        let s = try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)
        let lines = try String(contentsOfFile: "\(dir)/run/metrics.jsonl", encoding: .utf8).split(
            separator: "\n")
        let last = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as! [String: Any]
        let layers = try XCTUnwrap(last["layers"] as? [String: [String: Double]])
        XCTAssertEqual(Set(layers.keys), ["1.weight", "3.weight", "5.weight"])
        for key in [
            "mean", "std", "skewness", "kurtosis", "max_abs_over_std", "sqnr_db", "levels_used",
            "penalty_kurtosis", "penalty_skewness"
        ] {
            XCTAssertNotNil(layers["1.weight"]?[key], key)
        }
        let penalties = try XCTUnwrap(last["penalties"] as? [String: Double])
        XCTAssertNotNil(penalties["kurtosis"])
        // Kurtosis moves from the initial uniform 1.8 … it is held there while training.
        let k = s.metrics.last!.layers!["1.weight"]!["kurtosis"]!
        XCTAssertEqual(k, 1.8, accuracy: 0.3)
    }
}
