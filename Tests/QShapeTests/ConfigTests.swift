// Tests: config reading, validation messages, --set and the resolved YAML.
import XCTest
import NeuralNet
import Training
@testable import Workflows
@testable import Config

final class ConfigTests: XCTestCase {
    func load(_ yaml: String, overrides: [String] = []) throws -> Config {
        let dir = temporaryDirectory(self)
        write(yaml, to: "\(dir)/c.yaml")
        return try Config.load(path: "\(dir)/c.yaml", overrides: overrides)
    }

    func message(_ yaml: String, overrides: [String] = []) -> String {
        do { _ = try load(yaml, overrides: overrides); return "no error" } catch { return "\(error)" }
    }

    let minimal = "model:\n  layers:\n    - flatten\n    - {type: dense, out: 10}\n"

    func testExampleConfigsLoadWithTheirDocumentedValues() throws {
        let mlp = try Config.load(path: Fixtures.example("fashion-mlp.yaml"))
        XCTAssertEqual(mlp.name, "fashion-mlp")
        XCTAssertEqual(mlp.layers.count, 6)
        XCTAssertEqual(mlp.training.epochs, 10)
        XCTAssertEqual(mlp.training.batchSize, 128)
        XCTAssertEqual(mlp.training.optimizer.kind, .adam)
        XCTAssertEqual(mlp.training.optimizer.learningRate, 1e-3)
        XCTAssertEqual(mlp.data.validationSplit, 0)
        let cnn = try Config.load(path: Fixtures.example("fashion-cnn.yaml"))
        XCTAssertEqual(cnn.training.epochs, 5)
        XCTAssertEqual(
            cnn.layers[0],
            .conv2d(inChannels: 1, outChannels: 16, kernel: 3, stride: 1, padding: 1, bias: true))
    }

    func testDefaultsAndNameFromFile() throws {
        let c = try load(minimal)
        XCTAssertEqual(c.name, "c")
        XCTAssertEqual(c.data.dir, "/usr/share/datasets/fashion-mnist")
        XCTAssertEqual(c.training.optimizer.kind, .adam)
        XCTAssertEqual(c.training.schedule.kind, .constant)
    }

    func testUnknownKeySuggestsTheNearestOne() {
        let m = message(minimal + "training:\n  optimiser: {name: sgd}\n")
        XCTAssertTrue(m.contains("training.optimiser: unknown key; did you mean 'optimizer'?"), m)
        XCTAssertTrue(m.contains("c.yaml:6:"), "line number: \(m)")
        let t = message(minimal.replacingOccurrences(of: "dense", with: "dnese"))
        XCTAssertTrue(
            t.contains("model.layers[1].type: unknown layer type 'dnese'; did you mean 'dense'?"), t)
    }

    func testWrongTypesAndRangesNameTheKeyAndWhatIsAllowed() {
        XCTAssertTrue(
            message(minimal + "training: {optimizer: {lr: -1}}").hasSuffix(
                "training.optimizer.lr: expected a number > 0, got -1"))
        XCTAssertTrue(
            message(minimal + "training: {epochs: ten}").hasSuffix(
                "training.epochs: expected a whole number in [1, 100000], got 'ten'"))
        XCTAssertTrue(
            message(minimal + "training: {optimizer: {name: rmsprop}}").contains(
                "expected one of sgd, adam, adamw"))
        XCTAssertTrue(
            message(minimal + "data: {validation_split: 1.5}").contains(
                "data.validation_split: expected a number in [0, 1), got 1.5"))
        XCTAssertTrue(
            message(minimal + "training: {optimizer: {name: adam, momentum: 0.9}}").contains(
                "applies to sgd only"))
        XCTAssertTrue(message("model: {layers: [{type: dense}]}").contains("model.layers[0].out: required"))
        XCTAssertTrue(message("training: {}").contains("model.layers: required"))
        XCTAssertTrue(message(minimal + "  bogus: 1\n").contains("model.bogus: unknown key"))
        XCTAssertTrue(message("model: [1, 2").contains("not valid YAML"))
    }

    func testSetOverridesAnyValue() throws {
        let c = try load(
            minimal,
            overrides: [
                "training.epochs=3", "training.optimizer.lr=0.05", "training.optimizer.name=sgd",
                "model.layers.1.out=12", "data.dir=/tmp/x"
            ])
        XCTAssertEqual(c.training.epochs, 3)
        XCTAssertEqual(c.training.optimizer.kind, .sgd)
        XCTAssertEqual(c.training.optimizer.learningRate, 0.05)
        XCTAssertEqual(c.layers[1], .dense(inFeatures: nil, outFeatures: 12, bias: true))
        XCTAssertEqual(c.data.dir, "/tmp/x")
        XCTAssertTrue(
            message(minimal, overrides: ["training.epochs=0"]).contains(
                "training.epochs: expected a whole number in [1, 100000], got 0"))
        XCTAssertTrue(
            message(minimal, overrides: ["model.layers.7.out=3"]).contains("not an index of this list"))
        XCTAssertTrue(message(minimal, overrides: ["nonsense"]).contains("is not key.path=value"))
    }

    func testResolvedConfigLoadsBackToTheSameValues() throws {
        let c = try load(
            minimal
                + "training:\n  optimizer: {name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}\n  schedule: {name: cosine, warmup_epochs: 1, min_lr: 0.001}\n"
        )
        let dir = temporaryDirectory(self)
        write(c.resolvedYAML, to: "\(dir)/c.yaml")
        let d = try Config.load(path: "\(dir)/c.yaml")
        XCTAssertEqual(d.layers, c.layers)
        XCTAssertEqual(d.training, c.training)
        XCTAssertEqual(d.data, c.data)
        XCTAssertEqual(d.name, c.name)
    }

    func testModelShapeErrorsNameTheLayer() throws {
        let c = try load(
            "model:\n  layers:\n    - {type: conv2d, out: 4, kernel: 3}\n    - {type: dense, out: 10}\n")
        XCTAssertThrowsError(try TrainWorkflow.makeModel(c, sampleShape: [1, 28, 28])) { e in
            XCTAssertTrue(
                "\(e)".contains(
                    "model.layers[1] (dense): dense expects a flat input (add a flatten layer first)"), "\(e)"
            )
        }
        let d = try load("model:\n  layers:\n    - {type: conv2d, in: 3, out: 4, kernel: 3}\n")
        XCTAssertThrowsError(try TrainWorkflow.makeModel(d, sampleShape: [1, 28, 28])) { e in
            XCTAssertTrue("\(e)".contains("expects 3 input channels, the previous layer gives 1"), "\(e)")
        }
    }
}
