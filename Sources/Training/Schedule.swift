// Learning-rate schedules: constant, step and cosine with warm-up.
import Tensors

/// Learning rate as a function of training progress (in epochs, fractional within an epoch).
public struct LearningRateSchedule: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable { case constant, step, cosine }
    public var kind: Kind = .constant
    /// step: multiply by `gamma` every `stepEpochs` epochs.
    public var stepEpochs = 1
    public var gamma = 0.1
    /// cosine: linear warm-up from 0 over `warmupEpochs`, then a half cosine down to `minLearningRate`.
    public var warmupEpochs = 0.0
    public var minLearningRate = 0.0
    public init() {}

    ///     constant: lr
    ///     step:     lr·γ^⌊t/step⌋
    ///     cosine:   lr·t/w for t < w, else min + (lr − min)·(1 + cos(π·(t − w)/(T − w)))/2
    public func learningRate(base: Double, epoch t: Double, totalEpochs: Int) -> Double {
        switch kind {
        case .constant:
            return base
        case .step:
            return base * _pow(gamma, Double(Int(t) / max(1, stepEpochs)))
        case .cosine:
            if t < warmupEpochs { return base * t / warmupEpochs }
            let span = max(1e-12, Double(totalEpochs) - warmupEpochs)
            let progress = min(1, (t - warmupEpochs) / span)
            return minLearningRate + (base - minLearningRate) * (1 + _cos(Double.pi * progress)) / 2
        }
    }
}
