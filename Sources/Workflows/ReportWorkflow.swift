// `qshape report`: a run's report built from the files in its folder.
import Config
import Foundation
import DataIO
import Shaping
import Quantization
import IntegerRuntime
import Reports
import Training

/// Builds a run's report from the files in its folder (config.yaml, metrics.jsonl,
/// initial.safetensors, model.safetensors, quantization.json) and writes report.json, report.md
/// and report.html. `qshape report RUN_DIR` runs it again on a finished run.
public enum ReportWorkflow {
    public static func build(runDirectory dir: String) throws -> Report {
        let configPath = "\(dir)/config.yaml"
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw RunError("\(dir) is not a QShape run folder (no config.yaml)")
        }
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        let node = try ConfigNode.parse(yaml: text, file: configPath)
        let name =
            node["name"].flatMap { if case .scalar(let s) = $0.kind { return s } else { return nil } }
            ?? URL(fileURLWithPath: dir).lastPathComponent
        let quantization = try readQuantization("\(dir)/quantization.json")
        // A `qshape quantize --out` folder has no training: its weights came from elsewhere.
        let trained = FileManager.default.fileExists(atPath: "\(dir)/metrics.jsonl") || quantization == nil
        let epochs = trained ? try readMetrics("\(dir)/metrics.jsonl") : []
        let final = try SafeTensors.read("\(dir)/model.safetensors")
        let initial = try? SafeTensors.read("\(dir)/initial.safetensors")
        let reportBits = quantization?.results.map(\.bits).min() ?? 8
        let rows = quantization?.results.first { $0.bits == reportBits }?.layers ?? []
        let layers = final.entries.filter { $0.shape.count >= 2 }.map { e -> Report.Layer in
            let w = e.floats, w0 = initial?[e.name]?.floats
            let row = rows.first { $0.name == e.name }
            let bits = row?.weightBits ?? reportBits
            let st = StatsWorkflow.row(w, bits: bits), qmax = BitWidth.qmax(bits)
            let span = max(w.map(abs).max() ?? 1, w0?.map(abs).max() ?? 0, 1e-12)
            let edges = (0...60).map { -Double(span) + 2 * Double(span) * Double($0) / 60 }
            return Report.Layer(
                name: e.name, shape: e.shape, mean: st.mean, std: st.std, skewness: st.skewness,
                kurtosis: st.kurtosis, maxAbsOverStd: st.maxAbsOverStd, bits: bits,
                sqnrDb: st.sqnrDB, levelsUsed: st.levelsUsed, activationSqnr: row?.activationSQNR,
                accumulatorBits: row?.accumulatorBits, accumulatorBitsNeeded: row?.accumulatorBitsNeeded,
                histogram: .init(
                    edges: edges, initial: w0.map { Report.counts($0, edges: edges) },
                    final: Report.counts(w, edges: edges)),
                gridStep: st.maxAbs / Double(qmax), gridLevels: qmax)
        }
        let accuracy = quantization.map { q in
            Report.Accuracy(
                float: q.floatAccuracy, weightsOnly: q.weightsOnly,
                activationBits: q.weightsOnly ? nil : q.activationBits,
                rows: q.results.map {
                    .init(
                        bits: $0.bits, simulated: $0.simulatedAccuracy, integer: $0.integerAccuracy,
                        agreement: $0.agreement,
                        flashBytes: $0.deployment?.parameterBytes, ramBytes: $0.deployment?.activationBytes,
                        weights: $0.weights)
                })
        }
        let training = Report.Training(
            epochs: epochs, testAccuracy: epochs.last?.testAccuracy ?? quantization?.floatAccuracy ?? 0,
            totalSeconds: epochs.reduce(0) { $0 + $1.seconds })
        var report = Report(
            run: name, config: flatten(node), training: training, accuracy: accuracy, layers: layers)
        if let data = FileManager.default.contents(atPath: "\(dir)/provenance.json"),
            let p = try? JSONDecoder().decode(Provenance.self, from: data)
        {
            report.machine = p.lines.map { [$0.0, $0.1] }
        }
        return report
    }

    /// Writes report.json, report.md and report.html (atomically) and returns the report.
    @discardableResult
    public static func write(runDirectory dir: String) throws -> Report {
        let r = try build(runDirectory: dir)
        try writeAtomically(try r.json(), to: "\(dir)/report.json")
        try writeAtomically(r.markdown(), to: "\(dir)/report.md")
        try writeAtomically(r.html(), to: "\(dir)/report.html")
        return r
    }

    static func readMetrics(_ path: String) throws -> [Report.Epoch] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw RunError("\(path): missing (the run did not finish an epoch)")
        }
        let d = JSONDecoder()
        return try text.split(separator: "\n").map { line in
            let m = try d.decode(EpochMetrics.self, from: Data(line.utf8))
            return Report.Epoch(
                epoch: m.epoch, loss: m.loss, trainAccuracy: m.trainAccuracy, testAccuracy: m.testAccuracy,
                learningRate: m.learningRate, seconds: m.epochSeconds, phase: m.phase,
                penalties: m.penalties, layers: m.layers)
        }
    }

    static func readQuantization(_ path: String) throws -> QuantizeWorkflow.Result? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try JSONDecoder().decode(QuantizeWorkflow.Result.self, from: data)
    }

    /// `section.key → value`, a flow mapping (e.g. the optimizer) as one value, layers as `model.layers[i]`.
    static func flatten(_ node: ConfigNode) -> [String: String] {
        var out: [String: String] = [:]
        func text(_ n: ConfigNode) -> String {
            switch n.kind {
            case .scalar(let s): return s
            case .null: return "null"
            case .sequence(let items): return "[" + items.map(text).joined(separator: ", ") + "]"
            case .mapping(let entries):
                return "{" + entries.map { "\($0.key): \(text($0.value))" }.joined(separator: ", ") + "}"
            }
        }
        for section in node.entries ?? [] {
            guard let entries = section.value.entries else {
                out[section.key] = text(section.value); continue
            }
            for e in entries {
                if section.key == "model", e.key == "layers", case .sequence(let items) = e.value.kind {
                    for (i, item) in items.enumerated() { out["model.layers[\(i)]"] = text(item) }
                } else {
                    out["\(section.key).\(e.key)"] = text(e.value)
                }
            }
        }
        return out
    }

    /// What a run whose config lacks a `shaping:` or `quantize:` section has in effect, as
    /// flattened keys: the sections' defaults (no shaping term is active without its key, and
    /// without `quantize:` a run is converted at 8, 4 and 3 bits with the other defaults).
    public static let effectiveDefaults: [String: String] = {
        guard
            let node = try? ConfigNode.parse(
                yaml:
                    "model: {layers: [{type: flatten}, {type: dense, in: 784, out: 10}]}\nshaping: {kurtosis: {weight: 1}}\nquantize: {bits: [8, 4, 3]}\n",
                file: "defaults"),
            let config = try? Config(node: node, file: "defaults", defaultName: "defaults"),
            let resolved = try? ConfigNode.parse(yaml: config.resolvedYAML, file: "defaults")
        else { return [:] }
        return flatten(resolved).filter {
            ($0.key.hasPrefix("shaping.") || $0.key.hasPrefix("quantize.")) && $0.key != "shaping.kurtosis"
        }
    }()

    /// Reports named by run folders, report.json files, or sweep folders (every run inside).
    public static func collect(_ paths: [String]) throws -> [Report] {
        var reports: [Report] = []
        let fm = FileManager.default
        for p in paths {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: p, isDirectory: &isDir) else {
                throw ReportError("\(p): no such run folder or report")
            }
            if !isDir.boolValue {
                reports.append(try Report.decode(fm.contents(atPath: p) ?? Data(), path: p))
            } else if fm.fileExists(atPath: "\(p)/report.json") {
                reports.append(
                    try Report.decode(
                        fm.contents(atPath: "\(p)/report.json") ?? Data(), path: "\(p)/report.json"))
            } else {
                let runs = try fm.contentsOfDirectory(atPath: p).sorted().filter {
                    fm.fileExists(atPath: "\(p)/\($0)/report.json")
                }
                guard !runs.isEmpty else {
                    throw ReportError("\(p): no report.json in it or in any folder inside")
                }
                for r in runs {
                    reports.append(
                        try Report.decode(
                            fm.contents(atPath: "\(p)/\(r)/report.json") ?? Data(),
                            path: "\(p)/\(r)/report.json"))
                }
            }
        }
        return reports
    }
}
