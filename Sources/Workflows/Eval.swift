// `qshape eval`: a weights file's accuracy and loss on the config's test set.
import Config
import Foundation
import Training

public struct EvalResult: Codable, Sendable {
    public var testAccuracy: Double
    public var testLoss: Double
    public var samples: Int
    public var weights: String
    enum CodingKeys: String, CodingKey {
        case testAccuracy = "test_accuracy", testLoss = "test_loss", samples, weights
    }
}

public enum EvalWorkflow {
    public static func run(_ config: Config, weights: String) throws -> EvalResult {
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(weights, into: model)
        TrainWorkflow.configureThreads(config.threads)
        let r = evaluate(model, on: data.test, normalization: config.training.normalization)
        return EvalResult(
            testAccuracy: r.accuracy, testLoss: r.loss, samples: data.test.count, weights: weights)
    }
}
