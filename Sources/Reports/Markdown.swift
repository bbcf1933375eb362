// report.md: the report as Markdown tables.
import Foundation

extension Report {
    /// Keys shown in the config summary, in this order, when present.
    static let summaryKeys = [
        "data.format", "data.dir", "training.epochs", "training.batch_size", "training.seed",
        "training.optimizer", "training.schedule", "shaping.layers", "shaping.kurtosis",
        "shaping.skewness", "shaping.range", "shaping.quant_error", "shaping.l2",
        "quantize.bits", "quantize.activation_bits", "quantize.granularity", "quantize.qat"
    ]

    /// report.md: readable in a terminal and on a code-hosting site.
    public func markdown() -> String {
        var out = "# QShape report: \(run)\n\n"
        out += "## Config\n\n| key | value |\n|---|---|\n"
        for k in Report.summaryKeys { if let v = config[k] { out += "| `\(k)` | `\(v)` |\n" } }
        let model = config.keys.filter { $0.hasPrefix("model.layers[") }.sorted {
            layerIndex($0) < layerIndex($1)
        }
        out +=
            "| `model` | " + model.compactMap { config[$0] }.map { "`\($0)`" }.joined(separator: " → ")
            + " |\n"
        if let machine, !machine.isEmpty {
            out += "\n## Machine\n\n| | |\n|---|---|\n"
            for line in machine where line.count == 2 { out += "| \(line[0]) | \(line[1]) |\n" }
        }
        if let a = accuracy {
            out += "\n## Accuracy by bit width\n\n"
            out +=
                a.weightsOnly
                ? "Weights quantised, everything else float.\n\n"
                : "Weights and activations quantised; integer = the integer engine.\n\n"
            out +=
                "| quantised | float | simulated | integer | agreement with float | C flash | C RAM |\n|---|---|---|---|---|---|---|\n"
            for r in a.rows {
                out +=
                    "| \(a.kind(r)) | \(Format.pct(a.float)) | \(Format.pct(r.simulated)) | \(Format.pct(r.integer)) | \(Format.pct(r.agreement)) "
                    + "| \(Format.kib(r.flashBytes)) | \(Format.kib(r.ramBytes)) |\n"
            }
        }
        out +=
            "\n## Layers\n\n| layer | shape | skewness | kurtosis | max\\|w\\|/σ | SQNR (dB) | levels used | act. SQNR (dB) | acc. bits needed/of |\n"
        out += "|---|---|---|---|---|---|---|---|---|\n"
        for l in layers {
            out +=
                "| \(l.name) | \(l.shape.map(String.init).joined(separator: "×")) | \(Format.num(l.skewness)) | \(Format.num(l.kurtosis)) | "
            out +=
                "\(Format.num(l.maxAbsOverStd, 2)) | \(Format.db(l.sqnrDb)) @\(l.bits)b | \(l.levelsUsed)/\(2 * l.gridLevels + 1) | "
            out += "\(Format.db(l.activationSqnr)) | \(l.accumulatorText) |\n"
        }
        guard !training.epochs.isEmpty else {
            return out
                + "\n## Training\n\nNone in this folder: `qshape quantize` converted the weights in `model.safetensors`; their float test accuracy is \(Format.pct(training.testAccuracy))%.\n"
        }
        out += "\n## Training\n\n"
        out +=
            "\(training.epochs.count) epochs in \(String(format: "%.1f", training.totalSeconds)) s; final test accuracy \(Format.pct(training.testAccuracy))%.\n\n"
        out += "| epoch | loss | train | test | learning rate |\n|---|---|---|---|---|\n"
        for e in training.epochs {
            out +=
                "| \(e.epoch)\(e.phase.map { " (\($0))" } ?? "") | \(Format.num(e.loss, 4)) | \(Format.pct(e.trainAccuracy)) | \(Format.pct(e.testAccuracy)) | \(String(format: "%.3g", e.learningRate)) |\n"
        }
        return out
    }
}

func layerIndex(_ key: String) -> Int {
    Int(key.drop { $0 != "[" }.dropFirst().prefix { $0.isNumber }) ?? 0
}
