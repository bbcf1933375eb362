// Which shaping terms act on which layers, how strongly and when: the `shaping:` section as the
// loss term uses it.
/// The `shaping:` section: which penalties act on which layers, how strongly, and when.
public struct ShapingConfig: Equatable, Sendable {
    public enum Scope: String, CaseIterable, Sendable { case tensor, channel }
    public enum Aggregate: String, CaseIterable, Sendable { case mean, sum, max }
    public enum Selection: Equatable, Sendable {
        case all, allButFirstLast
        case indices([Int])
    }

    public struct Term: Equatable, Sendable {
        public var weight = 0.0
        public var target: Double?
        public var scope: Scope = .tensor
        public var aggregate: Aggregate = .mean
        public init(
            weight: Double = 0, target: Double? = nil, scope: Scope = .tensor, aggregate: Aggregate = .mean
        ) {
            (self.weight, self.target, self.scope, self.aggregate) = (weight, target, scope, aggregate)
        }
    }

    public var layers: Selection = .all
    public var terms: [PenaltyTerm: Term] = [:]
    public var rangeSharpness = 20.0
    public var quantErrorBits = 4
    /// `quant_error.relative`: the error relative to the weights' energy (default) or in steps.
    public var quantErrorRelative = true
    public var warmupEpochs = 0.0
    public var startEpoch = 0.0
    /// Layer index → term → (weight, target) replacing the section's values for that layer.
    public var overrides: [Int: [PenaltyTerm: Term]] = [:]

    public init() {}

    public var isActive: Bool {
        terms.values.contains { $0.weight > 0 }
            || overrides.values.contains { $0.values.contains { $0.weight > 0 } }
    }

    /// λ's factor at fractional epoch t: 0 before `start_epoch`, then a linear ramp over `warmup_epochs`.
    public func rampFactor(epoch t: Double) -> Double {
        guard t >= startEpoch else { return 0 }
        guard warmupEpochs > 0 else { return 1 }
        return min(1, (t - startEpoch) / warmupEpochs)
    }

    /// A term as it applies to one layer: the layer's override, else the config's term (nil: off).
    func term(_ t: PenaltyTerm, layer: Int) -> Term? { overrides[layer]?[t] ?? terms[t] }

    /// The settings for one layer and one scope (terms of the other scope are off).
    func settings(layer: Int, scope: Scope) -> PenaltySettings {
        var s = PenaltySettings()
        s.rangeSharpness = rangeSharpness
        s.quantErrorBits = quantErrorBits
        s.quantErrorRelative = quantErrorRelative
        for t in PenaltyTerm.allCases {
            guard let term = term(t, layer: layer), term.scope == scope else { continue }
            if term.weight > 0 { s.terms.insert(t) }
            switch t {
            case .kurtosis: s.kurtosisTarget = term.target ?? s.kurtosisTarget
            case .skewness: s.skewnessTarget = term.target ?? s.skewnessTarget
            case .range: s.rangeTarget = term.target ?? s.rangeTarget
            case .quantError, .l2: break
            }
        }
        return s
    }
}
