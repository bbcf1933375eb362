// ReLU, ReLU6, flatten and dropout: forward and backward.
import Tensors

/// `y = min(max(x, 0), cap)`: ReLU with `cap = ∞`, ReLU6 with `cap = 6`.
/// Backward passes dY where `0 < x < cap` and stops it elsewhere (PyTorch's convention at the kinks).
public final class ClampedReLU: Layer {
    public let cap: Float
    private var input = Tensor(shape: [0])

    public var torchName: String { cap == .infinity ? "ReLU" : "ReLU6" }

    public init(cap: Float = .infinity) { self.cap = cap }
    public static func relu() -> ClampedReLU { ClampedReLU() }
    public static func relu6() -> ClampedReLU { ClampedReLU(cap: 6) }

    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        input = x
        let cap = self.cap
        return x.withUnsafeBufferPointer { xp in
            Tensor(shape: x.shape) { y in
                splitInTwo(y.count) { part in for i in part { y[i] = min(max(xp[i], 0), cap) } }
            }
        }
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        let cap = self.cap
        return input.withUnsafeBufferPointer { xp in
            dOut.withUnsafeBufferPointer { dp in
                Tensor(shape: dOut.shape) { dx in
                    splitInTwo(dx.count) { part in
                        for i in part { dx[i] = xp[i] > 0 && xp[i] < cap ? dp[i] : 0 }
                    }
                }
            }
        }
    }
}

/// (N, C, H, W) → (N, C·H·W) in C, H, W order, as PyTorch's `nn.Flatten`.
public final class Flatten: Layer {
    private var inputShape: [Int] = []
    public var torchName: String { "Flatten" }
    public init() {}

    public func outputShape(for input: [Int]) throws -> [Int] { [input.reduce(1, *)] }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        inputShape = x.shape
        return x.reshaped([x.shape[0], x.count / max(1, x.shape[0])])
    }

    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        needInputGradient ? dOut.reshaped(inputShape) : nil
    }
}

/// Inverted dropout (PyTorch `nn.Dropout`): in training each value is zeroed with probability p
/// and the survivors scaled by 1/(1−p); in evaluation it is the identity.
public final class Dropout: Layer {
    public let p: Float
    private var rng: SeededRandom
    private var mask: [Float] = []

    public var torchName: String { "Dropout" }

    public init(p: Float, seed: UInt64) {
        self.p = p
        self.rng = SeededRandom(seed: seed)
    }

    public func outputShape(for input: [Int]) throws -> [Int] { input }

    /// The mask generator's state (checkpoints).
    public var randomState: SeededRandom {
        get { rng }
        set { rng = newValue }
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        guard training, p > 0 else { mask = []; return x }
        let keep = 1 - p, scale = 1 / keep
        if mask.count != x.count { mask = [Float](repeating: 0, count: x.count) }
        for i in 0..<mask.count { mask[i] = rng.nextUnitFloat() < keep ? scale : 0 }
        var y = x
        y.withUnsafeMutableBufferPointer { yp in
            mask.withUnsafeBufferPointer { mp in for i in 0..<yp.count { yp[i] *= mp[i] } }
        }
        return y
    }

    /// dX = dY · mask
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        guard !mask.isEmpty else { return dOut }
        var dx = dOut
        dx.withUnsafeMutableBufferPointer { dp in
            mask.withUnsafeBufferPointer { mp in for i in 0..<dp.count { dp[i] *= mp[i] } }
        }
        return dx
    }
}
