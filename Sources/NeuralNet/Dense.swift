// The fully connected layer: forward and backward as SGEMMs.
import Tensors

/// Fully connected layer (PyTorch `nn.Linear`): `y = x·Wᵀ + b`.
///
/// Shapes: input (N, in), weight (out, in), bias (out), output (N, out).
public final class Dense: Layer {
    public let inFeatures: Int, outFeatures: Int
    public let weight: Parameter
    public let bias: Parameter?
    private var input = Tensor(shape: [0])
    /// The products on the two workers (`gemmOnWorkers`) rather than on OpenBLAS's threads. Set in
    /// networks with convolutions: OpenBLAS's idle thread spins after each product it threads and
    /// took a fifth of two cores' time from the convolutions' workers (CNN step 18.9 → 16.6 ms,
    /// Zen 3, medians of six). In a dense-only network nothing runs beside that spinning, and
    /// OpenBLAS's own split (its packed panels shared by its threads, handed over by a thread
    /// that is already spinning) was faster (MLP step 1.9 against 2.2 ms).
    public var productsOnWorkers = false

    public var torchName: String { "Linear" }
    public var state: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// PyTorch's default initialisation: kaiming_uniform(a = √5) for the weight, which is
    /// U(±1/√in), and U(±1/√in) for the bias.
    public init(inFeatures: Int, outFeatures: Int, bias: Bool = true, rng: inout SeededRandom) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = (0..<(outFeatures * inFeatures)).map { _ in rng.uniform(-bound, bound) }
        weight = Parameter("weight", role: .weight, value: Tensor(shape: [outFeatures, inFeatures], data: w))
        self.bias =
            bias
            ? Parameter(
                "bias", role: .bias,
                value: Tensor(
                    shape: [outFeatures], data: (0..<outFeatures).map { _ in rng.uniform(-bound, bound) }))
            : nil
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 1 else {
            throw ModelError("dense expects a flat input (add a flatten layer first), got shape \(input)")
        }
        guard input[0] == inFeatures else {
            throw ModelError(
                "dense expects \(inFeatures) input features, the previous layer gives \(input[0])")
        }
        return [outFeatures]
    }

    public func forwardMACs(input: [Int]) -> Int { inFeatures * outFeatures }

    /// y (N, out) = x (N, in) · Wᵀ (in, out) + b
    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        let n = x.count / inFeatures
        input = x
        // Every value written: the bias rows then C += x·Wᵀ, or C = x·Wᵀ (BLAS reads no C at β = 0).
        return Tensor(shape: [n, outFeatures]) { yp in
            if let b = bias {
                b.value.withUnsafeBufferPointer { bp in
                    for i in 0..<n {
                        (yp.baseAddress! + i * outFeatures).update(from: bp.baseAddress!, count: outFeatures)
                    }
                }
            }
            x.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    gemmOnWorkers(
                        transB: true, m: n, n: outFeatures, k: inFeatures,
                        a: xp.baseAddress!, lda: inFeatures, b: wp.baseAddress!, ldb: inFeatures,
                        beta: bias == nil ? 0 : 1, c: yp.baseAddress!, ldc: outFeatures,
                        split: productsOnWorkers)
                }
            }
        }
    }

    /// dW += dYᵀ·x,  db += Σₙ dY,  dX = dY·W
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        let n = dOut.count / outFeatures
        dOut.withUnsafeBufferPointer { dp in
            input.withUnsafeBufferPointer { xp in
                weight.grad.withUnsafeMutableBufferPointer { gp in
                    gemmOnWorkers(
                        transA: true, m: outFeatures, n: inFeatures, k: n,
                        a: dp.baseAddress!, lda: outFeatures, b: xp.baseAddress!, ldb: inFeatures,
                        beta: 1, c: gp.baseAddress!, ldc: inFeatures, split: productsOnWorkers)
                }
            }
            bias?.grad.withUnsafeMutableBufferPointer { gb in
                for i in 0..<n { for j in 0..<outFeatures { gb[j] += dp[i * outFeatures + j] } }
            }
        }
        guard needInputGradient else { return nil }
        let dx = Tensor(shape: [n, inFeatures]) { xp in
            dOut.withUnsafeBufferPointer { dp in
                weight.value.withUnsafeBufferPointer { wp in
                    gemmOnWorkers(
                        m: n, n: inFeatures, k: outFeatures,
                        a: dp.baseAddress!, lda: outFeatures, b: wp.baseAddress!, ldb: inFeatures,
                        c: xp.baseAddress!, ldc: inFeatures, split: productsOnWorkers)
                }
            }
        }
        return dx.reshaped(input.shape)
    }
}
