// What training reports: per epoch (metrics.jsonl), per step (progress), and where it diverged.

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

/// Progress within an epoch, for a progress bar.
public struct StepProgress: Sendable {
    public var epoch, totalEpochs, step, stepsInEpoch, batchSize: Int
    public var samplesPerSecond: Double
    public var loss: Double
}

/// Where a training run's loss stopped being a finite number.
public struct Divergence: Sendable, Equatable {
    /// 1-based epoch and step.
    public var epoch: Int, step: Int
    /// The shaping (loss) term whose value diverged, when the data loss itself stayed finite.
    public var term: String?
}

/// An epoch's running sums, for its metrics.
public struct EpochSums: Sendable, Equatable {
    public var lossSum = 0.0, correct = 0, seen = 0
    public var penaltySums: [String: Double] = [:]
    public init() {}
}
