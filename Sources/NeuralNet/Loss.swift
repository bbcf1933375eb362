// Softmax cross-entropy: the loss, its gradient and the correct count of a batch.
import Tensors

/// Softmax cross-entropy averaged over the batch (PyTorch `nn.CrossEntropyLoss`):
///
///     L = −(1/N) Σₙ log softmax(zₙ)[yₙ],   ∂L/∂zₙ = (softmax(zₙ) − onehot(yₙ)) / N
///
/// Stable: each row subtracts its maximum before `exp`. Returns the loss (accumulated in
/// Double), the gradient with respect to the logits, and the number of correct argmax predictions.
public func softmaxCrossEntropy(
    logits: Tensor, labels: [Int32]
) -> (loss: Double, dLogits: Tensor, correct: Int) {
    let n = labels.count, k = logits.count / max(1, n)
    precondition(logits.count == n * k, "logits \(logits.shape) do not match \(n) labels")
    var d = Tensor(shape: logits.shape)
    var total = 0.0, correct = 0
    logits.withUnsafeBufferPointer { zp in
        d.withUnsafeMutableBufferPointer { dp in
            for i in 0..<n {
                let row = zp.baseAddress! + i * k, drow = dp.baseAddress! + i * k
                var mx = row[0], arg = 0
                for j in 1..<k where row[j] > mx { mx = row[j]; arg = j }
                var sum: Float = 0
                for j in 0..<k { let e = _expf(row[j] - mx); drow[j] = e; sum += e }
                let label = Int(labels[i])
                total += Double(_logf(sum)) - Double(row[label] - mx)
                let invSum = 1 / sum, invN = 1 / Float(n)
                for j in 0..<k { drow[j] = drow[j] * invSum * invN }
                drow[label] -= invN
                if arg == label { correct += 1 }
            }
        }
    }
    return (total / Double(max(1, n)), d, correct)
}

/// Index of the largest logit in each row (the first on ties).
public func argmaxRows(_ logits: Tensor) -> [Int] {
    let n = logits.shape[0], k = logits.count / max(1, n)
    return (0..<n).map { i in
        var best = 0
        for j in 1..<k where logits.data[i * k + j] > logits.data[i * k + best] { best = j }
        return best
    }
}
