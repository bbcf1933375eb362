// One `qshape train` run in its staging folder: the trainer with its loss terms, the epochs with
// their metrics and checkpoints, quantisation-aware fine-tuning, and the quantisation at the end.
import Foundation
import Config
import DataIO
import NeuralNet
import Shaping
import Training

final class TrainingRun {
    let config: Config
    let model: Sequential
    let data: DataSplit
    let dir: String
    let observer: TrainingObserver?
    /// Every epoch's metrics so far (a resumed run starts with the checkpoint's).
    private(set) var metrics: [EpochMetrics]
    var checkpointPath: String { "\(dir)/\(Checkpoint.fileName)" }

    init(
        config: Config, model: Sequential, data: DataSplit, dir: String, observer: TrainingObserver?,
        metrics: [EpochMetrics]
    ) {
        (self.config, self.model, self.data, self.dir, self.observer, self.metrics) = (
            config, model, data, dir, observer, metrics
        )
    }

    /// The trainer with the given loss terms and the config's shaping term, restored from `start`
    /// when that is a checkpoint of the training phase.
    func makeTrainer(lossTerms: [LossTerm], start: Checkpoint.Contents?) throws -> Trainer {
        let trainer = Trainer(model: model, options: config.training, trainingSetSize: data.train.count)
        guard !trainer.trainIndices.isEmpty else {
            throw ConfigError(
                file: config.file, path: "data.validation_split",
                "leaves no training images of \(data.train.count)")
        }
        trainer.lossTerms = lossTerms
        if let s = config.shaping, s.isActive {
            let term = ShapingLossTerm(s, model: model)
            term.statisticsBits =
                config.quantize?.narrowestBits ?? (s.terms[.quantError].map { _ in s.quantErrorBits } ?? 8)
            trainer.lossTerms.append(term)
        }
        if let note = BLASSetup.selectionNote { observer?.message(note) }
        observer?.message(
            "training \(config.name): \(trainer.trainIndices.count) training images, \(data.test.count) test images, \(config.training.epochs) epochs of \(trainer.stepsPerEpoch) steps"
        )
        if start == nil {
            TrainWorkflow.warnIfInitialWeightsFailToConvert(
                config, model: model, data: data, observer: observer)
        }
        if let c = start {
            observer?.message("resuming from the checkpoint: \(c.position)")
            if c.phase == .train {
                try TrainWorkflow.restore(c, into: trainer, model: model, path: checkpointPath)
            }
        }
        return trainer
    }

    /// Epochs `first..<count` of a phase, numbered after `offset` earlier ones: each evaluated on
    /// the test set, its metrics appended to metrics.jsonl, and a checkpoint written.
    func epochs(
        _ t: Trainer, count: Int, offset: Int, phase: Checkpoint.Phase, from first: Int,
        qatBase: SafeTensors.File?
    ) throws {
        func save(_ s: TrainerSnapshot) throws {
            try Checkpoint.write(
                to: dir, model: model, phase: phase, trainer: s, metrics: metrics, qatBase: qatBase)
        }
        let progress = observer.map { o in
            { (p: StepProgress) in
                var p = p
                p.epoch += offset
                p.totalEpochs = offset + count
                o.step(p)
            }
        }
        for epoch in first..<count {
            var m = try t.trainEpoch(epoch, train: data.train, progress: progress, checkpoint: save)
            if let d = t.divergence {
                throw TrainWorkflow.divergenceError(
                    d, config: config, phase: phase,
                    checkpoint: FileManager.default.fileExists(atPath: checkpointPath)
                        ? Checkpoint.describe(dir) : nil)
            }
            observer?.phase(
                "epoch \(offset + epoch + 1)/\(offset + count): evaluating on \(data.test.count) test images")
            let test = evaluate(
                model, on: data.test, normalization: config.training.normalization,
                fakeQuantization: t.fakeQuantization)
            m.epoch += offset
            m.testAccuracy = test.accuracy
            m.testLoss = test.loss
            m.phase = phase == .qat ? "qat" : nil
            metrics.append(m)
            try writeMetrics()
            try save(t.snapshot(afterEpoch: epoch))
            observer?.epoch(m, of: offset + count)
        }
    }

    /// metrics.jsonl, one JSON line per epoch, rewritten atomically.
    private func writeMetrics() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let lines = try metrics.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        try writeAtomically(lines.joined(separator: "\n") + "\n", to: "\(dir)/metrics.jsonl")
    }

    /// `quantize.qat.epochs` of fine-tuning with fake quantisation after `trainer`'s epochs.
    func quantisationAwareTraining(
        _ q: QuantizeConfig, after trainer: Trainer, start: Checkpoint.Contents?
    ) throws {
        // QAT calibrates on the float model it starts from: a checkpoint in QAT keeps that model.
        let resumingQAT = start?.phase == .qat ? start : nil
        if let base = resumingQAT?.qatBase { try Weights.load(base, path: checkpointPath, into: model) }
        let base = SafeTensors.File(entries: Weights.entries(model))
        let qat = try QATWorkflow.trainer(config, q, model: model, data: data, lossTerms: trainer.lossTerms)
        if let c = resumingQAT { try TrainWorkflow.restore(c, into: qat, model: model, path: checkpointPath) }
        let activations = q.qat.activations ? " and \(q.options.activationBits)-bit activations" : ""
        observer?.message(
            "quantisation-aware fine-tuning: \(q.qat.epochs) epochs at \(q.qatBits)-bit weights\(activations)"
        )
        try epochs(
            qat, count: q.qat.epochs, offset: config.training.epochs, phase: .qat,
            from: resumingQAT?.trainer.epoch ?? 0, qatBase: base)
    }

    /// Every run ends with accuracy by bit width: the config's quantize section, or by default the
    /// integer engine at 8, 4 and 3-bit weights (the seed quantiser) and 8-bit activations — the
    /// weights-only simulation for data the integer engine cannot take. A quantize section that
    /// refuses the model is returned, not thrown: the trained model is kept.
    func quantize(weightsLabel: String) throws -> (QuantizeWorkflow.Result?, ConfigError?) {
        var q = config.quantize ?? QuantizeConfig()
        if config.quantize == nil {
            q.bits = [8, 4, 3]
            q.weightsOnly = (try? QuantizeWorkflow.checkIntegerInput(config, data: data)) == nil
        }
        do {
            observer?.message(
                "quantising: weight bits \(q.bits.map(String.init).joined(separator: ", "))\(q.weightsOnly ? ", weights only" : "")"
            )
            let (result, conversions) = try QuantizeWorkflow.run(
                config, model: model, data: data, settings: q, weightsLabel: weightsLabel,
                progress: observer.map { o in { o.phase($0) } })
            try QuantizeWorkflow.write(result, conversions: conversions, to: dir)
            observer?.message(QuantizeWorkflow.table(result))
            return (result, nil)
        } catch let e as ConfigError {
            return (nil, e)
        }
    }
}
