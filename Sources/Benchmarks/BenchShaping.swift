// `qshape bench --only shaping`: training with the shaping penalties against the same training
// without, measured in alternating short chunks, and each penalty's cost on its own.
import Foundation
import NeuralNet
import Shaping
import Tensors
import Training

extension BenchWorkflow {
    static func runShaping(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            for (label, config) in shapingCases {
                let o = try shapingOverhead(network: name, layers: layers, terms: label, config: config)
                log(
                    String(
                        format:
                            "shaping %@ %@: %9.0f vs %9.0f samples/s unshaped  →  %+.1f%% time per epoch (middle half of %d chunk pairs %+.1f to %+.1f%%; penalties %.3f of %.3f ms per step; on the main thread alone %+.1f%%)",
                        name as NSString, label as NSString, o.shapedSamplesPerSecond,
                        o.unshapedSamplesPerSecond, 100 * o.overhead, o.chunkPairs, 100 * o.overheadQuartiles[0],
                        100 * o.overheadQuartiles[1], o.penaltyMillisecondsPerStep,
                        1000 * Double(batch) / o.shapedSamplesPerSecond, 100 * o.serialOverhead))
                r.shaping.append(o)
            }
        }
        for (name, layers) in try networks() {
            let costs = try penaltyCosts(network: name, layers: layers)
            log(
                "shaping \(name) penalties alone, ms per step on \(costs[0].weights) weights: "
                    + costs.map { String(format: "%@ %.3f", $0.term as NSString, $0.millisecondsPerStep) }
                    .joined(separator: ", "))
            r.penaltyCosts += costs
        }
    }

    /// Three trainings from the same initial weights — unshaped, shaped, and shaped on the main
    /// thread alone — stepped in turn, a short chunk of steps each, for several epochs' worth of
    /// steps (what the penalties cost changes as the weights move away from their initial
    /// values). The machine's load, which on a shared machine moves whole epochs by ±10%, hits the
    /// three chunks of a turn alike, so the overhead is the median over turns of each turn's
    /// ratio of chunk times.
    /// `chunks` overrides the chunk's steps and the number of turns (for tests).
    static func shapingOverhead(
        network: String, layers: [LayerSpec], terms: String, config: ShapingConfig,
        chunks: (steps: Int, turns: Int)? = nil
    ) throws -> ShapingOverhead {
        // Chunks of about 0.1 s (CNN) and 0.05 s (MLP); turns a multiple of three.
        let (chunkSteps, turns) = chunks ?? (network.contains("cnn") ? (8, 24) : (47, 78))
        BLASThreads.set(cores)
        let data = trainingData.data
        var timed: TimedLossTerm?
        let trainers = try [(false, true), (true, true), (true, false)].map { shaped, overlap in
            let model = try Sequential(specs: layers, inputShape: [1, 28, 28], seed: 1)
            var options = TrainingOptions()
            options.batchSize = batch
            options.overlapSteps = overlap  // used only with a second core (`StepOverlap`)
            options.maxStepsPerEpoch = chunkSteps
            let trainer = Trainer(model: model, options: options, trainingSetSize: data.count)
            if shaped {
                let term = TimedLossTerm(ShapingLossTerm(config, model: model))
                if overlap { timed = term }
                trainer.lossTerms = [term]
            }
            _ = try trainer.trainEpoch(0, train: data)  // warm-up
            return trainer
        }
        timed?.reset()
        var seconds = [[Double]](repeating: [], count: trainers.count)
        for turn in 0..<turns {  // each of the three goes first, second and third in turn
            for k in 0..<trainers.count {
                let i = (turn + k) % trainers.count
                seconds[i].append(try trainers[i].trainEpoch(0, train: data).epochSeconds)
            }
        }
        /// Training `i`'s chunk time over the unshaped one's in the same turn, less 1, sorted.
        func overheads(_ i: Int) -> [Double] { zip(seconds[i], seconds[0]).map { $0 / $1 - 1 }.sorted() }
        let shapedRatios = overheads(1), serialRatios = overheads(2)
        func rate(_ s: [Double]) -> Double { Double(batch * chunkSteps) / quantile(s.sorted(), 0.5) }
        return ShapingOverhead(
            network: network, terms: terms, unshapedSamplesPerSecond: rate(seconds[0]),
            shapedSamplesPerSecond: rate(seconds[1]), overhead: quantile(shapedRatios, 0.5),
            overheadQuartiles: [quantile(shapedRatios, 0.25), quantile(shapedRatios, 0.75)],
            chunkPairs: turns, stepsPerChunk: chunkSteps,
            penaltyMillisecondsPerStep: timed?.millisecondsPerCall ?? 0,
            serialShapedSamplesPerSecond: rate(seconds[2]), serialOverhead: quantile(serialRatios, 0.5))
    }

    /// The `q` quantile of sorted values, interpolated between neighbours.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        let x = q * Double(sorted.count - 1), i = Int(x), f = x - Double(i)
        return i + 1 < sorted.count ? sorted[i] + f * (sorted[i + 1] - sorted[i]) : sorted[i]
    }

    /// The given terms on every weight layer, each with λ = 0.1 at its default target.
    public static func shapingTerms(_ terms: [PenaltyTerm], rangeOnEveryWeight: Bool = false) -> ShapingConfig
    {
        var s = ShapingConfig()
        for t in terms { s.terms[t] = ShapingConfig.Term(weight: 0.1, target: t.defaultTarget) }
        // The worst case: a target below any real ratio keeps the range term active, and on the
        // nearly uniform initial weights every weight's exponential counts.
        if rangeOnEveryWeight { s.terms[.range]?.target = 1.0 }
        return s
    }

    /// What the shaping part measures: the KURE term, every term at its default target, and every
    /// term with the range term forced onto every weight.
    static let shapingCases: [(label: String, config: ShapingConfig)] = [
        ("kurtosis", shapingTerms([.kurtosis])),
        ("all", shapingTerms(PenaltyTerm.allCases)),
        ("all, range on every weight", shapingTerms(PenaltyTerm.allCases, rangeOnEveryWeight: true))
    ]

    /// Each term alone, then all together: the best of three rounds of 50 steps' penalty values
    /// and gradients on every weight layer of the freshly initialised network.
    public static func penaltyCosts(network: String, layers: [LayerSpec]) throws -> [PenaltyCost] {
        let model = try Sequential(specs: layers, inputShape: [1, 28, 28], seed: 1)
        let weights = ShapingLossTerm.weightLayers(model).reduce(0) { n, i in
            n + (model.layers[i].state.first { $0.role == .weight }?.value.count ?? 0)
        }
        let cases =
            PenaltyTerm.allCases.map { ($0.rawValue, shapingTerms([$0])) }
            + [("range on every weight", shapingTerms([.range], rangeOnEveryWeight: true))]
            + shapingCases.dropFirst()
        return cases.map { label, config in
            let term = ShapingLossTerm(config, model: model)
            _ = term.addGradients(model: model, epoch: 1)
            let best = (0..<3).map { _ in
                time { for _ in 0..<50 { _ = term.addGradients(model: model, epoch: 1) } }
            }.min()!
            return PenaltyCost(
                network: network, term: label, weights: weights, millisecondsPerStep: best / 50 * 1000)
        }
    }
}

/// A loss term that also clocks its own calls.
final class TimedLossTerm: LossTerm {
    let inner: LossTerm
    private var seconds = 0.0, calls = 0
    init(_ inner: LossTerm) { self.inner = inner }

    var millisecondsPerCall: Double { calls > 0 ? seconds / Double(calls) * 1000 : 0 }
    func reset() { (seconds, calls) = (0, 0) }

    func addGradients(model: Sequential, epoch: Double) -> [String: Double] {
        let clock = ContinuousClock(), start = clock.now
        defer { seconds += Training.seconds(clock.now - start); calls += 1 }
        return inner.addGradients(model: model, epoch: epoch)
    }

    var setsGradients: [Parameter] { inner.setsGradients }

    func layerStatistics(model: Sequential) -> [String: [String: Double]] {
        inner.layerStatistics(model: model)
    }
}
