// A point training continues from exactly as if never stopped (checkpoints and --resume).
import Tensors
import NeuralNet

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

    public init(
        epoch: Int, step: Int, epochRandom: [UInt64], sums: EpochSums, optimizer: Optimizer.State,
        dropout: [Int: [UInt64]], lossTerms: [[String: [Float]]]
    ) {
        self.epoch = epoch; self.step = step; self.epochRandom = epochRandom; self.sums = sums
        self.optimizer = optimizer; self.dropout = dropout; self.lossTerms = lossTerms
    }
}

extension Trainer {
    /// Where training stands now, at the end of the 0-based `epoch` (after its test evaluation).
    public func snapshot(afterEpoch epoch: Int) -> TrainerSnapshot {
        snapshot(epoch: epoch + 1, step: 0, epochRandom: rng, sums: EpochSums())
    }

    func snapshot(epoch: Int, step: Int, epochRandom: SeededRandom, sums: EpochSums) -> TrainerSnapshot {
        var dropout: [Int: [UInt64]] = [:]
        for (i, layer) in model.layers.enumerated() {
            if let d = layer as? Dropout { dropout[i] = d.randomState.words }
        }
        return TrainerSnapshot(
            epoch: epoch, step: step, epochRandom: epochRandom.words, sums: sums,
            optimizer: optimizer.state, dropout: dropout, lossTerms: lossTerms.map(\.savedState))
    }

    /// Continues from a snapshot taken by a trainer with the same model, options and loss terms
    /// (the model's own state is restored separately): the next `trainEpoch(snapshot.epoch)`
    /// starts at its step. Returns what does not fit, or nil.
    public func restore(_ s: TrainerSnapshot) -> String? {
        guard let r = SeededRandom(words: s.epochRandom) else {
            return "the random generator's state is invalid"
        }
        guard s.epoch >= 0, s.step >= 0, s.step < max(stepsPerEpoch, 1), s.sums.seen >= 0 else {
            return "epoch \(s.epoch), step \(s.step) is not a point of this training"
        }
        let dropouts = model.layers.indices.filter { model.layers[$0] is Dropout }
        guard Set(s.dropout.keys) == Set(dropouts),
            s.dropout.values.allSatisfy({ SeededRandom(words: $0) != nil })
        else {
            return "the dropout layers' states do not fit the model"
        }
        guard s.lossTerms.count == lossTerms.count else {
            return "it has \(s.lossTerms.count) loss terms, the run \(lossTerms.count)"
        }
        let saved = (optimizer.state, lossTerms.map(\.savedState))
        guard optimizer.restore(s.optimizer), zip(lossTerms, s.lossTerms).allSatisfy({ $0.restore($1) })
        else {
            _ = optimizer.restore(saved.0)
            for (t, state) in zip(lossTerms, saved.1) { _ = t.restore(state) }
            return "the optimiser's or the shaping terms' state does not fit the model"
        }
        for (i, words) in s.dropout {
            (model.layers[i] as! Dropout).randomState = SeededRandom(words: words)!
        }
        rng = r
        resumePoint = s
        return nil
    }
}
