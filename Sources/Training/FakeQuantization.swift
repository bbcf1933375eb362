// Quantisation-aware training's view of the model, and evaluation with or without it.
import Tensors
import NeuralNet
import DataIO

/// Fake quantisation for quantisation-aware training. `quantizeWeights` swaps every weight for
/// its quantised-dequantised copy and returns the float masters; after backward `restore` puts
/// the masters back, so the optimiser updates them with the gradient taken at the quantised point
/// (the straight-through estimator). `activation` rounds activations to their grid in forward;
/// backward passes through it unchanged.
public struct FakeQuantization {
    public var quantize: ([Float], [Int]) -> [Float]
    public var activation: (Int, inout Tensor) -> Void

    public init(
        quantize: @escaping ([Float], [Int]) -> [Float], activation: @escaping (Int, inout Tensor) -> Void
    ) {
        self.quantize = quantize
        self.activation = activation
    }

    public func quantizeWeights(_ model: Sequential) -> [Tensor] {
        model.trainableParameters.map { p in
            let master = p.value
            if p.role == .weight {
                p.value = Tensor(shape: master.shape, data: quantize(master.data, master.shape))
            }
            return master
        }
    }

    public func restore(_ model: Sequential, _ masters: [Tensor]) {
        for (p, m) in zip(model.trainableParameters, masters) { p.value = m }
    }
}

/// Accuracy (percent) and mean loss of `model` on `data`, in evaluation mode.
public func evaluate(
    _ model: Sequential, on data: Dataset, indices: [Int]? = nil,
    normalization: Normalization, batchSize: Int = 256,
    fakeQuantization: FakeQuantization? = nil
) -> (accuracy: Double, loss: Double) {
    // With fake quantisation: the deployed model, quantised weights and activations.
    let masters = fakeQuantization?.quantizeWeights(model)
    defer { if let masters { fakeQuantization?.restore(model, masters) } }
    let all = indices ?? Array(0..<data.count)
    guard !all.isEmpty else { return (0, 0) }
    var correct = 0, lossSum = 0.0
    for start in stride(from: 0, to: all.count, by: batchSize) {
        let idx = all[start..<min(all.count, start + batchSize)]
        let (x, y) = data.batch(idx, normalization: normalization)
        let logits =
            fakeQuantization.map { model.forward(x, training: false, after: $0.activation) }
            ?? model.forward(x, training: false)
        let r = softmaxCrossEntropy(logits: logits, labels: y)
        correct += r.correct
        lossSum += r.loss * Double(idx.count)
    }
    return (100 * Double(correct) / Double(all.count), lossSum / Double(all.count))
}
