// The seed quantiser and its variants (rounding, per channel, clipped ranges), SQNR and levels used.
import Tensors
import IntegerRuntime

/// How a scaled value becomes an integer.
public enum Rounding: String, CaseIterable, Sendable {
    /// Round half away from zero (C's `lround`; the default).
    case nearest
    /// Round half to even (NumPy's `np.round`, IEEE's default).
    case nearestEven = "nearest_even"
    /// Truncate toward zero: the literal "integer(value·qf)", biased by half a step toward zero.
    case truncate
    /// GPTQ: with the layer's calibration inputs, each weight rounds the way that keeps the
    /// layer's outputs closest (GPTQ.swift). Where no inputs are at hand (fake quantisation in
    /// training, statistics) it is round half away from zero.
    case gptq

    @inline(__always)
    public func apply(_ x: Float) -> Float {
        switch self {
        case .nearest, .gptq: x.rounded(.toNearestOrAwayFromZero)
        case .nearestEven: x.rounded(.toNearestOrEven)
        case .truncate: x.rounded(.towardZero)
        }
    }
}

/// Integer weights with the factor that maps them back: `w ≈ q / factor`.
public struct QuantizedTensor: Equatable, Sendable {
    public var bits: Int
    public var shape: [Int]
    public var values: [Int32]
    /// `qf` per channel (one entry when per tensor): `q = round(w·qf)`.
    public var factors: [Float]

    public var channels: Int { factors.count }
    /// 2^(bits−1) − 1: the grid is −qmax…qmax.
    public var qmaxValue: Int { BitWidth.qmax(bits) }

    /// `q / qf`, the weights the device effectively uses.
    public func dequantized() -> [Float] {
        let size = values.count / max(1, factors.count)
        return values.enumerated().map { i, q in Float(q) / factors[i / size] }
    }
}

/// The seed quantiser, symmetric and max-abs:
///
///     qmax = 2^(b−1) − 1,   qf = qmax / max|W|,   q = clamp(round(w·qf), −qmax, qmax)
///
/// computed in Float32 in exactly that order (`qf` first, then `w·qf`), so NumPy's
/// `np.round(w * np.float32(qmax) / np.abs(w).max())`-style references agree bit for bit when they
/// evaluate `qf` first. Per tensor, or per output channel (rows of the first axis). A `clip` below
/// max|W| sets the range instead (percentile, MSE, ACIQ); values beyond it saturate.
public struct WeightQuantizer: Equatable, Sendable {
    public var bits: Int
    public var rounding: Rounding
    public var perChannel: Bool

    public init(bits: Int, rounding: Rounding = .nearest, perChannel: Bool = false) {
        precondition(BitWidth.allowed.contains(bits), "weight bit width must be \(BitWidth.allowedText)")
        self.bits = bits; self.rounding = rounding; self.perChannel = perChannel
    }

    public var qmax: Int { BitWidth.qmax(bits) }

    /// The grid level of a weight already multiplied by its factor: rounded and clamped to
    /// ±qmax, or its sign (+1 at 0) on the binary grid of one bit. The one rule every quantiser
    /// (this one, GPTQ) puts a weight on the grid with.
    @inline(__always)
    public func level(_ scaled: Float) -> Float {
        if bits == 1 { return scaled < 0 ? -1 : 1 }
        let lim = Float(qmax)
        return min(max(rounding.apply(scaled), -lim), lim)
    }

    /// `shape[0]` is the output-channel axis for per-channel quantisation.
    public func quantize(_ w: [Float], shape: [Int], clip: [Float]? = nil) -> QuantizedTensor {
        if bits == 1 { return binary(w, shape: shape) }
        let channels = perChannel ? max(1, shape.first ?? 1) : 1
        let size = w.count / channels
        var factors: [Float] = []
        var q = [Int32](repeating: 0, count: w.count)
        let lim = Float(qmax)
        for c in 0..<channels {
            let slice = w[(c * size)..<((c + 1) * size)]
            let range = clip?[c] ?? slice.reduce(0) { max($0, abs($1)) }
            // A zero (or subnormal) range has no finite factor: such weights are all zero on the grid.
            let qf: Float = range > 0 && (lim / range).isFinite ? lim / range : 1
            factors.append(qf)
            for i in slice.indices { q[i] = Int32(level(w[i] * qf)) }
        }
        return QuantizedTensor(bits: bits, shape: shape, values: q, factors: factors)
    }
}

extension WeightQuantizer {
    /// One bit: q = sign(w) ∈ {−1, +1} (+1 at 0) with the scale α = mean|w| of each group, the α
    /// that minimises Σ(w − α·sign w)² (XNOR-Net): qf = 1/α. No range method applies. A group of
    /// zeros stays 0 (factor 1), exact, as at every other width.
    func binary(_ w: [Float], shape: [Int]) -> QuantizedTensor {
        let channels = perChannel ? max(1, shape.first ?? 1) : 1, size = w.count / channels
        var factors: [Float] = [], q = [Int32](repeating: 0, count: w.count)
        for c in 0..<channels {
            let group = (c * size)..<((c + 1) * size)
            let mean = w[group].reduce(0.0) { $0 + Double(abs($1)) } / Double(max(1, size))
            let qf = Float(1 / mean)
            guard mean > 0, qf.isFinite, qf > 0 else { factors.append(1); continue }
            factors.append(qf)
            for i in group { q[i] = Int32(level(w[i])) }
        }
        return QuantizedTensor(bits: 1, shape: shape, values: q, factors: factors)
    }

    /// Quantises with the range of each group (the tensor, or each output channel) set by `method`.
    public func quantize(_ w: [Float], shape: [Int], range method: RangeMethod) -> QuantizedTensor {
        let groups = perChannel ? max(1, shape.first ?? 1) : 1, size = w.count / groups
        let clips = (0..<groups).map {
            RangeSetting.clip(Array(w[($0 * size)..<(($0 + 1) * size)]), bits: bits, method: method)
        }
        return quantize(w, shape: shape, clip: clips)
    }
}

/// Signal-to-quantisation-noise ratio in dB: `10·log10(Σ w² / Σ (w − ŵ)²)` (∞ when exact).
public func sqnr(_ original: [Float], _ approximation: [Float]) -> Double {
    var signal = 0.0, noise = 0.0
    for (a, b) in zip(original, approximation) {
        signal += Double(a) * Double(a)
        noise += (Double(a) - Double(b)) * (Double(a) - Double(b))
    }
    if noise == 0 { return .infinity }
    return 10 * log10(signal / noise)
}

/// How many distinct integer levels the quantised weights actually use: a table over the grid
/// −qmax…qmax (at most 65,535 entries), not a hash set — it runs every epoch for every shaped layer.
public func levelsUsed(_ q: QuantizedTensor) -> Int {
    let qmax = q.qmaxValue
    var seen = [Bool](repeating: false, count: 2 * qmax + 1), count = 0
    for v in q.values {
        let i = Int(v) + qmax
        guard i >= 0 && i <= 2 * qmax else { return Set(q.values).count }  // a value off the grid
        if !seen[i] { seen[i] = true; count += 1 }
    }
    return count
}

@inline(__always) func log10(_ x: Double) -> Double { _log(x) / _log(10) }

/// What the seed quantiser (max-abs, per tensor, at `bits`) makes of a set of weights: the numbers
/// `qshape stats`, the run logs and the reports give beside the moments.
public struct SeedQuantization: Equatable, Sendable {
    public var bits: Int
    /// SQNR in dB (999 when exact).
    public var sqnrDB: Double
    public var levelsUsed: Int
    public var levelsAvailable: Int

    public init(_ w: [Float], bits: Int) {
        let q = WeightQuantizer(bits: bits).quantize(w, shape: [w.count])
        let db = sqnr(w, q.dequantized())
        self.bits = bits
        sqnrDB = db.isFinite ? db : 999
        levelsUsed = Quantization.levelsUsed(q)
        levelsAvailable = 2 * q.qmaxValue + 1
    }
}
