// `qshape export`: a trained model, converted exactly as `qshape quantize` converts it, written as a
// self-contained float-free C99 library (Export), optionally built and checked against the Swift
// integer engine on the host or on an emulated Cortex-M (ExportVerifier).
import Config
import Foundation
import NeuralNet
import DataIO
import IntegerRuntime
import Quantization
import Export

public enum ExportWorkflow {
    public enum Target: String, CaseIterable, Codable, Sendable {
        case host
        case cortexM0 = "cortex-m0"
        case cortexM3 = "cortex-m3"
    }

    public struct Options: Sendable {
        public var weights: String
        public var bits: Int?
        public var out: String
        public var prefix = "qshape_model"
        public var target = Target.host
        /// Build and run the C on this many test images, comparing every logit with the Swift engine.
        public var verify: Int?
        public var force = false
        public init(weights: String, out: String) { self.weights = weights; self.out = out }
    }

    public struct Result: Codable, Sendable {
        public var directory: String
        public var weightBits: Int
        public var activationBits: Int
        public var files: [String]
        public var model: CModelSummary
        public var verification: ExportVerifier.Report?
        enum CodingKeys: String, CodingKey {
            case directory, files, model, verification
            case weightBits = "weight_bits", activationBits = "activation_bits"
        }
    }

    /// The weight width to export: --bits, or the config's one `quantize.bits` (8 without a section).
    static func weightBits(_ config: Config, _ requested: Int?) throws -> Int {
        if let requested { return requested }
        let bits = config.quantize?.bits ?? [8]
        guard bits.count == 1 else {
            throw ConfigError(
                file: config.file, path: "quantize.bits",
                "lists \(bits.count) widths (\(bits.map(String.init).joined(separator: ", "))); choose one with --bits"
            )
        }
        return bits[0]
    }

    public static func run(
        _ config: Config, _ o: Options, progress: (String) -> Void = { _ in }
    ) throws -> Result {
        let bits = try weightBits(config, o.bits)
        try CGenerator.checkIdentifier(o.prefix)
        try checkOutput(o.out, force: o.force)
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        try Weights.load(o.weights, into: model)
        TrainWorkflow.configureThreads(config.threads)
        return try run(config, model: model, data: data, bits: bits, o, progress: progress)
    }

    /// Exports a loaded model at `bits`-bit weights with the config's `quantize:` settings.
    public static func run(
        _ config: Config, model: Sequential, data: DataSplit, bits: Int, _ o: Options,
        progress: (String) -> Void = { _ in }
    ) throws -> Result {
        var settings = config.quantize ?? QuantizeConfig()
        settings.weightsOnly = false
        progress(
            "converting \(o.weights) at \(bits)-bit weights, \(settings.options.activationBits)-bit activations"
        )
        let conversion = try QuantizeWorkflow.integerConverter(
            config, model: model, data: data, settings: settings)(bits)
        let c = try generate(conversion, bits: bits, prefix: o.prefix, config: config)
        try writeFolder(c.allFiles, to: o.out, force: o.force)
        progress(
            "wrote \(o.out): model.h, model.c (\(c.summary.parameterBytes) bytes of parameters), qshape_nn.c, drivers, Makefile"
        )
        var report: ExportVerifier.Report?
        if let n = o.verify {
            report = try ExportVerifier.verify(
                c, engine: IntegerEngine(conversion.integerModel), test: data.test,
                images: n, target: o.target, progress: progress)
        }
        return Result(
            directory: o.out, weightBits: bits, activationBits: settings.options.activationBits,
            files: c.allFiles.map(\.name), model: c.summary, verification: report)
    }

    /// The C of a conversion; a model the C runtime cannot express is a config error naming the layer.
    public static func generate(
        _ conversion: Conversion, bits: Int, prefix: String = "qshape_model",
        config: Config
    ) throws -> CModel {
        do {
            return try CGenerator.generate(conversion.integerModel, prefix: prefix)
        } catch let e as ExportError {
            throw ConfigError(
                file: config.file, path: "quantize",
                "at \(bits)-bit weights, the C runtime refuses the model: \(e.message)")
        }
    }

    /// An existing `--out` must be an empty folder, or be replaced with --force.
    static func checkOutput(_ dir: String, force: Bool) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw RunError("\(dir) exists and is not a folder") }
        if !force && !((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).isEmpty {
            throw RunError(
                "\(dir) is not empty: pass --force to replace it, or --out to choose another folder")
        }
    }

    /// Writes the files into a staging sibling that replaces `dir` once complete (`run` checked
    /// `dir` with `checkOutput` before converting; the claim here re-checks it at the last moment).
    static func writeFolder(_ files: [(name: String, contents: String)], to dir: String, force: Bool) throws {
        try RunFolder.begin(dir, force: force, allowEmpty: true).run { work in
            for f in files { try writeAtomically(f.contents, to: "\(work)/\(f.name)") }
        }
    }

    /// The result as terminal lines.
    public static func table(_ r: Result) -> String {
        let m = r.model
        var lines = [
            "exported \(r.directory): \(r.weightBits)-bit weights (\(m.weightFormats.joined(separator: ", "))), \(r.activationBits)-bit activations",
            "  weights \(m.weightBytes) B, all parameters \(m.parameterBytes) B (flash); activation buffers \(m.activationBytes) B (RAM); \(m.macs) MACs per inference"
        ]
        if let v = r.verification {
            lines.append(
                "verified on \(v.target) (\(v.board)): \(v.images) images, C accuracy \(String(format: "%.2f", v.cAccuracy))%, Swift integer engine \(String(format: "%.2f", v.swiftAccuracy))%, mismatching images \(v.mismatchingImages)"
            )
            lines.append(
                "  flash \(v.flashBytes) B (model code \(v.modelCodeBytes) B, model data \(v.modelDataBytes) B), RAM \(v.ramBytes) B (stack \(v.stackBytes) B, \(v.stackMethod))"
            )
            if let i = v.instructionsPerInference {
                lines.append("  \(i) instructions per inference (QEMU -icount), \(m.macs) MACs")
            }
            lines.append("  float-free: \(v.floatFree)")
        }
        return lines.joined(separator: "\n")
    }
}
