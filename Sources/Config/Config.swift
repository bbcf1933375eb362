// The config file's schema: the `data`, `model` and `training` sections, and loading a YAML file
// with `--set` overrides into a validated `Config`.
import Foundation
import Shaping
import NeuralNet
import Training
import DataIO

/// Where the data comes from and how it is scaled (`data:`).
public struct DataConfig: Equatable, Sendable {
    public enum Format: String, CaseIterable, Sendable { case idx, npy, csv }
    public static let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    public var format: Format = .idx
    public var dir = DataConfig.fashionMNISTDirectory
    public var trainImages = "train-images-idx3-ubyte.gz"
    public var trainLabels = "train-labels-idx1-ubyte.gz"
    public var testImages = "t10k-images-idx3-ubyte.gz"
    public var testLabels = "t10k-labels-idx1-ubyte.gz"
    public var inputShape: [Int]?
    public var labelColumn = 0
    public var scale = 1.0 / 255.0
    public var mean = 0.0
    public var std = 1.0
    public var validationSplit = 0.0
    public var trainLimit = 0
    public var testLimit = 0
    public init() {}

    public var normalization: Normalization {
        Normalization(scale: Float(scale), mean: Float(mean), std: Float(std))
    }
}

/// A whole config file, validated.
public struct Config: Sendable {
    public var file: String
    public var name: String
    public var data = DataConfig()
    public var layers: [LayerSpec] = []
    public var training = TrainingOptions()
    /// OpenBLAS threads; 0 picks per machine.
    public var threads = 0
    /// Penalties on the weight distributions (`shaping:`), nil when absent.
    public var shaping: ShapingConfig?
    /// How to convert to integers (`quantize:`), nil when absent.
    public var quantize: QuantizeConfig?

    static let topKeys = ["name", "data", "model", "training", "shaping", "quantize"]

    /// Reads, overrides (`--set`) and validates a config file. Every problem is a `ConfigError`.
    public static func load(path: String, overrides: [String] = []) throws -> Config {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, path: "", "cannot read the config file (does it exist?)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, path: "", "the config file is not UTF-8 text")
        }
        var node = try ConfigNode.parse(yaml: text, file: path)
        for o in overrides { try node.apply(override: o, file: path) }
        let defaultName = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        return try Config(node: node, file: path, defaultName: defaultName)
    }

    public init(node: ConfigNode, file: String, defaultName: String) throws {
        self.file = file
        let top = try ConfigReader(file: file, path: "", node: node, allowed: Config.topKeys)
        name = try top.string("name", default: defaultName)
        // One safe path component: never ".", "..", a separator or a leading '-' or '.'.
        guard let first = name.first, first.isLetter || first.isNumber || first == "_", name.count <= 200,
            name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.=".contains($0) })
        else {
            throw top.error(
                "name",
                "start with a letter, digit or '_', then use letters, digits, '-', '_', '.' and '=' only, at most 200 (it names the run folder)"
            )
        }
        data = try Config.readData(top)
        layers = try Config.readModel(top)
        (training, threads) = try Config.readTraining(top, data: data)
        shaping = try Config.readShaping(top, epochs: training.epochs)
        try validateShapingLayers()
        quantize = try Config.readQuantize(top, layers: layers)
    }

    private static func readData(_ top: ConfigReader) throws -> DataConfig {
        let r = try top.child(
            "data",
            allowed: [
                "format", "dir", "train_images", "train_labels", "test_images",
                "test_labels", "input_shape", "label_column", "scale", "mean", "std",
                "validation_split", "train_limit", "test_limit"
            ])
        var d = DataConfig()
        d.format = DataConfig.Format(
            rawValue: try r.choice("format", default: "idx", DataConfig.Format.allCases.map(\.rawValue)))!
        if d.format != .idx {
            for key in ["train_images", "test_images"] where !r.has(key) {
                throw r.error(
                    key, "required for format \(d.format.rawValue) (a file name, relative to data.dir)")
            }
        }
        if d.format == .npy {
            for key in ["train_labels", "test_labels"] where !r.has(key) {
                throw r.error(key, "required for format npy (a .npy file of integer labels)")
            }
        }
        if d.format == .csv {
            for key in ["train_labels", "test_labels"] where r.has(key) {
                throw r.error(
                    key, "not used by format csv: the label is a column of the CSV (data.label_column)")
            }
        }
        d.dir = try r.string("dir", default: d.dir)
        d.trainImages = try r.string("train_images", default: d.trainImages)
        d.trainLabels = try r.string("train_labels", default: d.trainLabels)
        d.testImages = try r.string("test_images", default: d.testImages)
        d.testLabels = try r.string("test_labels", default: d.testLabels)
        d.inputShape = try r.integers("input_shape")
        if let s = d.inputShape, s.isEmpty || s.count > 3 {
            throw r.error("input_shape", "expected 1 to 3 positive sizes, e.g. [1, 28, 28] or [784]")
        }
        d.labelColumn = try r.integer("label_column", default: 0, min: 0)
        d.scale = try r.number("scale", default: d.scale, min: 0, exclusiveMin: true)
        d.mean = try r.number("mean", default: 0)
        d.std = try r.number("std", default: 1, min: 0, exclusiveMin: true)
        // An input x becomes (x·scale − mean)/std in Float: the factors must stay in range.
        guard (d.scale / d.std) * 65_536 <= 1e30, d.scale / d.std >= 1e-30, abs(d.mean / d.std) <= 1e30 else {
            throw r.error(
                "std",
                "scale/std = \(d.scale / d.std) and mean/std = \(d.mean / d.std) must lie within 1e-30…1e30")
        }
        d.validationSplit = try r.number("validation_split", default: 0, min: 0, max: 1, exclusiveMax: true)
        d.trainLimit = try r.integer("train_limit", default: 0, min: 0)
        d.testLimit = try r.integer("test_limit", default: 0, min: 0)
        return d
    }

    static let layerKeys: [String: [String]] = [
        "dense": ["type", "in", "out", "bias"],
        "conv2d": ["type", "in", "out", "kernel", "stride", "padding", "bias"],
        "maxpool2d": ["type", "kernel", "stride", "padding"],
        "avgpool2d": ["type", "kernel", "stride"],
        "globalavgpool2d": ["type"], "relu": ["type"], "relu6": ["type"], "flatten": ["type"],
        "batchnorm1d": ["type", "eps", "momentum"], "batchnorm2d": ["type", "eps", "momentum"],
        "dropout": ["type", "p"]
    ]

    private static func readModel(_ top: ConfigReader) throws -> [LayerSpec] {
        let r = try top.child("model", allowed: ["layers"])
        guard let items = try r.sequence("layers"), !items.isEmpty else {
            throw r.error("layers", "required: a list of layers, e.g. - {type: dense, out: 10}")
        }
        return try items.enumerated().map { i, item in try readLayer(item, index: i, file: top.file) }
    }

    private static func readLayer(_ item: ConfigNode, index i: Int, file: String) throws -> LayerSpec {
        let path = "model.layers[\(i)]"
        let types = layerKeys.keys.sorted()
        var node = item
        if case .scalar(let s) = item.kind { node = .mapping([("type", .scalar(s))]) }
        guard let typeNode = node["type"], case .scalar(let type) = typeNode.kind else {
            throw ConfigError(
                file: file, path: path, line: item.line,
                "each layer needs a type: one of \(types.joined(separator: ", "))")
        }
        guard let keys = layerKeys[type] else {
            let hint = nearest(type, in: types).map { "did you mean '\($0)'? " } ?? ""
            throw ConfigError(
                file: file, path: "\(path).type", line: item.line,
                "unknown layer type '\(type)'; \(hint)expected one of \(types.joined(separator: ", "))")
        }
        let r = try ConfigReader(file: file, path: path, node: node, allowed: keys)
        func required(_ key: String) throws -> Int {
            guard r.has(key) else { throw r.error(key, "required for a \(type) layer (a whole number ≥ 1)") }
            return try r.integer(key, default: 0, min: 1)
        }
        switch type {
        case "dense":
            return .dense(
                inFeatures: try r.optionalInteger("in", min: 1), outFeatures: try required("out"),
                bias: try r.bool("bias", default: true))
        case "conv2d":
            return .conv2d(
                inChannels: try r.optionalInteger("in", min: 1), outChannels: try required("out"),
                kernel: try required("kernel"), stride: try r.integer("stride", default: 1, min: 1),
                padding: try r.integer("padding", default: 0, min: 0), bias: try r.bool("bias", default: true)
            )
        case "maxpool2d":
            return .maxpool2d(
                kernel: try required("kernel"), stride: try r.optionalInteger("stride", min: 1),
                padding: try r.integer("padding", default: 0, min: 0))
        case "avgpool2d":
            return .avgpool2d(kernel: try required("kernel"), stride: try r.optionalInteger("stride", min: 1))
        case "batchnorm1d", "batchnorm2d":
            let eps = Float(try r.number("eps", default: 1e-5, min: 0, exclusiveMin: true))
            let momentum = Float(try r.number("momentum", default: 0.1, min: 0, max: 1))
            return type == "batchnorm1d"
                ? .batchnorm1d(eps: eps, momentum: momentum) : .batchnorm2d(eps: eps, momentum: momentum)
        case "dropout":
            return .dropout(p: Float(try r.number("p", default: 0.5, min: 0, max: 1, exclusiveMax: true)))
        case "globalavgpool2d": return .globalavgpool2d
        case "relu": return .relu
        case "relu6": return .relu6
        default: return .flatten
        }
    }

    private static func readTraining(_ top: ConfigReader, data: DataConfig) throws -> (TrainingOptions, Int) {
        let r = try top.child(
            "training",
            allowed: [
                "epochs", "batch_size", "seed", "optimizer", "schedule",
                "grad_clip", "max_steps_per_epoch", "checkpoint_steps", "threads",
                "overlap"
            ])
        var t = TrainingOptions()
        t.epochs = try r.integer("epochs", default: 10, min: 1, max: 100_000)
        t.batchSize = try r.integer("batch_size", default: 128, min: 1, max: 65_536)
        t.seed = UInt64(try r.integer("seed", default: 0, min: 0))
        t.gradientClip = try r.number("grad_clip", default: 0, min: 0)
        t.maxStepsPerEpoch = try r.integer("max_steps_per_epoch", default: 0, min: 0)
        t.checkpointSteps = try r.integer("checkpoint_steps", default: 0, min: 0)
        let threads = try r.integer("threads", default: 0, min: 0, max: 256)
        t.overlapSteps = try r.bool("overlap", default: true)
        t.validationSplit = data.validationSplit
        t.normalization = data.normalization
        t.optimizer = try readOptimizer(r)

        t.schedule = try readSchedule(r, epochs: t.epochs, learningRate: t.optimizer.learningRate)
        return (t, threads)
    }

    /// `training.optimizer`.
    private static func readOptimizer(_ r: ConfigReader) throws -> OptimizerConfig {
        let o = try r.child(
            "optimizer", allowed: ["name", "lr", "momentum", "nesterov", "betas", "eps", "weight_decay"])
        var opt = OptimizerConfig()
        opt.kind = OptimizerConfig.Kind(
            rawValue: try o.choice("name", default: "adam", OptimizerConfig.Kind.allCases.map(\.rawValue)))!
        opt.learningRate = try o.number(
            "lr", default: opt.kind == .sgd ? 0.01 : 1e-3, min: 0, exclusiveMin: true)
        opt.momentum = try o.number("momentum", default: 0, min: 0, max: 1, exclusiveMax: true)
        opt.nesterov = try o.bool("nesterov", default: false)
        if opt.nesterov && opt.momentum == 0 {
            throw o.error("nesterov", "needs training.optimizer.momentum > 0")
        }
        if opt.kind != .sgd && (o.has("momentum") || o.has("nesterov")) {
            throw o.error(
                o.has("momentum") ? "momentum" : "nesterov",
                "applies to sgd only; \(opt.kind.rawValue) uses betas")
        }
        if let betas = try o.sequence("betas") {
            guard betas.count == 2, case .scalar(let a) = betas[0].kind, case .scalar(let b) = betas[1].kind,
                let b1 = Double(a), let b2 = Double(b), (0..<1).contains(b1), (0..<1).contains(b2)
            else {
                throw o.error("betas", "expected two numbers in [0, 1), e.g. [0.9, 0.999]")
            }
            if opt.kind == .sgd { throw o.error("betas", "applies to adam and adamw only") }
            opt.beta1 = b1; opt.beta2 = b2
        }
        opt.eps = try o.number("eps", default: 1e-8, min: 0, exclusiveMin: true)
        opt.weightDecay = try o.number("weight_decay", default: opt.kind == .adamw ? 0.01 : 0, min: 0)
        return opt
    }

    /// `training.schedule`, checked against the epochs and the base learning rate.
    private static func readSchedule(
        _ r: ConfigReader, epochs: Int, learningRate: Double
    ) throws -> LearningRateSchedule {
        let s = try r.child("schedule", allowed: ["name", "step_epochs", "gamma", "warmup_epochs", "min_lr"])
        var sched = LearningRateSchedule()
        sched.kind = LearningRateSchedule.Kind(
            rawValue: try s.choice(
                "name", default: "constant", LearningRateSchedule.Kind.allCases.map(\.rawValue)))!
        sched.stepEpochs = try s.integer("step_epochs", default: 1, min: 1)
        sched.gamma = try s.number("gamma", default: 0.1, min: 0, max: 1, exclusiveMin: true)
        sched.warmupEpochs = try s.number("warmup_epochs", default: 0, min: 0)
        sched.minLearningRate = try s.number("min_lr", default: 0, min: 0)
        if sched.warmupEpochs >= Double(epochs) && sched.kind == .cosine {
            throw s.error("warmup_epochs", "must be less than training.epochs (\(epochs))")
        }
        if sched.minLearningRate > learningRate {
            throw s.error("min_lr", "must not exceed training.optimizer.lr (\(learningRate))")
        }
        return sched
    }
}
