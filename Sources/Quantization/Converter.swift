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
    public init() {}
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

public enum Converter {
    /// Folds BatchNorm into the conv/dense before it and drops Dropout:
    ///     W' = W·γ/√(σ²+ε) (per output channel),  b' = (b − μ)·γ/√(σ²+ε) + β
    public static func fold(_ model: Sequential) throws -> Sequential {
        var specs: [LayerSpec] = []
        var values: [(weight: [Float], bias: [Float])] = []
        for (i, (spec, layer)) in zip(model.specs, model.layers).enumerated() {
            switch spec {
            case .dropout:
                continue
            case .batchnorm1d, .batchnorm2d:
                guard let bn = layer as? BatchNorm, let last = specs.last, let (w, b) = values.last,
                    !w.isEmpty,
                    {
                        if case .dense = last { return true }; if case .conv2d = last { return true };
                        return false
                    }()
                else {
                    throw ConversionError(
                        "layer \(i) (\(spec.typeName)) follows no conv2d or dense, so it cannot be folded")
                }
                let rows = bn.channels, size = w.count / rows
                var nw = w, nb = b.isEmpty ? [Float](repeating: 0, count: rows) : b
                for c in 0..<rows {
                    let g = bn.gamma.value.data[c] / (bn.runningVar.value.data[c] + bn.eps).squareRoot()
                    for j in 0..<size { nw[c * size + j] *= g }
                    nb[c] = (nb[c] - bn.runningMean.value.data[c]) * g + bn.beta.value.data[c]
                }
                values[values.count - 1] = (nw, nb)
                specs[specs.count - 1] = withBias(last)
            case .dense, .conv2d:
                let w = layer.state.first { $0.role == .weight }!.value.data
                let b = layer.state.first { $0.name == "bias" }?.value.data ?? []
                specs.append(spec)
                values.append((w, b))
            default:
                specs.append(spec)
                values.append(([], []))
            }
        }
        let folded = try Sequential(specs: specs, inputShape: model.inputShape, seed: 0)
        for (layer, v) in zip(folded.layers, values) where !v.weight.isEmpty {
            for p in layer.state {
                if p.role == .weight { p.value = Tensor(shape: p.value.shape, data: v.weight) }
                if p.name == "bias" { p.value = Tensor(shape: p.value.shape, data: v.bias) }
            }
        }
        return folded
    }

    /// For each layer of `fold(model)`, the index in `model` of the last layer folded into it
    /// (a conv/dense followed by BatchNorm maps to the BatchNorm, whose output it reproduces).
    public static func originalIndex(of model: Sequential) -> [Int] {
        var map: [Int] = []
        for (i, spec) in model.specs.enumerated() {
            switch spec {
            case .dropout: continue
            case .batchnorm1d, .batchnorm2d: if !map.isEmpty { map[map.count - 1] = i }
            default: map.append(i)
            }
        }
        return map
    }

    private static func withBias(_ spec: LayerSpec) -> LayerSpec {
        switch spec {
        case let .dense(i, o, _): .dense(inFeatures: i, outFeatures: o, bias: true)
        case let .conv2d(i, o, k, s, p, _):
            .conv2d(inChannels: i, outChannels: o, kernel: k, stride: s, padding: p, bias: true)
        default: spec
        }
    }

    /// Converts a model. `calibration` are input batches (already scaled as the float model expects,
    /// i.e. raw · inputScale); `inputScale` maps the raw integer input to the float input.
    public static func convert(
        _ model: Sequential, calibration: [Tensor], inputScale: Double, rawInputMax: Int64,
        options o: QuantizeOptions
    ) throws -> Conversion {
        let folded = try fold(model)
        if o.equalize { Equalization.apply(folded) }
        let n = folded.layers.count
        let (groupEnd, activation) = groups(folded)
        let samples = calibrationSamples(folded, calibration, at: Set(groupEnd.values))
        let inputs =
            o.biasCorrection ? layerInputs(folded, calibration.prefix(2), of: Set(groupEnd.keys)) : [:]
        let actSigned = BitWidth.qmax(o.activationBits)
        // Post-ReLU activations are unsigned: 0…255 at 8 bits; 0…32767 at 16 bits (they travel as int16).
        let actUnsigned = o.activationBits == 8 ? 255 : 32_767
        var layers: [IntegerLayer] = []
        var converted: [ConvertedLayer] = []
        var grid: [Int: (scale: Double, lo: Int64, hi: Int64)] = [:]
        var dequantized: [String: Tensor] = [:]
        var scale = inputScale, maxInput = rawInputMax
        var floatLayerOf: [Int] = []
        var i = 0
        while i < n {
            let spec = folded.specs[i], layer = folded.layers[i]
            switch spec {
            case .dense, .conv2d:
                let end = groupEnd[i]!, act = activation[i]
                let unsigned = act != nil
                let outQmax = unsigned ? actUnsigned : actSigned
                let clip = Double(
                    RangeSetting.clip(
                        samples[end] ?? [1], bits: o.activationBits, method: o.activationRange,
                        unsigned: unsigned))
                let outScale = clip / Double(outQmax)
                var hi = Int64(outQmax), lo = unsigned ? 0 : -Int64(outQmax)
                if act == .relu6 { hi = min(hi, Int64((6 / outScale).rounded())) }
                if let x = inputs[i] { correctBias(layer, inputs: x, options: o) }
                let (c, intLayer, deq) = try quantizeWeighted(
                    i, layer: layer, spec: spec, inputScale: scale, maxInput: maxInput,
                    outScale: outScale, lo: lo, hi: hi, end: end, options: o)
                converted.append(c)
                layers.append(intLayer)
                floatLayerOf.append(end)
                for (k, v) in deq { dequantized[k] = v }
                grid[end] = (outScale, lo, hi)
                scale = outScale
                maxInput = max(abs(lo), hi)
                i = end + 1
                continue
            case let .maxpool2d(k, s, p): layers.append(.maxPool(kernel: k, stride: s ?? k, padding: p))
            case let .avgpool2d(k, s): layers.append(.avgPool(kernel: k, stride: s ?? k))
            case .globalavgpool2d: layers.append(.globalAvgPool)
            case .flatten: layers.append(.flatten)
            case .relu, .relu6:
                var hi = maxInput
                if spec == .relu6 { hi = min(hi, Int64((6 / scale).rounded())) }
                layers.append(.clamp(lo: 0, hi: hi))
                grid[i] = (scale, 0, hi)
            default:
                throw ConversionError("layer \(i) (\(spec.typeName)) has no integer form")
            }
            floatLayerOf.append(i)
            i += 1
        }
        return Conversion(
            integerModel: IntegerModel(inputShape: folded.inputShape, layers: layers), folded: folded,
            activationGrid: grid, layers: converted, floatLayerOf: floatLayerOf, inputScale: inputScale,
            dequantized: dequantized)
    }

    /// The layer each conv/dense's output is taken after: itself, or the ReLU/ReLU6 that follows
    /// (then also that activation).
    static func groups(_ folded: Sequential) -> (end: [Int: Int], activation: [Int: LayerSpec]) {
        var groupEnd: [Int: Int] = [:], activation: [Int: LayerSpec] = [:]
        let n = folded.layers.count
        for i in 0..<n {
            switch folded.specs[i] {
            case .dense, .conv2d:
                if i + 1 < n, [.relu, .relu6].contains(folded.specs[i + 1]) {
                    groupEnd[i] = i + 1; activation[i] = folded.specs[i + 1]
                } else {
                    groupEnd[i] = i
                }
            default: break
            }
        }
        return (groupEnd, activation)
    }

    /// Calibration: every activation value at each group end, over the calibration batches.
    static func calibrationSamples(
        _ folded: Sequential, _ calibration: [Tensor], at ends: Set<Int>
    ) -> [Int: [Float]] {
        var samples: [Int: [Float]] = [:]
        for batch in calibration {
            _ = folded.forward(batch, training: false) { i, h in
                if ends.contains(i) { samples[i, default: []] += h.data }
            }
        }
        return samples
    }

    /// The inputs of the given layers on `batches` (bias correction).
    static func layerInputs(
        _ folded: Sequential, _ batches: ArraySlice<Tensor>, of layers: Set<Int>
    ) -> [Int: [Tensor]] {
        var inputs: [Int: [Tensor]] = [:]
        for batch in batches {
            var previous = batch
            _ = folded.forward(batch, training: false) { i, h in
                if layers.contains(i) { inputs[i, default: []].append(previous) }
                previous = h
            }
        }
        return inputs
    }

    /// Bias correction: b ← b + mean over the data of (W·x − W_q·x) per output channel, so the
    /// quantised layer's outputs have the float layer's mean (Nagel et al. 2019, empirical form).
    static func correctBias(_ layer: Layer, inputs: [Tensor], options o: QuantizeOptions) {
        guard let wp = layer.state.first(where: { $0.role == .weight }),
            let bp = layer.state.first(where: { $0.name == "bias" })
        else { return }
        let w = wp.value, rows = w.shape[0]
        let deq = WeightQuantizer(bits: o.weightBits, rounding: o.rounding, perChannel: o.perChannel)
            .quantize(w.data, shape: w.shape, range: o.weightRange).dequantized()
        var shift = [Double](repeating: 0, count: rows), count = 0
        for x in inputs {
            let exact = layer.forward(x, training: false)
            wp.value = Tensor(shape: w.shape, data: deq)
            let approx = layer.forward(x, training: false)
            wp.value = w
            let per = exact.count / (x.shape[0] * rows)
            for n in 0..<x.shape[0] {
                for c in 0..<rows {
                    for k in 0..<per {
                        let idx = (n * rows + c) * per + k
                        shift[c] += Double(exact.data[idx] - approx.data[idx])
                    }
                }
            }
            count += x.shape[0] * per
        }
        for c in 0..<rows { bp.value.data[c] += Float(shift[c] / Double(max(1, count))) }
    }

    /// Quantises one conv/dense: integer weights, bias at s_in·s_w, per-channel requantisation,
    /// and the accumulator it needs.
    static func quantizeWeighted(
        _ index: Int, layer: Layer, spec: LayerSpec, inputScale: Double, maxInput: Int64,
        outScale: Double, lo: Int64, hi: Int64, end: Int, options o: QuantizeOptions
    )
        throws -> (ConvertedLayer, IntegerLayer, [String: Tensor])
    {
        let wp = layer.state.first { $0.role == .weight }!
        let w = wp.value.data, shape = wp.value.shape, rows = shape[0], size = w.count / rows
        let bias = layer.state.first { $0.name == "bias" }?.value.data ?? [Float](repeating: 0, count: rows)
        let q = WeightQuantizer(bits: o.weightBits, rounding: o.rounding, perChannel: o.perChannel)
            .quantize(w, shape: shape, range: o.weightRange)
        // A tensor (or, per channel, a channel) whose weights are all zero has no grid of its own:
        // its scale is chosen so that the output multiplier is 1 and the bias is held in output steps.
        let groups = q.factors.count, groupSize = w.count / groups
        let weightScales = (0..<groups).map { c in
            w[(c * groupSize)..<((c + 1) * groupSize)].allSatisfy { $0 == 0 }
                ? outScale / inputScale : 1 / Double(q.factors[c])
        }
        let scaleOf = { (c: Int) in weightScales[o.perChannel ? c : 0] }
        // Bias at scale s_in·s_w, rounded half away from zero.
        let scaledBias = (0..<rows).map { c in (Double(bias[c]) / (inputScale * scaleOf(c))).rounded() }
        if let c = scaledBias.firstIndex(where: { !$0.isFinite || abs($0) >= 0x1p52 }) {
            throw ConversionError(
                "layer \(index) (\(spec.typeName)): bias \(bias[c]) of channel \(c) is \(scaledBias[c]) steps of its grid; the weights are too small (or the bias too large) to quantise"
            )
        }
        let qbias = scaledBias.map { Int64($0) }
        let name = "\(index).weight", layerName = "layer \(index) (\(spec.typeName))"
        let (needed, accBits) = try accumulator(
            layerName, bias: qbias, weights: q.values, maxInput: maxInput, options: o)
        // Multiplier precision: the product acc·M0 must fit 63 bits with its rounding term.
        let (mult, shifts) = try multipliers(
            layerName, rows: rows, scale: { inputScale * scaleOf($0) / outScale },
            bits: min(31, 62 - needed), options: o)
        let requant = Requantization(
            multiplier: mult, shift: shifts, outMin: lo, outMax: hi, accumulatorBits: accBits)
        let intLayer: IntegerLayer
        let weight = q.values.map { Int16($0) }, width = BitWidth(o.weightBits)!  // within ±qmax ≤ 32767
        switch spec {
        case let .conv2d(_, out, k, s, p, _):
            intLayer = .conv(
                IntegerConv(
                    inChannels: shape[1], outChannels: out, kernel: k, stride: s, padding: p,
                    weight: weight, weightBits: width, bias: qbias, requant: requant))
        default:
            intLayer = .dense(
                IntegerDense(
                    inFeatures: size, outFeatures: rows, weight: weight, weightBits: width, bias: qbias,
                    requant: requant))
        }
        let deqW = q.dequantized()
        let deqB = (0..<rows).map { Float(Double(qbias[$0]) * inputScale * scaleOf($0)) }
        let db = sqnr(w, deqW)
        let info = ConvertedLayer(
            name: name, outputLayer: end, inputScale: inputScale, weightScales: weightScales,
            outputScale: outScale, outMin: lo, outMax: hi, accumulatorBitsNeeded: needed,
            accumulatorBits: accBits, multiplier: mult, shift: shifts,
            weightSQNR: db.isFinite ? db : 999, levelsUsed: levelsUsed(q))
        return (
            info, intLayer,
            [name: Tensor(shape: shape, data: deqW), "\(index).bias": Tensor(shape: [rows], data: deqB)]
        )
    }

    /// The bits the worst case of an accumulator needs, |bias| + Σ|w_q|·max|x_q| over each output
    /// row, and the accumulator that holds it: 32 bits, or 64 when allowed (up to 48 needed).
    static func accumulator(
        _ layer: String, bias: [Int64], weights: [Int32], maxInput: Int64,
        options o: QuantizeOptions
    ) throws -> (needed: Int, bits: Int) {
        let rows = bias.count, size = weights.count / rows
        var worst: Int64 = 0
        for c in 0..<rows {
            var s = abs(bias[c])
            for j in 0..<size { s += Int64(abs(weights[c * size + j])) * maxInput }
            worst = max(worst, s)
        }
        let needed = bitsNeeded(worst)
        guard needed > 32 else { return (needed, 32) }
        guard o.allowInt64Accumulator else {
            throw ConversionError(
                "\(layer): the worst-case accumulator needs \(needed) bits (|acc| ≤ \(worst)), more than int32; lower quantize.activation_bits or quantize.bits, or set quantize.accumulator: int64"
            )
        }
        guard needed <= 48 else {
            throw ConversionError(
                "\(layer): the worst-case accumulator needs \(needed) bits, more than QShape's 48-bit limit for a 64-bit accumulator"
            )
        }
        return (needed, 64)
    }

    /// Each row's requantisation multiplier M = s_in·s_w/s_out as M0·2^(−shift).
    static func multipliers(
        _ layer: String, rows: Int, scale: (Int) -> Double, bits: Int,
        options o: QuantizeOptions
    ) throws -> (multiplier: [Int64], shift: [Int64]) {
        var mult: [Int64] = [], shifts: [Int64] = []
        for c in 0..<rows {
            let m = scale(c)
            guard m.isFinite, m > 0, m < 65_536 else {
                throw ConversionError(
                    "\(layer): the requantisation multiplier s_in·s_w/s_out is \(m), outside (0, 65536); the layer's weights or activations are out of range"
                )
            }
            let (m0, sh) = o.scale == .powerOfTwo ? powerOfTwo(m) : fixedPoint(m, bits: bits)
            mult.append(m0); shifts.append(sh)
        }
        return (mult, shifts)
    }

    /// M = M0·2^(−shift) with M0 in [2^(bits−1), 2^bits) (frexp, round, renormalise on overflow).
    public static func fixedPoint(_ m: Double, bits: Int) -> (Int64, Int64) {
        guard m > 0 else { return (0, 0) }
        var e = 0, f = m
        while f >= 1 { f /= 2; e += 1 }
        while f < 0.5 { f *= 2; e -= 1 }
        var m0 = Int64((f * Double(Int64(1) << Int64(bits))).rounded())
        var shift = Int64(bits - e)
        if m0 == Int64(1) << Int64(bits) { m0 /= 2; shift -= 1 }
        // Very small multipliers: drop low bits until the shift is representable.
        while shift > 62 { m0 = (m0 + 1) / 2; shift -= 1 }
        // Multipliers ≥ 2^(bits−1)… with a negative shift: fold it into M0 (rare: M ≥ 1).
        while shift < 0 { m0 *= 2; shift += 1 }
        return (m0, shift)
    }

    /// M ≈ 2^(−shift): the nearest power of two (shift ≥ 0).
    public static func powerOfTwo(_ m: Double) -> (Int64, Int64) {
        guard m > 0 else { return (0, 0) }
        let shift = max(0, Int64((-_log(m) / _log(2)).rounded()))
        return (1, shift)
    }
}

extension Conversion {
    /// A forward hook that rounds each activation at a grid point to its integer grid (half away
    /// from zero), clamps it and scales it back: the fake quantisation of the simulation and of
    /// QAT. `layerIndex` maps the folded model's layer indices to the indices of the model the
    /// hook runs in (identity for `folded` itself).
    public func activationFakeQuantizer(layerIndex: (Int) -> Int = { $0 }) -> (Int, inout Tensor) -> Void {
        var grid: [Int: (scale: Float, lo: Float, hi: Float)] = [:]
        for (f, g) in activationGrid { grid[layerIndex(f)] = (Float(g.scale), Float(g.lo), Float(g.hi)) }
        return { i, h in
            guard let g = grid[i] else { return }
            let inv = 1 / g.scale
            h.withUnsafeMutableBufferPointer { p in
                for j in 0..<p.count { p[j] = min(max((p[j] * inv).rounded(), g.lo), g.hi) * g.scale }
            }
        }
    }
}
