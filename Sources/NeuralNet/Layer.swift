// The layer protocol: forward, backward and named state (weights, biases, running statistics).
import Tensors

/// One named tensor of a layer's state, as it appears in a PyTorch `state_dict`.
public final class Parameter {
    public enum Role: Sendable {
        /// A weight matrix or kernel: trained, and what shaping and quantisation act on.
        case weight
        /// A bias or BatchNorm affine shift/scale: trained.
        case bias
        /// A running statistic: updated in training mode, not by the optimiser.
        case buffer
        /// An integer counter (BatchNorm's `num_batches_tracked`), saved as I64.
        case counter
    }

    /// The name within its layer: `weight`, `bias`, `running_mean`, …
    public let name: String
    public let role: Role
    public var value: Tensor
    /// Gradient of the loss with respect to `value`; layers accumulate into it (`+=`).
    public var grad: Tensor
    /// A multiple of `value` not yet added to `grad`, one factor per group of equal consecutive
    /// slices (empty: none): the full gradient is `grad[j] + gradientDecay[j / groupSize]·value[j]`.
    /// A loss term whose gradient has such a part known only once its pass has ended (the relative
    /// quantisation error's) leaves it here; the optimiser adds it as it adds L2, saving a pass,
    /// and `resolveGradientDecay()` writes it into `grad` for any other reader.
    public var gradientDecay: [Float] = []

    public init(_ name: String, role: Role, value: Tensor) {
        self.name = name
        self.role = role
        self.value = value
        self.grad = Tensor(shape: value.shape)
    }

    public var isTrainable: Bool { role == .weight || role == .bias }

    /// Sets the whole gradient to zero: `grad` and the part left in `gradientDecay`.
    public func zeroGradient() {
        grad.zero()
        gradientDecay = []
    }

    /// Writes `gradientDecay` into `grad` (and empties it).
    public func resolveGradientDecay() {
        guard !gradientDecay.isEmpty else { return }
        let size = value.count / gradientDecay.count
        value.withUnsafeBufferPointer { w in
            grad.withUnsafeMutableBufferPointer { g in
                for j in 0..<g.count { g[j] += gradientDecay[j / size] * w[j] }
            }
        }
        gradientDecay = []
    }
}

/// A layer computes `forward` and, right after, the `backward` that undoes it.
///
/// `backward` receives ∂L/∂output for the batch given to the last `forward`, accumulates
/// ∂L/∂parameter into each parameter's `grad`, and returns ∂L/∂input when asked for it
/// (the first layer of a network never needs it).
public protocol Layer: AnyObject {
    /// The PyTorch module this layer corresponds to, e.g. `Linear`, `Conv2d`.
    var torchName: String { get }
    /// Everything the layer saves in a state dict, in PyTorch's order.
    var state: [Parameter] { get }
    /// The per-sample output shape for a per-sample input shape, or a reason it cannot apply.
    func outputShape(for input: [Int]) throws -> [Int]
    func forward(_ x: Tensor, training: Bool) -> Tensor
    func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor?
    /// Multiply–accumulates of one sample's forward pass (for throughput reporting).
    func forwardMACs(input: [Int]) -> Int
}

extension Layer {
    public var state: [Parameter] { [] }
    public func forwardMACs(input: [Int]) -> Int { 0 }
}

/// A shape or configuration that cannot build a network.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
