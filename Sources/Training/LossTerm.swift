// The training loop's extension point for terms added to the loss (the shaping penalties).
import NeuralNet

/// Something that adds terms to the loss whose values depend on the weights alone (the shaping
/// penalties). The trainer calls it before back-propagation, its loops possibly shared with another
/// thread (`BlockSharing`): it must read only the weights and write only its own gradients.
public protocol LossTerm: AnyObject {
    /// Adds ∂penalty/∂w to the gradients of `model` and returns each term's value, weighted.
    /// `epoch` is fractional progress, for warm-up schedules. The gradients of `setsGradients`
    /// it writes instead, whatever they held (0 where it has nothing to add), with their
    /// `gradientDecay`: a part c·w of the gradient it leaves for the optimiser (empty for none).
    func addGradients(model: Sequential, epoch: Double) -> [String: Double]
    /// The parameters whose gradients `addGradients` writes rather than adds to: the trainer
    /// does not zero them first (a pass over them saved). Empty by default.
    var setsGradients: [Parameter] { get }
    /// Statistics to log for each affected layer at the end of an epoch.
    func layerStatistics(model: Sequential) -> [String: [String: Double]]
    /// What the term carries from step to step, by name (checkpoints; empty when stateless).
    var savedState: [String: [Float]] { get }
    /// Continues from `savedState`; false (nothing changed) when it does not fit.
    func restore(_ state: [String: [Float]]) -> Bool
}

extension LossTerm {
    public var setsGradients: [Parameter] { [] }
    public var savedState: [String: [Float]] { [:] }
    public func restore(_ state: [String: [Float]]) -> Bool { state.isEmpty }
}
