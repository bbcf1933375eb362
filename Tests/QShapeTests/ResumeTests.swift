// Tests: killed runs resume to byte-identical weights; concurrent runs to one folder.
import XCTest
import Foundation
import DataIO
import Tensors
import NeuralNet
import Training
import Shaping
@testable import Workflows
@testable import Config

/// Checkpoints and `qshape train --resume` (issue 13): a run killed at any moment continues to
/// the very weights of a run never stopped, and no half-written file is ever visible.
final class ResumeTests: XCTestCase {
    /// A network with every kind of state a run carries: batch-norm statistics, a dropout
    /// generator, SGD momentum, a cosine schedule, the shaping terms' step-to-step means, a
    /// validation split, and quantisation-aware fine-tuning after training.
    static let config = """
        name: resumable
        data: {format: idx, dir: "\(Fixtures.fashion)", validation_split: 0.1}
        model:
          layers:
            - {type: conv2d, out: 4, kernel: 3}
            - {type: batchnorm2d}
            - {type: relu}
            - {type: maxpool2d, kernel: 2}
            - {type: flatten}
            - {type: dropout, p: 0.2}
            - {type: dense, out: 32}
            - {type: relu}
            - {type: dense, out: 10}
        training:
          epochs: 3
          batch_size: 64
          seed: 3
          max_steps_per_epoch: 16
          checkpoint_steps: 5
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          schedule: {name: cosine}
        shaping:
          kurtosis: {weight: 0.05, target: 1.8}
          skewness: {weight: 0.05}
        quantize:
          bits: [8, 4]
          qat: {epochs: 2}
        """

    /// In-process: snapshots taken within an epoch and at its end, written to a checkpoint file
    /// and read back into a fresh model, trainer and shaping term, continue exactly.
    func testSnapshotsContinueExactly() throws {
        let dir = temporaryDirectory(self)
        write(Self.config, to: "\(dir)/c.yaml")
        let config = try Config.load(path: "\(dir)/c.yaml")
        let data = try config.data.load()
        func fresh() throws -> (Sequential, Trainer) {
            let model = try TrainWorkflow.makeModel(config, sampleShape: data.train.sampleShape)
            let trainer = Trainer(model: model, options: config.training, trainingSetSize: data.train.count)
            trainer.lossTerms = [ShapingLossTerm(config.shaping!, model: model)]
            return (model, trainer)
        }
        let (model, trainer) = try fresh()
        var checkpoints: [String] = []
        for epoch in 0..<3 {
            _ = try trainer.trainEpoch(
                epoch, train: data.train,
                checkpoint: { snapshot in
                    let folder = "\(dir)/\(epoch)-\(snapshot.step)"
                    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                    try Checkpoint.write(
                        to: folder, model: model, phase: .train, trainer: snapshot, metrics: [], qatBase: nil)
                    checkpoints.append(folder)
                })
        }
        let final = model.namedState.map(\.parameter.value.data)
        XCTAssertEqual(checkpoints.count, 9)  // steps 5, 10, 15 of three 16-step epochs
        for folder in [checkpoints[1], checkpoints[5]] {
            let c = try Checkpoint.read("\(folder)/\(Checkpoint.fileName)")
            let (m2, t2) = try fresh()
            try TrainWorkflow.restore(c, into: t2, model: m2, path: folder)
            for epoch in c.trainer.epoch..<3 { _ = try t2.trainEpoch(epoch, train: data.train) }
            XCTAssertEqual(m2.namedState.map(\.parameter.value.data), final, "resumed from \(folder)")
        }
        // A checkpoint that does not fit the model is refused with a reason, changing nothing.
        var snapshot = try Checkpoint.read("\(checkpoints[0])/\(Checkpoint.fileName)").trainer
        snapshot.optimizer.first.removeLast()
        XCTAssertNotNil(try fresh().1.restore(snapshot))
        snapshot = try Checkpoint.read("\(checkpoints[0])/\(Checkpoint.fileName)").trainer
        snapshot.dropout = [:]
        XCTAssertNotNil(try fresh().1.restore(snapshot))
    }

    /// The checkpoint fuzz target's seed is a checkpoint its model takes, and damaged ones are
    /// refused with one line naming the file.
    func testCheckpointSeedRestoresAndDamageIsRefused() throws {
        let path = "\(Fixtures.repository)/Fuzz/corpus/checkpoint/adam-dropout.safetensors"
        let c = try Checkpoint.read(path)
        let model = try Sequential(specs: FuzzTarget.checkpointModel, inputShape: [4], seed: 0)
        var options = TrainingOptions()
        options.batchSize = 2
        let trainer = Trainer(model: model, options: options, trainingSetSize: 8)
        try TrainWorkflow.restore(c, into: trainer, model: model, path: path)
        XCTAssertEqual(c.trainer.epoch, 1)
        XCTAssertEqual(c.trainer.step, 2)
        var file = try SafeTensors.read(path)
        for (key, value) in [
            ("epoch", "-1"), ("phase", "qat"), ("metrics", "{"), ("loss_sum", "nan"), ("loss_terms", "100000")
        ] {
            var damaged = file
            damaged.metadata[key] = value
            XCTAssertThrowsError(try Checkpoint.decode(damaged, path: "c.safetensors")) {
                XCTAssertTrue(
                    "\($0)".hasPrefix("c.safetensors: not a usable QShape checkpoint ("), "\(key): \($0)")
            }
        }
        file.entries.removeAll { $0.name == "optimizer.second.1" }
        XCTAssertThrowsError(try Checkpoint.decode(file, path: "c.safetensors"))
    }

    /// kill -9 at random moments of 20 runs (some killed again while resuming), then --resume:
    /// every final model.safetensors is byte-identical to the uninterrupted run's, and beside the
    /// run folder (absent, empty or complete) there is never a visible file.
    func testKilledRunsResumeToIdenticalWeights() throws {
        let dir = temporaryDirectory(self)
        write(Self.config, to: "\(dir)/c.yaml")
        let start = Date()
        let reference = try qshape(["train", "\(dir)/c.yaml", "--out", "\(dir)/reference"])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let duration = Date().timeIntervalSince(start)
        let expected = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/reference/model.safetensors"))
        var rng = SeededRandom(seed: 13)
        var kills = 0, resumes = 0
        for trial in 0..<20 {
            let parent = "\(dir)/trial\(trial)"
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            var mode: [String] = []
            for attempt in 0..<8 {
                let p = Process()
                p.executableURL = try qshapeExecutable()
                p.arguments = ["train", "\(dir)/c.yaml", "--out", "\(parent)/run"] + mode
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                if attempt < 3 {
                    usleep(UInt32(Double(rng.nextUnitFloat()) * duration * 1.1 * 1e6))
                    if p.isRunning { kill(p.processIdentifier, SIGKILL); kills += 1 }
                }
                p.waitUntilExit()
                let visible = try FileManager.default.contentsOfDirectory(atPath: parent).filter {
                    !$0.hasPrefix(".")
                }
                XCTAssertTrue(visible.isEmpty || visible == ["run"], "trial \(trial): \(visible)")
                let files = (try? FileManager.default.contentsOfDirectory(atPath: "\(parent)/run")) ?? []
                if files.contains("model.safetensors") { break }
                XCTAssertEqual(files, [], "trial \(trial): a half-written run folder")
                let staged = try FileManager.default.contentsOfDirectory(atPath: parent).filter {
                    $0.hasPrefix(".run.partial-")
                }
                let resumable = staged.contains {
                    FileManager.default.fileExists(atPath: "\(parent)/\($0)/\(Checkpoint.fileName)")
                }
                mode = resumable ? ["--resume"] : ["--force"]
                if resumable { resumes += 1 }
            }
            let got = try Data(contentsOf: URL(fileURLWithPath: "\(parent)/run/model.safetensors"))
            XCTAssertEqual(got, expected, "trial \(trial)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(parent)/run/\(Checkpoint.fileName)"))
        }
        XCTAssertGreaterThan(resumes, 10, "too few kills landed after a checkpoint (\(kills) kills)")
    }

    /// Without --resume a killed run's checkpoint is pointed out, not deleted; --resume refuses a
    /// different config but takes a lower learning rate; --force starts over.
    func testResumeChecksTheConfigAndForceStartsOver() throws {
        let dir = temporaryDirectory(self)
        let base = [
            "train", Fixtures.example("fashion-mlp.yaml"), "--out", "\(dir)/run", "--set",
            "data.dir=\(Fixtures.fashion)",
            "--set", "training.epochs=3", "--set", "training.checkpoint_steps=1"
        ]
        // A diverging run keeps its last good checkpoint and says how to continue.
        let diverged = try qshape(base + ["--set", "training.optimizer={name: sgd, lr: 10000}"])
        XCTAssertEqual(diverged.status, 1)
        XCTAssertTrue(
            diverged.stderr.contains(
                "then add --resume to continue from the last checkpoint (epoch 1, step "), diverged.stderr)
        XCTAssertEqual(diverged.stderr.split(separator: "\n").count, 1)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/run"), [])

        let plain = try qshape(base)
        XCTAssertEqual(plain.status, 1)
        XCTAssertTrue(plain.stderr.contains("a killed run left a checkpoint (epoch 1, step "), plain.stderr)
        XCTAssertTrue(
            plain.stderr.contains("pass --resume to continue it, or --force to start over"), plain.stderr)

        let changed = try qshape(
            base + [
                "--resume", "--set", "training.optimizer={name: sgd, lr: 0.01}", "--set", "training.seed=4"
            ])
        XCTAssertEqual(changed.status, 2)
        XCTAssertTrue(
            changed.stderr.contains(
                "is not the config of the run to resume: it has 'seed: 4' where that run had 'seed: 0'"),
            changed.stderr)

        // A lower learning rate is accepted (whether these weights, already blown up by lr 10000,
        // recover is another matter: a diverging resume keeps its checkpoint again).
        let resumed = try qshape(base + ["--resume", "--set", "training.optimizer={name: sgd, lr: 1e-9}"])
        XCTAssertTrue(
            resumed.stdout.contains("resuming from the checkpoint: epoch 1, step "),
            resumed.stdout + resumed.stderr)
        XCTAssertNotEqual(resumed.status, 2, resumed.stderr)
        let again = try qshape(base + ["--force", "--set", "training.optimizer={name: sgd, lr: 0.01}"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["run"])
        let nothing = try qshape(base + ["--resume"])
        XCTAssertEqual(nothing.status, 1)
        XCTAssertTrue(nothing.stderr.contains("no checkpoint of a killed run to resume"), nothing.stderr)
    }
}
