import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
import Quantization

/// `qshape quantize`: float accuracy against quantised accuracy, by bit width.
public enum QuantizeWorkflow {
    public struct LayerRow: Codable, Sendable {
        public var name: String
        public var weightSQNR: Double
        public var levelsUsed: Int
        enum CodingKeys: String, CodingKey {
            case name
            case weightSQNR = "weight_sqnr_db", levelsUsed = "levels_used"
        }
    }

    public struct BitsResult: Codable, Sendable {
        public var bits: Int
        public var simulatedAccuracy: Double
        public var layers: [LayerRow]
        enum CodingKeys: String, CodingKey {
            case bits, layers
            case simulatedAccuracy = "simulated_accuracy"
        }
    }

    public struct Result: Codable, Sendable {
        public var weights: String
        public var weightsOnly: Bool
        public var floatAccuracy: Double
        public var results: [BitsResult]
        enum CodingKeys: String, CodingKey {
            case weights, results
            case weightsOnly = "weights_only", floatAccuracy = "float_accuracy"
        }
    }

    /// Weights-only quantisation: every weight tensor through `quantizer`, everything else float.
    /// Returns per layer the SQNR and levels used; the model's weights are replaced.
    static func quantizeWeights(_ model: Sequential, _ quantizer: WeightQuantizer) -> [LayerRow] {
        model.namedState.filter { $0.parameter.role == .weight }.map { name, p in
            let original = p.value.data
            let q = quantizer.quantize(original, shape: p.value.shape)
            let deq = q.dequantized()
            p.value = Tensor(shape: p.value.shape, data: deq)
            let db = sqnr(original, deq)
            return LayerRow(name: name, weightSQNR: db.isFinite ? db : 999, levelsUsed: levelsUsed(q))
        }
    }

    public static func weightsOnly(_ config: Config, weights: String, bits: [Int],
                                   rounding: Rounding = .nearest, perChannel: Bool = false) throws -> Result {
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(weights, into: model)
        TrainWorkflow.configureThreads(config.threads)
        let original = model.namedState.map { $0.parameter.value }
        let float = evaluate(model, on: data.test, normalization: config.training.normalization)
        var results: [BitsResult] = []
        for b in bits {
            let layers = quantizeWeights(model, WeightQuantizer(bits: b, rounding: rounding, perChannel: perChannel))
            let acc = evaluate(model, on: data.test, normalization: config.training.normalization).accuracy
            results.append(BitsResult(bits: b, simulatedAccuracy: acc, layers: layers))
            for (p, v) in zip(model.namedState.map(\.parameter), original) { p.value = v }
        }
        return Result(weights: weights, weightsOnly: true, floatAccuracy: float.accuracy, results: results)
    }
}
