// The shaping penalties as a training loss term: per layer and scope, aggregated over layers,
// weighted by λ and the warm-up ramp, with per-layer statistics for the logs.
import Tensors
import NeuralNet
import Training
import Quantization

/// The shaping penalties as a loss term of the training loop: for every selected weight layer,
/// each term's value (per tensor, or the mean over output channels), aggregated over layers
/// (mean, sum or max) and weighted by λ and the warm-up ramp; the gradients are added to the
/// weights' gradients.
public final class ShapingLossTerm: LossTerm {
    public let config: ShapingConfig
    /// (state-dict index of the layer, its weight parameter, output channels)
    let targets: [(index: Int, weight: Parameter, channels: Int)]
    /// Per target: its active scopes with their settings, and each term's λ on it (worked out
    /// once, not at every step).
    private let plans:
        [(scopes: [(scope: ShapingConfig.Scope, settings: PenaltySettings)], weights: TermTable)]
    /// Per target and active scope: each group's mean at the previous step, the centre for this
    /// step's moment sums.
    private var meanHints: [[[Float]?]]

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
        plans = chosen.map { i in
            let scopes = ShapingConfig.Scope.allCases.map { ($0, config.settings(layer: i, scope: $0)) }
                .filter { $0.1.isActive }
            var weights = TermTable()
            for t in PenaltyTerm.ordered { weights[t] = config.term(t, layer: i)?.weight }
            return (scopes, weights)
        }
        meanHints = plans.map { [[Float]?](repeating: nil, count: $0.scopes.count) }
    }

    /// Indices of the layers that have a weight matrix or kernel (dense, conv2d).
    public static func weightLayers(_ model: Sequential) -> [Int] {
        model.layers.indices.filter { i in model.layers[i].state.contains { $0.role == .weight } }
    }

    public var layerNames: [String] { targets.map { "\($0.index).weight" } }

    /// The group means of the last step, `TARGET.SCOPE` → means (checkpoints).
    public var savedState: [String: [Float]] {
        var s: [String: [Float]] = [:]
        for (l, hints) in meanHints.enumerated() {
            for (k, h) in hints.enumerated() { if let h { s["\(l).\(k)"] = h } }
        }
        return s
    }

    public func restore(_ state: [String: [Float]]) -> Bool {
        var hints = meanHints.map { $0.map { _ -> [Float]? in nil } }
        for (key, means) in state {
            let parts = key.split(separator: ".").compactMap { Int($0) }
            guard parts.count == 2, hints.indices.contains(parts[0]),
                hints[parts[0]].indices.contains(parts[1]),
                means.count
                    == (plans[parts[0]].scopes[parts[1]].scope == .tensor ? 1 : targets[parts[0]].channels)
            else { return false }
            hints[parts[0]][parts[1]] = means
        }
        meanHints = hints
        return true
    }

    /// Per layer and active scope: the evaluated groups (one per tensor, or one per channel).
    private struct LayerEvaluation {
        var scopes: [(settings: PenaltySettings, groups: [PenaltyState])] = []
        /// Unweighted term value of the layer (channel scope: mean over channels). Before the
        /// gradient pass, a term whose sums are deferred to it is present, its value not final.
        var values: TermTable {
            var v = TermTable()
            for (settings, gs) in scopes {
                for g in gs {
                    g.termValues(settings).forEach { v[$0, default: 0] += $1 / Double(gs.count) }
                }
            }
            return v
        }
    }

    /// `deferring` leaves the sums the gradient pass can take to it (`Penalties.evaluate`).
    private func evaluate(_ l: Int, deferring: Bool = false) -> LayerEvaluation {
        var e = LayerEvaluation()
        let t = targets[l]
        t.weight.value.withUnsafeBufferPointer { w in
            for (k, (scope, s)) in plans[l].scopes.enumerated() {
                let hints = meanHints[l][k], count = scope == .tensor ? 1 : t.channels
                let groups = (0..<count).map { c in
                    Penalties.evaluate(
                        channelSlice(w, channels: count, c), s, meanHint: hints?[c],
                        deferring: deferring)
                }
                meanHints[l][k] = groups.map { Float($0.mean) }
                e.scopes.append((s, groups))
            }
        }
        return e
    }

    /// The weights of the layers it shapes: their gradients start from its pass (the first scope's
    /// sets them, the others add).
    public var setsGradients: [Parameter] {
        targets.indices.filter { !plans[$0].scopes.isEmpty }.map { targets[$0].weight }
    }

    public func addGradients(model: Sequential, epoch: Double) -> [String: Double] {
        let ramp = config.rampFactor(epoch: epoch)
        guard ramp > 0, !targets.isEmpty else {
            for p in setsGradients { p.zeroGradient() }
            return [:]
        }
        // Only the `max` aggregation needs a value before the gradients; otherwise the gradient
        // pass, which computes every residual anyway, also sums the quantisation error, and the
        // range bound's band.
        let deferring = ![PenaltyTerm.quantError, .range].contains { config.terms[$0]?.aggregate == .max }
        var evaluations = targets.indices.map { evaluate($0, deferring: deferring) }
        let shares = self.shares(evaluations.map(\.values), ramp: ramp)
        for (l, target) in targets.enumerated() {
            var decay: [Float] = []  // one factor per channel, made at the first that is not 0
            target.weight.value.withUnsafeBufferPointer { w in
                target.weight.grad.withUnsafeMutableBufferPointer { g in
                    for (k, (s, groups)) in evaluations[l].scopes.enumerated() {
                        let scales = shares[l].mapValues { $0 / Double(groups.count) }
                        let size = w.count / groups.count
                        evaluations[l].scopes[k].groups = groups.enumerated().map { c, group in
                            let gs = UnsafeMutableBufferPointer(rebasing: g[(c * size)..<((c + 1) * size)])
                            let (done, d) = Penalties.addGradient(
                                channelSlice(w, channels: groups.count, c), gs, group, s, scales: scales,
                                overwrite: k == 0)
                            // A tensor's factor is every channel's.
                            if d != 0 {
                                if decay.isEmpty { decay = [Float](repeating: 0, count: target.channels) }
                                for ch in groups.count == 1 ? decay.indices : c..<(c + 1) { decay[ch] += d }
                            }
                            return done
                        }
                    }
                }
            }
            // The relative quantisation error's part −K·w, left to the optimiser (one factor for
            // the tensor when the channels' are equal; none when the term left none).
            let uniform = !decay.isEmpty && decay.allSatisfy { $0 == decay[0] }
            target.weight.gradientDecay = uniform ? [decay[0]] : decay
        }
        // Each term's weighted total, from the values complete after the gradient pass (the
        // quantisation error's sums can come from it).
        let values = evaluations.map(\.values)
        var totals: [String: Double] = [:]
        for t in PenaltyTerm.ordered {
            let layers = values.indices.filter { shares[$0][t] != nil }
            guard !layers.isEmpty else { continue }
            totals[t.rawValue] = layers.reduce(0) { $0 + shares[$1][t]! * values[$1][t]! }
        }
        return totals
    }

    /// Each layer's share of each term: λ times the aggregation factor (mean 1/L, sum 1; max 1 for
    /// the layer with the largest value, none for the others) times the warm-up ramp.
    private func shares(_ values: [TermTable], ramp: Double) -> [TermTable] {
        var shares = [TermTable](repeating: [:], count: targets.count)
        for t in PenaltyTerm.ordered {
            let layers = targets.indices.filter { values[$0][t] != nil }
            guard !layers.isEmpty else { continue }
            let aggregate = config.terms[t]?.aggregate ?? .mean
            switch aggregate {
            case .mean, .sum:
                let f = aggregate == .mean ? 1 / Double(layers.count) : 1
                for l in layers { shares[l][t] = (plans[l].weights[t] ?? 0) * f * ramp }
            case .max:
                let l = layers.max { values[$0][t]! < values[$1][t]! }!
                shares[l][t] = (plans[l].weights[t] ?? 0) * ramp
            }
        }
        return shares
    }

    public func layerStatistics(model: Sequential) -> [String: [String: Double]] {
        var out: [String: [String: Double]] = [:]
        for (l, t) in targets.enumerated() {
            let w = t.weight.value.data
            let st = WeightStatistics(w), q = SeedQuantization(w, bits: statisticsBits)
            var row: [String: Double] = [
                "mean": st.mean, "std": st.std, "skewness": st.skewness,
                "kurtosis": st.kurtosis, "max_abs_over_std": st.maxAbsOverStd,
                "sqnr_db": q.sqnrDB, "levels_used": Double(q.levelsUsed),
                "bits": Double(statisticsBits)
            ]
            evaluate(l).values.forEach { row["penalty_\($0.rawValue)"] = $1 }
            out["\(t.index).weight"] = row
        }
        return out
    }
}
