// What a conversion is given (QuantizeOptions) and what it returns (the integer model, the folded
// float model and each layer's numbers), and how it fails.
import Tensors
import NeuralNet
import IntegerRuntime

/// Everything that decides how a float model becomes integers.
public struct QuantizeOptions: Equatable, Sendable {
    public enum ScaleMode: String, CaseIterable, Sendable {
        /// multiplier + shift (gemmlowp / TFLite / CMSIS-NN s8)
        case fixedPoint = "fixed_point"
        /// a pure right shift (CMSIS-NN q7/q15, NNoM)
        case powerOfTwo = "power_of_two"
    }
    public var weightBits = 8
    public var activationBits = 8
    public var rounding: Rounding = .nearest
    public var perChannel = false
    public var scale: ScaleMode = .fixedPoint
    public var weightRange: RangeMethod = .max
    public var activationRange: RangeMethod = .max
    /// Allow a layer whose worst case does not fit a 32-bit accumulator to use 64 bits.
    public var allowInt64Accumulator = false
    /// Data-free cross-layer equalisation before quantising.
    public var equalize = false
    /// Correct each layer's bias for the mean output error its weight quantisation causes on the
    /// calibration data.
    public var biasCorrection = false
    /// Calibrate the activation grids on the network with its weights already quantised (as the
    /// device runs it) instead of the float network: what a QAT-trained model needs.
    public var calibrateQuantized = false
    /// Per-layer weight widths, by the layer's index in the model's layer list; the others get
    /// `weightBits` (mixed precision: `quantize.bits: {default: 4, 0: 8}`).
    public var layerWeightBits: [Int: Int] = [:]
    /// Per-layer activation widths (8 or 16) of a conv/dense output, by layer index as above.
    public var layerActivationBits: [Int: Int] = [:]
    public init() {}

    /// The options as they apply to the conv/dense at `layer` of the model's layer list: its own
    /// weight and activation widths in `weightBits` and `activationBits`.
    public func at(layer: Int) -> QuantizeOptions {
        var o = self
        o.weightBits = layerWeightBits[layer] ?? weightBits
        o.activationBits = layerActivationBits[layer] ?? activationBits
        return o
    }
}

/// A conversion the options cannot express safely (the message names the layer).
public struct ConversionError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One conv/dense of the folded network with what the conversion chose for it.
public struct ConvertedLayer: Sendable {
    /// State-dict name of the weight, e.g. "3.weight".
    public var name: String
    /// Index of the float layer whose output this integer layer produces (after a fused activation).
    public var outputLayer: Int
    public var inputScale: Double
    /// Per output channel (one value when per tensor).
    public var weightScales: [Double]
    public var outputScale: Double
    public var outMin: Int64, outMax: Int64
    public var accumulatorBitsNeeded: Int
    public var accumulatorBits: Int
    public var multiplier: [Int64], shift: [Int64]
    public var weightSQNR: Double
    public var levelsUsed: Int
    public var weightBits: Int
}

/// The result of converting: the integer model, and the float model folded (BatchNorm into the
/// preceding layer, Dropout removed) with the information to simulate it.
public struct Conversion {
    public var integerModel: IntegerModel
    /// The folded float network (same outputs as the original in evaluation mode).
    public var folded: Sequential
    /// Float layer index (in `folded`) → the activation grid after it: scale and integer clamp.
    public var activationGrid: [Int: (scale: Double, lo: Int64, hi: Int64)]
    public var layers: [ConvertedLayer]
    /// For each integer layer, the index of the folded float layer whose output it reproduces.
    public var floatLayerOf: [Int]
    public var inputScale: Double
    /// Dequantised weights and biases for the simulation, by state-dict name in `folded`.
    public var dequantized: [String: Tensor]
}
