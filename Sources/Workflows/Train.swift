// `qshape train`: the run folder claimed (or resumed), the training run, the summary.
import Shaping
import Config
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
import Quantization
import Reports
import Export

/// Where `qshape train` reports what it is doing.
public protocol TrainingObserver: AnyObject {
    func step(_ p: StepProgress)
    func epoch(_ m: EpochMetrics, of total: Int)
    func message(_ text: String)
    /// What the run does now between steps (evaluating…), for a live display; not a record.
    func phase(_ text: String)
}

extension TrainingObserver {
    public func phase(_ text: String) {}
}

public struct TrainSummary: Sendable {
    public var runDirectory: String
    public var metrics: [EpochMetrics]
    public var testAccuracy: Double
    public var testLoss: Double
    /// The float/simulated/integer comparison, when the config has a `quantize:` section.
    public var quantization: QuantizeWorkflow.Result?
    /// Why the config's quantize section could not convert the trained model (the run is kept).
    public var quantizeRefusal: ConfigError?
}

public enum TrainWorkflow {
    public static func defaultRunDirectory(for config: Config) -> String { "runs/\(config.name)" }

    /// Builds the model a config describes, for a data set's sample shape.
    public static func makeModel(_ config: Config, sampleShape: [Int]) throws -> Sequential {
        do {
            return try Sequential(specs: config.layers, inputShape: sampleShape, seed: config.training.seed)
        } catch let e as ModelError {
            throw ConfigError(file: config.file, path: "", e.message)
        }
    }

    static func checkClasses(_ model: Sequential, _ data: DataSplit, config: Config) throws {
        let outputs = model.outputShape.reduce(1, *)
        let classes = max(data.train.classCount, data.test.classCount)
        guard model.outputShape.count == 1, outputs >= classes else {
            throw ConfigError(
                file: config.file, path: "model.layers",
                "the last layer gives shape \(model.outputShape); the data has \(classes) classes, so it must give [\(classes)]"
            )
        }
    }

    /// Trains the config's model and writes the run folder: config.yaml, metrics.jsonl (rewritten
    /// atomically after every epoch), checkpoint.safetensors while it runs, and model.safetensors at
    /// the end. With `resume`, continues the newest checkpoint a killed run to that folder left.
    public static func run(
        _ config: Config, outDir: String?, force: Bool, resume: Bool = false,
        observer: TrainingObserver?, lossTerms: [LossTerm] = []
    ) throws -> TrainSummary {
        let data = try config.data.load()
        guard data.train.count > 0, data.test.count > 0 else {
            throw ConfigError(
                file: config.file, path: "data",
                "the \(data.train.count == 0 ? "training" : "test") set has no images")
        }
        let model = try makeModel(config, sampleShape: data.train.sampleShape)
        try checkClasses(model, data, config: config)
        try QuantizeWorkflow.checkBeforeTraining(config, data: data)
        let folder = try RunFolder.begin(
            outDir ?? defaultRunDirectory(for: config), force: force,
            resume: resume ? Checkpoint.fileName : nil)
        // Checked before `run`, which would remove the checkpoint on failure.
        let start = folder.resumed ? try resumePoint(config, dir: folder.work) : nil
        let summary = try folder.run { dir in
            try train(
                config, model: model, data: data, dir: dir, finalDirectory: folder.path, from: start,
                observer: observer, lossTerms: lossTerms)
        }
        if let e = summary.quantizeRefusal {
            throw ConfigError(
                file: e.file, path: e.path, line: e.line,
                "\(e.message); the trained model is saved in \(folder.path) (without quantize results): change the quantize section and run qshape quantize CONFIG --weights \(folder.path)/model.safetensors --out \(folder.path)"
            )
        }
        return summary
    }

    /// A killed run's checkpoint, if the config is the one it ran (the learning rate, clipping,
    /// checkpoint interval, thread count and step overlap may change).
    static func resumePoint(_ config: Config, dir: String) throws -> Checkpoint.Contents {
        let path = "\(dir)/\(Checkpoint.fileName)"
        let c = try Checkpoint.read(path)
        let previous = try Config.load(path: "\(dir)/config.yaml")
        var mine = config
        mine.training.optimizer.learningRate = previous.training.optimizer.learningRate
        mine.training.gradientClip = previous.training.gradientClip
        mine.training.checkpointSteps = previous.training.checkpointSteps
        mine.threads = previous.threads
        mine.training.overlapSteps = previous.training.overlapSteps
        let now = mine.resolvedYAML.split(separator: "\n"),
            then = previous.resolvedYAML.split(separator: "\n")
        if let i = (0..<max(now.count, then.count)).first(where: {
            $0 >= now.count || $0 >= then.count || now[$0] != then[$0]
        }) {
            let line = { (l: [Substring]) in
                i < l.count ? "'\(l[i].trimmingCharacters(in: .whitespaces))'" : "nothing"
            }
            throw ConfigError(
                file: config.file, path: "",
                "is not the config of the run to resume: it has \(line(now)) where that run had \(line(then)) (only training.optimizer.lr, grad_clip, checkpoint_steps, threads and overlap may change)"
            )
        }
        let epochs = c.phase == .train ? config.training.epochs : config.quantize?.qat.epochs ?? 0
        let before = c.phase == .train ? 0 : config.training.epochs
        guard c.trainer.epoch <= epochs, c.metrics.count == before + c.trainer.epoch else {
            throw DataError(
                "\(path): does not fit this run (epoch \(c.trainer.epoch) of \(epochs), \(c.metrics.count) epochs of metrics)"
            )
        }
        return c
    }

    /// The training itself, writing into `dir` (the staging folder that becomes `finalDirectory`),
    /// from the beginning or from a checkpoint.
    static func train(
        _ config: Config, model: Sequential, data: DataSplit, dir: String, finalDirectory: String,
        from start: Checkpoint.Contents?, observer: TrainingObserver?, lossTerms: [LossTerm]
    ) throws -> TrainSummary {
        try writeAtomically(config.resolvedYAML, to: "\(dir)/config.yaml")
        if start == nil {
            try Weights.save(
                model, to: "\(dir)/initial.safetensors", metadata: ["qshape.config": config.name])
        }
        configureThreads(config.threads)
        try Provenance.run(config).write(to: dir)
        let run = TrainingRun(
            config: config, model: model, data: data, dir: dir, observer: observer,
            metrics: start?.metrics ?? [])
        let trainer = try run.makeTrainer(lossTerms: lossTerms, start: start)
        try run.epochs(
            trainer, count: config.training.epochs, offset: 0, phase: .train,
            from: start.map { $0.phase == .train ? $0.trainer.epoch : config.training.epochs } ?? 0,
            qatBase: nil)
        if let q = config.quantize, q.qat.epochs > 0 {
            try run.quantisationAwareTraining(q, after: trainer, start: start)
        }
        try Weights.save(model, to: "\(dir)/model.safetensors", metadata: ["qshape.config": config.name])
        let last = run.metrics.last!
        var summary = TrainSummary(
            runDirectory: finalDirectory, metrics: run.metrics, testAccuracy: last.testAccuracy ?? 0,
            testLoss: last.testLoss ?? 0)
        (summary.quantization, summary.quantizeRefusal) = try run.quantize(
            weightsLabel: "\(finalDirectory)/model.safetensors")
        try ReportWorkflow.write(runDirectory: dir)
        observer?.message("report: \(finalDirectory)/report.html")
        // Finished: the checkpoint has served (a run killed before this point resumes from it).
        try? FileManager.default.removeItem(atPath: run.checkpointPath)
        return summary
    }

    /// A quantize section that already refuses the initial weights (an accumulator wider than
    /// int32, say) will most likely refuse the trained ones: said before training, which goes on
    /// (trained weights can differ, and the run is kept either way). Only the widest weights are
    /// tried: the accumulator and the scaled biases grow with the grid, so they fail first.
    static func warnIfInitialWeightsFailToConvert(
        _ config: Config, model: Sequential, data: DataSplit, observer: TrainingObserver?
    ) {
        guard let observer, let q = config.quantize, !q.weightsOnly, let widest = q.bits.max(),
            let convert = try? QuantizeWorkflow.integerConverter(
                config, model: model, data: data, settings: q)
        else { return }
        do { _ = try convert(widest) } catch let e as ConfigError {
            observer.message(
                "note: the quantize section refuses the initial weights (\(e.message)); it may refuse the trained ones too"
            )
        } catch {}
    }

    static func restore(
        _ c: Checkpoint.Contents, into trainer: Trainer, model: Sequential, path: String
    ) throws {
        try Weights.load(c.model, path: path, into: model)
        if let problem = trainer.restore(c.trainer) {
            throw DataError("\(path): does not fit this run (\(problem))")
        }
    }

    /// The one line a diverged run ends with: where, and what to change. A diverged training
    /// (not fine-tuning) whose data loss diverged keeps its last checkpoint for `--resume` with a
    /// lower learning rate.
    static func divergenceError(
        _ d: Divergence, config: Config, phase: Checkpoint.Phase, checkpoint: String?
    ) -> RunError {
        let o = config.training.optimizer
        let cause =
            d.term.map { "the shaping term \($0) diverged: lower its weight (λ) under shaping" }
            ?? "lower training.optimizer.lr (now \(o.learningRate))\(config.training.gradientClip > 0 ? "" : " or set training.grad_clip")"
        let what = phase == .qat ? "quantisation-aware fine-tuning" : "training"
        let head =
            "\(what) diverged at epoch \(d.epoch), step \(d.step): the loss is not a finite number; \(cause)"
        if let checkpoint, d.term == nil, phase == .train {
            return RunError(
                "\(head), then add --resume to continue from the last checkpoint (\(checkpoint))",
                keepsCheckpoint: true)
        }
        return RunError("\(head); nothing was written")
    }

    /// 0 means: as many OpenBLAS threads as cores.
    public static func configureThreads(_ n: Int) {
        Allocator.keepLargeBlocks()
        BLASThreads.set(n > 0 ? n : ProcessInfo.processInfo.activeProcessorCount)
    }
}
