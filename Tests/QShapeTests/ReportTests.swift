// Tests: every report format carries report.json's numbers.
import XCTest
import Foundation
#if canImport(FoundationXML)
    import FoundationXML
#endif
@testable import Reports
@testable import Workflows
@testable import Config

/// Reports from real (tiny) runs on the fixture: every format carries the numbers of report.json.
final class ReportTests: XCTestCase {
    func train(_ example: String, into dir: String, extra: [String] = []) throws -> TrainSummary {
        let c = try Config.load(
            path: Fixtures.example(example),
            overrides: [
                "data.dir=\(Fixtures.fashion)", "training.epochs=2", "training.max_steps_per_epoch=15"
            ] + extra)
        return try TrainWorkflow.run(c, outDir: dir, force: false, observer: nil)
    }

    func testReportFormatsAgreeWithReportJSON() throws {
        let dir = temporaryDirectory(self)
        _ = try train("fashion-mlp-kurtosis.yaml", into: "\(dir)/run")
        let json = try Report.decode(
            FileManager.default.contents(atPath: "\(dir)/run/report.json")!, path: "report.json")
        let md = try String(contentsOfFile: "\(dir)/run/report.md", encoding: .utf8)
        let html = try String(contentsOfFile: "\(dir)/run/report.html", encoding: .utf8)
        XCTAssertEqual(json.run, "fashion-mlp-kurtosis")
        XCTAssertEqual(json.training.epochs.count, 2)
        let accuracy = try XCTUnwrap(json.accuracy)
        XCTAssertEqual(accuracy.rows.map(\.bits), [8, 4, 3])
        for text in [md, html] {
            XCTAssertTrue(text.contains(Format.pct(accuracy.float)))
            for r in accuracy.rows {
                XCTAssertTrue(text.contains(Format.pct(r.simulated)), "\(r.bits)-bit accuracy")
            }
            for l in json.layers {
                XCTAssertTrue(text.contains(Format.num(l.kurtosis)), "\(l.name) kurtosis")
                XCTAssertTrue(text.contains(Format.num(l.skewness)), "\(l.name) skewness")
                XCTAssertTrue(text.contains("\(Format.db(l.sqnrDb)) @\(l.bits)b"), "\(l.name) SQNR")
            }
            XCTAssertTrue(text.contains(Format.pct(json.training.testAccuracy)))
        }
        // The layer statistics are those of the saved weights.
        let stats = try StatsWorkflow.run(path: "\(dir)/run/model.safetensors", bits: 3, channels: false)
        for (a, b) in zip(json.layers, stats.tensors) {
            XCTAssertEqual(a.kurtosis, b.kurtosis, accuracy: 1e-12)
        }
        // Histograms count every weight, initial and final.
        for l in json.layers {
            XCTAssertEqual(l.histogram.final.reduce(0, +), l.shape.reduce(1, *))
            XCTAssertEqual(l.histogram.initial?.reduce(0, +), l.shape.reduce(1, *))
        }
        try checkHTML(html)
    }

    /// A run converted to integers gets a deployment row per width: the exported C's flash and RAM,
    /// the numbers `qshape export` writes into model.h; compare shows them side by side.
    func testReportsShowTheExportedCsFlashAndRAM() throws {
        let dir = temporaryDirectory(self)
        _ = try train("fashion-mlp.yaml", into: "\(dir)/run", extra: ["quantize.bits=[8, 4, 2]"])
        let json = try Report.decode(
            FileManager.default.contents(atPath: "\(dir)/run/report.json")!, path: "report.json")
        let rows = try XCTUnwrap(json.accuracy?.rows)
        XCTAssertEqual(
            rows.map(\.flashBytes),
            [8, 4, 2].map { b in (234_752 * b + 7) / 8 + (256 + 128 + 10) * 4 + 3 * 5 })
        XCTAssertEqual(rows.map(\.ramBytes), [384, 384, 384])
        let md = try String(contentsOfFile: "\(dir)/run/report.md", encoding: .utf8)
        let html = try String(contentsOfFile: "\(dir)/run/report.html", encoding: .utf8)
        for text in [md, html] {
            for r in rows { XCTAssertTrue(text.contains(Format.kib(r.flashBytes)), "\(r.bits)-bit flash") }
        }
        let c = try qshape(["compare", "\(dir)/run", "\(dir)/run", "--format", "md"])
        XCTAssertTrue(c.stdout.contains("## Deployment (exported C)"), c.stdout)
        XCTAssertTrue(
            c.stdout.contains("| integer W4/A8 | \(Format.kib(rows[1].flashBytes)) / 0.4 KiB |"), c.stdout)
    }

    /// Valid XML, self-contained (nothing fetched: no http, no script, no external font or image).
    func checkHTML(_ html: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertFalse(html.contains("http"), file: file, line: line)
        XCTAssertFalse(html.contains("<script"), file: file, line: line)
        XCTAssertFalse(html.contains("src="), file: file, line: line)
        XCTAssertTrue(html.contains("<svg"), file: file, line: line)
        #if canImport(FoundationXML) || os(macOS)
            let doc = try XMLDocument(xmlString: html, options: [])
            XCTAssertEqual(doc.rootElement()?.name, "html", file: file, line: line)
            XCTAssertGreaterThanOrEqual(try doc.nodes(forXPath: "//svg").count, 4, file: file, line: line)
        #endif
    }

    func testReportRegeneratesQuicklyAndIdentically() throws {
        let dir = temporaryDirectory(self)
        _ = try train("fashion-mlp.yaml", into: "\(dir)/run")
        let before = FileManager.default.contents(atPath: "\(dir)/run/report.json")
        try FileManager.default.removeItem(atPath: "\(dir)/run/report.html")
        let clock = ContinuousClock(), start = clock.now
        let r = try qshape(["report", "\(dir)/run"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThan(clock.now - start, .seconds(1))
        XCTAssertEqual(FileManager.default.contents(atPath: "\(dir)/run/report.json"), before)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/run/report.html"))
        let bad = try qshape(["report", dir])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("is not a QShape run folder"))
    }

    func testCompareShowsConfigDifferencesAndDeltas() throws {
        let dir = temporaryDirectory(self)
        _ = try train("fashion-mlp.yaml", into: "\(dir)/plain")
        _ = try train("fashion-mlp-kurtosis.yaml", into: "\(dir)/shaped")
        let reports = try ReportWorkflow.collect(["\(dir)/plain", "\(dir)/shaped/report.json"])
        let c = Comparison(reports)
        XCTAssertEqual(c.runs, ["fashion-mlp", "fashion-mlp-kurtosis"])
        XCTAssertNotNil(c.configDifferences["shaping.kurtosis"])
        XCTAssertNil(c.configDifferences["training.epochs"], "equal keys are not listed")
        // Keys with no effect (the shaping section's defaults beside a run without one) are not listed.
        let effect = Comparison(reports, defaults: ReportWorkflow.effectiveDefaults)
        XCTAssertEqual(
            effect.configDifferences.keys.sorted(), ["name", "shaping.kurtosis", "shaping.skewness"])
        XCTAssertEqual(effect.configDifferences["shaping.kurtosis"]?.first, "–")
        XCTAssertNotNil(c.configDifferences["shaping.start_epoch"])
        // Without a quantize section every run ends with the integer engine at W8/W4/W3, A8.
        XCTAssertEqual(c.accuracy.map(\.kind), ["integer W8/A8", "integer W4/A8", "integer W3/A8"])
        let three = try XCTUnwrap(c.accuracy.first { $0.bits == 3 })
        XCTAssertEqual(three.runs[1].delta!, three.runs[1].integer! - three.runs[0].integer!, accuracy: 1e-9)
        for f in ["md", "html", "json"] {
            let r = try qshape([
                "compare", "\(dir)/plain", "\(dir)/shaped", "--format", f, "--out", "\(dir)/c.\(f)"
            ])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let md = try String(contentsOfFile: "\(dir)/c.md", encoding: .utf8)
        XCTAssertTrue(md.contains("| integer W3/A8 | "))
        XCTAssertTrue(md.contains("(\(Format.signed(three.runs[1].delta!)))"))
        try checkHTML(try String(contentsOfFile: "\(dir)/c.html", encoding: .utf8))
        // A weights-only run is not mixed into the integer rows: its figures get rows of their own.
        var weightsOnly = reports[1]
        weightsOnly.run = "weights-only"
        weightsOnly.accuracy?.weightsOnly = true
        weightsOnly.accuracy?.activationBits = nil
        let mixed = Comparison([reports[0], weightsOnly])
        let w3 = try XCTUnwrap(mixed.accuracy.first { $0.kind == "simulated W3, weights only" })
        XCTAssertNil(w3.runs[0].value)
        XCTAssertEqual(w3.runs[1].value, reports[1].accuracy?.rows.first { $0.bits == 3 }?.simulated)
        XCTAssertNil(try XCTUnwrap(mixed.accuracy.first { $0.kind == "integer W3/A8" }).runs[1].value)
        XCTAssertTrue(
            mixed.headline().contains("simulated W3, weights only: fashion-mlp –, weights-only "),
            mixed.headline())
    }

    func testRunsThatDifferOnlyInTheSeedAreOneColumnWithMeanAndSpread() throws {
        let dir = temporaryDirectory(self)
        _ = try train("fashion-mlp.yaml", into: "\(dir)/plain")
        let base = try ReportWorkflow.collect(["\(dir)/plain"])[0]
        // Three seeds of two configs, the integer figures shifted by known amounts.
        func run(_ name: String, seed: Int, shift: Double, shaped: Bool) -> Report {
            var r = base
            r.run = "\(name)--training.seed=\(seed)"
            r.config["name"] = r.run
            r.config["training.seed"] = "\(seed)"
            if shaped { r.config["shaping.kurtosis"] = "{weight: 1}" }
            r.accuracy!.float = 80 + shift
            for i in r.accuracy!.rows.indices { r.accuracy!.rows[i].integer = 70 + shift }
            return r
        }
        let reports =
            [0.0, 1, 2].enumerated().map { run("plain", seed: $0, shift: $1, shaped: false) }
            + [0.5, 1.5, 2.5].enumerated().map { run("shaped", seed: $0, shift: 3 * $1, shaped: true) }
        let c = Comparison(reports)
        XCTAssertEqual(c.runs, ["plain (n=3)", "shaped (n=3)"])
        XCTAssertEqual(c.groups.map(\.count), [3, 3])
        XCTAssertEqual(
            c.configDifferences.keys.sorted(), ["shaping.kurtosis"], "seeds and names are not differences")
        XCTAssertEqual(c.floatSpread[0].mean, 81, accuracy: 1e-12)
        XCTAssertEqual(c.floatSpread[0].sd!, 1, accuracy: 1e-12)
        XCTAssertEqual(c.floatSpread[1].mean, 84.5, accuracy: 1e-12)
        XCTAssertEqual(c.floatSpread[1].sd!, 3, accuracy: 1e-12)
        let row = try XCTUnwrap(c.accuracy.first { $0.bits == 8 })
        XCTAssertEqual(row.runs[1].value!, 74.5, accuracy: 1e-12)
        XCTAssertEqual(row.runs[1].delta!, 3.5, accuracy: 1e-12)
        // 3.5 < √(1² + 3²) = 3.16? No: 3.5 is beyond the spread, so it is not marked.
        XCTAssertEqual(c.cell(1, in: row), "74.50 ± 3.00 (+3.50)")
        XCTAssertEqual(c.cell(0, in: row), "71.00 ± 1.00")
        // The chart's whiskers: ± one sd of each column.
        let html = c.html(reports)
        XCTAssertTrue(html.contains("<title>± 1.00 (1 sd)</title>"))
        XCTAssertTrue(html.contains("<title>± 3.00 (1 sd)</title>"))
        // A smaller difference is within the spread and is marked.
        let close = Comparison(
            Array(reports.prefix(3))
                + [0.2, 1.2, 2.2].enumerated().map { run("near", seed: $0, shift: $1, shaped: true) })
        let r2 = try XCTUnwrap(close.accuracy.first { $0.bits == 8 })
        XCTAssertEqual(close.cell(1, in: r2), "71.20 ± 1.00 (+0.20†)")
        XCTAssertTrue(close.markdown().contains("| float | 81.00 ± 1.00 | 81.20 ± 1.00 (+0.20†) |"))
        XCTAssertTrue(close.markdown().contains("† marks a difference"))
        // Two runs with the same seed are two columns, never averaged.
        XCTAssertEqual(Comparison([reports[0], reports[0]]).runs.count, 2)
        XCTAssertNil(Spread([]))
        XCTAssertNil(Spread([3])!.sd)
    }

    /// A 2 × 2 sweep split into two shards, then compared, equals the same sweep run whole; a
    /// restarted sweep skips what is finished.
    func testShardedSweepEqualsUnshardedAndResumes() throws {
        let dir = temporaryDirectory(self)
        let overrides = [
            "data.dir=\(Fixtures.fashion)", "training.epochs=1", "training.max_steps_per_epoch=4",
            "data.test_limit=200"
        ]
        let axes = [
            try SweepWorkflow.parseAxis("shaping.kurtosis.weight=0,1"),
            try SweepWorkflow.parseSeeds("1,2", besides: [])
        ]
        let config = Fixtures.example("fashion-mlp.yaml")
        let whole = try SweepWorkflow.run(
            configPath: config, overrides: overrides, axes: axes, shard: (1, 1),
            outDir: "\(dir)/whole", observer: nil)
        XCTAssertEqual(whole.trained.count, 4)
        // Each grid point's two seeds are one column.
        XCTAssertEqual(whole.comparison?.groups.map(\.count), [2, 2])
        XCTAssertEqual(whole.comparison?.configDifferences.keys.sorted(), ["shaping.kurtosis"])
        let s1 = try SweepWorkflow.run(
            configPath: config, overrides: overrides, axes: axes, shard: (1, 2), outDir: "\(dir)/split",
            observer: nil)
        let s2 = try SweepWorkflow.run(
            configPath: config, overrides: overrides, axes: axes, shard: (2, 2), outDir: "\(dir)/split",
            observer: nil)
        XCTAssertEqual(s1.trained.count + s2.trained.count, 4)
        XCTAssertEqual(Set(s1.trained).intersection(s2.trained), [])
        let merged = try CompareWorkflow.render(["\(dir)/split"], format: "json")
        let single = try CompareWorkflow.render(["\(dir)/whole"], format: "json")
        XCTAssertEqual(merged, single)
        let again = try SweepWorkflow.run(
            configPath: config, overrides: overrides, axes: axes, shard: (1, 1), outDir: "\(dir)/split",
            observer: nil)
        XCTAssertEqual(again.trained, [])
        XCTAssertEqual(again.skipped.count, 4)
        XCTAssertThrowsError(try SweepWorkflow.parseShard("3/2"))
        XCTAssertThrowsError(try SweepWorkflow.parseAxis("novalues="))
        XCTAssertThrowsError(try SweepWorkflow.parseSeeds("1,1", besides: []))
        XCTAssertThrowsError(try SweepWorkflow.parseSeeds("-1", besides: []))
        XCTAssertThrowsError(try SweepWorkflow.parseSeeds("1", besides: axes))
    }
}
