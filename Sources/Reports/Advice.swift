// What `qshape advise` found: each layer's sensitivity by width, the front of flash against
// accuracy, and the verified recommendation (advice.json, advice.md, advice.html).

/// The result of `qshape advise`, as printed, saved and rendered.
public struct Advice: Codable, Sendable {
    public var weights: String
    public var images: Int
    public var testImages: Int
    public var activationBits: Int
    public var floatAccuracy: Double
    /// Float weights, activations on their grids, on the analysis images: the reference of drops.
    public var reference: Double
    public var flashBudget: Int?
    public var maxDrop: Double?
    public var layers: [Layer]
    public var front: [Point]
    public var recommendation: Verified
    /// The uniform widths that fit the budget (or the recommendation's bytes), verified alike.
    public var uniform: [Verified]
    public var seconds: Double
    /// `--shaping`: brief fine-tunes with shaping terms, against the same fine-tune without.
    public var shaping: ShapingAdvice?
    public init(
        weights: String, images: Int, testImages: Int, activationBits: Int, floatAccuracy: Double,
        reference: Double, flashBudget: Int?, maxDrop: Double?, layers: [Layer], front: [Point],
        recommendation: Verified, uniform: [Verified], seconds: Double
    ) {
        self.weights = weights
        self.images = images
        self.testImages = testImages
        self.activationBits = activationBits
        self.floatAccuracy = floatAccuracy
        self.reference = reference
        self.flashBudget = flashBudget
        self.maxDrop = maxDrop
        self.layers = layers
        self.front = front
        self.recommendation = recommendation
        self.uniform = uniform
        self.seconds = seconds
    }
    enum CodingKeys: String, CodingKey {
        case weights, images, layers, front, recommendation, uniform, seconds, reference, shaping
        case testImages = "test_images", activationBits = "activation_bits"
        case floatAccuracy = "float_accuracy", flashBudget = "flash_budget_bytes", maxDrop = "max_drop"
    }

    /// One layer at one width: accuracy with this layer alone quantised, and with every layer but
    /// this one quantised; the layer's weight SQNR and share of weights rounded to zero.
    public struct Sensitivity: Codable, Sendable {
        public var bits: Int
        public var weightBytes: Int
        public var onlyThisQuantized: Double
        public var allButThisQuantized: Double
        public var weightSQNR: Double
        public var zeroFraction: Double
        public init(
            bits: Int, weightBytes: Int, onlyThisQuantized: Double, allButThisQuantized: Double,
            weightSQNR: Double, zeroFraction: Double
        ) {
            self.bits = bits
            self.weightBytes = weightBytes
            self.onlyThisQuantized = onlyThisQuantized
            self.allButThisQuantized = allButThisQuantized
            self.weightSQNR = weightSQNR
            self.zeroFraction = zeroFraction
        }
        enum CodingKeys: String, CodingKey {
            case bits
            case weightBytes = "weight_bytes", onlyThisQuantized = "only_this_quantized"
            case allButThisQuantized = "all_but_this_quantized", weightSQNR = "weight_sqnr_db"
            case zeroFraction = "zero_fraction"
        }
    }

    public struct Layer: Codable, Sendable {
        /// State-dict name of the weight, e.g. "3.weight".
        public var name: String
        /// Index in the config's `model.layers` (the key of a per-layer `quantize.bits`).
        public var index: Int
        public var weights: Int
        public var skewness, kurtosis, maxAbsOverStd: Double
        /// Share of the model's weight bytes at 8 bits.
        public var flashShare: Double
        public var activationSQNR: Double
        public var sensitivity: [Sensitivity]
        public init(
            name: String, index: Int, weights: Int, skewness: Double, kurtosis: Double, maxAbsOverStd: Double,
            flashShare: Double, activationSQNR: Double, sensitivity: [Sensitivity]
        ) {
            self.name = name
            self.index = index
            self.weights = weights
            self.skewness = skewness
            self.kurtosis = kurtosis
            self.maxAbsOverStd = maxAbsOverStd
            self.flashShare = flashShare
            self.activationSQNR = activationSQNR
            self.sensitivity = sensitivity
        }
        enum CodingKeys: String, CodingKey {
            case name, index, weights, skewness, kurtosis, sensitivity
            case maxAbsOverStd = "max_abs_over_std", flashShare = "flash_share"
            case activationSQNR = "activation_sqnr_db"
        }
    }

    /// A per-layer choice of widths with its cost and accuracy.
    public struct Point: Codable, Sendable {
        public var bits: [Int]
        public var weightBytes: Int
        /// Float-weights accuracy minus the summed single-layer drops (the search's model).
        public var predicted: Double?
        /// The mix simulated as a whole on the analysis images.
        public var simulated: Double
        public var uniform: Bool
        public init(bits: [Int], weightBytes: Int, predicted: Double?, simulated: Double, uniform: Bool) {
            self.bits = bits
            self.weightBytes = weightBytes
            self.predicted = predicted
            self.simulated = simulated
            self.uniform = uniform
        }
        enum CodingKeys: String, CodingKey {
            case bits, predicted, simulated, uniform
            case weightBytes = "weight_bytes"
        }
    }

    /// A width choice converted and run on the full test set.
    public struct Verified: Codable, Sendable {
        public var bits: [Int]
        public var weightBytes: Int
        /// The simulation (dequantised weights, activations on their grids): the prediction.
        public var simulated: Double
        /// The integer engine: the measurement.
        public var integer: Double
        public init(bits: [Int], weightBytes: Int, simulated: Double, integer: Double) {
            self.bits = bits
            self.weightBytes = weightBytes
            self.simulated = simulated
            self.integer = integer
        }
        enum CodingKeys: String, CodingKey {
            case bits, simulated, integer
            case weightBytes = "weight_bytes"
        }
    }

}

extension Advice {
    /// "W4·8·8": each conv/dense's width in layer order.
    public static func label(_ bits: [Int]) -> String {
        Set(bits).count == 1 ? "W\(bits[0])" : "W" + bits.map(String.init).joined(separator: "·")
    }

    /// The recommendation as a `quantize:` section to paste into a config: the most common width
    /// as the default, the others by layer index.
    public var fragment: String {
        let bits = recommendation.bits
        let counts = Dictionary(bits.map { ($0, 1) }, uniquingKeysWith: +)
        let d = counts.max { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }!.key
        let others = zip(layers, bits).filter { $0.1 != d }.map { ", \($0.0.index): \($0.1)" }.joined()
        return "quantize:\n  bits: {default: \(d)\(others)}\n  activation_bits: \(activationBits)\n"
    }
}

extension Advice {
    /// One fine-tune of the shaping probe and what the search then found for it.
    public struct Probe: Codable, Sendable {
        /// "none" (the control: the same fine-tune without shaping), "kurtosis" or "kurtosis+skewness".
        public var terms: String
        public var lambda: Double
        /// Float weights, activations on their grids, on the analysis images.
        public var reference: Double
        /// The search's choice for this model and its accuracy on the full test set (simulation).
        public var bits: [Int]
        public var weightBytes: Int
        public var simulated: Double
        /// The mean kurtosis of the shaped layers after the fine-tune.
        public var kurtosis: Double
        public init(
            terms: String, lambda: Double, reference: Double, bits: [Int], weightBytes: Int,
            simulated: Double,
            kurtosis: Double
        ) {
            self.terms = terms; self.lambda = lambda; self.reference = reference; self.bits = bits
            self.weightBytes = weightBytes; self.simulated = simulated; self.kurtosis = kurtosis
        }
        enum CodingKeys: String, CodingKey {
            case terms, lambda, reference, bits, simulated, kurtosis
            case weightBytes = "weight_bytes"
        }
    }

    /// The shaping probe: every fine-tune, the best one and the control verified on the integer
    /// engine, and the verdict.
    public struct ShapingAdvice: Codable, Sendable {
        public var steps: Int
        /// Config indices of the layers shaped (those the sensitivity analysis flags).
        public var layers: [Int]
        public var probes: [Probe]
        public var control: Verified
        public var best: Verified
        public var bestProbe: Int
        /// Whether the best shaped fine-tune beats the control by more than `margin` points.
        public var worthIt: Bool
        public var margin: Double
        public init(
            steps: Int, layers: [Int], probes: [Probe], control: Verified, best: Verified, bestProbe: Int,
            worthIt: Bool, margin: Double
        ) {
            self.steps = steps; self.layers = layers; self.probes = probes; self.control = control
            self.best = best; self.bestProbe = bestProbe; self.worthIt = worthIt; self.margin = margin
        }
        enum CodingKeys: String, CodingKey {
            case steps, layers, probes, control, best, margin
            case bestProbe = "best_probe", worthIt = "worth_it"
        }
    }
}

extension Advice.ShapingAdvice {
    /// The verdict in one sentence.
    public var verdict: String {
        let p = probes[bestProbe]
        let gain = best.integer - control.integer
        return worthIt
            ? String(
                format:
                    "worth it: %@ at λ=%g gains %+.2f points on the integer engine over the same fine-tune without shaping",
                p.terms, p.lambda, gain)
            : String(
                format:
                    "not worth it here: the best probe (%@ at λ=%g) is %+.2f points from the same fine-tune without shaping, within the %.1f-point margin",
                p.terms, p.lambda, gain, margin)
    }

    /// The best probe as a `shaping:` section (for a full training run), when it is worth it.
    public var fragment: String? {
        guard worthIt else { return nil }
        let p = probes[bestProbe]
        var s = "shaping:\n  layers: [\(layers.map(String.init).joined(separator: ", "))]\n"
        s += "  kurtosis: {weight: \(p.lambda), target: 1.8}\n"
        if p.terms.contains("skewness") { s += "  skewness: {weight: \(p.lambda), target: 0.0}\n" }
        return s
    }
}
