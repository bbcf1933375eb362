import Tensors
import NeuralNet
import Training
import Shaping
import Quantization

/// The shaping penalties as a loss term of the training loop: for every selected weight layer,
/// each term's value (per tensor, or the mean over output channels), aggregated over layers
/// (mean, sum or max) and weighted by λ and the warm-up ramp; the gradients go straight into
/// the weights' gradients.
public final class ShapingLossTerm: LossTerm {
    public let config: ShapingConfig
    /// (state-dict index of the layer, its weight parameter, output channels)
    let targets: [(index: Int, weight: Parameter, channels: Int)]
    /// Each group's mean at the previous step, the centre for this step's moment sums.
    private var meanHints: [String: [Float]] = [:]

    /// The bit width of the seed quantiser whose SQNR and levels used are logged per layer.
    public var statisticsBits = 8

    public init(_ config: ShapingConfig, model: Sequential) {
        self.config = config
        let all = ShapingLossTerm.weightLayers(model)
        let chosen: [Int]
        switch config.layers {
        case .all: chosen = all
        case .allButFirstLast: chosen = all.count > 2 ? Array(all.dropFirst().dropLast()) : []
        case .indices(let list): chosen = all.filter(list.contains)
        }
        targets = chosen.map { i in
            let w = model.layers[i].state.first { $0.role == .weight }!
            return (i, w, w.value.shape[0])
        }
    }

    /// Indices of the layers that have a weight matrix or kernel (dense, conv2d).
    public static func weightLayers(_ model: Sequential) -> [Int] {
        model.layers.indices.filter { i in model.layers[i].state.contains { $0.role == .weight } }
    }

    public var layerNames: [String] { targets.map { "\($0.index).weight" } }

    /// Per layer and scope: the evaluated groups (one per tensor, or one per channel).
    private struct LayerEvaluation {
        var settings: [ShapingConfig.Scope: PenaltySettings] = [:]
        var groups: [ShapingConfig.Scope: [PenaltyState]] = [:]
        /// Unweighted term value of the layer (channel scope: mean over channels).
        var values: [PenaltyTerm: Double] = [:]
    }

    private func evaluate(_ t: (index: Int, weight: Parameter, channels: Int)) -> LayerEvaluation {
        var e = LayerEvaluation()
        t.weight.value.withUnsafeBufferPointer { w in
            for scope in ShapingConfig.Scope.allCases {
                let s = config.settings(layer: t.index, scope: scope)
                guard s.isActive else { continue }
                let key = "\(t.index).\(scope.rawValue)", hints = meanHints[key]
                let groups = scope == .tensor ? [Penalties.evaluate(w, s, meanHint: hints?[0])]
                    : (0..<t.channels).map { Penalties.evaluate(channelSlice(w, channels: t.channels, $0), s, meanHint: hints?[$0]) }
                meanHints[key] = groups.map { Float($0.mean) }
                for g in groups { for (term, v) in g.values(s) { e.values[term, default: 0] += v / Double(groups.count) } }
                e.settings[scope] = s
                e.groups[scope] = groups
            }
        }
        return e
    }

    private func term(_ t: PenaltyTerm, layer: Int) -> ShapingConfig.Term? { config.overrides[layer]?[t] ?? config.terms[t] }

    public func addGradients(model: Sequential, epoch: Double) -> [String: Double] {
        let ramp = config.rampFactor(epoch: epoch)
        guard ramp > 0, !targets.isEmpty else { return [:] }
        let evaluations = targets.map(evaluate)
        // Aggregation: each layer's share of each term (mean 1/L, sum 1, max 1 for the largest).
        var shares = [[PenaltyTerm: Double]](repeating: [:], count: targets.count)
        var totals: [String: Double] = [:]
        for t in PenaltyTerm.allCases {
            let layers = targets.indices.filter { evaluations[$0].values[t] != nil }
            guard !layers.isEmpty else { continue }
            let aggregate = config.terms[t]?.aggregate ?? .mean
            var total = 0.0
            switch aggregate {
            case .mean, .sum:
                let f = aggregate == .mean ? 1 / Double(layers.count) : 1
                for l in layers {
                    let lambda = term(t, layer: targets[l].index)?.weight ?? 0
                    shares[l][t] = lambda * f * ramp
                    total += lambda * f * ramp * evaluations[l].values[t]!
                }
            case .max:
                let l = layers.max { evaluations[$0].values[t]! < evaluations[$1].values[t]! }!
                let lambda = term(t, layer: targets[l].index)?.weight ?? 0
                shares[l][t] = lambda * ramp
                total = lambda * ramp * evaluations[l].values[t]!
            }
            totals[t.rawValue] = total
        }
        for (l, target) in targets.enumerated() {
            let e = evaluations[l]
            target.weight.value.withUnsafeBufferPointer { w in
                target.weight.grad.withUnsafeMutableBufferPointer { g in
                    for (scope, groups) in e.groups {
                        let s = e.settings[scope]!
                        let scales = shares[l].mapValues { $0 / Double(groups.count) }
                        if scope == .tensor {
                            Penalties.addGradient(w, g, groups[0], s, scales: scales)
                        } else {
                            let size = w.count / target.channels
                            for (c, group) in groups.enumerated() {
                                let gs = UnsafeMutableBufferPointer(rebasing: g[(c * size)..<((c + 1) * size)])
                                Penalties.addGradient(channelSlice(w, channels: target.channels, c), gs, group, s, scales: scales)
                            }
                        }
                    }
                }
            }
        }
        return totals
    }

    public func layerStatistics(model: Sequential) -> [String: [String: Double]] {
        var out: [String: [String: Double]] = [:]
        for t in targets {
            let st = StatsWorkflow.row(t.weight.value.data, bits: statisticsBits)
            var row: [String: Double] = ["mean": st.mean, "std": st.std, "skewness": st.skewness,
                                         "kurtosis": st.kurtosis, "max_abs_over_std": st.maxAbsOverStd,
                                         "sqnr_db": st.sqnrDB, "levels_used": Double(st.levelsUsed),
                                         "bits": Double(statisticsBits)]
            for (term, v) in evaluate(t).values { row["penalty_\(term.rawValue)"] = v }
            out["\(t.index).weight"] = row
        }
        return out
    }
}
