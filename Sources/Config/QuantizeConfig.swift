// The `quantize:` section: bit widths, the converter's options, QAT, and reading them.
import Quantization
import IntegerRuntime
import NeuralNet

/// The `quantize:` section: how `qshape quantize` (and `qshape train` at its end) converts.
public struct QuantizeConfig: Equatable, Sendable {
    /// Weight bit widths; several give a sweep. With per-layer widths (`options.layerWeightBits`)
    /// there is one, the default of the layers not named.
    public var bits: [Int] = [8]
    public var options = QuantizeOptions()
    public var calibrationBatches = 8
    public var weightsOnly = false
    /// Test images used for the layer-by-layer comparison.
    public var compareImages = 1000
    public var qat = QAT()
    public init() {}

    /// The narrowest width converted: what the run logs' SQNR and levels used measure, and what
    /// QAT trains for unless it names its own.
    public var narrowestBits: Int { bits.min()! }
    /// The width quantisation-aware training fake-quantises to.
    public var qatBits: Int { qat.bits ?? narrowestBits }

    /// Quantisation-aware fine-tuning after training (`quantize.qat`).
    public struct QAT: Equatable, Sendable {
        public var epochs = 0
        /// The weight width trained for (default: the smallest of `bits`).
        public var bits: Int?
        public var learningRate: Double?
        public var activations = false
    }
}

extension Config {
    static let quantizeKeys = [
        "bits", "activation_bits", "rounding", "granularity", "scale", "weight_range",
        "weight_percentile", "activation_range", "activation_percentile",
        "calibration_batches", "accumulator", "weights_only", "compare_images", "qat",
        "equalize", "bias_correction", "calibration"
    ]

    static func readQuantize(_ top: ConfigReader, layers: [LayerSpec]) throws -> QuantizeConfig? {
        guard top.has("quantize") else { return nil }
        let r = try top.child("quantize", allowed: quantizeKeys)
        var q = QuantizeConfig()
        try readWidths(r, layers: layers, into: &q)
        q.options.rounding = Rounding(
            rawValue: try r.choice("rounding", default: "nearest", Rounding.allCases.map(\.rawValue)))!
        q.options.perChannel =
            try r.choice("granularity", default: "tensor", ["tensor", "channel"]) == "channel"
        q.options.scale = QuantizeOptions.ScaleMode(
            rawValue: try r.choice(
                "scale", default: "fixed_point",
                QuantizeOptions.ScaleMode.allCases.map(\.rawValue)))!
        let wp = try r.number("weight_percentile", default: 99.99, min: 50, max: 100)
        q.options.weightRange = try rangeMethod(
            r, "weight_range", percentile: wp,
            allowed: ["max", "percentile", "mse", "aciq_laplace", "aciq_gaussian", "octav"])
        let ap = try r.number("activation_percentile", default: 99.99, min: 50, max: 100)
        q.options.activationRange = try rangeMethod(
            r, "activation_range", percentile: ap, allowed: ["max", "percentile", "mse", "octav"])
        q.calibrationBatches = try r.integer("calibration_batches", default: 8, min: 1, max: 10_000)
        q.options.allowInt64Accumulator =
            try r.choice("accumulator", default: "int32", ["int32", "int64"]) == "int64"
        q.weightsOnly = try r.bool("weights_only", default: false)
        q.options.equalize = try r.bool("equalize", default: false)
        q.options.biasCorrection = try r.bool("bias_correction", default: false)
        q.compareImages = try r.integer("compare_images", default: 1000, min: 1)
        let t = try r.child("qat", allowed: ["epochs", "bits", "lr", "activations"])
        q.qat.epochs = try t.integer("epochs", default: 0, min: 0, max: 10_000)
        q.qat.bits = try t.optionalInteger(
            "bits", min: BitWidth.allowed.lowerBound, max: BitWidth.allowed.upperBound)
        q.qat.learningRate = try t.optionalNumber("lr", min: 0, exclusiveMin: true)
        q.qat.activations = try t.bool("activations", default: false)
        // A QAT-trained network is deployed with its weights on the grid it was trained on.
        q.options.calibrateQuantized =
            try r.choice(
                "calibration", default: q.qat.epochs > 0 ? "quantized" : "float", ["float", "quantized"])
            == "quantized"
        return q
    }

    /// `bits` (one width, a list, or per layer) and `activation_bits` (one width or per layer).
    private static func readWidths(
        _ r: ConfigReader, layers: [LayerSpec], into q: inout QuantizeConfig
    ) throws {
        if case .mapping = r.node["bits"]?.kind {
            let (d, perLayer) = try perLayerWidths(r, "bits", layers: layers) { BitWidth($0) != nil }
            q.bits = [d ?? 8]
            q.options.layerWeightBits = perLayer
        } else if case .sequence = r.node["bits"]?.kind {
            q.bits = try r.integers("bits", min: BitWidth.allowed.lowerBound) ?? [8]
            if let bad = q.bits.first(where: { BitWidth($0) == nil }) {
                throw r.error("bits", "bit widths are \(BitWidth.allowedText), got \(bad)")
            }
            if q.bits.isEmpty { throw r.error("bits", "give at least one bit width, e.g. [8, 4, 3]") }
        } else {
            q.bits = [
                try r.integer(
                    "bits", default: 8, min: BitWidth.allowed.lowerBound, max: BitWidth.allowed.upperBound)
            ]
        }
        if case .mapping = r.node["activation_bits"]?.kind {
            let (d, perLayer) = try perLayerWidths(r, "activation_bits", layers: layers) {
                [8, 16].contains($0)
            }
            q.options.activationBits = d ?? 8
            q.options.layerActivationBits = perLayer
        } else {
            q.options.activationBits = try r.integer("activation_bits", default: 8, min: 8, max: 16)
            guard [8, 16].contains(q.options.activationBits) else {
                throw r.error("activation_bits", "expected 8 or 16")
            }
        }
    }

    /// A per-layer width mapping, `{default: 4, 0: 8, 6: 2}`: keys are `default` or the index of a
    /// dense/conv2d layer in `model.layers`, values widths that `valid` accepts.
    private static func perLayerWidths(
        _ r: ConfigReader, _ key: String, layers: [LayerSpec], valid: (Int) -> Bool
    ) throws -> (Int?, [Int: Int]) {
        let weighted = layers.indices.filter { layers[$0].hasWeights }
        let what = key == "bits" ? "a weight bit width (\(BitWidth.allowedText))" : "8 or 16"
        var d: Int?, perLayer: [Int: Int] = [:]
        for e in r.node.entries?.first(where: { $0.key == key })?.value.entries ?? [] {
            let path = "quantize.\(key).\(e.key)"
            guard case .scalar(let s) = e.value.kind, let v = Int(s), valid(v) else {
                throw ConfigError(file: r.file, path: path, line: e.value.line, "expected \(what)")
            }
            if e.key == "default" { d = v; continue }
            guard let i = Int(e.key), weighted.contains(i) else {
                throw ConfigError(
                    file: r.file, path: path, line: e.value.line,
                    "keys are 'default' or the index of a dense/conv2d layer in model.layers: \(weighted.map(String.init).joined(separator: ", "))"
                )
            }
            perLayer[i] = v
        }
        return (d, perLayer)
    }

    private static func rangeMethod(
        _ r: ConfigReader, _ key: String, percentile: Double, allowed: [String]
    ) throws -> RangeMethod {
        switch try r.choice(key, default: "max", allowed) {
        case "percentile": return .percentile(percentile)
        case "mse": return .mse
        case "aciq_laplace": return .aciqLaplace
        case "aciq_gaussian": return .aciqGaussian
        case "octav": return .octav
        default: return .max
        }
    }
}

func quantizeYAML(_ q: QuantizeConfig) -> String {
    let o = q.options
    func range(_ m: RangeMethod) -> String { m.name }
    func pct(_ m: RangeMethod) -> Double { if case .percentile(let p) = m { return p }; return 99.99 }
    func widths(_ d: Int, _ perLayer: [Int: Int]) -> String {
        "{default: \(d)" + perLayer.sorted { $0.key < $1.key }.map { ", \($0.key): \($0.value)" }.joined()
            + "}"
    }
    let bits =
        o.layerWeightBits.isEmpty
        ? "[\(q.bits.map(String.init).joined(separator: ", "))]" : widths(q.bits[0], o.layerWeightBits)
    let activations =
        o.layerActivationBits.isEmpty
        ? "\(o.activationBits)" : widths(o.activationBits, o.layerActivationBits)
    return section(
        "quantize",
        [
            ("bits", bits), ("activation_bits", activations), ("rounding", o.rounding.rawValue),
            ("granularity", o.perChannel ? "channel" : "tensor"), ("scale", o.scale.rawValue),
            ("weight_range", range(o.weightRange)), ("weight_percentile", num(pct(o.weightRange))),
            ("activation_range", range(o.activationRange)),
            ("activation_percentile", num(pct(o.activationRange))),
            ("calibration_batches", "\(q.calibrationBatches)"),
            ("accumulator", o.allowInt64Accumulator ? "int64" : "int32"),
            ("weights_only", "\(q.weightsOnly)"), ("compare_images", "\(q.compareImages)"),
            ("equalize", "\(o.equalize)"), ("bias_correction", "\(o.biasCorrection)"),
            ("calibration", o.calibrateQuantized ? "quantized" : "float"),
            (
                "qat",
                "{epochs: \(q.qat.epochs)" + (q.qat.bits.map { ", bits: \($0)" } ?? "")
                    + (q.qat.learningRate.map { ", lr: \(num($0))" } ?? "")
                    + ", activations: \(q.qat.activations)}"
            )
        ])
}
