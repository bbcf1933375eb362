// The resolved config written back as YAML: every key with the value used (the run's config.yaml).
import Foundation
import NeuralNet
import Shaping
import Training

extension Config {
    /// The config as it was run: every key with its value after defaults and `--set` overrides.
    /// Loading this text again gives the same `Config`.
    public var resolvedYAML: String {
        var out = "# Resolved by qshape: every key with the value that was used.\n"
        out += "name: \(quoted(name))\n"
        out += section("data", dataPairs)
        out += "model:\n  layers:\n"
        for spec in layers { out += "    - \(yamlLayer(spec))\n" }
        out += section("training", trainingPairs)
        if let s = shaping { out += shapingYAML(s) }
        if let q = quantize { out += quantizeYAML(q) }
        return out
    }

    private var dataPairs: [(String, String)] {
        var p: [(String, String)] = [
            ("format", data.format.rawValue), ("dir", quoted(data.dir)),
            ("train_images", quoted(data.trainImages))
        ]
        if data.format != .csv { p.append(("train_labels", quoted(data.trainLabels))) }
        p.append(("test_images", quoted(data.testImages)))
        if data.format != .csv { p.append(("test_labels", quoted(data.testLabels))) }
        if let s = data.inputShape {
            p.append(("input_shape", "[\(s.map(String.init).joined(separator: ", "))]"))
        }
        if data.format == .csv { p.append(("label_column", "\(data.labelColumn)")) }
        p += [
            ("scale", num(data.scale)), ("mean", num(data.mean)), ("std", num(data.std)),
            ("validation_split", num(data.validationSplit)), ("train_limit", "\(data.trainLimit)"),
            ("test_limit", "\(data.testLimit)")
        ]
        return p
    }

    private var trainingPairs: [(String, String)] {
        let t = training, o = t.optimizer, s = t.schedule
        var opt = "{name: \(o.kind.rawValue), lr: \(num(o.learningRate))"
        if o.kind == .sgd {
            opt += ", momentum: \(num(o.momentum)), nesterov: \(o.nesterov)"
        } else {
            opt += ", betas: [\(num(o.beta1)), \(num(o.beta2))], eps: \(num(o.eps))"
        }
        opt += ", weight_decay: \(num(o.weightDecay))}"
        var sched = "{name: \(s.kind.rawValue)"
        switch s.kind {
        case .constant: break
        case .step: sched += ", step_epochs: \(s.stepEpochs), gamma: \(num(s.gamma))"
        case .cosine: sched += ", warmup_epochs: \(num(s.warmupEpochs)), min_lr: \(num(s.minLearningRate))"
        }
        sched += "}"
        return [
            ("epochs", "\(t.epochs)"), ("batch_size", "\(t.batchSize)"), ("seed", "\(t.seed)"),
            ("optimizer", opt), ("schedule", sched), ("grad_clip", num(t.gradientClip)),
            ("max_steps_per_epoch", "\(t.maxStepsPerEpoch)"), ("checkpoint_steps", "\(t.checkpointSteps)"),
            ("threads", "\(threads)"), ("overlap", "\(t.overlapSteps)")
        ]
    }
}

func section(_ name: String, _ pairs: [(String, String)]) -> String {
    "\(name):\n" + pairs.map { "  \($0.0): \($0.1)\n" }.joined()
}

func yamlLayer(_ spec: LayerSpec) -> String {
    var fields: [String] = ["type: \(spec.typeName)"]
    switch spec {
    case let .dense(i, o, b):
        if let i { fields.append("in: \(i)") }
        fields.append("out: \(o)")
        if !b { fields.append("bias: false") }
    case let .conv2d(i, o, k, s, p, b):
        if let i { fields.append("in: \(i)") }
        fields += ["out: \(o)", "kernel: \(k)", "stride: \(s)", "padding: \(p)"]
        if !b { fields.append("bias: false") }
    case let .maxpool2d(k, s, p):
        fields.append("kernel: \(k)")
        if let s { fields.append("stride: \(s)") }
        if p != 0 { fields.append("padding: \(p)") }
    case let .avgpool2d(k, s):
        fields.append("kernel: \(k)")
        if let s { fields.append("stride: \(s)") }
    case let .batchnorm1d(eps, m), let .batchnorm2d(eps, m):
        fields += ["eps: \(num(Double(eps)))", "momentum: \(num(Double(m)))"]
    case let .dropout(p):
        fields.append("p: \(num(Double(p)))")
    case .globalavgpool2d, .relu, .relu6, .flatten:
        break
    }
    return "{\(fields.joined(separator: ", "))}"
}

/// A number as YAML reads it back exactly (shortest round-trip form).
func num(_ x: Double) -> String { "\(x)" }

/// A YAML double-quoted string.
func quoted(_ s: String) -> String {
    "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

func shapingYAML(_ s: ShapingConfig) -> String {
    var pairs: [(String, String)] = []
    switch s.layers {
    case .all: pairs.append(("layers", "all"))
    case .allButFirstLast: pairs.append(("layers", "all_but_first_last"))
    case .indices(let list): pairs.append(("layers", "[\(list.map(String.init).joined(separator: ", "))]"))
    }
    pairs += [("warmup_epochs", num(s.warmupEpochs)), ("start_epoch", num(s.startEpoch))]
    func term(_ t: PenaltyTerm, _ v: ShapingConfig.Term, extras: Bool) -> String {
        var f = ["weight: \(num(v.weight))"]
        if let target = v.target { f.append("target: \(num(target))") }
        f += ["scope: \(v.scope.rawValue)", "aggregate: \(v.aggregate.rawValue)"]
        if extras && t == .range { f.append("sharpness: \(num(s.rangeSharpness))") }
        if extras && t == .quantError {
            f.append("bits: \(s.quantErrorBits)")
            f.append("relative: \(s.quantErrorRelative)")
        }
        return "{\(f.joined(separator: ", "))}"
    }
    for t in PenaltyTerm.allCases {
        if let v = s.terms[t] { pairs.append((t.rawValue, term(t, v, extras: true))) }
    }
    if !s.overrides.isEmpty {
        let items = s.overrides.keys.sorted().map { i in
            "\"\(i)\": {"
                + PenaltyTerm.allCases.compactMap { t in
                    s.overrides[i]?[t].map { "\(t.rawValue): \(term(t, $0, extras: false))" }
                }
                .joined(separator: ", ") + "}"
        }
        pairs.append(("overrides", "{\(items.joined(separator: ", "))}"))
    }
    return section("shaping", pairs)
}
