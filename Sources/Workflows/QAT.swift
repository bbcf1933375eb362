// Quantisation-aware fine-tuning: the trainer with the deployed quantiser in its forward pass.
import Config
import Foundation
import Tensors
import NeuralNet
import Training
import Quantization

/// Quantisation-aware fine-tuning: the same quantiser as deployment in the forward pass, the
/// straight-through estimator in the backward pass.
public enum QATWorkflow {
    public static func trainer(
        _ config: Config, _ q: QuantizeConfig, model: Sequential, data: DataSplit,
        lossTerms: [LossTerm]
    ) throws -> Trainer {
        var options = config.training
        options.epochs = q.qat.epochs
        options.optimizer.learningRate = q.qat.learningRate ?? config.training.optimizer.learningRate
        // A half cosine down to 0: large steps first to leave the float optimum for the grid's,
        // small ones last so the weights settle on one side of each rounding boundary.
        options.schedule = LearningRateSchedule()
        options.schedule.kind = .cosine
        options.seed = config.training.seed &+ 1
        var o = q.options
        o.weightBits = q.qatBits
        let quantizer = WeightQuantizer(bits: o.weightBits, rounding: o.rounding, perChannel: o.perChannel)
        let weightRange = o.weightRange
        let quantize: ([Float], [Int]) -> [Float] = { w, shape in
            quantizer.quantize(w, shape: shape, range: weightRange).dequantized()
        }
        var activation: (Int, inout Tensor) -> Void = { _, _ in }
        if q.qat.activations {
            // Activation grids from a calibration of the float model, moved to the unfolded indices.
            let norm = config.training.normalization
            let calibration = QuantizeWorkflow.calibrationBatches(
                data.train, count: q.calibrationBatches,
                batch: config.training.batchSize, norm)
            let c: Conversion
            do {
                c = try Converter.convert(
                    model, calibration: calibration, inputScale: Double(norm.scale / norm.std),
                    rawInputMax: 255, options: o)
            } catch let e as ConversionError {
                throw ConfigError(file: config.file, path: "quantize.qat", e.message)
            }
            let original = Converter.originalIndex(of: model)
            activation = c.activationFakeQuantizer { original[$0] }
        }
        let t = Trainer(model: model, options: options, trainingSetSize: data.train.count)
        t.lossTerms = lossTerms
        t.fakeQuantization = FakeQuantization(quantize: quantize, activation: activation)
        return t
    }
}
