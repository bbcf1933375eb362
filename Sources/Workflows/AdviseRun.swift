// The steps of `qshape advise`: convert at every width, measure each layer's sensitivity, search
// the front, simulate its points as wholes, then verify the choice on the integer engine.
import Config
import Foundation
import Tensors
import NeuralNet
import DataIO
import Quantization
import IntegerRuntime
import Shaping

extension AdviseWorkflow {
    /// Loads the weights into the config's model and advises on it.
    public static func run(
        _ config: Config, _ o: Options, progress: (String) -> Void = { _ in }
    ) throws -> Result {
        let start = Date()
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(o.weights, into: model)
        TrainWorkflow.configureThreads(config.threads)
        var settings = config.quantize ?? QuantizeConfig()
        settings.options.layerWeightBits = [:]
        // Grids from the float network, the same at every width: what makes mixtures exact.
        settings.options.calibrateQuantized = false
        let a = try analyse(model, config: config, data: data, settings: settings, o, progress: progress)
        progress(
            "verifying on the integer engine: \(a.images == data.test.count ? "" : "all ")\(data.test.count) test images"
        )
        let floatClasses = QuantizeWorkflow.predictions(
            model, data.test, config.training.normalization, hook: nil)
        let verify = { (bits: [Int]) throws -> Verified in
            try verified(
                bits, layers: a.layers, config: config, model: model, data: data, settings: settings,
                floatClasses: floatClasses)
        }
        let recommendation = try verify(a.choice.bits)
        let limit = o.flashBudget ?? a.choice.weightBytes
        let uniform = try a.widths.sorted(by: >).map { b in Array(repeating: b, count: a.layers.count) }
            .filter { bytes(a.layers, $0) <= limit && $0 != a.choice.bits }.map(verify)
        var result = Result(
            weights: o.weights, images: a.images, testImages: data.test.count,
            activationBits: settings.options.activationBits,
            floatAccuracy: QuantizeWorkflow.accuracy(floatClasses, data.test.labels), reference: a.reference,
            flashBudget: o.flashBudget, maxDrop: o.flashBudget == nil ? o.maxDrop : nil, layers: a.layers,
            front: a.front, recommendation: recommendation, uniform: uniform, seconds: 0)
        if o.probeSteps > 0 {
            result.shaping = try probe(
                a, config: config, data: data, settings: settings, o, progress: progress)
        }
        result.seconds = Date().timeIntervalSince(start)
        return result
    }

    /// What one model's analysis found: the sensitivity, the simulated front and the choice.
    struct Analysis {
        var images: Int
        var reference: Double
        var layers: [Layer]
        var front: [Point]
        var choice: Point
        /// The widths analysed (those the model converts at).
        var widths: [Int]
    }

    /// Converts `model` at every width, measures each layer's sensitivity on the analysis images,
    /// searches and simulates the front and picks the point the options ask for.
    /// A width the model cannot be converted at (16-bit weights whose worst case needs more than a
    /// 32-bit accumulator, unless `quantize.accumulator: int64`) is left out with a note.
    static func analyse(
        _ model: Sequential, config: Config, data: DataSplit, settings: QuantizeConfig, _ options: Options,
        progress: (String) -> Void
    ) throws -> Analysis {
        let norm = config.training.normalization
        progress("converting at \(options.widths.map(String.init).joined(separator: ", ")) bits")
        let convert = try QuantizeWorkflow.integerConverter(
            config, model: model, data: data, settings: settings)
        var conversions: [Int: Conversion] = [:], o = options, failure: Error?
        for b in o.widths {
            do { conversions[b] = try convert(b) } catch let e as ConfigError {
                progress("\(b)-bit weights left out: \(e.message)")
                failure = e
            }
        }
        if conversions.isEmpty, let failure { throw failure }
        o.widths = options.widths.filter { conversions[$0] != nil }
        let n = min(o.images, data.test.count)
        let indices = (0..<n).map { $0 * data.test.count / n }
        let sim = LayerMixSimulator(
            conversions: conversions, data: data.test, indices: indices, normalization: norm)
        progress(
            "sensitivity: \(sim.weighted.count) layers × \(o.widths.count) widths, both directions, on \(n) test images"
        )
        let (reference, layers) = sensitivity(
            sim, conversions, model: model, config: config, widths: o.widths)
        progress("searching per-layer widths and simulating the front")
        let front = search(sim, layers: layers, reference: reference, o)
        let choice = try recommend(front, reference: reference, o) {
            n == data.test.count
                ? nil
                : LayerMixSimulator(
                    conversions: conversions, data: data.test, indices: Array(0..<data.test.count),
                    normalization: norm)
        }
        return Analysis(
            images: n, reference: reference, layers: layers, front: front, choice: choice, widths: o.widths)
    }

    /// Per-layer widths converted and run on the full test set: simulation and integer engine.
    static func verified(
        _ bits: [Int], layers: [Layer], config: Config, model: Sequential, data: DataSplit,
        settings: QuantizeConfig, floatClasses: [Int]
    ) throws -> Verified {
        var s = settings
        s.options.layerWeightBits = Dictionary(uniqueKeysWithValues: zip(layers.map(\.index), bits))
        let c = try QuantizeWorkflow.integerConverter(config, model: model, data: data, settings: s)(bits[0])
        let r = QuantizeWorkflow.compare(
            c, data: data, norm: config.training.normalization, floatClasses: floatClasses, bits: bits[0],
            compareImages: 0)
        return Verified(
            bits: bits, weightBytes: bytes(layers, bits), simulated: r.simulatedAccuracy,
            integer: r.integerAccuracy ?? 0)
    }

    static func bytes(_ layers: [Layer], _ bits: [Int]) -> Int {
        zip(layers, bits).reduce(0) { $0 + BitWidth($1.1)!.storageBytes($1.0.weights) }
    }

    /// Accuracy with float weights (the reference), and each layer's statistics and sensitivity.
    static func sensitivity(
        _ sim: LayerMixSimulator, _ conversions: [Int: Conversion], model: Sequential, config: Config,
        widths: [Int]
    ) -> (Double, [Layer]) {
        let count = sim.weighted.count
        var mixes: [[Int?]] = [Array(repeating: nil, count: count)]
        for l in 0..<count {
            for b in widths {
                var only = [Int?](repeating: nil, count: count), allBut = [Int?](repeating: b, count: count)
                only[l] = b
                allBut[l] = nil
                mixes += [only, allBut]
            }
        }
        let acc = sim.accuracies(mixes)
        let base = conversions[widths.max()!]!
        let activation = sim.activationSQNR(outputs: base.layers.map(\.outputLayer))
        let original = Converter.weightedOriginalIndex(of: model)
        let weights = sim.float.map { $0[0].data }
        let total8 = Double(weights.reduce(0) { $0 + $1.count })
        let layers = (0..<count).map { l -> Layer in
            let st = WeightStatistics(weights[l])
            let rows = widths.enumerated().map { k, b -> Sensitivity in
                let converted = conversions[b]!.layers[l]
                let q = conversions[b]!.dequantized[converted.name]!.data
                return Sensitivity(
                    bits: b, weightBytes: BitWidth(b)!.storageBytes(weights[l].count),
                    onlyThisQuantized: acc[1 + 2 * (l * widths.count + k)],
                    allButThisQuantized: acc[2 + 2 * (l * widths.count + k)],
                    weightSQNR: converted.weightSQNR,
                    zeroFraction: Double(q.filter { $0 == 0 }.count) / Double(max(1, q.count)))
            }
            return Layer(
                name: base.layers[l].name, index: original[sim.weighted[l]] ?? sim.weighted[l],
                weights: weights[l].count, skewness: st.skewness, kurtosis: st.kurtosis,
                maxAbsOverStd: st.maxAbsOverStd, flashShare: Double(weights[l].count) / max(1, total8),
                activationSQNR: activation[l], sensitivity: rows)
        }
        return (acc[0], layers)
    }
}

extension AdviseWorkflow {
    /// The Pareto front of the additive model, thinned, with the points the objective cares about
    /// and every uniform width, each simulated as a whole; sorted by bytes.
    static func search(
        _ sim: LayerMixSimulator, layers: [Layer], reference: Double, _ o: Options
    ) -> [Point] {
        let options = layers.map { l in
            l.sensitivity.map {
                MixedPrecision.Option(
                    bits: $0.bits, bytes: $0.weightBytes, drop: max(0, reference - $0.onlyThisQuantized))
            }
        }
        let front = MixedPrecision.front(options)
        // The front's best points for the objective: the most accurate within the budget, or the
        // cheapest predicted within the allowed drop (the additive model misjudges interactions,
        // so a margin of candidates is simulated).
        let focus =
            o.flashBudget.map { budget in
                Array(front.filter { $0.bytes <= budget }.suffix(o.candidates / 2))
            }
            ?? Array(front.filter { $0.predictedDrop <= o.maxDrop * 2 + 0.5 }.prefix(o.candidates / 2))
        var picked: [[Int]] = []
        for c in MixedPrecision.thin(front, to: o.candidates) + focus where !picked.contains(c.bits) {
            picked.append(c.bits)
        }
        for b in o.widths {
            let u = Array(repeating: b, count: layers.count)
            if !picked.contains(u) { picked.append(u) }
        }
        let drops = options.map { Dictionary(uniqueKeysWithValues: $0.map { ($0.bits, $0.drop) }) }
        let predicted = { (bits: [Int]) in max(0, reference - zip(drops, bits).reduce(0) { $0 + $1.0[$1.1]! })
        }
        let simulated = sim.accuracies(picked.map { $0.map { Optional($0) } })
        return zip(picked, simulated).map { bits, acc in
            Point(
                bits: bits, weightBytes: bytes(layers, bits), predicted: predicted(bits), simulated: acc,
                uniform: Set(bits).count == 1)
        }.sorted {
            $0.weightBytes != $1.weightBytes ? $0.weightBytes < $1.weightBytes : $0.simulated > $1.simulated
        }
    }

    /// The points that meet the objective, best first: the most accurate within the budget
    /// (ties: fewer bytes), or the cheapest within the drop (ties: more accurate; if none is,
    /// the most accurate of all).
    static func shortlist(_ points: [Point], reference: Double, _ o: Options) throws -> [Point] {
        if let budget = o.flashBudget {
            let fitting = points.filter { $0.weightBytes <= budget }.sorted {
                if $0.simulated != $1.simulated { return $0.simulated > $1.simulated }
                if $0.weightBytes != $1.weightBytes { return $0.weightBytes < $1.weightBytes }
                return Set($0.bits).count < Set($1.bits).count  // the simpler of equals
            }
            guard !fitting.isEmpty else {
                let least = points.map(\.weightBytes).min() ?? 0
                throw RunError(
                    "--flash-budget \(budget) bytes is below the smallest weights these widths give (\(least) bytes at \(o.widths.min()!) bits)"
                )
            }
            return fitting
        }
        let within = points.filter { reference - $0.simulated <= o.maxDrop }.sorted {
            $0.weightBytes != $1.weightBytes ? $0.weightBytes < $1.weightBytes : $0.simulated > $1.simulated
        }
        return within.isEmpty ? [points.max { $0.simulated < $1.simulated }!] : within
    }

    /// The recommendation: the shortlist's first few re-evaluated on every test image when the
    /// analysis used fewer (so the returned point's `simulated` is always a full-test figure) (a 2,000-image accuracy has a spread of about ±0.7 points, enough to
    /// misorder close candidates), then the best of those.
    static func recommend(
        _ points: [Point], reference: Double, _ o: Options, full: () -> LayerMixSimulator?
    ) throws -> Point {
        let short = Array(try shortlist(points, reference: reference, o).prefix(4))
        guard let sim = full() else { return short[0] }
        let acc = sim.accuracies(
            [Array(repeating: nil, count: short[0].bits.count)] + short.map { $0.bits.map { Optional($0) } })
        let rescored = zip(short, acc.dropFirst()).map { p, a in
            var q = p
            q.simulated = a
            return q
        }
        return try shortlist(rescored, reference: acc[0], o)[0]
    }
}
