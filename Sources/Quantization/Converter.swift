// Float model → integer model: BatchNorm folding, calibration of each output grid, and each
// conv/dense layer's integer weights, biases and requantisation.
import Tensors
import NeuralNet
import IntegerRuntime

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

    /// For each conv/dense of `fold(model)`, the index in `model` of that conv/dense itself (the
    /// index a config names it by).
    public static func weightedOriginalIndex(of model: Sequential) -> [Int: Int] {
        var map: [Int: Int] = [:], folded = 0
        for (i, spec) in model.specs.enumerated() {
            switch spec {
            case .dropout, .batchnorm1d, .batchnorm2d: continue
            case .dense, .conv2d: map[folded] = i
            default: break
            }
            folded += 1
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
        let (groupEnd, activation) = groups(folded)
        let original = weightedOriginalIndex(of: model)
        let (samples, inputs) = calibrate(
            folded, calibration, groupEnd: groupEnd, original: original, options: o)
        var layers: [IntegerLayer] = [], converted: [ConvertedLayer] = []
        var grid: [Int: (scale: Double, lo: Int64, hi: Int64)] = [:]
        var dequantized: [String: Tensor] = [:]
        var scale = inputScale, maxInput = rawInputMax
        var floatLayerOf: [Int] = []
        var i = 0
        while i < folded.layers.count {
            let spec = folded.specs[i], layer = folded.layers[i]
            switch spec {
            case .dense, .conv2d:
                let end = groupEnd[i]!, lo = o.at(layer: original[i]!)
                let (outScale, low, hi) = outputGrid(
                    samples[end] ?? [1], activation: activation[i], options: lo)
                let q = quantizedWeights(layer, spec, inputs: inputs[i], options: lo)
                if lo.biasCorrection, let x = inputs[i] {
                    correctBias(layer, inputs: x, deployed: q.dequantized())
                }
                let (c, intLayer, deq) = try quantizeWeighted(
                    i, layer: layer, spec: spec, inputScale: scale, maxInput: maxInput,
                    outScale: outScale, lo: low, hi: hi, end: end, options: lo, quantized: q)
                converted.append(c)
                layers.append(intLayer)
                floatLayerOf.append(end)
                for (k, v) in deq { dequantized[k] = v }
                grid[end] = (outScale, low, hi)
                scale = outScale
                maxInput = max(abs(low), hi)
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

    /// The integer form of a conv/dense layer of weight shape `shape`.
    static func integerLayer(
        _ spec: LayerSpec, shape: [Int], weight q: [Int32], bits: Int, bias: [Int64], requant: Requantization
    ) -> IntegerLayer {
        let weight = q.map { Int16($0) }, width = BitWidth(bits)!  // within ±qmax ≤ 32767
        if case let .conv2d(_, out, k, s, p, _) = spec {
            return .conv(
                IntegerConv(
                    inChannels: shape[1], outChannels: out, kernel: k, stride: s, padding: p,
                    weight: weight, weightBits: width, bias: bias, requant: requant))
        }
        return .dense(
            IntegerDense(
                inFeatures: q.count / shape[0], outFeatures: shape[0], weight: weight, weightBits: width,
                bias: bias,
                requant: requant))
    }

    /// The grid of a conv/dense output from its calibration samples: scale and integer clamp,
    /// unsigned after a fused ReLU (0…255 at 8 bits; 0…32767 at 16, as they travel as int16),
    /// capped at 6 after a ReLU6.
    static func outputGrid(
        _ samples: [Float], activation: LayerSpec?, options o: QuantizeOptions
    )
        -> (scale: Double, lo: Int64, hi: Int64)
    {
        let unsigned = activation != nil
        let outQmax = unsigned ? (o.activationBits == 8 ? 255 : 32_767) : BitWidth.qmax(o.activationBits)
        let clip = Double(
            RangeSetting.clip(samples, bits: o.activationBits, method: o.activationRange, unsigned: unsigned))
        let outScale = clip / Double(outQmax)
        var hi = Int64(outQmax)
        if activation == .relu6 { hi = min(hi, Int64((6 / outScale).rounded())) }
        return (outScale, unsigned ? 0 : -Int64(outQmax), hi)
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

    /// The calibration samples at each group end, and the inputs of each conv/dense where GPTQ
    /// (every calibration batch) or bias correction (two) needs them; from the network as deployed
    /// (its weights on their grids) or as trained.
    static func calibrate(
        _ folded: Sequential, _ calibration: [Tensor], groupEnd: [Int: Int], original: [Int: Int],
        options o: QuantizeOptions
    ) -> (samples: [Int: [Float]], inputs: [Int: [Tensor]]) {
        let masters = o.calibrateQuantized ? quantizeWeights(folded, original: original, options: o) : nil
        defer { if let masters { restoreWeights(folded, masters) } }
        let samples = calibrationSamples(folded, calibration, at: Set(groupEnd.values))
        let batches = o.rounding == .gptq ? calibration[...] : o.biasCorrection ? calibration.prefix(2) : []
        return (samples, batches.isEmpty ? [:] : layerInputs(folded, batches, of: Set(groupEnd.keys)))
    }

    /// A conv/dense layer's weights on their grid, computed once for bias correction and the
    /// integer layer: the range method sets the scales, the rounding the integers — GPTQ's from the
    /// layer's calibration inputs when the rounding is `gptq` and there are inputs.
    static func quantizedWeights(
        _ layer: Layer, _ spec: LayerSpec, inputs: [Tensor]?, options o: QuantizeOptions
    ) -> QuantizedTensor {
        let w = layer.state.first { $0.role == .weight }!.value
        let quantizer = WeightQuantizer(bits: o.weightBits, rounding: o.rounding, perChannel: o.perChannel)
        var q = quantizer.quantize(w.data, shape: w.shape, range: o.weightRange)
        if o.rounding == .gptq, let inputs,
            let values = GPTQ.round(
                w.data, rows: w.shape[0], hessian: GPTQ.hessian(spec, inputs: inputs), factors: q.factors,
                quantizer: quantizer)
        {
            q.values = values
        }
        return q
    }

    /// Replaces every conv/dense weight of `folded` by its quantised-dequantised copy at that
    /// layer's options and returns the float weights, for `restoreWeights`.
    static func quantizeWeights(
        _ folded: Sequential, original: [Int: Int], options o: QuantizeOptions
    ) -> [Int: Tensor] {
        var masters: [Int: Tensor] = [:]
        for (i, layer) in folded.layers.enumerated() {
            guard let wp = layer.state.first(where: { $0.role == .weight }), let at = original[i] else {
                continue
            }
            masters[i] = wp.value
            // No inputs yet (they come from this network): GPTQ's rounding falls back to nearest.
            let deq = quantizedWeights(layer, folded.specs[i], inputs: nil, options: o.at(layer: at))
            wp.value = Tensor(shape: wp.value.shape, data: deq.dequantized())
        }
        return masters
    }

    static func restoreWeights(_ folded: Sequential, _ masters: [Int: Tensor]) {
        for (i, w) in masters { folded.layers[i].state.first { $0.role == .weight }!.value = w }
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
    /// `deployed`: the layer's weights as quantised and dequantised.
    static func correctBias(_ layer: Layer, inputs: [Tensor], deployed deq: [Float]) {
        guard let wp = layer.state.first(where: { $0.role == .weight }),
            let bp = layer.state.first(where: { $0.name == "bias" })
        else { return }
        let w = wp.value, rows = w.shape[0]
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
        outScale: Double, lo: Int64, hi: Int64, end: Int, options o: QuantizeOptions,
        quantized q: QuantizedTensor
    )
        throws -> (ConvertedLayer, IntegerLayer, [String: Tensor])
    {
        let wp = layer.state.first { $0.role == .weight }!
        let w = wp.value.data, shape = wp.value.shape, rows = shape[0]
        let bias = layer.state.first { $0.name == "bias" }?.value.data ?? [Float](repeating: 0, count: rows)
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
        let intLayer = integerLayer(
            spec, shape: shape, weight: q.values, bits: o.weightBits, bias: qbias, requant: requant)
        let deqW = q.dequantized()
        let deqB = (0..<rows).map { Float(Double(qbias[$0]) * inputScale * scaleOf($0)) }
        let db = sqnr(w, deqW)
        let info = ConvertedLayer(
            name: name, outputLayer: end, inputScale: inputScale, weightScales: weightScales,
            outputScale: outScale, outMin: lo, outMax: hi, accumulatorBitsNeeded: needed,
            accumulatorBits: accBits, multiplier: mult, shift: shifts,
            weightSQNR: db.isFinite ? db : 999, levelsUsed: levelsUsed(q), weightBits: o.weightBits)
        return (
            info, intLayer,
            [name: Tensor(shape: shape, data: deqW), "\(index).bias": Tensor(shape: [rows], data: deqB)]
        )
    }
}
