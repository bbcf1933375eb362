// `qshape advise`: the command line of the per-layer sensitivity analysis and mixed-precision search.
import ArgumentParser
import Foundation
import IntegerRuntime
import Workflows

struct Advise: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Measure each layer's sensitivity to its weight width and recommend per-layer widths within a flash budget, verified on the integer engine."
    )

    @OptionGroup var options: ConfigOptions
    @Option(help: "A safetensors file with the model's weights (QShape's or PyTorch's).")
    var weights: String
    @Option(
        help: ArgumentHelp(
            "Maximise accuracy within this much flash for the weights, e.g. 64KiB, 58000, 0.5MiB (K, KB and KiB are 1024 bytes).",
            valueName: "size"))
    var flashBudget: FlashSize?
    @Option(help: "Without a budget: the least flash within this many accuracy points of float weights.")
    var maxDrop = 0.5
    @Option(
        name: .customLong("widths"), parsing: .upToNextOption,
        help: "The weight widths a layer may take (default: 8 7 6 5 4 3 2; add 16 where it matters).")
    var widths: [Int] = [8, 7, 6, 5, 4, 3, 2]
    @Option(help: "Test images of the sensitivity analysis and the search, evenly spread over the test set.")
    var images = 2000
    @Flag(
        help:
            "Also probe shaping: brief fine-tunes with kurtosis (and skewness) penalties on the sensitive layers, each searched again, against the same fine-tune without."
    )
    var shaping = false
    @Option(help: "Fine-tuning steps of each shaping probe (at most one epoch).")
    var probeSteps = 300
    @Option(
        name: .customLong("probe-lambdas"), parsing: .upToNextOption,
        help: "The penalty weights λ each probed term is tried with.")
    var probeLambdas: [Double] = [0.01, 0.1, 1]
    @Option(help: "Also write advice.json, advice.md and advice.html into this folder.")
    var out: String?
    @Flag(help: "Replace a non-empty --out folder.")
    var force = false
    @Flag(help: "Print one JSON object (progress goes to stderr).")
    var json = false

    func validate() throws {
        for b in widths where BitWidth(b) == nil {
            throw ValidationError("--widths takes widths \(BitWidth.allowedText), got \(b)")
        }
        if widths.isEmpty { throw ValidationError("--widths needs at least one width") }
        if images < 1 { throw ValidationError("--images takes a number of test images, 1 or more") }
        if !(maxDrop >= 0 && maxDrop <= 100) { throw ValidationError("--max-drop takes points in [0, 100]") }
        if probeSteps < 1 || probeSteps > 100_000 {
            throw ValidationError("--probe-steps takes 1…100000 steps")
        }
        if probeLambdas.isEmpty || probeLambdas.contains(where: { !($0 > 0 && $0 <= 1e6) }) {
            throw ValidationError("--probe-lambdas takes penalty weights in (0, 1e6]")
        }
    }

    func run() throws {
        try guarded {
            let config = try options.load()
            var o = AdviseWorkflow.Options(weights: weights)
            o.widths = Array(Set(widths)).sorted(by: >)
            o.images = images
            o.flashBudget = flashBudget?.bytes
            o.maxDrop = maxDrop
            o.probeSteps = shaping ? probeSteps : 0
            o.probeLambdas = probeLambdas
            if let out { try AdviseWorkflow.checkOutput(out, force: force) }
            let json = self.json
            let r = try AdviseWorkflow.run(config, o) { line in
                FileHandle.standardError.write(Data("\(line)…\n".utf8))
            }
            if let out { try AdviseWorkflow.write(r, to: out, force: force) }
            print(json ? try jsonString(r) : AdviseWorkflow.table(r))
        }
    }
}

/// A size in bytes written as a number with an optional unit: B, K/KB/KiB (1024), M/MB/MiB (1024²).
struct FlashSize: ExpressibleByArgument {
    var bytes: Int
    init?(argument: String) {
        let s = argument.trimmingCharacters(in: .whitespaces)
        let digits = s.prefix { $0.isNumber || $0 == "." }
        let unit = s.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        let factor: Double
        switch unit {
        case "", "b": factor = 1
        case "k", "kb", "kib": factor = 1024
        case "m", "mb", "mib": factor = 1_048_576
        default: return nil
        }
        guard let v = Double(digits), v.isFinite, v > 0, v * factor < 1e15 else { return nil }
        bytes = Int(v * factor)
    }
    static var defaultCompletionKind: CompletionKind { .default }
}
