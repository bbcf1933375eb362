// `qshape advise`: which layers lose the accuracy, and the per-layer weight widths that give the
// most accuracy within a flash budget (or the least flash within an accuracy drop), verified on
// the integer engine.
import Config
import Foundation
import Tensors
import NeuralNet
import DataIO
import Quantization
import IntegerRuntime
import Shaping
import Reports

/// `qshape advise`: a sensitivity analysis per layer and bit width, the Pareto front of flash
/// against accuracy over per-layer widths, and a recommendation converted and run through the
/// integer engine on the full test set.
public enum AdviseWorkflow {
    public struct Options: Sendable {
        public var weights: String
        /// The widths each layer may take.
        public var widths = [8, 7, 6, 5, 4, 3, 2]
        /// Test images of the sensitivity analysis and the search (evenly spread over the set).
        public var images = 2000
        /// Maximise accuracy within this many bytes of weights.
        public var flashBudget: Int?
        /// Otherwise: the least flash whose accuracy is within this many points of the model with
        /// float weights (and quantised activations).
        public var maxDrop = 0.5
        /// Front points evaluated as a whole (beyond the additive prediction).
        public var candidates = 24
        /// Fine-tuning steps of each shaping probe (0: no probe).
        public var probeSteps = 0
        /// The penalty weights λ the probe tries for each term.
        public var probeLambdas = [0.01, 0.1, 1]
        public init(weights: String) { self.weights = weights }
    }

    public typealias Sensitivity = Advice.Sensitivity
    public typealias Layer = Advice.Layer
    public typealias Point = Advice.Point
    public typealias Verified = Advice.Verified
    public typealias Result = Advice
    public typealias Probe = Advice.Probe
    public typealias ShapingAdvice = Advice.ShapingAdvice
}
