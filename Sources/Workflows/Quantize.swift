// `qshape quantize`: convert at each bit width, then float, simulated and integer-engine accuracy
// side by side with each layer's numbers.
import Config
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
import Quantization
import IntegerRuntime
import Export
import Reports

/// `qshape quantize` (and the end of `qshape train` with a `quantize:` section): float accuracy,
/// simulated (fake-quant) accuracy and integer-engine accuracy side by side, by weight bit width,
/// with a layer-by-layer comparison.
public enum QuantizeWorkflow {
    public struct LayerRow: Codable, Sendable {
        public var name: String
        public var weightSQNR: Double
        public var levelsUsed: Int
        public var activationSQNR: Double?
        public var clippedFraction: Double?
        public var inputScale: Double?
        public var weightScaleMin: Double?, weightScaleMax: Double?
        public var outputScale: Double?
        public var multiplier: Int64?, shift: Int64?
        public var accumulatorBitsNeeded: Int?, accumulatorBits: Int?
        /// This layer's weight width (differs from the row's `bits` under mixed precision).
        public var weightBits: Int?
        enum CodingKeys: String, CodingKey {
            case name, multiplier, shift
            case weightBits = "weight_bits"
            case weightSQNR = "weight_sqnr_db", levelsUsed = "levels_used", activationSQNR =
                "activation_sqnr_db"
            case clippedFraction = "clipped_fraction", inputScale = "input_scale"
            case weightScaleMin = "weight_scale_min", weightScaleMax = "weight_scale_max", outputScale =
                "output_scale"
            case accumulatorBitsNeeded = "accumulator_bits_needed", accumulatorBits = "accumulator_bits"
        }
    }

    public struct BitsResult: Codable, Sendable {
        public var bits: Int
        public var simulatedAccuracy: Double
        public var integerAccuracy: Double?
        /// Share of test images (percent) where the integer engine and the float model pick the same class.
        public var agreement: Double?
        /// Share of test images (percent) where the integer engine and the simulation pick the same class.
        public var simulationAgreement: Double?
        public var layers: [LayerRow]
        /// The sizes of this integer model exported as C (`qshape export`).
        public var deployment: CModelSummary?
        /// Mixed precision: each conv/dense's weight width in layer order, "W8·4·4" (nil: all `bits`).
        public var weights: String?
        enum CodingKeys: String, CodingKey {
            case bits, layers, agreement, deployment, weights
            case simulatedAccuracy = "simulated_accuracy", integerAccuracy = "integer_accuracy"
            case simulationAgreement = "simulation_agreement"
        }
    }

    public struct Result: Codable, Sendable {
        public var weights: String
        public var weightsOnly: Bool
        public var activationBits: Int?
        public var images: Int
        public var floatAccuracy: Double
        public var results: [BitsResult]
        enum CodingKeys: String, CodingKey {
            case weights, images, results
            case weightsOnly = "weights_only", activationBits = "activation_bits", floatAccuracy =
                "float_accuracy"
        }
    }

    /// Loads the weights file into the config's model and quantises it.
    public static func run(
        _ config: Config, weights: String, settings: QuantizeConfig,
        progress: ((String) -> Void)? = nil
    ) throws -> (Result, [Int: Conversion]) {
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(weights, into: model)
        TrainWorkflow.configureThreads(config.threads)
        return try run(
            config, model: model, data: data, settings: settings, weightsLabel: weights, progress: progress)
    }

    /// `progress` hears what is being done, a line per stage (the whole can take half a minute).
    public static func run(
        _ config: Config, model: Sequential, data: DataSplit, settings q: QuantizeConfig,
        weightsLabel: String, progress: ((String) -> Void)? = nil
    ) throws -> (Result, [Int: Conversion]) {
        progress?("evaluating the float model on \(data.test.count) test images")
        let norm = config.training.normalization
        let floatClasses = predictions(model, data.test, norm, hook: nil)
        let floatAccuracy = accuracy(floatClasses, data.test.labels)
        var results: [BitsResult] = []
        var conversions: [Int: Conversion] = [:]
        if q.weightsOnly {
            let folded = try Converter.fold(model)
            let originals = folded.namedState.map { $0.parameter.value }
            let index = Converter.weightedOriginalIndex(of: model)
            for b in q.bits {
                progress?("\(b)-bit weights: quantising and evaluating")
                var o = q.options
                o.weightBits = b
                let rows = weightsOnlyQuantize(folded, o, original: index)
                let acc = accuracy(predictions(folded, data.test, norm, hook: nil), data.test.labels)
                results.append(
                    BitsResult(bits: b, simulatedAccuracy: acc, layers: rows, weights: mixedLabel(o, rows)))
                for (p, v) in zip(folded.namedState.map(\.parameter), originals) { p.value = v }
            }
            return (
                Result(
                    weights: weightsLabel, weightsOnly: true, images: data.test.count,
                    floatAccuracy: floatAccuracy, results: results), [:]
            )
        }
        let convert = try integerConverter(config, model: model, data: data, settings: q)
        for b in q.bits {
            progress?(
                "\(b)-bit weights: converting, then the integer engine and the simulation on \(data.test.count) images"
            )
            let conversion = try convert(b)
            conversions[b] = conversion
            var row = compare(
                conversion, data: data, norm: norm, floatClasses: floatClasses, bits: b,
                compareImages: q.compareImages)
            row.deployment = try? CGenerator.generate(conversion.integerModel).summary
            var o = q.options
            o.weightBits = b
            row.weights = mixedLabel(o, row.layers)
            results.append(row)
        }
        return (
            Result(
                weights: weightsLabel, weightsOnly: false, activationBits: q.options.activationBits,
                images: data.test.count, floatAccuracy: floatAccuracy, results: results), conversions
        )
    }

    /// What `qshape train` can tell before training that its `quantize:` section would refuse at
    /// the end: data the integer engine cannot take. (Whether the accumulators fit depends on the
    /// trained weights: `TrainWorkflow` tries the initial ones and says so when they do not.)
    public static func checkBeforeTraining(_ config: Config, data: DataSplit) throws {
        guard let q = config.quantize, !q.weightsOnly else { return }
        try checkIntegerInput(config, data: data)
    }

    static func checkIntegerInput(_ config: Config, data: DataSplit) throws {
        guard data.test.rawBytes(0) != nil else {
            throw ConfigError(
                file: config.file, path: "data",
                "the integer engine takes raw byte images (IDX or uint8 NPY); use quantize.weights_only for float inputs"
            )
        }
        guard config.data.mean == 0 else {
            throw ConfigError(
                file: config.file, path: "data.mean",
                "the integer engine feeds raw pixels, so inputs must be raw·scale/std with data.mean 0")
        }
    }

    /// Checks that the config's data can feed the integer engine and gathers the calibration batches
    /// once; the returned function converts the model at a weight bit width (`qshape quantize`,
    /// `qshape export` and `qshape train` all convert through it).
    public static func integerConverter(
        _ config: Config, model: Sequential, data: DataSplit,
        settings q: QuantizeConfig
    ) throws -> (Int) throws -> Conversion {
        try checkIntegerInput(config, data: data)
        let norm = config.training.normalization
        let inputScale = Double(norm.scale / norm.std)
        let calibration = calibrationBatches(
            data.train, count: q.calibrationBatches, batch: config.training.batchSize, norm)
        return { b in
            var o = q.options
            o.weightBits = b
            do {
                return try Converter.convert(
                    model, calibration: calibration, inputScale: inputScale, rawInputMax: 255, options: o)
            } catch let e as ConversionError {
                throw ConfigError(file: config.file, path: "quantize", "at \(b)-bit weights, \(e.message)")
            }
        }
    }

    /// "W8·4·4" when some layer's weight width differs from the default, else nil.
    static func mixedLabel(_ o: QuantizeOptions, _ rows: [LayerRow]) -> String? {
        guard o.layerWeightBits.values.contains(where: { $0 != o.weightBits }) else { return nil }
        return Advice.label(rows.map { $0.weightBits ?? o.weightBits })
    }

    /// The seed quantiser on every weight (of the folded model), everything else float; `original`
    /// maps a folded layer index to the config's (for per-layer widths).
    static func weightsOnlyQuantize(
        _ model: Sequential, _ options: QuantizeOptions, original: [Int: Int]
    ) -> [LayerRow] {
        model.namedState.filter { $0.parameter.role == .weight }.map { name, p in
            let w = p.value.data, shape = p.value.shape
            let folded = Int(name.prefix { $0 != "." }) ?? 0
            let o = options.at(layer: original[folded] ?? folded)
            let q = WeightQuantizer(bits: o.weightBits, rounding: o.rounding, perChannel: o.perChannel)
                .quantize(w, shape: shape, range: o.weightRange)
            let deq = q.dequantized()
            p.value = Tensor(shape: shape, data: deq)
            let db = sqnr(w, deq)
            return LayerRow(
                name: name, weightSQNR: db.isFinite ? db : 999, levelsUsed: levelsUsed(q),
                weightBits: o.weightBits)
        }
    }

    package static func calibrationBatches(
        _ train: Dataset, count: Int, batch: Int, _ norm: Normalization
    ) -> [Tensor] {
        // Evenly spread over the training set, the same images every time.
        let total = min(train.count, count * batch), stride = max(1, train.count / max(1, total))
        let indices = (0..<total).map { ($0 * stride) % train.count }
        return Swift.stride(from: 0, to: indices.count, by: batch).map {
            train.batch(indices[$0..<min(indices.count, $0 + batch)], normalization: norm).0
        }
    }

    /// Predicted classes of `model` on `data`, with an optional per-layer hook (fake quantisation).
    static func predictions(
        _ model: Sequential, _ data: Dataset, _ norm: Normalization,
        hook: ((Int, inout Tensor) -> Void)?
    ) -> [Int] {
        var out: [Int] = []
        for start in stride(from: 0, to: data.count, by: 256) {
            let (x, _) = data.batch(start..<min(data.count, start + 256), normalization: norm)
            let logits =
                hook.map { h in model.forward(x, training: false, after: h) }
                ?? model.forward(x, training: false)
            out += argmaxRows(logits)
        }
        return out
    }

    static func accuracy(_ classes: [Int], _ labels: [Int32]) -> Double {
        100 * Double(zip(classes, labels).filter { $0 == Int($1) }.count) / Double(max(1, labels.count))
    }

    static func percentAgreeing(_ a: [Int], _ b: [Int]) -> Double {
        100 * Double(zip(a, b).filter { $0 == $1 }.count) / Double(max(1, a.count))
    }

    /// The float simulation of a conversion: dequantised weights and biases, and every activation
    /// rounded to its integer grid and clamped, then scaled back. It puts the dequantised weights
    /// into `c.folded`, so take the float activations of `c.folded` before calling it.
    public static func simulation(_ c: Conversion) -> (Sequential, (Int, inout Tensor) -> Void) {
        for (name, p) in c.folded.namedState { if let v = c.dequantized[name] { p.value = v } }
        return (c.folded, c.activationFakeQuantizer())
    }

    /// Integer-engine classes for every image of `data`.
    public static func integerPredictions(_ engine: IntegerEngine, _ data: Dataset) -> [Int] {
        integerOutputs(engine, data, count: data.count).map(IntegerEngine.argmax)
    }

    /// The integer engine's outputs for the first `count` images of `data`: 64 images per
    /// `runBatch`, the batches shared out to the processors as they come free (two fixed halves
    /// ran one after the other whenever the second thread started late).
    static func integerOutputs(_ engine: IntegerEngine, _ data: Dataset, count: Int) -> [[Int16]] {
        var out = [[Int16]](repeating: [], count: count)
        let size = data.sampleSize, batches = (count + 63) / 64
        out.withUnsafeMutableBufferPointer { buf in
            let p = buf.baseAddress!
            DispatchQueue.concurrentPerform(iterations: batches) { b in
                let images = b * 64..<min(count, b * 64 + 64)
                var x: [Int16] = []
                x.reserveCapacity(images.count * size)
                for i in images { x += data.rawBytes(i)!.lazy.map { Int16($0) } }
                let y = engine.runBatch(x, count: images.count), outSize = y.count / images.count
                for (j, i) in images.enumerated() { p[i] = Array(y[j * outSize..<(j + 1) * outSize]) }
            }
        }
        return out
    }

    /// A converted layer's row of the comparison, with its measured activation SQNR and clipping.
    static func layerRow(_ l: ConvertedLayer, activationSQNR: Double, clipped: Double) -> LayerRow {
        LayerRow(
            name: l.name, weightSQNR: l.weightSQNR, levelsUsed: l.levelsUsed,
            activationSQNR: activationSQNR, clippedFraction: clipped, inputScale: l.inputScale,
            weightScaleMin: l.weightScales.min(), weightScaleMax: l.weightScales.max(),
            outputScale: l.outputScale, multiplier: l.multiplier.first, shift: l.shift.first,
            accumulatorBitsNeeded: l.accumulatorBitsNeeded, accumulatorBits: l.accumulatorBits,
            weightBits: l.weightBits)
    }

    static func compare(
        _ c: Conversion, data: DataSplit, norm: Normalization, floatClasses: [Int], bits: Int,
        compareImages: Int
    ) -> BitsResult {
        let engine = IntegerEngine(c.integerModel)
        let intClasses = integerPredictions(engine, data.test)
        // Layer by layer on the first images: float activations of the folded model (before its
        // weights are replaced) against the integer engine's, dequantised; summed 128 images at a
        // time in image order, so memory stays that of one batch.
        let n = min(compareImages, data.test.count)
        let ends = Dictionary(uniqueKeysWithValues: c.layers.map { ($0.outputLayer, $0) })
        var signal: [Int: Double] = [:], noise: [Int: Double] = [:], clippedCount: [Int: Int] = [:],
            seen: [Int: Int] = [:]
        for start in stride(from: 0, to: n, by: 128) {
            let chunk = start..<min(n, start + 128)
            var floatActs: [Int: [Float]] = [:]
            let (x, _) = data.test.batch(chunk, normalization: norm)
            _ = c.folded.forward(x, training: false) { i, h in if ends[i] != nil { floatActs[i] = h.data } }
            var offset: [Int: Int] = [:]
            for img in chunk {
                _ = engine.run(data.test.rawBytes(img)!.map { Int16($0) }) { li, y in
                    let f = c.floatLayerOf[li]
                    guard let layer = ends[f], li == c.floatLayerOf.firstIndex(of: f), let fa = floatActs[f]
                    else { return }
                    let lo = Double(layer.outMin) * layer.outputScale - layer.outputScale / 2
                    let hi = Double(layer.outMax) * layer.outputScale + layer.outputScale / 2
                    var s = signal[f, default: 0], e = noise[f, default: 0], clipped = 0
                    let base = offset[f, default: 0]
                    for (k, q) in y.enumerated() {
                        let a = Double(fa[base + k]), b = Double(Float(Double(q) * layer.outputScale))
                        s += a * a
                        e += (a - b) * (a - b)
                        if a < lo || a > hi { clipped += 1 }
                    }
                    signal[f] = s; noise[f] = e
                    clippedCount[f, default: 0] += clipped
                    seen[f, default: 0] += y.count
                    offset[f] = base + y.count
                }
            }
        }
        let rows = c.layers.map { l -> LayerRow in
            let f = l.outputLayer
            let db =
                noise[f, default: 0] == 0 ? Double.infinity : 10 * log10(signal[f, default: 0] / noise[f]!)
            let clipped = Double(clippedCount[f, default: 0]) / Double(max(1, seen[f, default: 0]))
            return layerRow(l, activationSQNR: db.isFinite ? db : 999, clipped: clipped)
        }
        let (sim, hook) = simulation(c)
        let simClasses = predictions(sim, data.test, norm, hook: hook)
        return BitsResult(
            bits: bits, simulatedAccuracy: accuracy(simClasses, data.test.labels),
            integerAccuracy: accuracy(intClasses, data.test.labels),
            agreement: percentAgreeing(intClasses, floatClasses),
            simulationAgreement: percentAgreeing(intClasses, simClasses), layers: rows)
    }
}
