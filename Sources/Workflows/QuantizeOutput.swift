// What `qshape quantize` leaves behind: the terminal table, quantization.json, the integer model
// files, and the --out folder written whole.
import Config
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
import Quantization
import IntegerRuntime
import Export

extension QuantizeWorkflow {
    /// The comparison as a terminal table: accuracy by bit width, then the layers of each width.
    public static func table(_ r: Result) -> String {
        var out = [
            String(
                format: "float accuracy %.2f%%  (%d test images%@)", r.floatAccuracy, r.images,
                (r.weightsOnly ? ", weights only" : ", \(r.activationBits ?? 8)-bit activations") as NSString)
        ]
        let width = max(6, (r.results.compactMap { $0.weights?.count }.max() ?? 0) + 2)
        out.append(
            pad("bits", width) + pad("simulated", 11, right: true)
                + (r.weightsOnly
                    ? ""
                    : pad("integer", 10, right: true) + pad("agree float", 13, right: true)
                        + pad("agree sim", 11, right: true)))
        for b in r.results {
            var line =
                pad(b.weights ?? "\(b.bits)", width)
                + pad(String(format: "%.2f%%", b.simulatedAccuracy), 11, right: true)
            if let i = b.integerAccuracy, let a = b.agreement, let s = b.simulationAgreement {
                line +=
                    pad(String(format: "%.2f%%", i), 10, right: true)
                    + pad(String(format: "%.2f%%", a), 13, right: true)
                    + pad(String(format: "%.2f%%", s), 11, right: true)
            }
            out.append(line)
        }
        for b in r.results {
            out.append("")
            out.append(
                b.weights.map { "layers at mixed weight widths \($0):" } ?? "layers at \(b.bits)-bit weights:"
            )
            out.append(
                pad("layer", 10) + pad("w SQNR", 9, right: true) + pad("levels", 8, right: true)
                    + (r.weightsOnly
                        ? ""
                        : pad("act SQNR", 10, right: true) + pad("clipped", 9, right: true)
                            + pad("out scale", 11, right: true) + pad("mult", 12, right: true)
                            + pad("shift", 7, right: true)
                            + pad("acc bits", 10, right: true)))
            for l in b.layers {
                var line =
                    pad(b.weights == nil ? l.name : "\(l.name)@\(l.weightBits ?? b.bits)", 10)
                    + pad(String(format: "%.1f dB", l.weightSQNR), 9, right: true)
                    + pad("\(l.levelsUsed)", 8, right: true)
                if let a = l.activationSQNR {
                    line +=
                        pad(String(format: "%.1f dB", a), 10, right: true)
                        + pad(String(format: "%.3f%%", 100 * (l.clippedFraction ?? 0)), 9, right: true)
                        + pad(String(format: "%.3g", l.outputScale ?? 0), 11, right: true)
                        + pad("\(l.multiplier ?? 0)", 12, right: true)
                        + pad("\(l.shift ?? 0)", 7, right: true)
                        + pad("\(l.accumulatorBitsNeeded ?? 0)/\(l.accumulatorBits ?? 0)", 10, right: true)
                }
                out.append(line)
            }
        }
        return out.joined(separator: "\n")
    }
}

extension QuantizeWorkflow {
    /// Writes `quantization.json` and, per bit width, the integer model `model-int<b>.safetensors`.
    /// The files `write` puts in a folder: quantization.json and model-int<bits>.safetensors.
    static func isOutputFile(_ name: String) -> Bool {
        name == "quantization.json" || (name.hasPrefix("model-int") && name.hasSuffix(".safetensors"))
    }

    /// Before converting, for `qshape quantize --out DIR`: DIR is new, or a folder whose earlier
    /// quantize results may be replaced only with `force`.
    public static func checkOutput(_ dir: String, force: Bool) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw RunError("\(dir) exists and is not a folder") }
        let previous = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter(
            isOutputFile
        ).sorted()
        if !force, let first = previous.first {
            throw RunError(
                "\(dir) already holds quantize results (\(first)\(previous.count > 1 ? " and \(previous.count - 1) more" : "")): pass --force to replace them, or --out to choose another folder"
            )
        }
    }

    /// `qshape quantize --out DIR`: a new folder is claimed and written whole (nothing half-written
    /// is ever visible); into an existing folder (a run folder) each file is written atomically,
    /// quantization.json last, and model-int files of widths not written now are removed.
    ///
    /// Either way the folder ends with a report: a run folder's is written again with the new
    /// results; a folder without a run gets the config, a copy of the weights, the provenance and
    /// a report of its own, so `qshape compare` takes it beside trained runs.
    public static func writeOutput(
        _ r: Result, conversions: [Int: Conversion], to dir: String, force: Bool,
        config: Config, weights: String
    ) throws {
        func report(_ folder: String) throws {
            let fm = FileManager.default
            if !fm.fileExists(atPath: "\(folder)/config.yaml") {
                try writeAtomically(config.resolvedYAML, to: "\(folder)/config.yaml")
                try Provenance.run(config).write(to: folder)
            }
            if !fm.fileExists(atPath: "\(folder)/model.safetensors") {
                try writeAtomically(
                    [UInt8](try Data(contentsOf: URL(fileURLWithPath: weights))),
                    to: "\(folder)/model.safetensors")
            }
            try ReportWorkflow.write(runDirectory: folder)
        }
        guard FileManager.default.fileExists(atPath: dir) else {
            return try RunFolder.begin(dir, force: false).run { work in
                try write(r, conversions: conversions, to: work)
                try report(work)
            }
        }
        try checkOutput(dir, force: force)
        let previous = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter(
            isOutputFile)
        try write(r, conversions: conversions, to: dir)
        let written = Set(conversions.keys.map { "model-int\($0).safetensors" } + ["quantization.json"])
        for f in previous where !written.contains(f) {
            try? FileManager.default.removeItem(atPath: "\(dir)/\(f)")
        }
        try report(dir)
    }

    public static func write(_ r: Result, conversions: [Int: Conversion], to dir: String) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        for (bits, c) in conversions.sorted(by: { $0.key > $1.key }) {
            var scales: [String: String] = ["qshape.input_scale": "\(c.inputScale)"]
            for l in c.layers {
                scales["\(l.name).output_scale"] = "\(l.outputScale)"
                scales["\(l.name).weight_scales"] = l.weightScales.map { "\($0)" }.joined(separator: ",")
            }
            try IntegerModelFile.save(
                c.integerModel, scales: scales, to: "\(dir)/model-int\(bits).safetensors")
        }
        try writeAtomically(
            String(decoding: try e.encode(r), as: UTF8.self) + "\n", to: "\(dir)/quantization.json")
    }
}
