// The training loop: options, one step (loss terms, forward, backward, clipping, update), an epoch
// and its metrics.
import Foundation
import Tensors
import NeuralNet
import DataIO

/// Everything the training loop needs besides the model and data.
public struct TrainingOptions: Equatable, Sendable {
    public var epochs = 10
    public var batchSize = 128
    public var seed: UInt64 = 0
    public var optimizer = OptimizerConfig()
    public var schedule = LearningRateSchedule()
    /// Maximum joint gradient L2 norm; 0 turns clipping off.
    public var gradientClip = 0.0
    /// Stop each epoch after this many steps; 0 means the whole training set (tests use it).
    public var maxStepsPerEpoch = 0
    /// Also checkpoint every this many steps within an epoch; 0: at the end of each epoch only.
    public var checkpointSteps = 0
    /// Fraction of the training set held out for validation (a seeded random subset).
    public var validationSplit = 0.0
    public var normalization = Normalization()
    /// Overlap each step's batch gathering with the optimiser update and the loss terms on a second
    /// core (`StepOverlap`, `training.overlap`). The trained weights are the same either way.
    public var overlapSteps = true
    public init() {}
}

/// The training loop: shuffled mini-batches, forward, loss, backward, extra loss terms,
/// optional clipping, an optimiser step at the scheduled learning rate; metrics per epoch.
public final class Trainer {
    public let model: Sequential
    public let options: TrainingOptions
    public var lossTerms: [LossTerm] = [] {
        didSet {
            overlap = StepOverlap(enabled: options.overlapSteps, hasLossTerms: !lossTerms.isEmpty)
            let written = lossTerms.flatMap(\.setsGradients).map(ObjectIdentifier.init)
            precondition(
                Set(written).count == written.count, "two loss terms write the same parameter's gradient")
            zeroedFirst = model.trainableParameters.filter { !written.contains(ObjectIdentifier($0)) }
        }
    }
    /// The parameters whose gradients a step zeroes before the loss terms: those no loss term
    /// writes (`LossTerm.setsGradients`).
    private var zeroedFirst: [Parameter]
    /// Quantisation-aware training: what the forward pass sees instead of the float weights and
    /// activations (a straight-through estimator: gradients reach the float weights unchanged).
    public var fakeQuantization: FakeQuantization?
    /// Set when a step's loss was NaN or infinite: that step's update was not applied and the
    /// epoch ended there, so the weights are the last finite ones.
    public private(set) var divergence: Divergence?
    let optimizer: Optimizer
    var rng: SeededRandom
    /// Set by `restore`: where the next epoch starts.
    var resumePoint: TrainerSnapshot?
    public private(set) var trainIndices: [Int]
    public private(set) var validationIndices: [Int]
    private var overlap: StepOverlap
    /// The next step's batch, when the side thread gathers it during this step's update (for the
    /// step that follows in the epoch; the epoch's end drops it).
    private var nextBatch: BatchSlot?
    /// Whether a batch is being gathered ahead (only ever between the steps of an epoch).
    var isGatheringAhead: Bool { overlap.prefetched }

    public init(model: Sequential, options: TrainingOptions, trainingSetSize: Int) {
        self.model = model
        self.options = options
        self.optimizer = Optimizer(options.optimizer, parameters: model.trainableParameters)
        self.rng = SeededRandom(seed: options.seed ^ 0xDA7A_5EED)
        overlap = StepOverlap(enabled: options.overlapSteps, hasLossTerms: false)
        zeroedFirst = model.trainableParameters
        var all = Array(0..<trainingSetSize)
        let held = Int((Double(trainingSetSize) * options.validationSplit).rounded())
        if held > 0 { rng.shuffle(&all) }
        validationIndices = Array(all[0..<held]).sorted()
        trainIndices = Array(all[held...]).sorted()
    }

    public var stepsPerEpoch: Int {
        let full = (trainIndices.count + options.batchSize - 1) / options.batchSize
        return options.maxStepsPerEpoch > 0 ? min(full, options.maxStepsPerEpoch) : full
    }

    /// The step's batch, and its loss terms' values with their gradients added to zeroed
    /// gradients (or written over them: `setsGradients`). The loss terms depend on the weights
    /// alone: they go first, and backward adds to their gradients; `StepOverlap` may gather the
    /// batch meanwhile, or have gathered it during the last update. All is done before fake
    /// quantisation swaps the weights.
    private func batchAndLossTerms(
        _ idx: ArraySlice<Int>, epoch t: Double, train: Dataset
    ) -> (Tensor, [Int32], [[String: Double]]) {
        let ahead = nextBatch, batch = ahead ?? BatchSlot()
        nextBatch = nil
        var values: [[String: Double]] = []
        for p in zeroedFirst { p.zeroGradient() }
        overlap.run(
            terms: { [lossTerms, model] in values = lossTerms.map { $0.addGradients(model: model, epoch: t) }
            },
            gather: ahead == nil ? gathering(idx, into: batch, from: train) : nil)
        let (x, y) = batch.value!
        return (x, y, values)
    }

    /// Gathers the batch of `idx` into `slot`.
    private func gathering(
        _ idx: ArraySlice<Int>, into slot: BatchSlot, from train: Dataset
    ) -> @Sendable () -> Void {
        { [options] in slot.value = train.batch(idx, normalization: options.normalization) }
    }

    /// One step: loss terms and batch, forward (through fake quantisation during QAT), backward,
    /// clipping and the update. Returns the data loss's result and the loss terms' values, or nil
    /// (nothing updated, `divergence` set) when the loss is not finite.
    private func step(
        _ idx: ArraySlice<Int>, next: ArraySlice<Int>?, epoch: Int, step: Int, steps: Int,
        learningRate lr: Double, train: Dataset
    ) -> (result: (loss: Double, dLogits: Tensor, correct: Int), stepLoss: Double, terms: [[String: Double]])?
    {
        let stepStart = ContinuousClock.now
        let t = Double(epoch) + Double(step) / Double(steps)
        let (x, y, termValues) = batchAndLossTerms(idx, epoch: t, train: train)
        let masters = fakeQuantization?.quantizeWeights(model)
        let logits =
            fakeQuantization.map { fq in model.forward(x, training: true, after: fq.activation) }
            ?? model.forward(x, training: true)
        let r = softmaxCrossEntropy(logits: logits, labels: y)
        model.backward(r.dLogits)
        if let masters { fakeQuantization?.restore(model, masters) }
        let stepLoss = termValues.joined().reduce(r.loss) { $0 + $1.value }
        guard stepLoss.isFinite else {
            let term = r.loss.isFinite ? termValues.joined().first { !$0.value.isFinite }?.key : nil
            divergence = Divergence(epoch: epoch + 1, step: step + 1, term: term)
            return nil
        }
        if options.gradientClip > 0 {
            clipGradientNorm(model.trainableParameters, maxNorm: options.gradientClip)
        }
        let slot = BatchSlot()
        let ahead = overlap.update(
            stepStart: stepStart, gatherNext: next.map { gathering($0, into: slot, from: train) }
        ) {
            optimizer.step(learningRate: lr)
        }
        nextBatch = ahead ? slot : nil
        return (r, stepLoss, termValues)
    }

    /// Trains one epoch (0-based `epoch`) and returns its metrics (without test metrics). After
    /// every `options.checkpointSteps` steps (but the last) `checkpoint` receives a snapshot.
    public func trainEpoch(
        _ epoch: Int, train: Dataset, progress: ((StepProgress) -> Void)? = nil,
        checkpoint: ((TrainerSnapshot) throws -> Void)? = nil
    ) throws -> EpochMetrics {
        let clock = ContinuousClock(), start = clock.now
        var sums = EpochSums(), firstStep = 0
        if let r = resumePoint, r.epoch == epoch { sums = r.sums; firstStep = r.step }
        resumePoint = nil
        defer { overlap.finish(); nextBatch = nil }
        let epochRandom = rng
        var order = trainIndices
        rng.shuffle(&order)
        let steps = stepsPerEpoch
        var seenHere = 0
        var lr = options.optimizer.learningRate
        for step in firstStep..<steps {
            let t = Double(epoch) + Double(step) / Double(steps)
            lr = options.schedule.learningRate(
                base: options.optimizer.learningRate, epoch: t, totalEpochs: options.epochs)
            let idx = batchIndices(order, step)
            guard
                let done = self.step(
                    idx, next: step + 1 < steps ? batchIndices(order, step + 1) : nil, epoch: epoch,
                    step: step, steps: steps, learningRate: lr, train: train)
            else { break }
            for (name, value) in done.terms.joined() { sums.penaltySums[name, default: 0] += value }
            sums.lossSum += done.stepLoss * Double(idx.count)
            sums.correct += done.result.correct
            sums.seen += idx.count
            seenHere += idx.count
            if let progress {
                let elapsed = seconds(clock.now - start)
                progress(
                    StepProgress(
                        epoch: epoch, totalEpochs: options.epochs, step: step + 1, stepsInEpoch: steps,
                        batchSize: options.batchSize, samplesPerSecond: Double(seenHere) / max(elapsed, 1e-9),
                        loss: sums.lossSum / Double(sums.seen)))
            }
            if options.checkpointSteps > 0, (step + 1) % options.checkpointSteps == 0, step + 1 < steps {
                try checkpoint?(snapshot(epoch: epoch, step: step + 1, epochRandom: epochRandom, sums: sums))
            }
        }
        return epochMetrics(
            epoch, sums: sums, steps: steps, seen: seenHere, learningRate: lr,
            seconds: seconds(clock.now - start),
            train: train)
    }

    /// The indices of step `k`'s batch in the epoch's `order`.
    private func batchIndices(_ order: [Int], _ k: Int) -> ArraySlice<Int> {
        order[(k * options.batchSize)..<min(order.count, (k + 1) * options.batchSize)]
    }

    /// The epoch's metrics from its sums, with the loss terms' statistics and validation.
    private func epochMetrics(
        _ epoch: Int, sums: EpochSums, steps: Int, seen: Int, learningRate: Double, seconds elapsed: Double,
        train: Dataset
    ) -> EpochMetrics {
        var m = EpochMetrics(
            epoch: epoch + 1, loss: sums.lossSum / Double(max(sums.seen, 1)),
            trainAccuracy: 100 * Double(sums.correct) / Double(max(sums.seen, 1)),
            learningRate: learningRate, epochSeconds: elapsed,
            samplesPerSecond: Double(seen) / max(elapsed, 1e-9))
        if !lossTerms.isEmpty && divergence == nil {
            m.penalties = sums.penaltySums.mapValues { $0 / Double(max(steps, 1)) }
            m.layers = lossTerms.reduce(into: [:]) { acc, term in
                acc.merge(term.layerStatistics(model: model)) { a, b in a.merging(b) { x, _ in x } }
            }
        }
        if !validationIndices.isEmpty {
            let v = evaluate(
                model, on: train, indices: validationIndices, normalization: options.normalization)
            m.validationAccuracy = v.accuracy
            m.validationLoss = v.loss
        }
        return m
    }
}

public func seconds(_ d: Duration) -> Double {
    let c = d.components
    return Double(c.seconds) + Double(c.attoseconds) * 1e-18
}
