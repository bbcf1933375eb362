// `qshape bench`: its result types, the example networks read from Examples/*.yaml, and the
// SGEMM, training and inference measurements.
import Config
import Workflows
import Foundation
import Tensors
import NeuralNet
import Training
import DataIO
import Shaping
import Quantization
import IntegerRuntime

/// `qshape bench`: throughput measured against the SGEMM rate of the same machine in the same run,
/// so the ratios mean something on a shared, noisy machine.
public enum BenchWorkflow {
    public struct GemmResult: Codable, Sendable {
        public var shape: String
        public var threads: Int
        public var gflops: Double
    }

    public struct NetworkResult: Codable, Sendable {
        public var network: String
        public var batchSize: Int
        public var threads: Int
        public var samplesPerSecond: Double
        public var gflops: Double
        public var fractionOfSGEMMPeak: Double
        enum CodingKeys: String, CodingKey {
            case network, threads, gflops
            case batchSize = "batch_size", samplesPerSecond = "samples_per_second"
            case fractionOfSGEMMPeak = "fraction_of_sgemm_peak"
        }
    }

    /// Training with every shaping term on against the same network without, measured interleaved.
    public struct ShapingOverhead: Codable, Sendable {
        public var network: String
        /// "kurtosis" (the KURE term alone), "all" (every term on every weight layer, at its default
        /// target) or "all, range on every weight" (the range term forced onto every weight).
        public var terms: String
        /// From the median chunk time of each training.
        public var unshapedSamplesPerSecond: Double
        public var shapedSamplesPerSecond: Double
        /// shaped time / unshaped time − 1 of chunks run in the same turn: the median over turns.
        public var overhead: Double
        /// The same ratio's first and third quartiles over the turns.
        public var overheadQuartiles: [Double]
        /// Turns of alternating chunks, and each chunk's training steps.
        public var chunkPairs: Int
        public var stepsPerChunk: Int
        /// Time in the penalties (values and gradients) per training step, averaged over the timed
        /// steps of the shaped training: more than `penaltyCosts` measures, whose loop finds the
        /// weights in cache.
        public var penaltyMillisecondsPerStep: Double
        /// The same training with the penalties on the main thread alone (`training.overlap: false`).
        public var serialShapedSamplesPerSecond: Double
        public var serialOverhead: Double
        enum CodingKeys: String, CodingKey {
            case network, overhead, terms
            case overheadQuartiles = "overhead_quartiles"
            case chunkPairs = "chunk_pairs"
            case stepsPerChunk = "steps_per_chunk"
            case serialShapedSamplesPerSecond = "serial_shaped_samples_per_second"
            case serialOverhead = "serial_overhead"
            case unshapedSamplesPerSecond = "unshaped_samples_per_second"
            case shapedSamplesPerSecond = "shaped_samples_per_second"
            case penaltyMillisecondsPerStep = "penalty_ms_per_step"
        }
    }

    /// Inference over the same images: the float engine against the integer engine (8-bit).
    public struct InferenceResult: Codable, Sendable {
        public var network: String
        public var images: Int
        public var floatImagesPerSecond: Double
        public var integerImagesPerSecond: Double
        /// The instruction set of the integer engine's kernel (IntegerEngine.kernelName).
        public var integerKernel: String
        enum CodingKeys: String, CodingKey {
            case network, images
            case floatImagesPerSecond = "float_images_per_second"
            case integerImagesPerSecond = "integer_images_per_second"
            case integerKernel = "integer_kernel"
        }
    }

    /// The time one step's shaping penalties take on their own (values and gradients of every
    /// weight layer), the model's weights as initialised.
    public struct PenaltyCost: Codable, Sendable {
        public var network: String
        public var term: String
        public var weights: Int
        public var millisecondsPerStep: Double
        enum CodingKeys: String, CodingKey {
            case network, term, weights
            case millisecondsPerStep = "milliseconds_per_step"
        }
    }

    public struct Result: Codable, Sendable {
        public var sgemm: [GemmResult] = []
        public var sgemmPeakGFLOPS: Double = 0
        public var training: [NetworkResult] = []
        public var shaping: [ShapingOverhead] = []
        public var penaltyCosts: [PenaltyCost] = []
        public var inference: [InferenceResult] = []
        public var export: [ExportSpeed] = []
        public var memory: [MemoryUse] = []
        public var profile: [LayerProfile] = []
        public var advise: [AdviseSpeed] = []
        /// What the training and shaping parts trained on.
        public var trainingData = ""
        /// The machine, QShape and the BLAS the numbers were measured with.
        public var machine: Provenance?
        enum CodingKeys: String, CodingKey {
            case sgemm, training, profile, shaping, inference, export, memory, machine, advise
            case trainingData = "training_data"
            case sgemmPeakGFLOPS = "sgemm_peak_gflops"
            case penaltyCosts = "penalty_costs"
        }
    }

    /// The parts of `qshape bench`; training's share of the SGEMM peak needs the SGEMM part.
    public enum Section: String, CaseIterable, Sendable {
        case sgemm, training, profile, shaping, inference, export, memory, advise
    }

    /// `count` random 28×28 images, the network with seed-1 weights, and its 8-bit conversion
    /// calibrated on those images: what the inference and export benches time.
    static func randomIntegerModel(
        layers: [LayerSpec], count: Int
    ) throws -> (Dataset, Sequential, Conversion) {
        var rng = SeededRandom(seed: 5)
        let images = (0..<(count * 784)).map { _ in UInt8(truncatingIfNeeded: rng.next() >> 56) }
        let data = Dataset(
            sampleShape: [1, 28, 28], storage: .bytes(images),
            labels: (0..<count).map { _ in Int32(rng.below(10)) })
        let model = try Sequential(specs: layers, inputShape: [1, 28, 28], seed: 1)
        let calibration = QuantizeWorkflow.calibrationBatches(data, count: 4, batch: 128, Normalization())
        let conversion = try Converter.convert(
            model, calibration: calibration, inputScale: 1.0 / 255, rawInputMax: 255,
            options: QuantizeOptions())
        return (data, model, conversion)
    }

    /// Float and integer inference of one network over `count` random images (10,000 = the test set).
    public static func inferenceRates(
        layers: [LayerSpec], count: Int, threads: Int
    ) throws -> (float: Double, integer: Double) {
        BLASThreads.set(threads)
        let (data, model, conversion) = try randomIntegerModel(layers: layers, count: count)
        let norm = Normalization()
        let engine = IntegerEngine(conversion.integerModel)
        var bestFloat = Double.infinity, bestInt = Double.infinity
        for _ in 0..<2 {
            bestFloat = min(bestFloat, time { _ = evaluate(model, on: data, normalization: norm) })
            bestInt = min(bestInt, time { _ = QuantizeWorkflow.integerPredictions(engine, data) })
        }
        return (Double(count) / bestFloat, Double(count) / bestInt)
    }

    /// The example configs whose networks the bench measures (their models only: the bench sets
    /// its own data, batch sizes and steps).
    public static let exampleConfigs = ["fashion-mlp", "fashion-cnn"]

    /// The examples folder: `Examples/` of the working directory, else of the checkout this binary
    /// was built from.
    static var examplesDirectory: String {
        if FileManager.default.fileExists(atPath: "Examples/fashion-mlp.yaml") { return "Examples" }
        let checkout = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return checkout.appendingPathComponent("Examples").path
    }

    /// The example networks, read from Examples/fashion-mlp.yaml and Examples/fashion-cnn.yaml.
    public static func networks() throws -> [(name: String, layers: [LayerSpec])] {
        try exampleConfigs.map { name in
            let path = "\(examplesDirectory)/\(name).yaml"
            guard FileManager.default.fileExists(atPath: path) else {
                throw RunError(
                    "\(path): not found; qshape bench measures the example configs, so run it in the QShape checkout"
                )
            }
            return (name, try Config.load(path: path).layers)
        }
    }

    static func time(_ body: () -> Void) -> Double {
        let clock = ContinuousClock(), start = clock.now
        body()
        return seconds(clock.now - start)
    }

    /// Best GFLOP/s of `reps` SGEMMs of shape m×n×k.
    public static func sgemmRate(m: Int, n: Int, k: Int, threads: Int, reps: Int = 10) -> Double {
        BLASThreads.set(threads)
        var rng = SeededRandom(seed: 1)
        let a = (0..<(m * k)).map { _ in rng.uniform(-1, 1) },
            b = (0..<(k * n)).map { _ in rng.uniform(-1, 1) }
        var c = [Float](repeating: 0, count: m * n)
        var best = Double.infinity
        for _ in 0..<(reps + 2) {
            let t = time {
                c.withUnsafeMutableBufferPointer { cp in
                    gemm(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: cp.baseAddress!, ldc: n)
                }
            }
            best = min(best, t)
        }
        return 2.0 * Double(m * n * k) / best / 1e9
    }

    /// What the bench trains on: Fashion-MNIST's training set where it is installed (the example
    /// networks' own data), else as many random images with random labels. Either way batches come
    /// from 47 MB of pixels, from memory as in real training, not from the cache. The data matters
    /// to the shaping part: what the penalties cost depends on the weights training produces (how
    /// many lie near the maximum, for the range term), and random labels give weights no real run
    /// has.
    static let trainingData: (data: Dataset, source: String) = {
        let fashion = DataConfig()  // the default data: Fashion-MNIST's training set alone is read
        if let train = try? IDX.dataset(
            images: fashion.resolve(fashion.trainImages), labels: fashion.resolve(fashion.trainLabels))
        {
            return (train, "Fashion-MNIST's \(train.count) training images")
        }
        var rng = SeededRandom(seed: 7)
        let count = 60_000
        var images = [UInt8](repeating: 0, count: count * 784)
        images.withUnsafeMutableBytes { p in
            for i in 0..<(p.count / 8) { p.storeBytes(of: rng.next(), toByteOffset: i * 8, as: UInt64.self) }
        }
        let data = Dataset(
            sampleShape: [1, 28, 28], storage: .bytes(images),
            labels: (0..<count).map { _ in Int32(rng.below(10)) })
        return (data, "60,000 random images with random labels (Fashion-MNIST is not installed)")
    }()

    /// Training throughput of one network on `trainingData`, after a warm-up: the best of three
    /// rounds of `steps` steps.
    public static func trainingRate(
        layers: [LayerSpec], batch: Int, steps: Int, threads: Int
    ) throws -> (samplesPerSecond: Double, macsPerSample: Int) {
        BLASThreads.set(threads)
        let data = trainingData.data, count = data.count
        let model = try Sequential(specs: layers, inputShape: [1, 28, 28], seed: 1)
        var options = TrainingOptions()
        options.batchSize = batch
        options.overlapSteps = threads > 1
        options.maxStepsPerEpoch = 3
        _ = try Trainer(model: model, options: options, trainingSetSize: count).trainEpoch(0, train: data)  // warm-up
        options.maxStepsPerEpoch = steps
        let timed = Trainer(model: model, options: options, trainingSetSize: count)
        var best = 0.0
        for round in 0..<3 {
            let m = try timed.trainEpoch(round, train: data)
            best = max(best, m.samplesPerSecond)
        }
        return (best, model.trainingMACs)
    }

    /// The parts of `sections`, each logged as it is measured.
    public static func run(
        sections: Set<Section> = Set(Section.allCases), log: (String) -> Void
    ) throws -> Result {
        Allocator.keepLargeBlocks()
        var r = Result()
        r.machine = Provenance.current
        for (label, value) in r.machine!.lines { log("\(label): \(value)") }
        let (seconds, speed) = estimate(sections)
        log(
            "estimated duration: \(duration(seconds)) (\(sections.count) part\(sections.count == 1 ? "" : "s"); from the reference machine's times, this one's single-thread SGEMM at \(String(format: "%.2f", speed))× its speed)"
        )
        if sections.contains(.sgemm) || sections.contains(.training) { runSGEMM(&r, log: log) }
        if sections.contains(.training) || sections.contains(.shaping) {
            r.trainingData = trainingData.source
            log("training on \(trainingData.source)")
        }
        let parts: [(Section, (inout Result, (String) -> Void) throws -> Void)] = [
            (.training, runTraining), (.shaping, runShaping), (.inference, runInference),
            (.profile, runProfile), (.export, runExport), (.memory, runMemory), (.advise, runAdvise)
        ]
        for (section, body) in parts where sections.contains(section) {
            log("\(section.rawValue): \(duration((referenceSeconds[section] ?? 0) / speed))…")
            try body(&r, log)
        }
        return r
    }

    static var cores: Int { ProcessInfo.processInfo.activeProcessorCount }
    /// One thread, and every core.
    static var threadCounts: [Int] { cores > 1 ? [1, cores] : [1] }
    static let batch = 128

    static func runSGEMM(_ r: inout Result, log: (String) -> Void) {
        for (m, n, k) in [(128, 256, 784), (512, 512, 512), (1024, 1024, 1024)] {
            for t in threadCounts {
                let g = GemmResult(
                    shape: "\(m)x\(n)x\(k)", threads: t, gflops: sgemmRate(m: m, n: n, k: k, threads: t))
                log(String(format: "sgemm %-14@ threads %d  %7.1f GFLOP/s", g.shape as NSString, t, g.gflops))
                r.sgemm.append(g)
            }
        }
        r.sgemmPeakGFLOPS = r.sgemm.map(\.gflops).max() ?? 1
    }

    static func runTraining(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            for t in threadCounts {
                let steps = name.contains("cnn") ? 20 : 100
                let (sps, macs) = try trainingRate(layers: layers, batch: batch, steps: steps, threads: t)
                let gf = sps * Double(macs) * 2 / 1e9
                let n = NetworkResult(
                    network: name, batchSize: batch, threads: t, samplesPerSecond: sps,
                    gflops: gf, fractionOfSGEMMPeak: gf / r.sgemmPeakGFLOPS)
                log(
                    String(
                        format:
                            "train %@ batch %d threads %d  %9.0f samples/s  %6.1f GFLOP/s  %4.0f%% of SGEMM peak",
                        name as NSString, batch, t, sps, gf, 100 * gf / r.sgemmPeakGFLOPS))
                r.training.append(n)
            }
        }
    }

    static func runInference(_ r: inout Result, log: (String) -> Void) throws {
        for (name, layers) in try networks() {
            let (f, i) = try inferenceRates(layers: layers, count: 10_000, threads: cores)
            log(
                String(
                    format:
                        "inference %@ 10000 images: float %9.0f images/s, integer (8-bit, %@ kernel) %9.0f images/s  →  integer/float %.2fx",
                    name as NSString, f, IntegerEngine.kernelName as NSString, i, i / f))
            r.inference.append(
                InferenceResult(
                    network: name, images: 10_000, floatImagesPerSecond: f, integerImagesPerSecond: i,
                    integerKernel: IntegerEngine.kernelName))
        }
    }
}
