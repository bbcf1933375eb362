// Tests: the exported C of the example networks on the host and an emulated Cortex-M0.
import XCTest
import Foundation
import DataIO
import NeuralNet
import IntegerRuntime
@testable import Workflows
@testable import Config

/// Issue 12's proofs on the example networks (the PyTorch-trained fixtures): the exported C gives
/// the Swift integer engine's logits on the whole test set in every configuration; it runs on an
/// emulated Cortex-M0 without floating point; smaller widths really take less flash.
final class ExportAcceptanceTests: XCTestCase {
    static let networks = [
        ("fashion-mlp.yaml", "pytorch-trained-mlp.safetensors"),
        ("fashion-cnn.yaml", "pytorch-trained-cnn.safetensors")
    ]

    func load(
        _ example: String, _ weights: String, overrides: [String] = []
    ) throws -> (Config, Sequential, DataSplit) {
        let c = try Config.load(path: Fixtures.example(example), overrides: overrides)
        let data = try c.data.load()
        let model = try TrainWorkflow.makeModel(c, sampleShape: data.test.sampleShape)
        try Weights.load("\(Fixtures.dir)/\(weights)", into: model)
        return (c, model, data)
    }

    func export(
        _ example: String, model: Sequential, data: DataSplit, settings: [String], bits: Int,
        target: ExportWorkflow.Target, images: Int
    ) throws -> ExportWorkflow.Result {
        let c = try Config.load(path: Fixtures.example(example), overrides: settings)
        var o = ExportWorkflow.Options(weights: example, out: temporaryDirectory(self) + "/c")
        o.target = target
        o.verify = images
        return try ExportWorkflow.run(c, model: model, data: data, bits: bits, o)
    }

    func testEveryConfigurationMatchesTheEngineOnTheWholeTestSet() throws {
        guard
            FileManager.default.fileExists(
                atPath: "\(DataConfig.fashionMNISTDirectory)/t10k-images-idx3-ubyte.gz")
        else {
            throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
        }
        _ = try requireTool("gcc")
        for (example, weights) in ExportAcceptanceTests.networks {
            let (_, model, data) = try load(example, weights)
            XCTAssertEqual(data.test.count, 10_000)
            for bits in [8, 4, 3, 2] {
                for act in [8, 16] {
                    for scale in ["fixed_point", "power_of_two"] {
                        for granularity in ["tensor", "channel"] {
                            let settings = [
                                "quantize.activation_bits=\(act)", "quantize.scale=\(scale)",
                                "quantize.granularity=\(granularity)", "quantize.accumulator=int64"
                            ]
                            let r = try export(
                                example, model: model, data: data, settings: settings, bits: bits,
                                target: .host, images: 10_000)
                            let v = try XCTUnwrap(r.verification)
                            XCTAssertEqual(v.images, 10_000)
                            XCTAssertEqual(
                                v.mismatchingImages, 0, "\(example) W\(bits) A\(act) \(scale) \(granularity)")
                            XCTAssertEqual(v.cAccuracy, v.swiftAccuracy)
                        }
                    }
                }
            }
        }
    }

    /// The 4-bit MLP on the micro:bit (256 KB flash, 16 KB RAM) over the whole test set, with the
    /// accuracy `qshape quantize` reports.
    func testFourBitMLPRunsOnTheMicrobitWithTheAccuracyQuantizeReports() throws {
        guard
            FileManager.default.fileExists(
                atPath: "\(DataConfig.fashionMNISTDirectory)/t10k-images-idx3-ubyte.gz")
        else {
            throw XCTSkip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
        }
        _ = try requireTool("arm-none-eabi-gcc")
        _ = try requireTool("qemu-system-arm")
        let (c, model, data) = try load("fashion-mlp.yaml", "pytorch-trained-mlp.safetensors")
        var s = QuantizeConfig()
        s.bits = [4]
        let (q, _) = try QuantizeWorkflow.run(
            c, model: model, data: data, settings: s, weightsLabel: "fixture")
        let r = try export(
            "fashion-mlp.yaml", model: model, data: data, settings: [], bits: 4, target: .cortexM0,
            images: 10_000)
        let v = try XCTUnwrap(r.verification)
        XCTAssertEqual(v.board, "microbit")
        XCTAssertEqual(v.mismatchingImages, 0)
        XCTAssertEqual(v.cAccuracy, q.results[0].integerAccuracy!, accuracy: 1e-9)
        XCTAssertLessThanOrEqual(v.flashBytes, 256 * 1024)
        XCTAssertLessThanOrEqual(v.ramBytes, 16 * 1024)
        XCTAssertGreaterThan(v.instructionsPerInference ?? 0, r.model.macs)
    }

    /// Both networks at every width (binary weights too) on Cortex-M0 code (the micro:bit where the model fits, else the
    /// MPS2 board), 1,000 fixture images each: the same logits, no soft-float routine linked, kernel
    /// code under 8 KB; and 16-bit activations with 64-bit accumulators on the M0 too.
    func testCortexM0AtEveryWidthWithoutFloatingPoint() throws {
        _ = try requireTool("arm-none-eabi-gcc")
        _ = try requireTool("qemu-system-arm")
        var weightBytes: [String: [Int: Int]] = [:]
        for (example, weights) in ExportAcceptanceTests.networks {
            let (_, model, data) = try load(example, weights, overrides: ["data.dir=\(Fixtures.fashion)"])
            let cases: [(Int, [String])] = [
                (8, []), (4, []), (3, []), (2, ["quantize.scale=power_of_two"]),
                (1, ["quantize.granularity=channel"]),  // binary weights in 2-bit fields
                (
                    8,
                    [
                        "quantize.activation_bits=16", "quantize.accumulator=int64",
                        "quantize.granularity=channel"
                    ]
                )
            ]
            for (bits, settings) in cases where example.contains("mlp") || bits >= 4 {
                let r = try export(
                    example, model: model, data: data, settings: ["data.dir=\(Fixtures.fashion)"] + settings,
                    bits: bits, target: .cortexM0, images: 1000)
                let v = try XCTUnwrap(r.verification)
                XCTAssertEqual(v.mismatchingImages, 0, "\(example) \(bits) \(settings)")
                XCTAssertEqual(v.images, 1000)
                XCTAssertTrue(v.floatFree.contains("no soft-float symbol"))
                XCTAssertLessThan(v.modelCodeBytes, 8 * 1024, "\(example) \(bits)")
                if settings.isEmpty { weightBytes[example, default: [:]][bits] = r.model.weightBytes }
            }
        }
        let mlp = try XCTUnwrap(weightBytes["fashion-mlp.yaml"])
        XCTAssertLessThanOrEqual(Double(mlp[4]!), 0.52 * Double(mlp[8]!))
        XCTAssertLessThanOrEqual(Double(mlp[3]!), 0.52 * Double(mlp[8]!))
        XCTAssertEqual(mlp[8], 234_752)
    }

    /// Packing makes 2-bit weights a quarter of 8-bit ones (the 2-bit model exported at power-of-two
    /// scales above; here at the default fixed-point scales, generated only).
    func testTwoBitWeightsTakeAQuarterOfTheFlash() throws {
        let (c, model, data) = try load(
            "fashion-mlp.yaml", "pytorch-trained-mlp.safetensors", overrides: ["data.dir=\(Fixtures.fashion)"]
        )
        let convert = try QuantizeWorkflow.integerConverter(
            c, model: model, data: data, settings: QuantizeConfig())
        let w8 = try ExportWorkflow.generate(try convert(8), bits: 8, config: c).summary.weightBytes
        let w2 = try ExportWorkflow.generate(try convert(2), bits: 2, config: c).summary.weightBytes
        XCTAssertLessThanOrEqual(Double(w2), 0.27 * Double(w8))
        XCTAssertEqual(w2, 234_752 / 4)
    }
}
