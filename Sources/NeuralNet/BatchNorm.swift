// Batch normalisation (BatchNorm1d/2d): forward in training and evaluation, and backward.
import Tensors

/// Batch normalisation over the channel axis (PyTorch `nn.BatchNorm1d` on (N, C) and
/// `nn.BatchNorm2d` on (N, C, H, W)). Viewed as (N, C, S) with S = H·W (or 1):
///
///     μ_c, σ²_c = mean and biased variance over the N·S values of channel c (training)
///     x̂ = (x − μ_c) / √(σ²_c + ε),   y = γ_c·x̂ + β_c
///     running ← (1 − momentum)·running + momentum·batch   (variance unbiased: ·M/(M−1))
///
/// In evaluation the running statistics replace the batch ones.
public final class BatchNorm: Layer {
    public let channels: Int, spatial: Bool
    public let eps: Float, momentum: Float
    public let gamma, beta, runningMean, runningVar, batchesTracked: Parameter
    private var xhat: [Float] = []
    private var invStd: [Float] = []
    private var trainingForward = false
    private var inputShape: [Int] = []

    public var torchName: String { spatial ? "BatchNorm2d" : "BatchNorm1d" }
    public var state: [Parameter] { [gamma, beta, runningMean, runningVar, batchesTracked] }

    public init(channels: Int, spatial: Bool, eps: Float = 1e-5, momentum: Float = 0.1) {
        self.channels = channels; self.spatial = spatial; self.eps = eps; self.momentum = momentum
        gamma = Parameter("weight", role: .bias, value: Tensor(shape: [channels], repeating: 1))
        beta = Parameter("bias", role: .bias, value: Tensor(shape: [channels]))
        runningMean = Parameter("running_mean", role: .buffer, value: Tensor(shape: [channels]))
        runningVar = Parameter("running_var", role: .buffer, value: Tensor(shape: [channels], repeating: 1))
        batchesTracked = Parameter("num_batches_tracked", role: .counter, value: Tensor(shape: []))
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        let name = spatial ? "batchnorm2d" : "batchnorm1d"
        guard input.count == (spatial ? 3 : 1) else {
            throw ModelError(
                "\(name) expects a \(spatial ? "(C, H, W)" : "flat (C)") input, got shape \(input)")
        }
        guard input[0] == channels else {
            throw ModelError("\(name) has \(channels) channels, the previous layer gives \(input[0])")
        }
        return input
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        inputShape = x.shape
        trainingForward = training
        let n = x.shape[0], s = x.count / (n * channels), m = n * s
        if xhat.count != x.count { xhat = [Float](repeating: 0, count: x.count) }
        invStd = [Float](repeating: 0, count: channels)
        var y = Tensor(shape: x.shape)
        for c in 0..<channels {
            var mean: Float, variance: Float
            if training {
                var sum = 0.0, sq = 0.0
                for i in 0..<n { for j in 0..<s { sum += Double(x.data[(i * channels + c) * s + j]) } }
                let mu = sum / Double(m)
                for i in 0..<n {
                    for j in 0..<s {
                        let d = Double(x.data[(i * channels + c) * s + j]) - mu; sq += d * d
                    }
                }
                mean = Float(mu); variance = Float(sq / Double(m))
                let unbiased = m > 1 ? Float(sq / Double(m - 1)) : variance
                runningMean.value.data[c] = (1 - momentum) * runningMean.value.data[c] + momentum * mean
                runningVar.value.data[c] = (1 - momentum) * runningVar.value.data[c] + momentum * unbiased
            } else {
                mean = runningMean.value.data[c]; variance = runningVar.value.data[c]
            }
            let inv = 1 / (variance + eps).squareRoot()
            invStd[c] = inv
            let g = gamma.value.data[c], b = beta.value.data[c]
            for i in 0..<n {
                for j in 0..<s {
                    let k = (i * channels + c) * s + j
                    let h = (x.data[k] - mean) * inv
                    xhat[k] = h
                    y.data[k] = g * h + b
                }
            }
        }
        if training { batchesTracked.value.data[0] += 1 }
        return y
    }

    /// dβ = Σ dY,  dγ = Σ dY·x̂,
    /// dX = γ/(M·σ) · (M·dY − Σ dY − x̂·Σ dY·x̂)   (training; evaluation: dX = dY·γ/σ)
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        let n = inputShape[0], s = dOut.count / (n * channels), m = Float(n * s)
        var dx = Tensor(shape: inputShape)
        for c in 0..<channels {
            var sumD: Float = 0, sumDX: Float = 0
            for i in 0..<n {
                for j in 0..<s {
                    let k = (i * channels + c) * s + j
                    sumD += dOut.data[k]; sumDX += dOut.data[k] * xhat[k]
                }
            }
            beta.grad.data[c] += sumD
            gamma.grad.data[c] += sumDX
            guard needInputGradient else { continue }
            let g = gamma.value.data[c], inv = invStd[c]
            for i in 0..<n {
                for j in 0..<s {
                    let k = (i * channels + c) * s + j
                    dx.data[k] =
                        trainingForward
                        ? g * inv / m * (m * dOut.data[k] - sumD - xhat[k] * sumDX)
                        : g * inv * dOut.data[k]
                }
            }
        }
        return needInputGradient ? dx : nil
    }
}
