// A run's report (report.json) and the number formats every rendering shares.
import Foundation

/// Everything a run's report shows; `report.json` is this value, and report.md and report.html
/// are rendered from it alone.
public struct Report: Codable, Equatable, Sendable {
    public static let schemaVersion = 1

    public var schemaVersion = Report.schemaVersion
    public var run: String
    /// The resolved config, flattened to `key.path → value` (lists of layers by index).
    public var config: [String: String]
    public var training: Training
    public var accuracy: Accuracy?
    public var layers: [Layer]
    /// Where the run was made, as labelled lines in order (QShape, processor, instruction sets,
    /// BLAS); absent for runs that did not record it.
    public var machine: [[String]]?

    public init(
        run: String, config: [String: String], training: Training, accuracy: Accuracy?, layers: [Layer]
    ) {
        self.run = run; self.config = config; self.training = training; self.accuracy = accuracy;
        self.layers = layers
    }

    public struct Epoch: Codable, Equatable, Sendable {
        public var epoch: Int
        public var loss: Double
        public var trainAccuracy: Double
        public var testAccuracy: Double?
        public var learningRate: Double
        public var seconds: Double
        public var phase: String?
        public var penalties: [String: Double]?
        /// Layer name → kurtosis, skewness, … at the end of the epoch (shaped runs).
        public var layers: [String: [String: Double]]?
        public init(
            epoch: Int, loss: Double, trainAccuracy: Double, testAccuracy: Double?, learningRate: Double,
            seconds: Double, phase: String?, penalties: [String: Double]?, layers: [String: [String: Double]]?
        ) {
            self.epoch = epoch; self.loss = loss; self.trainAccuracy = trainAccuracy;
            self.testAccuracy = testAccuracy
            self.learningRate = learningRate; self.seconds = seconds; self.phase = phase
            self.penalties = penalties; self.layers = layers
        }
    }

    public struct Training: Codable, Equatable, Sendable {
        public var epochs: [Epoch]
        public var testAccuracy: Double
        public var totalSeconds: Double
        public init(epochs: [Epoch], testAccuracy: Double, totalSeconds: Double) {
            self.epochs = epochs; self.testAccuracy = testAccuracy; self.totalSeconds = totalSeconds
        }
    }

    public struct AccuracyRow: Codable, Equatable, Sendable {
        public var bits: Int
        public var simulated: Double
        public var integer: Double?
        public var agreement: Double?
        /// The exported C (`qshape export`) at this width: flash of its weights, biases, multipliers
        /// and shifts, and RAM of its activation buffers (the stack and the code come on top).
        public var flashBytes: Int?
        public var ramBytes: Int?
        /// Mixed precision: each conv/dense's weight width in layer order, e.g. "W8·4·4" (nil when
        /// every layer has `bits`).
        public var weights: String?
        public init(
            bits: Int, simulated: Double, integer: Double?, agreement: Double?,
            flashBytes: Int? = nil, ramBytes: Int? = nil, weights: String? = nil
        ) {
            self.bits = bits; self.simulated = simulated; self.integer = integer; self.agreement = agreement
            self.flashBytes = flashBytes; self.ramBytes = ramBytes; self.weights = weights
        }
    }

    public struct Accuracy: Codable, Equatable, Sendable {
        public var float: Double
        public var weightsOnly: Bool
        /// The activations' bit width when they were quantised too (nil: weights only).
        public var activationBits: Int?
        public var rows: [AccuracyRow]
        public init(float: Double, weightsOnly: Bool, activationBits: Int? = nil, rows: [AccuracyRow]) {
            self.float = float; self.weightsOnly = weightsOnly; self.activationBits = activationBits;
            self.rows = rows
        }

        /// What the figure of `row` is: "integer W4/A8" (the integer engine) or "simulated W4,
        /// weights only" (fake quantisation of the weights, everything else float); a mixed-precision
        /// row names each layer's width ("integer W8·4·4/A8").
        public func kind(_ row: AccuracyRow) -> String {
            let w = row.weights ?? "W\(row.bits)"
            return weightsOnly
                ? "simulated \(w), weights only"
                : "integer \(w)/A\(activationBits.map(String.init) ?? "?")"
        }

        /// The figure of that kind: the integer engine's, or the simulation's for weights only.
        public func value(_ row: AccuracyRow) -> Double? { weightsOnly ? row.simulated : row.integer }
    }

    public struct Histogram: Codable, Equatable, Sendable {
        /// `bins + 1` edges, shared by both distributions.
        public var edges: [Double]
        public var initial: [Int]?
        public var final: [Int]
        public init(edges: [Double], initial: [Int]?, final: [Int]) {
            self.edges = edges; self.initial = initial; self.final = final
        }
    }

    public struct Layer: Codable, Equatable, Sendable {
        public var name: String
        public var shape: [Int]
        public var mean, std, skewness, kurtosis, maxAbsOverStd: Double
        /// The bit width the grid, SQNR and levels refer to.
        public var bits: Int
        public var sqnrDb: Double
        public var levelsUsed: Int
        public var activationSqnr: Double?
        /// The accumulator the layer has (32 or 64 bits) and the bits its worst case needs.
        public var accumulatorBits: Int?
        public var accumulatorBitsNeeded: Int?
        public var histogram: Histogram
        /// The integer grid of `bits` over the final weights: the level step (max|W|/qmax) and qmax.
        public var gridStep: Double
        public var gridLevels: Int
        /// max|w| of the final weights: what sets the seed quantiser's step.
        public var maxAbs: Double { gridStep * Double(gridLevels) }
        /// "18/32": the bits the worst case needs, of the accumulator's.
        public var accumulatorText: String {
            guard let a = accumulatorBits else { return "–" }
            return accumulatorBitsNeeded.map { "\($0)/\(a)" } ?? "\(a)"
        }

        public init(
            name: String, shape: [Int], mean: Double, std: Double, skewness: Double, kurtosis: Double,
            maxAbsOverStd: Double, bits: Int, sqnrDb: Double, levelsUsed: Int, activationSqnr: Double?,
            accumulatorBits: Int?, accumulatorBitsNeeded: Int? = nil, histogram: Histogram, gridStep: Double,
            gridLevels: Int
        ) {
            self.name = name; self.shape = shape; self.mean = mean; self.std = std; self.skewness = skewness
            self.kurtosis = kurtosis; self.maxAbsOverStd = maxAbsOverStd; self.bits = bits;
            self.sqnrDb = sqnrDb
            self.levelsUsed = levelsUsed; self.activationSqnr = activationSqnr;
            self.accumulatorBits = accumulatorBits
            self.accumulatorBitsNeeded = accumulatorBitsNeeded
            self.histogram = histogram; self.gridStep = gridStep; self.gridLevels = gridLevels
        }
    }

    public func json() throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        e.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try e.encode(self), as: UTF8.self) + "\n"
    }

    public static func decode(_ data: Data, path: String) throws -> Report {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        guard
            let version = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["schema_version"]
                as? Int
        else {
            throw ReportError("\(path): not a QShape report (no schema_version)")
        }
        guard version == schemaVersion else {
            throw ReportError(
                "\(path): report schema version \(version); this qshape reads version \(schemaVersion)")
        }
        do { return try d.decode(Report.self, from: data) } catch {
            throw ReportError("\(path): malformed report (\(error.localizedDescription))")
        }
    }

    /// Histogram counts of `values` over `edges` (the last bin includes its right edge).
    public static func counts(_ values: [Float], edges: [Double]) -> [Int] {
        let bins = edges.count - 1, lo = edges[0], width = (edges[bins] - lo) / Double(bins)
        var c = [Int](repeating: 0, count: bins)
        for v in values {
            let i = Int(((Double(v) - lo) / width).rounded(.down))
            c[min(max(i, 0), bins - 1)] += 1
        }
        return c
    }
}

public struct ReportError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Numbers as reports print them, so tests can find the same text in every format.
public enum Format {
    public static func pct(_ x: Double?) -> String { x.map { String(format: "%.2f", $0) } ?? "–" }
    public static func db(_ x: Double?) -> String { x.map { String(format: "%.1f", $0) } ?? "–" }
    public static func num(_ x: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", x) }
    public static func signed(_ x: Double) -> String { String(format: "%+.2f", x) }
    /// Bytes as KiB with one decimal ("116.2 KiB"), or "–".
    public static func kib(_ x: Int?) -> String {
        x.map { String(format: "%.1f KiB", Double($0) / 1024) } ?? "–"
    }
}
