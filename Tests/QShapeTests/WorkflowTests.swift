// Tests: end-to-end runs on the committed Fashion-MNIST subset.
import XCTest
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
@testable import Workflows
@testable import Config

/// End-to-end runs on the committed Fashion-MNIST subset.
final class WorkflowTests: XCTestCase {
    let fixture = ["data.dir=\(Fixtures.fashion)"]

    func testEachExampleConfigTrainsOnTheFixture() throws {
        let dir = temporaryDirectory(self)
        let examples = try FileManager.default.contentsOfDirectory(atPath: "\(Fixtures.repository)/Examples")
            .filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(examples.count, 2)
        for name in examples {
            // A recipe with quantisation-aware fine-tuning runs one epoch of it.
            let qat = try Config.load(path: Fixtures.example(name)).quantize?.qat.epochs ?? 0 > 0
            let config = try Config.load(
                path: Fixtures.example(name),
                overrides: fixture + ["training.epochs=2", "training.max_steps_per_epoch=6"]
                    + (qat ? ["quantize.qat.epochs=1"] : []))
            let s = try TrainWorkflow.run(config, outDir: "\(dir)/\(name)", force: false, observer: nil)
            XCTAssertEqual(s.metrics.count, qat ? 3 : 2, name)
            XCTAssertLessThan(s.metrics[1].loss, s.metrics[0].loss + 0.5, name)
            XCTAssertGreaterThan(s.metrics[1].testAccuracy!, 20, "\(name) learns something in 12 steps")
            if qat {
                // The QAT epoch's accuracy is the quantised network's; the integer engine runs it.
                XCTAssertEqual(s.metrics.last?.phase, "qat")
                let q = try XCTUnwrap(s.quantization?.results.last)
                XCTAssertEqual(q.integerAccuracy!, s.metrics[2].testAccuracy!, accuracy: 5, name)
                continue
            }
            for f in ["model.safetensors", "config.yaml", "metrics.jsonl"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/\(name)/\(f)"), "\(name)/\(f)")
            }
            let lines = try String(contentsOfFile: "\(dir)/\(name)/metrics.jsonl", encoding: .utf8).split(
                separator: "\n")
            XCTAssertEqual(lines.count, 2)
            let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
            for key in ["epoch", "loss", "train_accuracy", "test_accuracy", "learning_rate", "epoch_seconds"]
            {
                XCTAssertNotNil(first[key], "\(name) metrics has \(key)")
            }
            let again = try EvalWorkflow.run(config, weights: "\(dir)/\(name)/model.safetensors")
            XCTAssertEqual(
                again.testAccuracy, s.testAccuracy, accuracy: 1e-9, "saved weights reproduce the accuracy")
        }
    }

    func testSameSeedGivesBitIdenticalTrainedWeights() throws {
        let dir = temporaryDirectory(self)
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: fixture + ["training.epochs=1", "training.max_steps_per_epoch=5"])
        _ = try TrainWorkflow.run(c, outDir: "\(dir)/a", force: false, observer: nil)
        _ = try TrainWorkflow.run(c, outDir: "\(dir)/b", force: false, observer: nil)
        let a = FileManager.default.contents(atPath: "\(dir)/a/model.safetensors")
        let b = FileManager.default.contents(atPath: "\(dir)/b/model.safetensors")
        XCTAssertNotNil(a)
        XCTAssertEqual(a, b)
    }

    func testRunFolderIsNotOverwrittenWithoutForce() throws {
        let dir = temporaryDirectory(self)
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: fixture + ["training.epochs=1", "training.max_steps_per_epoch=1"])
        _ = try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)
        XCTAssertThrowsError(try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)) {
            e in
            XCTAssertTrue("\(e)".contains("already exists: pass --force"))
        }
        XCTAssertNoThrow(try TrainWorkflow.run(c, outDir: "\(dir)/run", force: true, observer: nil))
    }

    /// State dicts laid out by PyTorch's nn.Sequential load and give the logits of an independent
    /// NumPy forward pass (Tests/QShapeTests/Fixtures/make_pytorch_fixture.py).
    func testPyTorchStateDictsLoadAndPredictTheSame() throws {
        for name in ["mlp", "cnn"] {
            let config = try Config.load(path: Fixtures.example("fashion-\(name).yaml"), overrides: fixture)
            let data = try config.data.load()
            let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
            try Weights.load("\(Fixtures.dir)/pytorch-\(name).safetensors", into: model)
            let (x, _) = data.test.batch(0..<16, normalization: config.training.normalization)
            let logits = model.forward(x, training: false)
            guard
                case .float32(let expected) = try NPY.read("\(Fixtures.dir)/pytorch-\(name)-logits.npy")
                    .values
            else { return XCTFail() }
            for i in 0..<expected.count {
                XCTAssertEqual(logits.data[i], expected[i], accuracy: 1e-4, "\(name) logit \(i)")
            }
        }
    }

    func testSavedWeightsUsePyTorchNamesAndLayouts() throws {
        let dir = temporaryDirectory(self)
        let model = try Sequential(
            specs: [
                .conv2d(inChannels: 1, outChannels: 2, kernel: 3, stride: 1, padding: 0, bias: true),
                .batchnorm2d(eps: 1e-5, momentum: 0.1), .relu, .flatten,
                .dense(inFeatures: nil, outFeatures: 3, bias: true)
            ],
            inputShape: [1, 5, 5], seed: 1)
        try Weights.save(model, to: "\(dir)/m.safetensors")
        let f = try SafeTensors.read("\(dir)/m.safetensors")
        XCTAssertEqual(
            f.entries.map(\.name),
            [
                "0.bias", "0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean",
                "1.running_var", "1.weight", "4.bias", "4.weight"
            ])
        XCTAssertEqual(f["0.weight"]?.shape, [2, 1, 3, 3])
        XCTAssertEqual(f["4.weight"]?.shape, [3, 18])
        XCTAssertEqual(f["1.num_batches_tracked"]?.dtype, .I64)
        XCTAssertEqual(f["1.num_batches_tracked"]?.shape, [])
    }

    func testMismatchedWeightsListEveryProblemAndChangeNothing() throws {
        let model = try Sequential(
            specs: [.flatten, .dense(inFeatures: nil, outFeatures: 4, bias: true)], inputShape: [6], seed: 1)
        let before = model.namedState.map(\.parameter.value)
        let file = SafeTensors.File(entries: [
            .init(name: "1.weight", floats: [Float](repeating: 0, count: 12), shape: [4, 3]),
            .init(name: "2.weight", floats: [1], shape: [1])
        ])
        XCTAssertThrowsError(try Weights.load(file, path: "w.safetensors", into: model)) { e in
            XCTAssertEqual(
                "\(e)",
                "w.safetensors does not fit the model: missing 1.bias; unexpected 2.weight; 1.weight has shape [4, 3], the model needs [4, 6]"
            )
        }
        XCTAssertEqual(model.namedState.map(\.parameter.value), before)
    }

    func testMissingDataSetSaysHowToInstallIt() throws {
        var c = try Config.load(path: Fixtures.example("fashion-mlp.yaml"))
        c.data.trainImages = "no-such-file.gz"
        XCTAssertThrowsError(try c.data.load()) { e in
            XCTAssertTrue("\(e)".contains("apt-get install dataset-fashion-mnist"), "\(e)")
        }
    }
}
