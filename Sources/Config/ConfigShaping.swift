// The `shaping:` section of a config file: reading and checking it into a ShapingConfig.
import Shaping

extension Config {
    static let shapingKeys =
        ["layers", "aggregate", "scope", "warmup_epochs", "start_epoch", "overrides"]
        + PenaltyTerm.allCases.map(\.rawValue)

    static func readShaping(_ top: ConfigReader, epochs: Int) throws -> ShapingConfig? {
        guard top.has("shaping") else { return nil }
        let r = try top.child("shaping", allowed: shapingKeys)
        var s = ShapingConfig()
        let scope = ShapingConfig.Scope(
            rawValue: try r.choice("scope", default: "tensor", ShapingConfig.Scope.allCases.map(\.rawValue)))!
        let aggregate = ShapingConfig.Aggregate(
            rawValue: try r.choice(
                "aggregate", default: "mean", ShapingConfig.Aggregate.allCases.map(\.rawValue)))!
        s.warmupEpochs = try r.number("warmup_epochs", default: 0, min: 0)
        s.startEpoch = try r.number("start_epoch", default: 0, min: 0)
        if s.startEpoch >= Double(epochs) {
            throw r.error(
                "start_epoch", "must be less than training.epochs (\(epochs)), or shaping never starts")
        }
        if case .sequence = r.node["layers"]?.kind, let items = try r.sequence("layers") {
            s.layers = .indices(
                try items.enumerated().map { i, item in
                    guard case .scalar(let text) = item.kind, let v = Int(text), v >= 0 else {
                        throw ConfigError(
                            file: r.file, path: "shaping.layers[\(i)]", line: item.line,
                            "expected a layer index (0, 1, 2, …)")
                    }
                    return v
                })
        } else {
            let choice = try r.choice("layers", default: "all", ["all", "all_but_first_last"])
            s.layers = choice == "all" ? .all : .allButFirstLast
        }
        for t in PenaltyTerm.allCases where r.has(t.rawValue) {
            let (term, extra) = try readTerm(
                r, key: t.rawValue, term: t, scope: scope, aggregate: aggregate, base: nil)
            s.terms[t] = term
            if let sharp = extra.sharpness { s.rangeSharpness = sharp }
            if let bits = extra.bits { s.quantErrorBits = bits }
            if let relative = extra.relative { s.quantErrorRelative = relative }
        }
        if r.has("overrides") {
            s.overrides = try readOverrides(r, s, scope: scope, aggregate: aggregate)
        }
        return s
    }

    /// `shaping.overrides`: per layer index, terms whose unset keys come from the section's.
    private static func readOverrides(
        _ r: ConfigReader, _ s: ShapingConfig, scope: ShapingConfig.Scope, aggregate: ShapingConfig.Aggregate
    ) throws -> [Int: [PenaltyTerm: ShapingConfig.Term]] {
        var overrides: [Int: [PenaltyTerm: ShapingConfig.Term]] = [:]
        let o = r.node["overrides"]!
        guard let entries = o.entries else {
            throw r.error(
                "overrides",
                "expected a mapping of layer index → terms, e.g. {\"5\": {kurtosis: {weight: 0}}}")
        }
        for e in entries {
            guard let index = Int(e.key), index >= 0 else {
                throw ConfigError(
                    file: r.file, path: "shaping.overrides.\(e.key)", line: e.value.line,
                    "expected a layer index (0, 1, 2, …)")
            }
            let lr = try ConfigReader(
                file: r.file, path: "shaping.overrides.\(e.key)", node: e.value,
                allowed: PenaltyTerm.allCases.map(\.rawValue))
            var terms: [PenaltyTerm: ShapingConfig.Term] = [:]
            for t in PenaltyTerm.allCases where lr.has(t.rawValue) {
                terms[t] = try readTerm(
                    lr, key: t.rawValue, term: t, scope: scope, aggregate: aggregate, base: s.terms[t]
                ).0
            }
            overrides[index] = terms
        }
        return overrides
    }

    private static func readTerm(
        _ r: ConfigReader, key: String, term: PenaltyTerm, scope: ShapingConfig.Scope,
        aggregate: ShapingConfig.Aggregate, base: ShapingConfig.Term?
    )
        throws -> (ShapingConfig.Term, (sharpness: Double?, bits: Int?, relative: Bool?))
    {
        var allowed = ["weight", "scope", "aggregate"]
        if term.defaultTarget != nil { allowed.append("target") }
        if term == .range { allowed.append("sharpness") }
        if term == .quantError || term == .kurtosis { allowed.append("bits") }
        if term == .quantError { allowed.append("relative") }
        let t = try r.child(key, allowed: allowed)
        var out = base ?? ShapingConfig.Term()
        out.weight = try t.number("weight", default: base?.weight ?? 0, min: 0)
        out.scope = ShapingConfig.Scope(
            rawValue: try t.choice(
                "scope", default: (base?.scope ?? scope).rawValue,
                ShapingConfig.Scope.allCases.map(\.rawValue)))!
        out.aggregate = ShapingConfig.Aggregate(
            rawValue: try t.choice(
                "aggregate", default: (base?.aggregate ?? aggregate).rawValue,
                ShapingConfig.Aggregate.allCases.map(\.rawValue)))!
        if let d = term.defaultTarget {
            switch term {
            case .kurtosis:
                // `bits: b` asks for the shape of the b-bit grid instead of a number.
                if let b = try t.optionalInteger("bits", min: 2, max: 16) {
                    if t.has("target") { throw t.error("bits", "give either target or bits, not both") }
                    out.target = PenaltyTerm.gridKurtosis(bits: b)
                } else {
                    out.target = try t.number("target", default: base?.target ?? d, min: 1)
                }
            case .skewness: out.target = try t.number("target", default: base?.target ?? d)
            default:
                out.target = try t.number("target", default: base?.target ?? d, min: 0, exclusiveMin: true)
            }
        }
        let sharp = term == .range ? try t.optionalNumber("sharpness", min: 0, exclusiveMin: true) : nil
        let bits = term == .quantError ? try t.optionalInteger("bits", min: 2, max: 16) : nil
        let relative = term == .quantError && t.has("relative") ? try t.bool("relative", default: true) : nil
        return (out, (sharp, bits, relative))
    }

    /// Indices of the layers with weights (dense, conv2d), known from the layer list alone.
    public var weightLayerIndices: [Int] {
        layers.indices.filter { layers[$0].hasWeights }
    }

    /// Checks that every selected or overridden layer index names a weight layer.
    func validateShapingLayers() throws {
        guard let s = shaping else { return }
        let weightLayers = weightLayerIndices, layerCount = layers.count
        let describe = "weight layers of this model: \(weightLayers.map(String.init).joined(separator: ", "))"
        if case .indices(let list) = s.layers {
            for i in list where !weightLayers.contains(i) {
                throw ConfigError(
                    file: file, path: "shaping.layers",
                    "layer \(i) \(i < layerCount ? "has no weights" : "does not exist"); \(describe)")
            }
        }
        for i in s.overrides.keys.sorted() where !weightLayers.contains(i) {
            throw ConfigError(
                file: file, path: "shaping.overrides.\(i)",
                "layer \(i) \(i < layerCount ? "has no weights" : "does not exist"); \(describe)")
        }
    }
}
