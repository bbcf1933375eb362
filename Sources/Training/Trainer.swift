import Foundation
import Synchronization
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
    /// Gather the batch on a second thread while the main thread runs the loss terms (the shaping
    /// penalties), and run those on both once the batch is ready, when the machine has a second
    /// core. The trained weights are the same either way.
    public var parallelLossTerms = true
    public init() {}
}

/// One line of `metrics.jsonl`.
public struct EpochMetrics: Codable, Sendable {
    public var epoch: Int
    public var loss: Double
    public var trainAccuracy: Double
    public var validationAccuracy: Double?
    public var validationLoss: Double?
    public var testAccuracy: Double?
    public var testLoss: Double?
    public var learningRate: Double
    public var epochSeconds: Double
    public var samplesPerSecond: Double
    /// Penalty name → its mean value over the epoch's steps (shaping).
    public var penalties: [String: Double]?
    /// Layer name → statistic name → value at the end of the epoch (shaping).
    public var layers: [String: [String: Double]]?
    /// "qat" for quantisation-aware fine-tuning epochs.
    public var phase: String?

    enum CodingKeys: String, CodingKey {
        case epoch, loss
        case trainAccuracy = "train_accuracy"
        case validationAccuracy = "validation_accuracy"
        case validationLoss = "validation_loss"
        case testAccuracy = "test_accuracy"
        case testLoss = "test_loss"
        case learningRate = "learning_rate"
        case epochSeconds = "epoch_seconds"
        case samplesPerSecond = "samples_per_second"
        case penalties, layers, phase
    }
}

/// Something that adds terms to the loss whose values depend on the weights alone (the shaping
/// penalties). The trainer calls it before back-propagation, possibly on another thread while the
/// batch is gathered: it must read only the weights and write only its own gradients.
public protocol LossTerm: AnyObject {
    /// Adds ∂penalty/∂w to the gradients of `model` and returns each term's value, weighted.
    /// `epoch` is fractional progress, for warm-up schedules.
    func addGradients(model: Sequential, epoch: Double) -> [String: Double]
    /// Statistics to log for each affected layer at the end of an epoch.
    func layerStatistics(model: Sequential) -> [String: [String: Double]]
    /// The parameters whose gradients `addGradients` writes whole rather than adds to, every step:
    /// the trainer does not zero them first. At most one term may write a parameter.
    var gradientsWritten: [Parameter] { get }
    /// What the term carries from step to step, by name (checkpoints; empty when stateless).
    var savedState: [String: [Float]] { get }
    /// Continues from `savedState`; false (nothing changed) when it does not fit.
    func restore(_ state: [String: [Float]]) -> Bool
}

extension LossTerm {
    public var gradientsWritten: [Parameter] { [] }
    public var savedState: [String: [Float]] { [:] }
    public func restore(_ state: [String: [Float]]) -> Bool { state.isEmpty }
}

/// Fake quantisation for quantisation-aware training. `quantizeWeights` swaps every weight for
/// its quantised-dequantised copy and returns the float masters; after backward `restore` puts
/// the masters back, so the optimiser updates them with the gradient taken at the quantised point
/// (the straight-through estimator). `activation` rounds activations to their grid in forward;
/// backward passes through it unchanged.
public struct FakeQuantization {
    public var quantize: ([Float], [Int]) -> [Float]
    public var activation: (Int, inout Tensor) -> Void

    public init(quantize: @escaping ([Float], [Int]) -> [Float], activation: @escaping (Int, inout Tensor) -> Void) {
        self.quantize = quantize
        self.activation = activation
    }

    public func quantizeWeights(_ model: Sequential) -> [Tensor] {
        model.trainableParameters.map { p in
            let master = p.value
            if p.role == .weight { p.value = Tensor(shape: master.shape, data: quantize(master.data, master.shape)) }
            return master
        }
    }

    public func restore(_ model: Sequential, _ masters: [Tensor]) {
        for (p, m) in zip(model.trainableParameters, masters) { p.value = m }
    }
}

/// Progress within an epoch, for a progress bar.
public struct StepProgress: Sendable {
    public var epoch, totalEpochs, step, stepsInEpoch, batchSize: Int
    public var samplesPerSecond: Double
    public var loss: Double
}

/// Accuracy (percent) and mean loss of `model` on `data`, in evaluation mode.
public func evaluate(_ model: Sequential, on data: Dataset, indices: [Int]? = nil,
                     normalization: Normalization, batchSize: Int = 256,
                     fakeQuantization: FakeQuantization? = nil) -> (accuracy: Double, loss: Double) {
    // With fake quantisation: the deployed model, quantised weights and activations.
    let masters = fakeQuantization?.quantizeWeights(model)
    defer { if let masters { fakeQuantization?.restore(model, masters) } }
    let all = indices ?? Array(0..<data.count)
    guard !all.isEmpty else { return (0, 0) }
    var correct = 0, lossSum = 0.0
    for start in stride(from: 0, to: all.count, by: batchSize) {
        let idx = all[start..<min(all.count, start + batchSize)]
        let (x, y) = data.batch(idx, normalization: normalization)
        let logits = fakeQuantization.map { model.forward(x, training: false, after: $0.activation) }
            ?? model.forward(x, training: false)
        let r = softmaxCrossEntropy(logits: logits, labels: y)
        correct += r.correct
        lossSum += r.loss * Double(idx.count)
    }
    return (100 * Double(correct) / Double(all.count), lossSum / Double(all.count))
}

/// The training loop: shuffled mini-batches, forward, loss, backward, extra loss terms,
/// optional clipping, an optimiser step at the scheduled learning rate; metrics per epoch.
/// Where a training run's loss stopped being a finite number.
public struct Divergence: Sendable, Equatable {
    /// 1-based epoch and step.
    public var epoch: Int, step: Int
    /// The shaping (loss) term whose value diverged, when the data loss itself stayed finite.
    public var term: String?
}

public final class Trainer {
    public let model: Sequential
    public let options: TrainingOptions
    public var lossTerms: [LossTerm] = []
    /// Quantisation-aware training: what the forward pass sees instead of the float weights and
    /// activations (a straight-through estimator: gradients reach the float weights unchanged).
    public var fakeQuantization: FakeQuantization?
    /// Set when a step's loss was NaN or infinite: that step's update was not applied and the
    /// epoch ended there, so the weights are the last finite ones.
    public private(set) var divergence: Divergence?
    private let optimizer: Optimizer
    private var rng: SeededRandom
    /// Set by `restore`: where the next epoch starts.
    private var resumePoint: TrainerSnapshot?
    public private(set) var trainIndices: [Int]
    public private(set) var validationIndices: [Int]

    /// The thread that gathers the batch while the loss terms run, made on first use.
    private var sideThread: SideThread?
    /// How the side thread joins the loss terms' loops once it has gathered the batch, and
    /// whether they are done (it then stops helping).
    private let sharing = BlockSharing()
    private let termsDone = Atomic<Bool>(false)
    /// Which steps use the side thread.
    private var choice = ParallelChoice()

    /// Whether this epoch uses the side thread: there are loss terms, and the machine has a second
    /// core.
    private var usesSideThread: Bool {
        options.parallelLossTerms && !lossTerms.isEmpty && ProcessInfo.processInfo.activeProcessorCount > 1
    }

    deinit { sideThread?.stop() }

    public init(model: Sequential, options: TrainingOptions, trainingSetSize: Int) {
        self.model = model
        self.options = options
        self.optimizer = Optimizer(options.optimizer, parameters: model.trainableParameters)
        self.rng = SeededRandom(seed: options.seed ^ 0xDA7A_5EED)
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

    /// The step's batch, and its loss terms' values with their gradients written (the other
    /// gradients in `zeroing` zeroed). The loss terms depend on the weights alone: they go first,
    /// and backward adds to their gradients. With `side`, the side thread gathers the batch
    /// meanwhile and then joins their loops (`BlockSharing`); the weights and gradients stay in
    /// this thread's cache, and the batch is the smaller thing to move. All is done before fake
    /// quantisation swaps the weights. The order is the same either way, and so are the trained
    /// weights.
    private func batchAndLossTerms(_ idx: ArraySlice<Int>, epoch t: Double, train: Dataset, zeroing: [Parameter],
                                   side: SideThread?) -> (Tensor, [Int32], [[String: Double]]) {
        let batch = BatchSlot()
        let gather = { [options] in batch.value = train.batch(idx, normalization: options.normalization) }
        var values: [[String: Double]] = []
        let runTerms = { [lossTerms, model] in values = lossTerms.map { $0.addGradients(model: model, epoch: t) } }
        if let side {
            termsDone.store(false, ordering: .relaxed)
            side.run { [self] in
                gather()
                while !termsDone.load(ordering: .acquiring) { if !sharing.help() { sched_yield() } }
            }
            for p in zeroing { p.grad.zero() }
            BlockSharing.$current.withValue(sharing, operation: runTerms)
            termsDone.store(true, ordering: .releasing)
            side.wait()                   // gathers the batch here if the side thread never started
        } else {
            for p in zeroing { p.grad.zero() }
            runTerms()
            gather()
        }
        let (x, y) = batch.value!
        return (x, y, values)
    }

    /// Where training stands now, at the end of the 0-based `epoch` (after its test evaluation).
    public func snapshot(afterEpoch epoch: Int) -> TrainerSnapshot {
        snapshot(epoch: epoch + 1, step: 0, epochRandom: rng, sums: EpochSums())
    }

    private func snapshot(epoch: Int, step: Int, epochRandom: SeededRandom, sums: EpochSums) -> TrainerSnapshot {
        var dropout: [Int: [UInt64]] = [:]
        for (i, layer) in model.layers.enumerated() {
            if let d = layer as? Dropout { dropout[i] = d.randomState.words }
        }
        return TrainerSnapshot(epoch: epoch, step: step, epochRandom: epochRandom.words, sums: sums,
                               optimizer: optimizer.state, dropout: dropout, lossTerms: lossTerms.map(\.savedState))
    }

    /// Continues from a snapshot taken by a trainer with the same model, options and loss terms
    /// (the model's own state is restored separately): the next `trainEpoch(snapshot.epoch)`
    /// starts at its step. Returns what does not fit, or nil.
    public func restore(_ s: TrainerSnapshot) -> String? {
        guard let r = SeededRandom(words: s.epochRandom) else { return "the random generator's state is invalid" }
        guard s.epoch >= 0, s.step >= 0, s.step < max(stepsPerEpoch, 1), s.sums.seen >= 0 else {
            return "epoch \(s.epoch), step \(s.step) is not a point of this training"
        }
        let dropouts = model.layers.indices.filter { model.layers[$0] is Dropout }
        guard Set(s.dropout.keys) == Set(dropouts), s.dropout.values.allSatisfy({ SeededRandom(words: $0) != nil }) else {
            return "the dropout layers' states do not fit the model"
        }
        guard s.lossTerms.count == lossTerms.count else { return "it has \(s.lossTerms.count) loss terms, the run \(lossTerms.count)" }
        let saved = (optimizer.state, lossTerms.map(\.savedState))
        guard optimizer.restore(s.optimizer), zip(lossTerms, s.lossTerms).allSatisfy({ $0.restore($1) }) else {
            _ = optimizer.restore(saved.0)
            for (t, state) in zip(lossTerms, saved.1) { _ = t.restore(state) }
            return "the optimiser's or the shaping terms' state does not fit the model"
        }
        for (i, words) in s.dropout { (model.layers[i] as! Dropout).randomState = SeededRandom(words: words)! }
        rng = r
        resumePoint = s
        return nil
    }

    /// Trains one epoch (0-based `epoch`) and returns its metrics (without test metrics). After
    /// every `options.checkpointSteps` steps (but the last) `checkpoint` receives a snapshot.
    public func trainEpoch(_ epoch: Int, train: Dataset, progress: ((StepProgress) -> Void)? = nil,
                           checkpoint: ((TrainerSnapshot) throws -> Void)? = nil) throws -> EpochMetrics {
        let clock = ContinuousClock(), start = clock.now
        var sums = EpochSums(), firstStep = 0
        if let r = resumePoint, r.epoch == epoch { sums = r.sums; firstStep = r.step }
        resumePoint = nil
        let epochRandom = rng
        var order = trainIndices
        rng.shuffle(&order)
        let steps = stepsPerEpoch
        if usesSideThread && sideThread == nil { sideThread = SideThread() }
        let side = usesSideThread ? sideThread : nil
        // The gradients to zero at each step: all but those a loss term writes whole.
        let written = lossTerms.flatMap(\.gradientsWritten).map(ObjectIdentifier.init)
        precondition(Set(written).count == written.count, "two loss terms write the same gradient")
        let zeroed = model.trainableParameters.filter { !written.contains(ObjectIdentifier($0)) }
        var seenHere = 0
        var lr = options.optimizer.learningRate
        for step in firstStep..<steps {
            let stepStart = clock.now
            let parallel = side != nil && choice.current
            let t = Double(epoch) + Double(step) / Double(steps)
            lr = options.schedule.learningRate(base: options.optimizer.learningRate, epoch: t, totalEpochs: options.epochs)
            let idx = order[(step * options.batchSize)..<min(order.count, (step + 1) * options.batchSize)]
            let (x, y, termValues) = batchAndLossTerms(idx, epoch: t, train: train, zeroing: zeroed, side: parallel ? side : nil)
            let masters = fakeQuantization?.quantizeWeights(model)
            let logits = fakeQuantization.map { fq in model.forward(x, training: true, after: fq.activation) }
                ?? model.forward(x, training: true)
            let r = softmaxCrossEntropy(logits: logits, labels: y)
            model.backward(r.dLogits)
            if let masters { fakeQuantization?.restore(model, masters) }
            var stepLoss = r.loss
            for (name, value) in termValues.joined() {
                sums.penaltySums[name, default: 0] += value
                stepLoss += value
            }
            guard stepLoss.isFinite else {
                let term = r.loss.isFinite ? termValues.joined().first { !$0.value.isFinite }?.key : nil
                divergence = Divergence(epoch: epoch + 1, step: step + 1, term: term)
                break
            }
            if options.gradientClip > 0 { clipGradientNorm(model.trainableParameters, maxNorm: options.gradientClip) }
            // Woken now, the side thread's wake-up overlaps the optimiser step; after the last
            // probe of a window, whose time decides the next step's kind, it is woken after it.
            let known = choice.nextIsKnown
            if step + 1 < steps, known, choice.next { side?.prepare() }
            optimizer.step(learningRate: lr)
            if side != nil { choice.record(seconds: seconds(clock.now - stepStart)) }
            if step + 1 < steps, !known, choice.current { side?.prepare() }
            sums.lossSum += stepLoss * Double(idx.count)
            sums.correct += r.correct
            sums.seen += idx.count
            seenHere += idx.count
            if let progress {
                let elapsed = seconds(clock.now - start)
                progress(StepProgress(epoch: epoch, totalEpochs: options.epochs, step: step + 1, stepsInEpoch: steps,
                                      batchSize: options.batchSize, samplesPerSecond: Double(seenHere) / max(elapsed, 1e-9),
                                      loss: sums.lossSum / Double(sums.seen)))
            }
            if options.checkpointSteps > 0, (step + 1) % options.checkpointSteps == 0, step + 1 < steps {
                try checkpoint?(snapshot(epoch: epoch, step: step + 1, epochRandom: epochRandom, sums: sums))
            }
        }
        let elapsed = seconds(clock.now - start)
        var m = EpochMetrics(epoch: epoch + 1, loss: sums.lossSum / Double(max(sums.seen, 1)),
                             trainAccuracy: 100 * Double(sums.correct) / Double(max(sums.seen, 1)),
                             learningRate: lr, epochSeconds: elapsed,
                             samplesPerSecond: Double(seenHere) / max(elapsed, 1e-9))
        if !lossTerms.isEmpty && divergence == nil {
            m.penalties = sums.penaltySums.mapValues { $0 / Double(max(steps, 1)) }
            m.layers = lossTerms.reduce(into: [:]) { acc, term in
                acc.merge(term.layerStatistics(model: model)) { a, b in a.merging(b) { x, _ in x } }
            }
        }
        if !validationIndices.isEmpty {
            let v = evaluate(model, on: train, indices: validationIndices, normalization: options.normalization)
            m.validationAccuracy = v.accuracy
            m.validationLoss = v.loss
        }
        return m
    }
}

/// An epoch's running sums, for its metrics.
public struct EpochSums: Sendable, Equatable {
    public var lossSum = 0.0, correct = 0, seen = 0
    public var penaltySums: [String: Double] = [:]
    public init() {}
}

/// A point from which training continues exactly as if never stopped: everything the trainer
/// carries besides the model's own state (saved beside it).
public struct TrainerSnapshot: Sendable {
    /// The epoch in progress (0-based) and how many of its steps are done.
    public var epoch: Int, step: Int
    /// The shuffling generator as that epoch began (it draws the epoch's order).
    public var epochRandom: [UInt64]
    public var sums: EpochSums
    public var optimizer: Optimizer.State
    /// Each dropout layer's generator, by layer index.
    public var dropout: [Int: [UInt64]]
    /// Each loss term's `savedState`.
    public var lossTerms: [[String: [Float]]]

    public init(epoch: Int, step: Int, epochRandom: [UInt64], sums: EpochSums, optimizer: Optimizer.State,
                dropout: [Int: [UInt64]], lossTerms: [[String: [Float]]]) {
        self.epoch = epoch; self.step = step; self.epochRandom = epochRandom; self.sums = sums
        self.optimizer = optimizer; self.dropout = dropout; self.lossTerms = lossTerms
    }
}

/// One step's batch, as the side thread leaves it.
private final class BatchSlot: @unchecked Sendable {
    var value: (Tensor, [Int32])?
}

public func seconds(_ d: Duration) -> Double {
    let c = d.components
    return Double(c.seconds) + Double(c.attoseconds) * 1e-18
}
