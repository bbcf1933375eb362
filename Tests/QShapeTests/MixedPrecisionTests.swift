// Tests: per-layer weight widths from config to C, the Pareto search, and `qshape advise`.
import XCTest
import Foundation
#if canImport(FoundationXML)
    import FoundationXML
#endif
import Tensors
import DataIO
import Quantization
import IntegerRuntime
import Export
import Reports
@testable import Workflows
@testable import Config

final class MixedPrecisionTests: XCTestCase {
    let fixture = ["data.dir=\(Fixtures.fashion)"]

    func trainedMLP(steps: Int = 40) throws -> (Config, String) {
        let dir = temporaryDirectory(self)
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: fixture + ["training.epochs=1", "training.max_steps_per_epoch=\(steps)"])
        _ = try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)
        return (c, "\(dir)/run/model.safetensors")
    }

    /// The dynamic programme's front is the brute-force front, on random small cases.
    func testFrontMatchesBruteForce() {
        var rng = SeededRandom(seed: 7)
        for _ in 0..<200 {
            let layers = Int.random(in: 1...4, using: &rng)
            let options = (0..<layers).map { _ in
                let size = Int.random(in: 1...500, using: &rng)
                return [8, 4, 3, 2].map { b in
                    MixedPrecision.Option(
                        bits: b, bytes: BitWidth(b)!.storageBytes(size),
                        drop: Double(Int.random(in: 0...40, using: &rng)) / 4)
                }
            }
            XCTAssertEqual(MixedPrecision.front(options), bruteForceFront(options))
        }
    }

    /// Every combination, then the points no other beats on bytes and drop at once (the one of
    /// least drop at each byte count), cheapest first.
    func bruteForceFront(_ options: [[MixedPrecision.Option]]) -> [MixedPrecision.Candidate] {
        var all = [MixedPrecision.Candidate(bits: [], bytes: 0, predictedDrop: 0)]
        for layer in options {
            all = all.flatMap { p in
                layer.map {
                    MixedPrecision.Candidate(
                        bits: p.bits + [$0.bits], bytes: p.bytes + $0.bytes,
                        predictedDrop: p.predictedDrop + $0.drop)
                }
            }
        }
        let front = all.filter { c in
            !all.contains {
                $0.bytes <= c.bytes && $0.predictedDrop <= c.predictedDrop
                    && ($0.bytes < c.bytes || $0.predictedDrop < c.predictedDrop)
            }
        }
        // Among equal points (same bytes and drop), the first in enumeration order.
        var kept: [MixedPrecision.Candidate] = []
        for c in front
        where !kept.contains(where: { $0.bytes == c.bytes && $0.predictedDrop == c.predictedDrop }) {
            kept.append(c)
        }
        return kept.sorted { $0.bytes < $1.bytes }
    }

    /// A case solved by hand: within 3,100 bytes the least total drop is 4 bits for A, 8 for B
    /// and 2 for C (0.6 points); every other choice that fits loses more.
    func testSearchFindsTheKnownOptimum() {
        func layer(_ weights: Int, _ drops: [Int: Double]) -> [MixedPrecision.Option] {
            drops.map {
                MixedPrecision.Option(
                    bits: $0.key, bytes: BitWidth($0.key)!.storageBytes(weights), drop: $0.value)
            }
        }
        let options = [
            layer(1000, [8: 0, 4: 0.1, 2: 5]), layer(100, [8: 0, 4: 2, 2: 10]),
            layer(10_000, [8: 0, 4: 0.2, 2: 0.5])
        ]
        let front = MixedPrecision.front(options)
        let best = front.last { $0.bytes <= 3100 }!
        XCTAssertEqual(best.bits, [4, 8, 2])
        XCTAssertEqual(best.bytes, 3100)
        XCTAssertEqual(best.predictedDrop, 0.6, accuracy: 1e-12)
        XCTAssertEqual(front.first!.bits, [2, 2, 2])
        XCTAssertEqual(front.last!.bits, [8, 8, 8])
        for (a, b) in zip(front, front.dropFirst()) {
            XCTAssertLessThan(a.bytes, b.bytes)
            XCTAssertGreaterThan(a.predictedDrop, b.predictedDrop)
        }
        XCTAssertEqual(MixedPrecision.thin(front, to: 3).count, 3)
    }

    /// `quantize.bits: {default: 3, 1: 8}` reaches the converter, the integer model, its file,
    /// the engine, the C export's storage and the report's label; bad keys are refused.
    func testPerLayerBitsRoundTrip() throws {
        let (c0, weights) = try trainedMLP(steps: 20)
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: fixture + [
                "quantize.bits={default: 3, 1: 8}", "quantize.activation_bits={default: 8, 5: 16}"
            ])
        let q = try XCTUnwrap(c.quantize)
        XCTAssertEqual(q.bits, [3])
        XCTAssertEqual(q.options.layerWeightBits, [1: 8])
        XCTAssertEqual(q.options.layerActivationBits, [5: 16])
        let dir = temporaryDirectory(self)
        write(c.resolvedYAML, to: "\(dir)/resolved.yaml")
        XCTAssertEqual(try Config.load(path: "\(dir)/resolved.yaml").quantize, q)
        for (bad, message) in [
            (
                "{default: 3, 2: 8}",
                "quantize.bits.2: keys are 'default' or the index of a dense/conv2d layer"
            ),
            ("{default: 3, 1: 0}", "quantize.bits.1: expected a weight bit width"),
            ("{default: 3, 9: 4}", "quantize.bits.9: keys are")
        ] {
            XCTAssertThrowsError(
                try Config.load(
                    path: Fixtures.example("fashion-mlp.yaml"), overrides: ["quantize.bits=\(bad)"])
            ) {
                XCTAssertTrue("\($0)".contains(message), "\($0)")
            }
        }
        let (r, conversions) = try QuantizeWorkflow.run(c, weights: weights, settings: q)
        let model = try XCTUnwrap(conversions[3]).integerModel
        let widths = model.layers.compactMap { l -> Int? in
            if case .dense(let d) = l { return d.weightBits.bits } else { return nil }
        }
        XCTAssertEqual(widths, [8, 3, 3])
        XCTAssertEqual(r.results[0].weights, "W8·3·3")
        XCTAssertEqual(r.results[0].layers.map(\.weightBits), [8, 3, 3])
        XCTAssertEqual(r.results[0].layers[2].accumulatorBits, 32)
        XCTAssertEqual(try CGenerator.generate(model).summary.weightFormats, ["i8", "p4", "p4"])
        try QuantizeWorkflow.write(r, conversions: conversions, to: dir)
        let loaded = try IntegerModelFile.load("\(dir)/model-int3.safetensors")
        XCTAssertEqual(loaded, model)
        let data = try c0.data.load()
        let a = IntegerEngine(loaded), e = IntegerEngine(model)
        for i in 0..<20 {
            let x = data.test.rawBytes(i)!.map { Int16($0) }
            XCTAssertEqual(a.run(x), e.run(x))
        }
        // The mixed run's accuracy row is labelled as such, apart from uniform rows.
        let row = Report.AccuracyRow(bits: 3, simulated: 1, integer: 1, agreement: 1, weights: "W8·3·3")
        XCTAssertEqual(
            Report.Accuracy(float: 1, weightsOnly: false, activationBits: 8, rows: [row]).kind(row),
            "integer W8·3·3/A8")
    }

    /// `qshape advise` on the fixture: every layer analysed at every width, a recommendation
    /// within the budget whose integer accuracy is what the simulation predicted, and a config
    /// fragment that reads back to the same widths.
    func testAdviseRecommendsWithinTheBudgetAndVerifies() throws {
        let (c, weights) = try trainedMLP()
        var o = AdviseWorkflow.Options(weights: weights)
        o.widths = [8, 4, 2]
        o.images = 300
        let weightCount = 784 * 256 + 256 * 128 + 128 * 10
        o.flashBudget = BitWidth(3)!.storageBytes(weightCount)
        let r = try AdviseWorkflow.run(c, o)
        XCTAssertEqual(r.layers.map(\.index), [1, 3, 5])
        XCTAssertEqual(r.layers.map(\.weights), [784 * 256, 256 * 128, 128 * 10])
        for l in r.layers {
            XCTAssertEqual(l.sensitivity.map(\.bits), [8, 4, 2])
            XCTAssertEqual(l.sensitivity[0].onlyThisQuantized, r.reference, accuracy: 2, l.name)
            XCTAssertGreaterThan(l.sensitivity[2].zeroFraction, l.sensitivity[0].zeroFraction, l.name)
        }
        XCTAssertEqual(r.layers.map(\.flashShare).reduce(0, +), 1, accuracy: 1e-9)
        XCTAssertLessThanOrEqual(r.recommendation.weightBytes, o.flashBudget!)
        XCTAssertEqual(r.recommendation.integer, r.recommendation.simulated, accuracy: 0.5)
        XCTAssertTrue(r.uniform.allSatisfy { $0.weightBytes <= o.flashBudget! })
        XCTAssertEqual(r.uniform.map(\.bits), [[4, 4, 4], [2, 2, 2]].filter { $0 != r.recommendation.bits })
        // The fragment is a valid `quantize:` section with the recommended widths.
        let dir = temporaryDirectory(self)
        let yaml = try String(contentsOfFile: Fixtures.example("fashion-mlp.yaml"), encoding: .utf8)
        write(yaml + "\n" + r.fragment, to: "\(dir)/advised.yaml")
        let advised = try XCTUnwrap(try Config.load(path: "\(dir)/advised.yaml").quantize)
        XCTAssertEqual(r.layers.map { advised.options.at(layer: $0.index).weightBits }, r.recommendation.bits)
        try AdviseWorkflow.write(r, to: "\(dir)/out", force: false)
        for f in ["advice.json", "advice.md", "advice.html"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/out/\(f)"), f)
        }
        let html = try String(contentsOfFile: "\(dir)/out/advice.html", encoding: .utf8)
        XCTAssertTrue(html.contains("<svg"))
        XCTAssertFalse(html.contains("http") || html.contains("<script"))
        #if canImport(FoundationXML) || os(macOS)
            let doc = try XMLDocument(xmlString: html, options: [])
            XCTAssertEqual(try doc.nodes(forXPath: "//svg").count, 3)
        #endif
        XCTAssertThrowsError(try AdviseWorkflow.checkOutput("\(dir)/out", force: false))
    }

    /// The shaping probe: a control without shaping and each term × λ, the shaped layers' kurtosis
    /// pulled toward 1.8, both finalists verified on the integer engine, and a verdict.
    func testShapingProbeComparesAgainstTheSameFineTuneWithout() throws {
        // Weights trained by PyTorch on all of Fashion-MNIST: kurtosis about 6, far from 1.8.
        let c = try Config.load(path: Fixtures.example("fashion-mlp.yaml"), overrides: fixture)
        var o = AdviseWorkflow.Options(weights: "\(Fixtures.dir)/pytorch-trained-mlp.safetensors")
        o.widths = [8, 4]
        o.images = 200
        o.probeSteps = 20
        o.probeLambdas = [10]
        let r = try AdviseWorkflow.run(c, o)
        let p = try XCTUnwrap(r.shaping)
        XCTAssertEqual(p.probes.map(\.terms), ["none", "kurtosis", "kurtosis+skewness"])
        XCTAssertFalse(p.layers.isEmpty)
        XCTAssertGreaterThan(p.probes[0].kurtosis, 4)
        XCTAssertLessThan(p.probes[1].kurtosis, p.probes[0].kurtosis - 0.1)
        XCTAssertTrue([1, 2].contains(p.bestProbe))
        XCTAssertEqual(p.best.integer, p.best.simulated, accuracy: 0.5)
        XCTAssertEqual(p.worthIt, p.best.integer > p.control.integer + p.margin)
        XCTAssertEqual(p.fragment != nil, p.worthIt)
        XCTAssertTrue(AdviseWorkflow.table(r).contains(p.verdict))
    }

    /// The command line: sizes with units, and bad input as one line with status 2.
    func testAdviseCommandLine() throws {
        let (_, weights) = try trainedMLP(steps: 10)
        let dir = temporaryDirectory(self)
        let bad = try qshape(
            [
                "advise", Fixtures.example("fashion-mlp.yaml"), "--weights", weights, "--flash-budget",
                "12 parsecs"
            ],
            in: dir)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.hasPrefix("error: "), bad.stderr)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        let tiny = try qshape(
            [
                "advise", Fixtures.example("fashion-mlp.yaml"), "--weights", weights, "--flash-budget",
                "1KiB",
                "--widths", "8", "2", "--images", "100", "--set", "data.dir=\(Fixtures.fashion)"
            ], in: dir)
        XCTAssertEqual(tiny.status, 1)
        XCTAssertTrue(
            tiny.stderr.contains("--flash-budget 1024 bytes is below the smallest weights"), tiny.stderr)
        let ok = try qshape(
            [
                "advise", Fixtures.example("fashion-mlp.yaml"), "--weights", weights, "--max-drop", "1",
                "--widths", "8", "4", "--images", "100", "--json", "--set", "data.dir=\(Fixtures.fashion)"
            ], in: dir)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(obj["max_drop"] as? Double, 1)
        XCTAssertNotNil(obj["recommendation"] as? [String: Any])
    }
}
