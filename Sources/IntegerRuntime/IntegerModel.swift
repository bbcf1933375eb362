// A converted network as the device holds it: integer layers with their weights, widths, biases
// and requantisation.
/// A converted network as the device holds it: integer weights, biases, multipliers and shifts.
/// Activations are integers with zero point 0: unsigned after a ReLU, signed otherwise.
public struct IntegerModel: Equatable, Sendable {
    public var inputShape: [Int]
    public var layers: [IntegerLayer]
    public init(inputShape: [Int], layers: [IntegerLayer]) {
        self.inputShape = inputShape; self.layers = layers
    }
}

/// Requantisation parameters of one output channel's accumulator (`multiplier · 2^−shift`).
public struct Requantization: Equatable, Sendable {
    public var multiplier: [Int64]
    public var shift: [Int64]
    /// Output clamp: the output type's range, tightened by a fused ReLU (lo = 0) or ReLU6.
    public var outMin: Int64
    public var outMax: Int64
    /// 32 or 64: the device's accumulator; values are clamped to its range before requantising.
    public var accumulatorBits: Int

    public init(multiplier: [Int64], shift: [Int64], outMin: Int64, outMax: Int64, accumulatorBits: Int) {
        self.multiplier = multiplier; self.shift = shift
        self.outMin = outMin; self.outMax = outMax; self.accumulatorBits = accumulatorBits
    }

    var accumulatorLimit: Int64 {
        accumulatorBits >= 64 ? Int64.max / 2 : (1 << Int64(accumulatorBits - 1)) - 1
    }

    /// The multipliers as Int32 when the clamped accumulator and every multiplier fit in 32 bits
    /// (so `requantize` in 32-bit operands gives the same values); nil otherwise.
    var narrowMultipliers: [Int32]? {
        let fits = Int64(Int32.min)...Int64(Int32.max)
        guard fits.contains(accumulatorLimit), multiplier.allSatisfy(fits.contains) else { return nil }
        return multiplier.map { Int32($0) }
    }
}

public struct IntegerDense: Equatable, Sendable {
    public var inFeatures: Int, outFeatures: Int
    /// (out, in), each within ±qmax of `weightBits`.
    public var weight: [Int16]
    /// The width the weights were quantised to (what the device stores them in).
    public var weightBits: BitWidth
    /// (out), at scale s_in·s_w.
    public var bias: [Int64]
    public var requant: Requantization
    public init(
        inFeatures: Int, outFeatures: Int, weight: [Int16], weightBits: BitWidth, bias: [Int64],
        requant: Requantization
    ) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures
        self.weight = weight; self.weightBits = weightBits; self.bias = bias; self.requant = requant
    }
}

public struct IntegerConv: Equatable, Sendable {
    public var inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    /// (out, in, k, k), each within ±qmax of `weightBits`.
    public var weight: [Int16]
    public var weightBits: BitWidth
    public var bias: [Int64]
    public var requant: Requantization
    public init(
        inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int,
        weight: [Int16], weightBits: BitWidth, bias: [Int64], requant: Requantization
    ) {
        self.inChannels = inChannels; self.outChannels = outChannels; self.kernel = kernel
        self.stride = stride; self.padding = padding; self.weight = weight; self.weightBits = weightBits
        self.bias = bias; self.requant = requant
    }
}

public enum IntegerLayer: Equatable, Sendable {
    /// The weight width of a dense or conv layer (nil for the others).
    public var weightBits: BitWidth? {
        switch self {
        case .dense(let d): d.weightBits
        case .conv(let c): c.weightBits
        default: nil
        }
    }

    case dense(IntegerDense)
    case conv(IntegerConv)
    case maxPool(kernel: Int, stride: Int, padding: Int)
    case avgPool(kernel: Int, stride: Int)
    case globalAvgPool
    case flatten
    /// A standalone ReLU/ReLU6 (one not fused into the layer before it).
    case clamp(lo: Int64, hi: Int64)
}
