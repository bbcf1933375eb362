// The `qshape` command: its subcommands (swift-argument-parser), each calling a workflow.
import Benchmarks
import ArgumentParser
import Foundation
import IntegerRuntime
import Workflows
import Config

@main
struct QShape: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qshape",
        abstract:
            "Train small networks, shape their weight distributions, and compare float and integer accuracy.",
        version: Provenance.versionLine,
        subcommands: [
            Train.self, Eval.self, Quantize.self, Stats.self, Report.self, Compare.self, Sweep.self,
            Export.self, Advise.self, Bench.self
        ])

    /// ArgumentParser's own entry point, except that a mistake on the command line is one line
    /// `error: …` with exit status 2, like every other bad input (help and --version unchanged).
    static func main() {
        BenchWorkflow.reportPeakMemoryAtExit()
        BLASSetup.atStartup()
        // Line-buffered even into a pipe or file, so a killed command loses no finished line.
        setvbuf(stdout, nil, _IOLBF, 0)
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            exit(withError: code)
        } catch {
            guard exitCode(for: error) != .success else { exit(withError: error) }
            let text = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            let plain = text.hasPrefix("Error: ") ? String(text.dropFirst(7)) : text
            FileHandle.standardError.write(Data("error: \(plain) (see qshape --help)\n".utf8))
            exit(withError: ExitCode(2))
        }
    }
}

/// Runs a command body; user-facing failures print one line to stderr and exit non-zero
/// (2 for a bad config or bad input, 1 for anything else), never a stack trace.
func guarded(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        let (message, status) = UserError.describe(error)
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        throw ExitCode(status)
    }
}

struct ConfigOptions: ParsableArguments {
    @Argument(help: "The YAML config file.")
    var config: String

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp(
            "Override a config value, e.g. --set training.epochs=3 (repeatable).", valueName: "key.path=value"
        ))
    var overrides: [String] = []

    func load() throws -> Config { try Config.load(path: config, overrides: overrides) }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the model a config describes and write a run folder.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "The run folder (default: runs/<config name>).")
    var out: String?
    @Flag(help: "Replace an existing run folder.")
    var force = false
    @Flag(help: "Continue a killed run from its last checkpoint (same config; the learning rate may change).")
    var resume = false

    func run() throws {
        try guarded {
            let config = try options.load()
            let observer = ConsoleObserver(interactive: isatty(STDOUT_FILENO) == 1)
            let summary = try TrainWorkflow.run(
                config, outDir: out, force: force, resume: resume, observer: observer)
            print(
                String(
                    format: "test accuracy %.2f%%  (loss %.4f)  →  %@/model.safetensors",
                    summary.testAccuracy, summary.testLoss, summary.runDirectory as NSString))
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a weights file on the config's test set.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "A safetensors file with the model's weights (QShape's or PyTorch's).")
    var weights: String
    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try guarded {
            let config = try options.load()
            let r = try EvalWorkflow.run(config, weights: weights)
            if json {
                print(try jsonString(r))
            } else {
                print(
                    String(
                        format: "test accuracy %.2f%%  loss %.4f  (%d images, %@)",
                        r.testAccuracy, r.testLoss, r.samples, weights as NSString))
            }
        }
    }
}

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Convert a weights file to integers; compare float, simulated and integer-engine accuracy by bit width."
    )

    @OptionGroup var options: ConfigOptions
    @Option(help: "A safetensors file with the model's weights (QShape's or PyTorch's).")
    var weights: String
    @Option(
        name: .customLong("bits"), parsing: .upToNextOption,
        help:
            "Weight bit widths (1…16; 1 is binary), e.g. --bits 8 4 3 (default: quantize.bits of the config, or 8)."
    )
    var bits: [Int] = []
    @Flag(
        help: "Quantise the weights only; everything else stays float (the numbers the literature reports).")
    var weightsOnly = false
    @Option(
        help:
            "Also write quantization.json and the integer models (model-int<bits>.safetensors) into this folder."
    )
    var out: String?
    @Flag(help: "Replace quantize results already in the --out folder.")
    var force = false
    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        for b in bits where BitWidth(b) == nil {
            throw ValidationError("--bits takes widths \(BitWidth.allowedText), got \(b)")
        }
    }

    func run() throws {
        try guarded {
            let config = try options.load()
            var settings = config.quantize ?? QuantizeConfig()
            if !bits.isEmpty { settings.bits = bits }
            if weightsOnly { settings.weightsOnly = true }
            if let out { try QuantizeWorkflow.checkOutput(out, force: force) }
            let progress: ((String) -> Void)? =
                isatty(STDERR_FILENO) == 1
                ? { FileHandle.standardError.write(Data("\($0)…\n".utf8)) } : nil
            let (r, conversions) = try QuantizeWorkflow.run(
                config, weights: weights, settings: settings, progress: progress)
            if let out {
                // The folder's config is what ran: these settings, named after the folder.
                var used = config
                used.quantize = settings
                used.name = URL(fileURLWithPath: out).standardizedFileURL.lastPathComponent
                try QuantizeWorkflow.writeOutput(
                    r, conversions: conversions, to: out, force: force, config: used, weights: weights)
            }
            print(json ? try jsonString(r) : QuantizeWorkflow.table(r))
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Write the integer model as a float-free C99 library (model.h, model.c, kernels, drivers); --verify builds and checks it."
    )

    @OptionGroup var options: ConfigOptions
    @Option(help: "A safetensors file with the model's weights (QShape's or PyTorch's).")
    var weights: String
    @Option(
        help: "Weight bit width, 1…16 (default: the config's quantize.bits when it names one width, else 8).")
    var bits: Int?
    @Option(help: "The folder to write; it must be new or empty unless --force.")
    var out: String
    @Option(help: "Prefix of every exported C symbol (default qshape_model).")
    var prefix = "qshape_model"
    @Option(
        help:
            "Where --verify builds and runs: host, cortex-m0 (QEMU micro:bit) or cortex-m3 (QEMU MPS2 AN385)."
    )
    var target: ExportWorkflow.Target = .host
    @Option(
        help:
            "Build the C and run it on the first N test images, comparing every logit with the Swift integer engine."
    )
    var verify: Int?
    @Flag(help: "Replace a non-empty --out folder (only once the new files are complete).")
    var force = false
    @Flag(help: "Print one JSON object (progress goes to stderr).")
    var json = false

    func validate() throws {
        if let bits, BitWidth(bits) == nil {
            throw ValidationError("--bits takes a width \(BitWidth.allowedText), got \(bits)")
        }
        if let verify, verify < 1 {
            throw ValidationError("--verify takes a number of test images, 1 or more")
        }
    }

    func run() throws {
        try guarded {
            let config = try options.load()
            var o = ExportWorkflow.Options(weights: weights, out: out)
            o.bits = bits; o.prefix = prefix; o.target = target; o.verify = verify; o.force = force
            let json = self.json
            let r = try ExportWorkflow.run(config, o) { line in
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
            print(json ? try jsonString(r) : ExportWorkflow.table(r))
            if let v = r.verification, v.mismatchingImages > 0 {
                throw RunError(
                    "\(v.mismatchingImages) of \(v.images) images differ between the C and the Swift integer engine"
                )
            }
        }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Print the distribution of every weight tensor in a safetensors file (QShape's or PyTorch's).")

    @Argument(help: "A safetensors file.")
    var file: String
    @Option(help: "Bit width for the seed quantiser's SQNR and levels used (1…16).")
    var bits = 8
    @Flag(help: "Also show every output channel.")
    var channels = false
    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard BitWidth(bits) != nil else {
            throw ValidationError("--bits must be \(BitWidth.allowedText), got \(bits)")
        }
    }

    func run() throws {
        try guarded {
            let r = try StatsWorkflow.run(path: file, bits: bits, channels: channels)
            print(json ? try jsonString(r) : StatsWorkflow.table(r))
        }
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Regenerate report.json, report.md and report.html of a finished run.")

    @Argument(help: "A run folder written by qshape train.")
    var runDirectory: String

    func run() throws {
        try guarded {
            try ReportWorkflow.write(runDirectory: runDirectory)
            print("\(runDirectory)/report.html")
        }
    }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Compare runs side by side: config differences, accuracy by bit width, per-layer statistics.")

    @Argument(help: "Run folders, report.json files or sweep folders.")
    var runs: [String]
    @Option(help: "md, html or json.")
    var format = "md"
    @Option(help: "Write to this file (atomically) instead of standard output.")
    var out: String?
    @Flag(help: "Print only the headline: the accuracy each run keeps at 8, 4 and 3 bits.")
    var headline = false

    func validate() throws {
        guard ["md", "html", "json"].contains(format) else {
            throw ValidationError("--format must be md, html or json, got \(format)")
        }
        guard !runs.isEmpty else { throw ValidationError("name two or more runs, or a sweep folder") }
    }

    func run() throws {
        try guarded {
            let text = try CompareWorkflow.render(runs, format: headline ? "headline" : format)
            if let out { try CompareWorkflow.save(text, to: out) } else { print(text, terminator: "") }
        }
    }
}

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train every combination of a grid of config values, then compare them.")

    @OptionGroup var options: ConfigOptions
    @Option(
        name: .customLong("grid"),
        help: ArgumentHelp("A config key and its values (repeatable).", valueName: "key.path=v1,v2,..."))
    var grid: [String] = []
    @Option(
        help: ArgumentHelp(
            "Train every grid point with each of these seeds; the comparison shows mean ± sd over them.",
            valueName: "s1,s2,..."))
    var seeds: String?
    @Option(help: "Run only slice I of N (1-based), e.g. --shard 2/4; finished runs are skipped.")
    var shard = "1/1"
    @Option(help: "The sweep folder (default: runs/<config name>-sweep).")
    var out: String?

    func run() throws {
        try guarded {
            var axes = try grid.map(SweepWorkflow.parseAxis)
            if let seeds { axes.append(try SweepWorkflow.parseSeeds(seeds, besides: axes)) }
            guard !axes.isEmpty else { throw RunError("give at least one --grid key=v1,v2,… or --seeds") }
            let s = try SweepWorkflow.run(
                configPath: options.config, overrides: options.overrides, axes: axes,
                shard: try SweepWorkflow.parseShard(shard), outDir: out,
                observer: ConsoleObserver(interactive: isatty(STDOUT_FILENO) == 1))
            print("sweep \(s.directory): trained \(s.trained.count), already finished \(s.skipped.count)")
            if let c = s.comparison { print(c.headline()); print("comparison: \(s.directory)/compare.html") }
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure SGEMM and training throughput of the example networks on this machine.")

    @Flag(help: "Print one JSON object (progress goes to stderr).")
    var json = false

    @Option(
        name: .customLong("only"),
        help: ArgumentHelp(
            "Measure only this part (repeatable): \(BenchWorkflow.Section.allCases.map(\.rawValue).joined(separator: ", ")).",
            valueName: "part"))
    var only: [BenchWorkflow.Section] = []

    func run() throws {
        try guarded {
            let json = self.json
            let r = try BenchWorkflow.run(
                sections: only.isEmpty ? Set(BenchWorkflow.Section.allCases) : Set(only)
            ) { line in
                if json { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { print(line) }
            }
            if json { print(try jsonString(r)) }
        }
    }
}

func jsonString<T: Encodable>(_ value: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try e.encode(value), as: UTF8.self)
}

extension BenchWorkflow.Section: ExpressibleByArgument {}
extension ExportWorkflow.Target: ExpressibleByArgument {}
