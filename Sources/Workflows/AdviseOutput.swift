// `qshape advise` in the terminal: the sensitivity table, the front, the recommendation verified
// on the integer engine, and the config fragment.
import Foundation
import Reports

extension AdviseWorkflow {
    /// The result as terminal lines.
    public static func table(_ r: Result) -> String {
        var out = [
            String(
                format:
                    "float %.2f%% on %d test images; float weights with %d-bit activations %.2f%% on the %d analysed",
                r.floatAccuracy, r.testImages, r.activationBits, r.reference, r.images),
            "",
            "sensitivity: accuracy (%) with only this layer at b bits / with every layer but this one at b bits"
        ]
        let widths = r.layers.first?.sensitivity.map(\.bits) ?? []
        out.append(
            pad("layer", 10) + pad("weights", 9, right: true) + pad("flash", 7, right: true)
                + pad("kurt", 7, right: true) + pad("max/σ", 7, right: true) + pad("act dB", 8, right: true)
                + "  " + widths.map { pad("W\($0)", 13, right: true) }.joined())
        for l in r.layers {
            out.append(
                pad(l.name, 10) + pad("\(l.weights)", 9, right: true)
                    + pad(String(format: "%.0f%%", 100 * l.flashShare), 7, right: true)
                    + pad(String(format: "%.1f", l.kurtosis), 7, right: true)
                    + pad(String(format: "%.1f", l.maxAbsOverStd), 7, right: true)
                    + pad(String(format: "%.1f", l.activationSQNR), 8, right: true) + "  "
                    + l.sensitivity.map {
                        pad(
                            String(format: "%.1f/%.1f", $0.onlyThisQuantized, $0.allButThisQuantized), 13,
                            right: true)
                    }.joined())
        }
        out += ["", "front (weight bytes against accuracy simulated on the \(r.images) images):"]
        out.append(
            pad("bytes", 9, right: true) + "  " + pad("widths", 16) + pad("predicted", 10, right: true)
                + pad("simulated", 11, right: true))
        for p in r.front {
            out.append(
                pad("\(p.weightBytes)", 9, right: true) + "  " + pad(Advice.label(p.bits), 16)
                    + pad(p.predicted.map { String(format: "%.2f%%", $0) } ?? "–", 10, right: true)
                    + pad(String(format: "%.2f%%", p.simulated), 11, right: true))
        }
        let v = r.recommendation
        let goal =
            r.flashBudget.map { "the most accurate within \($0) bytes of weights" }
            ?? String(format: "the least flash within %.2f points of float weights", r.maxDrop ?? 0)
        out += [
            "", "recommended (\(goal)): \(Advice.label(v.bits)), \(v.weightBytes) bytes of weights",
            String(
                format: "  on all %d test images: predicted (simulation) %.2f%%, integer engine %.2f%%",
                r.testImages, v.simulated, v.integer)
        ]
        for u in r.uniform {
            out.append(
                String(
                    format: "  uniform %@ (%d bytes): simulation %.2f%%, integer engine %.2f%%",
                    Advice.label(u.bits), u.weightBytes, u.simulated, u.integer))
        }
        out += ["", "as a config section:", r.fragment]
        if let p = r.shaping { out += shapingLines(p, r) }
        return out.joined(separator: "\n")
    }

    static func shapingLines(_ p: Advice.ShapingAdvice, _ r: Result) -> [String] {
        var out = [
            "shaping probe: \(p.steps) fine-tuning steps each at a tenth of the learning rate, on layers \(p.layers.map(String.init).joined(separator: ", "))",
            pad("terms", 20) + pad("λ", 7, right: true) + pad("kurtosis", 10, right: true)
                + pad("float w.", 10, right: true) + "  " + pad("widths", 14)
                + pad("accuracy", 10, right: true)
        ]
        for q in p.probes {
            out.append(
                pad(q.terms == "none" ? "none (control)" : q.terms, 20)
                    + pad(q.terms == "none" ? "–" : String(format: "%g", q.lambda), 7, right: true)
                    + pad(String(format: "%.2f", q.kurtosis), 10, right: true)
                    + pad(String(format: "%.2f%%", q.reference), 10, right: true) + "  "
                    + pad(Advice.label(q.bits), 14)
                    + pad(String(format: "%.2f%%", q.simulated), 10, right: true))
        }
        out.append(
            String(
                format: "integer engine on all %d test images: control %@ %.2f%%, best probe %@ %.2f%%",
                r.testImages, Advice.label(p.control.bits), p.control.integer, Advice.label(p.best.bits),
                p.best.integer))
        out.append("→ \(p.verdict)")
        if let f = p.fragment { out += ["train with:", f] }
        return out
    }
}

extension AdviseWorkflow {
    /// Refuses, before the analysis, an --out folder that is not new or empty (unless `force`).
    public static func checkOutput(_ dir: String, force: Bool) throws {
        var isDir: ObjCBool = false
        guard !force, FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw RunError("\(dir) exists and is not a folder") }
        guard ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? ["?"]).isEmpty else {
            throw RunError(
                "\(dir) already exists and is not empty: pass --force to replace it, or --out to choose another folder"
            )
        }
    }

    /// advice.json, advice.md and advice.html into `dir`, all or nothing.
    public static func write(_ r: Result, to dir: String, force: Bool) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let json = String(decoding: try encoder.encode(r), as: UTF8.self) + "\n"
        try ExportWorkflow.writeFolder(
            [("advice.json", json), ("advice.md", r.markdown()), ("advice.html", r.html())], to: dir,
            force: force)
    }
}
