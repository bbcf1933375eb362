// `qshape advise --shaping`: is shaping worth it for this network at this budget? Brief
// fine-tunes with kurtosis (and skewness) penalties on the layers the analysis flags, each searched
// like the original, against the same fine-tune without shaping.
import Config
import Foundation
import Tensors
import NeuralNet
import DataIO
import Quantization
import Shaping
import Training
import Reports

extension AdviseWorkflow {
    /// A difference in integer accuracy smaller than this is not called an improvement: about
    /// the spread of the difference between two fine-tunes from one starting point on 10,000 images.
    static let probeMargin = 0.3

    /// The layers the shaping probe acts on: those that lose more than half a point quantised
    /// alone at the narrowest analysed width of 3 bits or more (all of them if none does).
    static func flagged(_ a: Analysis) -> [Int] {
        let width = a.layers.first?.sensitivity.map(\.bits).filter { $0 >= 3 }.min()
        let hurt = a.layers.filter { l in
            guard let s = l.sensitivity.first(where: { $0.bits == width }) else { return false }
            return a.reference - s.onlyThisQuantized > 0.5
        }
        return (hurt.isEmpty ? a.layers : hurt).map(\.index)
    }

    /// Fine-tunes a copy of the weights for `o.probeSteps` steps without shaping (the control) and
    /// with each term and λ, searches each result as `analyse` does, and verifies the best and the
    /// control on the integer engine.
    static func probe(
        _ a: Analysis, config: Config, data: DataSplit, settings: QuantizeConfig, _ o: Options,
        progress: (String) -> Void
    ) throws -> ShapingAdvice {
        let layers = flagged(a)
        let runs: [(String, Double, ShapingConfig?)] =
            [("none", 0, nil)]
            + ["kurtosis", "kurtosis+skewness"].flatMap { terms in
                o.probeLambdas.map { (terms, $0, shaping(terms, lambda: $0, layers: layers)) }
            }
        var probes: [Probe] = [], models: [Sequential] = []
        var quiet = o
        quiet.probeSteps = 0
        for (k, (terms, lambda, s)) in runs.enumerated() {
            progress("shaping probe \(k + 1)/\(runs.count): \(terms) λ=\(lambda), \(o.probeSteps) steps")
            let model = try fineTuned(config, data: data, weights: o.weights, shaping: s, steps: o.probeSteps)
            let r = try analyse(model, config: config, data: data, settings: settings, quiet) { _ in }
            let shaped = model.namedState.filter { n, p in
                p.role == .weight && layers.contains(Int(n.prefix { $0 != "." }) ?? -1)
            }
            let kurtosis =
                shaped.map { WeightStatistics($0.parameter.value.data).kurtosis }.reduce(0, +)
                / Double(max(1, shaped.count))
            probes.append(
                Probe(
                    terms: terms, lambda: lambda, reference: r.reference, bits: r.choice.bits,
                    weightBytes: r.choice.weightBytes, simulated: r.choice.simulated, kurtosis: kurtosis))
            models.append(model)
        }
        let best = probes.indices.dropFirst().max { probes[$0].simulated < probes[$1].simulated }!
        let verify = { (k: Int) throws -> Verified in
            let floatClasses = QuantizeWorkflow.predictions(
                models[k], data.test, config.training.normalization, hook: nil)
            return try verified(
                probes[k].bits, layers: a.layers, config: config, model: models[k], data: data,
                settings: settings, floatClasses: floatClasses)
        }
        let control = try verify(0), winner = try verify(best)
        return ShapingAdvice(
            steps: o.probeSteps, layers: layers, probes: probes, control: control, best: winner,
            bestProbe: best, worthIt: winner.integer > control.integer + probeMargin, margin: probeMargin)
    }

    /// A `shaping:` section: `terms` ("kurtosis" to KURE's 1.8, "+skewness" to 0) at weight λ.
    static func shaping(_ terms: String, lambda: Double, layers: [Int]) -> ShapingConfig {
        var s = ShapingConfig()
        s.layers = .indices(layers)
        s.terms[.kurtosis] = .init(weight: lambda)
        if terms.contains("skewness") { s.terms[.skewness] = .init(weight: lambda) }
        return s
    }

    /// The weights fine-tuned for `steps` steps (at most one epoch) at a tenth of the config's learning rate (as
    /// quantisation-aware fine-tuning does), with the shaping term when given.
    static func fineTuned(
        _ config: Config, data: DataSplit, weights: String, shaping: ShapingConfig?, steps: Int
    ) throws -> Sequential {
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(weights, into: model)
        var options = config.training
        options.epochs = 1
        options.maxStepsPerEpoch = steps
        options.optimizer.learningRate /= 10
        options.schedule = LearningRateSchedule()
        options.seed = config.training.seed &+ 2
        let trainer = Trainer(model: model, options: options, trainingSetSize: data.train.count)
        if let shaping { trainer.lossTerms = [ShapingLossTerm(shaping, model: model)] }
        _ = try trainer.trainEpoch(0, train: data.train)
        return model
    }
}
